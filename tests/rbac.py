"""A kubeconfig whose user may do what a deploy does in one namespace, minus chosen verbs: a real
RBAC refusal from the real apiserver, for fault tests (a trim refused, a lock that cannot be renewed)."""

from __future__ import annotations

from pathlib import Path

import yaml

ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
# What a deploy, a rollback and a scale touch in the stage's namespace (apiGroups "*" for brevity).
RESOURCES = ("configmaps", "secrets", "services", "endpoints", "pods", "pods/log", "events", "serviceaccounts",
             "persistentvolumeclaims", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs",
             "leases", "roles", "rolebindings")


def role_rules(deny: dict[str, tuple[str, ...]]) -> list[dict]:
    return [{"apiGroups": ["*"], "resources": [resource],
             "verbs": [verb for verb in ALL_VERBS if verb not in deny.get(resource, ())]}
            for resource in RESOURCES]


def limited_kubeconfig(core_api, cluster, namespace: str, folder: Path, deny: dict[str, tuple[str, ...]]) -> Path:
    """A ServiceAccount `limited` with every right a deploy uses in `namespace` except `deny`
    (resource -> verbs), its token (TokenRequest) in a copy of the cluster's kubeconfig. Change its
    rights later with allow(); the ClusterRoleBinding for reading the namespace is removed by forget()."""
    from kubernetes import client

    core, rbac = client.CoreV1Api(core_api), client.RbacAuthorizationV1Api(core_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "limited"}})
    subject = [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "limited"}, "rules": role_rules(deny)})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "limited"}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited"}})
    rbac.create_cluster_role(_reader(namespace))
    rbac.create_cluster_role_binding({
        "metadata": {"name": f"limited-{namespace}"}, "subjects": subject,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"limited-{namespace}"}})
    token = core.create_namespaced_service_account_token(
        "limited", namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = folder / "limited-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def allow(core_api, namespace: str, deny: dict[str, tuple[str, ...]]) -> None:
    """Set the `limited` Role's refusals to `deny` (an empty dict: everything a deploy needs)."""
    from kubernetes import client

    client.RbacAuthorizationV1Api(core_api).patch_namespaced_role("limited", namespace, {"rules": role_rules(deny)})


def forget(core_api, namespace: str) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(core_api)
    for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
        try:
            delete(f"limited-{namespace}")
        except client.exceptions.ApiException:
            pass


def _reader(namespace: str) -> dict:
    return {"metadata": {"name": f"limited-{namespace}"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [namespace],
                       "verbs": ["get"]}]}

"""lb-sync in a pod uses the pod's service account: proven by running it with that account's token alone,
laid out as the kubelet mounts it, with the RBAC objects of templates/skycap-lb.yaml.j2 and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.deployproject import ROOT
from tests.lbcluster import enabled, make_web, wait_ready, write_project
from tests.lbkit import haproxy, lb_block  # noqa: F401 - fixture


def rendered_lb_objects(root: Path, namespace: str) -> list[dict]:
    """The template as skycap renders it for a service `skycap-lb` of the stage."""
    from skycap.project.config import Project
    from skycap.project.render import RenderInput, _environment, render_service, stamp

    shutil.copy(ROOT / "templates" / "skycap-lb.yaml.j2", root / "templates" / "skycap-lb.yaml.j2")
    stage = Project(root).load_stage("test")
    from skycap.project.config import Service

    service = Service(name="skycap-lb", image="skytap/skycap-lb", template="skycap-lb.yaml.j2")
    revision = RenderInput(node="0" * 40, tag="000000000000", rev="tip", release=1)
    manifests = render_service(_environment(root / "templates"), stage, service, revision)
    for manifest in manifests:
        stamp(manifest, stage, revision)
    return [m.obj for m in manifests]


def apply(kubeconfig: Path, objects: list[dict]) -> None:
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"
    subprocess.run([kubectl, "--kubeconfig", str(kubeconfig), "apply", "-f", "-"], check=True, capture_output=True,
                   input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}).encode())


def service_account_folder(core_api, folder: Path, namespace: str, cluster) -> Path:
    """token, ca.crt and namespace, as the kubelet mounts them at /var/run/secrets/kubernetes.io/serviceaccount."""
    from kubernetes import client

    token = client.CoreV1Api(core_api).create_namespaced_service_account_token(
        "skycap-lb", namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    folder.mkdir()
    (folder / "token").write_text(token)
    shutil.copy(Path(cluster.dir) / "pki" / "ca.crt", folder / "ca.crt")
    (folder / "namespace").write_text(namespace)
    return folder


def run_in_pod_layout(root: Path, folder: Path, cluster, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(cluster.ports["apiserver"]),
           "SKYCAP_SERVICE_ACCOUNT_DIR": str(folder), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "skycap.cli", "--project", str(root), "lb-sync", "test", "--once"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_the_service_accounts_token_and_the_templates_rbac_suffice(tmp_path, local_cluster, core_api, namespace,
                                                                     publish, haproxy):  # noqa: F811
    from kubernetes import client

    publish("skytap/web", "incluster001")
    make_web(core_api, namespace, local_cluster.registry, "incluster001", replicas=2, service_type="NodePort")
    ready = wait_ready(core_api, namespace, 2)
    root = write_project(tmp_path / "project", local_cluster, namespace, lb_block("haproxy", haproxy))
    (root / "templates").mkdir()
    objects = rendered_lb_objects(root, namespace)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= kinds
    rules = [r for o in objects if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in rules), "read-only"
    cluster_rules = [r for o in objects if o["kind"] == "ClusterRole" for r in o["rules"]]
    assert [r["resources"] for r in cluster_rules] == [["nodes"]], "the ClusterRole is for Nodes only"

    # The service account alone, without its Role: refused, clearly, nothing changed.
    apply(local_cluster.kubeconfig, [o for o in objects if o["kind"] == "ServiceAccount"])
    folder = service_account_folder(core_api, tmp_path / "serviceaccount", namespace, local_cluster)
    home = tmp_path / "empty-home"
    home.mkdir()
    ran = run_in_pod_layout(root, folder, local_cluster, home)
    assert ran.returncode == 1, ran.stderr
    assert "the Kubernetes API refused to list" in ran.stderr and "Forbidden" in ran.stderr
    assert enabled(haproxy) == set()

    # With the template's RBAC: in step, in pods mode and in nodeport mode (which lists Nodes).
    apply(local_cluster.kubeconfig, [o for o in objects if o["kind"] != "Deployment"])
    ran = run_in_pod_layout(root, folder, local_cluster, home)
    assert ran.returncode == 0, ran.stderr
    assert enabled(haproxy) == ready
    assert not list(home.iterdir()), "no kubeconfig, nothing written to the home folder"
    stage_file = root / "stages" / "test.yaml"
    stage_file.write_text(stage_file.read_text().replace("members: pods", "members: nodeport"))
    ran = run_in_pod_layout(root, folder, local_cluster, home)
    assert ran.returncode == 0, ran.stderr
    node_port = client.CoreV1Api(core_api).read_namespaced_service("web", namespace).spec.ports[0].node_port
    addresses = {a.address for n in client.CoreV1Api(core_api).list_node().items for a in n.status.addresses
                 if a.type == "InternalIP"}
    assert {f"{address}:{node_port}" for address in addresses} <= enabled(haproxy)
    for obj in objects:  # the cluster-wide ones outlive the namespace
        if obj["kind"] == "ClusterRoleBinding":
            client.RbacAuthorizationV1Api(core_api).delete_cluster_role_binding(obj["metadata"]["name"])
        if obj["kind"] == "ClusterRole":
            client.RbacAuthorizationV1Api(core_api).delete_cluster_role(obj["metadata"]["name"])

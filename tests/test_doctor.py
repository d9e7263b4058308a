"""skycap doctor against the real control plane, registry, Mercurial and sshd hosts: a healthy
stage, and each fault the issue names as a failing line with its fix (exit 2)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess

import pytest
import yaml
from kubernetes import client

from tests.deployproject import make_project


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish, fake_vms):
    project = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)
    project.edit_stage(lambda stage: stage.update(vm={"legacy-api": {
        "hosts": fake_vms.hosts, "deploy_to": fake_vms.deploy_to, "restart": "true", "connect_timeout": 3}}))
    project.fleet = fake_vms
    return project


def doctor(project) -> tuple[int, dict]:
    ran = project.run("doctor", "test", "--output", "json")
    report = json.loads(ran.stdout)
    return ran.code, {check["name"]: check for check in report["checks"]}


def failing(checks: dict) -> dict:
    return {name: check for name, check in checks.items() if check["status"] == "fail"}


def test_a_healthy_stage_passes_every_check(project):
    ran = project.run("doctor", "test")
    assert ran.code == 0, ran.stdout + ran.stderr
    names = [line.split()[1] for line in ran.stdout.splitlines() if not line.startswith(" ")]
    assert names[:8] == ["stage", "templates", "tasks.py", "kubeconfig", "context", "api", "kubectl", "namespace"]
    code, checks = doctor(project)
    assert code == 0 and not failing(checks)
    assert checks["api server"]["detail"].startswith("answers: Kubernetes v1.20")
    assert "minor version(s) apart" in checks["kubectl"]["detail"]
    assert checks["rights"]["status"] == "ok" and "are allowed" in checks["rights"]["detail"]
    assert checks["lock"]["detail"] == "free"
    assert {f"vm legacy-api {host}" for host in project.fleet.hosts} <= set(checks)


def test_a_context_that_does_not_exist(project):
    project.edit_stage(lambda stage: stage["kubernetes"].update(context="nowhere"))
    code, checks = doctor(project)
    assert code == 2
    assert set(failing(checks)) == {"context"}
    assert "'nowhere'" in checks["context"]["detail"] and "skycap-local" in checks["context"]["fix"]
    assert {checks[name]["status"] for name in ("api server", "rights", "lock")} == {"skipped"}


def test_a_wrong_registry_password(project, basic_registry, isolated_home):
    auth = base64.b64encode(b"ci:not the password").decode()
    (isolated_home / ".docker").mkdir()
    (isolated_home / ".docker" / "config.json").write_text(json.dumps({"auths": {basic_registry.hostport:
                                                                                {"auth": auth}}}))
    project.edit_stage(lambda stage: stage.update(registry=basic_registry.hostport))
    code, checks = doctor(project)
    assert code == 2
    assert set(failing(checks)) == {"registry"}
    assert "refused" in checks["registry"]["detail"] and "not the password" not in json.dumps(checks)
    assert "username and password" in checks["registry"]["fix"]


def test_a_host_with_an_unknown_key(project, isolated_home):
    known = isolated_home / ".ssh" / "known_hosts"
    known.write_text("".join(line for line in known.read_text().splitlines(keepends=True)
                             if not line.startswith(project.fleet[1].known_hosts_name)))
    code, checks = doctor(project)
    assert code == 2
    assert set(failing(checks)) == {"vm legacy-api vm2"}
    assert "unknown host key" in checks["vm legacy-api vm2"]["detail"]
    assert "ssh-keyscan" in checks["vm legacy-api vm2"]["fix"]


@pytest.fixture
def limited_kubeconfig(local_cluster, core_api, namespace, tmp_path):
    """A kubeconfig for a user with a client certificate of the cluster's CA, who may do everything
    a deploy needs in the namespace but create Secrets."""
    user = f"limited-{secrets.token_hex(3)}"
    pki = local_cluster.path / "pki"
    key, csr, cert = tmp_path / "user.key", tmp_path / "user.csr", tmp_path / "user.crt"
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj",
                    f"/CN={user}", "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey",
                    str(pki / "ca.key"), "-CAcreateserial", "-days", "1", "-out", str(cert)],
                   check=True, capture_output=True)
    rbac = client.RbacAuthorizationV1Api(core_api)
    everything = ["configmaps", "services", "endpoints", "pods", "pods/log", "events", "deployments", "replicasets",
                  "statefulsets", "daemonsets", "jobs", "leases"]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": user}, "rules": [
        {"apiGroups": ["", "apps", "batch", "coordination.k8s.io"], "resources": everything, "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "verbs": ["get", "list", "watch", "patch", "update", "delete", "deletecollection"]}]})
    rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": user}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    rbac.create_cluster_role({"metadata": {"name": user}, "rules": [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]})
    rbac.create_cluster_role_binding({"metadata": {"name": user}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    config = yaml.safe_load(local_cluster.kubeconfig.read_text())
    cluster_name = config["contexts"][0]["context"]["cluster"]
    config["users"].append({"name": user, "user": {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode()}})
    config["contexts"].append({"name": "limited", "context": {"cluster": cluster_name, "user": user}})
    path = tmp_path / "limited-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path
    rbac.delete_cluster_role_binding(user)
    rbac.delete_cluster_role(user)


def test_an_account_without_the_right_to_create_secrets(project, limited_kubeconfig):
    project.edit_stage(lambda stage: stage["kubernetes"].update(context="limited", kubeconfig=str(limited_kubeconfig)))
    code, checks = doctor(project)
    assert code == 2
    assert set(failing(checks)) == {"rights"}, failing(checks)
    assert checks["rights"]["detail"].startswith("may not create secrets in ")
    assert "the ledger" in checks["rights"]["detail"]
    assert "--verb=create --resource=secrets" in checks["rights"]["fix"]
    text = project.run("doctor", "test")
    assert text.code == 2 and "FAIL  rights" in text.stdout and "fix: ask a cluster admin" in text.stdout

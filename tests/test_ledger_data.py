"""The ledger is data, not code: a ledger entry edited by hand or forged (its checksum made to
match) is refused with its release number; what it names never reaches kubectl, against the real
control plane."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from skycap.cluster.ledger import compress
from tests.deployproject import deployed, history, make_project


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def forge(core_api, namespace: str, number: int, change) -> None:
    """Rewrite release `number`'s manifests as someone who knows the format would: checksum and all."""
    core = client.CoreV1Api(core_api)
    name = f"skycap.test.v{number}"
    secret = core.read_namespaced_secret(name, namespace)
    objects = [o for o in yaml.safe_load_all(gzip.decompress(base64.b64decode(secret.data["manifests.gz"]))) if o]
    change(objects)
    chunks, digest = compress(yaml.safe_dump_all(objects))
    core.patch_namespaced_secret(name, namespace, {
        "metadata": {"annotations": {"skycap.io/manifest-sha256": digest}},
        "data": {"manifests.gz": base64.b64encode(chunks[0]).decode()}})


def kubectl_command_lines(ran) -> list[str]:
    log = Path(ran.stderr.split("log: ")[1].split()[0])
    return [line for line in log.read_text().splitlines() if "[kubectl] $ " in line]


def test_a_forged_kind_in_the_previous_release_never_reaches_kubectl(project, core_api, namespace):
    node = project.commit("one")
    deployed(project, node)
    # kind/name make "--server=http://127.0.0.1:1" when joined: an option, if it reached kubectl's argv
    forge(core_api, namespace, 1, lambda objects: objects.append(
        {"apiVersion": "v1", "kind": "--server=http:", "metadata": {"name": "/127.0.0.1:1", "namespace": namespace}}))
    ran = deployed(project, node)  # release 2 prunes what release 1 applied and 2 does not
    assert "release 1" in ran.stderr and "refused" in ran.stderr, ran.stderr
    assert "'--server=http:'" in ran.stderr
    assert not [line for line in kubectl_command_lines(ran) if "--server" in line]
    assert history(project) == [(2, "deploy", "deployed"), (1, "deploy", "superseded")]


def _rename(index, **fields):
    def change(objects):
        objects[index]["metadata"].update(fields)
    return change


@pytest.mark.parametrize("what, change", [
    ("kind", lambda objects: objects[0].update(kind="Secret,ConfigMap")),
    ("name", _rename(0, name="--all")),
    ("namespace", _rename(1, namespace="kube-system")),
])
def test_a_rollback_to_a_forged_release_is_refused_and_changes_nothing(project, core_api, namespace, what, change):
    first, second = project.commit("one"), project.commit("two")
    deployed(project, first)
    deployed(project, second)
    forge(core_api, namespace, 1, change)
    ran = project.run("rollback", "test", "release=1")
    assert ran.code == 2, ran.stderr
    assert "release 1 of stage test" in ran.stderr and "refused" in ran.stderr and what in ran.stderr
    assert history(project) == [(2, "deploy", "deployed"), (1, "deploy", "superseded")]
    web = client.AppsV1Api(core_api).read_namespaced_deployment("web", namespace)
    assert web.spec.template.spec.containers[0].image.endswith(second[:12])


def test_prune_never_deletes_the_ledger_or_the_lock(project, core_api, namespace):
    node = project.commit("one")
    deployed(project, node)
    forge(core_api, namespace, 1, lambda objects: objects.extend([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "skycap.test.v1", "namespace": namespace}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": "skycap-lock-test", "namespace": namespace}}]))
    ran = deployed(project, node)
    assert history(project) == [(2, "deploy", "deployed"), (1, "deploy", "superseded")]
    deletes = [line for line in kubectl_command_lines(ran) if " delete " in line]
    assert not [line for line in deletes if "skycap.test.v1" in line or "skycap-lock-test" in line], deletes

"""Prune and trim are careful: a volume's claim and what is marked `skycap.io/prune: "false"` are
never pruned, and trimming the ledger keeps the release a rollback would go back to, against the
real control plane."""

from __future__ import annotations


import pytest
from kubernetes import client

from tests.deployproject import deployed, history, make_project, skycap

KEPT_AND_PRUNED = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ service.name }}-data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Mi
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ service.name }}-kept
  annotations:
    skycap.io/prune: "false"
data:
  SEED: "1"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ service.name }}-pruned
data:
  SEED: "1"
"""


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def test_prune_keeps_volume_claims_and_what_is_marked_not_to_prune(project, core_api, namespace):
    (project.root / "templates" / "store.yaml.j2").write_text(KEPT_AND_PRUNED)
    project.edit_stage(lambda s: s["services"].update(store={"image": "skytap/web", "template": "store.yaml.j2"}))
    node = project.commit("with a store")
    deployed(project, node)
    project.edit_stage(lambda s: s["services"].pop("store"))
    ran = deployed(project, node)
    core = client.CoreV1Api(core_api)
    config_maps = {c.metadata.name for c in core.list_namespaced_config_map(namespace).items}
    assert "store-pruned" not in config_maps and "store-config" not in config_maps  # prune did run
    assert "store-kept" in config_maps
    claim = core.read_namespaced_persistent_volume_claim("store-data", namespace)
    assert claim.metadata.deletion_timestamp is None
    assert "PersistentVolumeClaim/store-data" in ran.stderr and "ConfigMap/store-kept" in ran.stderr  # said, not silent


def test_trimming_keeps_the_release_a_rollback_goes_back_to(project, core_api, namespace):
    project.edit_stage(lambda s: s.update(keep_releases=3))
    good = project.commit("good")
    deployed(project, good)
    for attempt in ("broken", "broken again"):
        bad = project.commit(attempt, labels={"skycap.sim/behaviour": "never-ready"})
        assert project.run("deploy", "test", f"rev={bad}", "--timeout", "2", "--no-rollback").code == 4
    deployed(project, project.commit("good again"))
    assert history(project) == [(4, "deploy", "deployed"), (3, "deploy", "failed"), (2, "deploy", "failed"),
                                (1, "deploy", "superseded")]
    ran = project.run("rollback", "test")
    assert ran.code == 0, ran.stderr
    assert "back on release 1" in ran.stderr


@pytest.mark.parametrize("keep", [2, 0])
def test_keep_releases_below_3_is_refused(tmp_path, keep):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "demo.yaml").write_text(
        "hg: .\nregistry: 127.0.0.1:5000\nkubernetes: {namespace: demo}\n"
        f"keep_releases: {keep}\nservices: {{web: {{image: skytap/web, template: web.yaml.j2}}}}\n")
    ran = skycap("--project", str(tmp_path), "history", "demo")
    assert ran.code == 2
    assert f"{tmp_path / 'stages' / 'demo.yaml'}: keep_releases" in ran.stderr and "at least 3" in ran.stderr

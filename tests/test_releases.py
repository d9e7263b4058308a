"""Releases: rollback without hg or registry, the lock, Ctrl-C, status with drift, history, diff,
scale, unlock and prune, against the real control plane."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from kubernetes import client

from skycap.cluster.lock import StageLock
from tests.deployproject import make_project, run_while_locked, start_deploy


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def image_of(core_api, namespace, name="web") -> str:
    deployment = client.AppsV1Api(core_api).read_namespaced_deployment(name, namespace)
    return deployment.spec.template.spec.containers[0].image


def history(project) -> list[tuple]:
    ran = project.run("history", "test", "--output", "json")
    assert ran.code == 0, ran.stderr
    return [(r["number"], r["kind"], r["status"]) for r in json.loads(ran.stdout)["releases"]]


def deploy(project, node):
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 0, ran.stderr
    return ran


def test_rollback_needs_neither_mercurial_nor_the_registry(project, core_api, namespace, tmp_path):
    first, second = project.commit("one"), project.commit("two")
    deploy(project, first)
    deploy(project, second)
    shutil.move(str(project.repo.path), str(tmp_path / "hg-moved-away"))
    project.edit_stage(lambda s: s.update(registry="127.0.0.1:1"))  # the registry is "down"
    shutil.rmtree(project.root / "templates")
    ran = project.run("rollback", "test")
    assert ran.code == 0, ran.stderr
    assert "back on release 1" in ran.stderr
    assert image_of(core_api, namespace).endswith(first[:12])
    assert history(project) == [(3, "rollback", "deployed"), (2, "deploy", "rolled-back"),
                                (1, "deploy", "superseded")]


def test_rollback_to_a_named_release(project, core_api, namespace):
    nodes = [project.commit(f"n{i}") for i in range(3)]
    for node in nodes:
        deploy(project, node)
    ran = project.run("rollback", "test", "release=1", "--output", "json")
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["target"] == 1
    assert image_of(core_api, namespace).endswith(nodes[0][:12])


def test_rollback_with_no_earlier_good_release(project):
    deploy(project, project.commit("only"))
    ran = project.run("rollback", "test")
    assert ran.code == 2
    assert "no good release before release 1" in ran.stderr


def test_rollback_to_a_release_that_does_not_exist(project):
    deploy(project, project.commit("only"))
    ran = project.run("rollback", "test", "release=9")
    assert ran.code == 2
    assert "9" in ran.stderr and "1" in ran.stderr


def test_rollback_of_a_never_deployed_stage(project):
    ran = project.run("rollback", "test")
    assert ran.code == 2
    assert "nothing to roll back" in ran.stderr


def test_a_locked_stage_exits_3_and_names_the_holder(project, core_api, namespace):
    node = project.commit("locked")
    ran = run_while_locked(project, core_api, "deploy rev=other (release 4)", "deploy", "test", f"rev={node}")
    assert ran.code == 3
    assert "locked by" in ran.stderr and "deploy rev=other (release 4)" in ran.stderr
    assert "skycap unlock test" in ran.stderr
    assert not client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items


def test_two_deploys_started_together_exactly_one_proceeds(project, namespace, local_cluster):
    node = project.commit("race")
    argv = [sys.executable, "-m", "skycap.cli", "--project", str(project.root), "deploy", "test", f"rev={node}"]
    env = {**os.environ, "KUBECONFIG": str(local_cluster.kubeconfig)}
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], results
    assert history(project) == [(1, "deploy", "deployed")]


def test_ctrl_c_during_the_rollout_exits_130_and_records_it(project, namespace, local_cluster, core_api):
    node = project.commit("slow", labels={"skycap.sim/behaviour": "never-ready"})
    proc, seen = start_deploy(project, local_cluster.kubeconfig, node)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 130, seen + rest
    assert "interrupted" in rest and "deployment.apps/web" in rest and "lock was released" in rest
    assert history(project) == [(1, "deploy", "interrupted")]
    assert not client.CoordinationV1Api(core_api).list_namespaced_lease(namespace).items


def test_sigterm_behaves_like_ctrl_c(project, namespace, local_cluster):
    node = project.commit("slow", labels={"skycap.sim/behaviour": "never-ready"})
    proc, _ = start_deploy(project, local_cluster.kubeconfig, node)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert history(project) == [(1, "deploy", "interrupted")]


def test_a_killed_holder_leaves_a_pending_release_that_the_next_deploy_marks(project, namespace, local_cluster):
    node = project.commit("killed", labels={"skycap.sim/behaviour": "never-ready"})
    proc, _ = start_deploy(project, local_cluster.kubeconfig, node, SKYCAP_LOCK_TTL="3")
    proc.kill()
    proc.wait()
    good = project.commit("good")
    ran = project.run("deploy", "test", f"rev={good}")
    if ran.code == 3:  # the dead holder's lease has not expired yet
        time.sleep(4)
        ran = project.run("deploy", "test", f"rev={good}")
    assert ran.code == 0, ran.stderr
    assert "release 1 was left pending" in ran.stderr
    assert history(project) == [(2, "deploy", "deployed"), (1, "deploy", "interrupted")]


def test_unlock_breaks_a_stale_lock_and_records_it(project, core_api, namespace):
    deploy(project, project.commit("one"))
    lock = StageLock(core_api, namespace, "test", purpose="deploy rev=ghost", ttl=2)
    lock.acquire()
    lock._stop.set()  # the holder "dies": it stops renewing; unlock watches the lease unchanged for 2 s
    ran = project.run("unlock", "test")
    assert ran.code == 0, ran.stderr
    assert "unlocked" in ran.stderr and "deploy rev=ghost" in ran.stderr
    assert history(project)[0][1] == "unlock"
    assert project.run("deploy", "test", f"rev={project.commit('two')}").code == 0


def test_status_shows_services_and_drift(project, core_api, namespace):
    node = project.commit("status")
    deploy(project, node)
    ran = project.run("status", "test", "--output", "json")
    assert ran.code == 0, ran.stderr
    report = json.loads(ran.stdout)
    rows = {row["service"]: row for row in report["services"]}
    assert rows["web"]["ready"] == 2 and rows["web"]["desired"] == 2 and rows["web"]["tag"] == node[:12]
    assert all(not row["drift"] for row in rows.values())
    assert report["release"]["number"] == 1 and report["lock"] is None
    client.AppsV1Api(core_api).patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 5}})
    client.CoreV1Api(core_api).patch_namespaced_config_map("notifier-config", namespace, {"data": {"CHANNEL": "x"}})
    client.AppsV1Api(core_api).delete_namespaced_deployment("worker", namespace)
    rows = {r["service"]: r for r in json.loads(project.run("status", "test", "--output", "json").stdout)["services"]}
    assert any("5 replicas; the release says 2" in d for d in rows["web"]["drift"])
    assert any("ConfigMap/notifier-config was edited" in d for d in rows["notifier"]["drift"])
    assert any("Deployment/worker was deleted" in d for d in rows["worker"]["drift"])
    text = project.run("status", "test")
    assert text.code == 0 and "web" in text.stdout and "release 1" in text.stdout


def test_status_survives_a_ledger_entry_edited_into_garbage(project, core_api, namespace):
    deploy(project, project.commit("one"))
    deploy(project, project.commit("two"))
    secret = client.CoreV1Api(core_api).list_namespaced_secret(namespace, label_selector="skycap.io/release=1").items[0]
    client.CoreV1Api(core_api).patch_namespaced_secret(secret.metadata.name, namespace,
                                                       {"data": {"release.json": "bm90IGpzb24="}})
    ran = project.run("status", "test")
    assert ran.code == 0, ran.stderr
    assert secret.metadata.name in ran.stderr
    assert "release 2" in ran.stdout


def test_history_table(project):
    deploy(project, project.commit("one"))
    ran = project.run("history", "test")
    assert ran.code == 0
    header, row = ran.stdout.splitlines()[:2]
    assert header.split()[:4] == ["#", "STATUS", "KIND", "REV"]
    assert row.split()[:3] == ["1", "deployed", "deploy"]


def test_diff_exit_codes(project):
    node = project.commit("diff")
    assert project.run("diff", "test", f"rev={node}").code == 1
    deploy(project, node)
    project.edit_stage(lambda s: s["services"]["web"].update(replicas=3))
    ran = project.run("diff", "test", f"rev={node}")
    assert ran.code == 1 and "replicas: 3" in ran.stdout


def test_scale_is_a_release_and_status_agrees(project, core_api, namespace):
    deploy(project, project.commit("scale"))
    ran = project.run("scale", "test", "web=3", "worker=2")
    assert ran.code == 0, ran.stderr
    apps = client.AppsV1Api(core_api)
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 3
    assert apps.read_namespaced_deployment("worker", namespace).status.ready_replicas == 2
    assert history(project)[0] == (2, "scale", "deployed")
    rows = {r["service"]: r for r in json.loads(project.run("status", "test", "-o", "json").stdout)["services"]}
    assert rows["web"]["desired"] == 3 and not rows["web"]["drift"]


def test_scale_of_an_unknown_service(project):
    deploy(project, project.commit("scale"))
    ran = project.run("scale", "test", "wbe=3")
    assert ran.code == 2 and "no Kubernetes service 'wbe'" in ran.stderr


def test_a_removed_service_is_pruned_by_the_next_deploy(project, core_api, namespace):
    node = project.commit("prune")
    deploy(project, node)
    project.edit_stage(lambda s: s["services"].pop("worker"))
    deploy(project, node)
    names = {d.metadata.name for d in client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items}
    assert names == {"web", "notifier"}
    config_maps = {c.metadata.name for c in client.CoreV1Api(core_api).list_namespaced_config_map(namespace).items}
    assert "worker-config" not in config_maps


def test_the_ledger_keeps_the_last_keep_releases(project):
    project.edit_stage(lambda s: s.update(keep_releases=3))
    node = project.commit("keep")
    for _ in range(4):
        deploy(project, node)
    assert history(project) == [(4, "deploy", "deployed"), (3, "deploy", "superseded"), (2, "deploy", "superseded")]


def test_prune_leaves_objects_that_are_not_this_stages(project, core_api, namespace):
    node = project.commit("prune")
    deploy(project, node)
    client.AppsV1Api(core_api).patch_namespaced_deployment(
        "worker", namespace, {"metadata": {"labels": {"skycap.io/stage": "someone-else"}}})
    project.edit_stage(lambda s: s["services"].pop("worker"))
    deploy(project, node)
    names = {d.metadata.name for d in client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items}
    assert "worker" in names


def test_a_deleted_namespace_is_a_clear_error(project, core_api, namespace):
    core = client.CoreV1Api(core_api)
    core.delete_namespace(namespace)
    deadline = time.monotonic() + 60
    while namespace in {n.metadata.name for n in core.list_namespace().items} and time.monotonic() < deadline:
        time.sleep(0.5)
    ran = project.run("status", "test")
    assert ran.code == 2
    assert f"namespace {namespace}" in ran.stderr

"""A rollback restores what was: the hosts' VM release as the target release recorded it (whatever
kind of release it is), no object the failed or replaced release added, VM-only stages too, and
a target VM release missing on a host is found before anything changes. Real sshd hosts, the real
control plane and node."""

from __future__ import annotations

import json
import shutil

import pytest
from kubernetes import client

from tests.deployproject import deployed, history, make_project
from tests.test_deploy_vm import live_revision, web_image, with_vms

CRASH = {"skycap.io/behaviour": "crash"}


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish, fake_vms):
    return with_vms(make_project(tmp_path, hg_repo, local_cluster, namespace, publish), fake_vms)


@pytest.fixture
def k8s_project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def vm_release(project, number: int) -> str:
    releases = json.loads(project.run("history", "test", "--output", "json").stdout)["releases"]
    return next(r for r in releases if r["number"] == number)["vm"]["legacy-api"]


def test_an_automatic_rollback_after_a_manual_one_sends_the_hosts_to_its_release(project, core_api, namespace):
    first, second = project.commit("one", only=("web",)), project.commit("two", only=("web",))
    deployed(project, first)
    deployed(project, second)
    assert project.run("rollback", "test").code == 0  # release 3: back on the first
    assert vm_release(project, 3) == vm_release(project, 1)
    bad = project.commit("crashes", labels=CRASH, only=("web",))
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    assert "rolled back to release 3" in ran.stderr, ran.stderr
    assert all(live_revision(host) == first for host in project.fleet)
    assert web_image(core_api, namespace).endswith(first[:12])


@pytest.mark.parametrize("change", [("scale", "test", "web=1"), ("restart", "test", "legacy-api")])
def test_an_automatic_rollback_after_a_scale_or_restart_keeps_the_hosts_on_their_release(project, change):
    first, second = project.commit("one", only=("web",)), project.commit("two", only=("web",))
    deployed(project, first)
    deployed(project, second)
    done = project.run(*change)
    assert done.code == 0, done.stderr
    assert vm_release(project, 3) == vm_release(project, 2)
    bad = project.commit("crashes", labels=CRASH, only=("web",))
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1 and "rolled back to release 3" in ran.stderr, ran.stderr
    assert all(live_revision(host) == second for host in project.fleet)


def test_a_vm_only_stage_can_be_rolled_back(project):
    project.edit_stage(lambda s: s.update(services={}))
    first, second = project.commit("one", publish=False), project.commit("two", publish=False)
    deployed(project, first)
    deployed(project, second)
    ran = project.run("rollback", "test")
    assert ran.code == 0, ran.stderr
    assert all(live_revision(host) == first for host in project.fleet)
    assert history(project)[0] == (3, "rollback", "deployed")
    assert vm_release(project, 3) == vm_release(project, 1)


def test_a_target_vm_release_gone_from_a_host_is_found_before_any_change(project, core_api, namespace):
    first, second = project.commit("one", only=("web",)), project.commit("two", only=("web",))
    deployed(project, first)
    deployed(project, second)
    gone = vm_release(project, 1)
    shutil.rmtree(project.fleet[1].path("app") / "releases" / gone)
    ran = project.run("rollback", "test")
    assert ran.code == 2, ran.stderr
    assert "vm2" in ran.stderr and gone in ran.stderr and "nothing was changed" in ran.stderr
    assert web_image(core_api, namespace).endswith(second[:12])
    assert all(live_revision(host) == second for host in project.fleet)
    assert history(project) == [(2, "deploy", "deployed"), (1, "deploy", "superseded")]


EXTRA = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ service.name }}-extra
data:
  SEED: "1"
"""


def add_extra_objects(project) -> None:
    """A ConfigMap beside web's objects, from an included template."""
    (project.root / "templates" / "extra.yaml.j2").write_text(EXTRA)
    project.edit_stage(lambda s: s["services"].update(
        extra={"image": "skytap/web", "template": "extra.yaml.j2"}))


def config_maps(core_api, namespace) -> set[str]:
    return {c.metadata.name for c in client.CoreV1Api(core_api).list_namespaced_config_map(namespace).items}


def test_an_automatic_rollback_deletes_what_the_failed_release_added(k8s_project, core_api, namespace):
    good = k8s_project.commit("good")
    deployed(k8s_project, good)
    add_extra_objects(k8s_project)
    bad = k8s_project.commit("crashes", labels=CRASH)
    ran = k8s_project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1 and "rolled back to release 1" in ran.stderr, ran.stderr
    assert "extra-extra" not in config_maps(core_api, namespace)


def test_a_manual_rollback_deletes_what_the_replaced_release_added(k8s_project, core_api, namespace):
    node = k8s_project.commit("good")
    deployed(k8s_project, node)
    add_extra_objects(k8s_project)
    deployed(k8s_project, node)
    assert "extra-extra" in config_maps(core_api, namespace)
    ran = k8s_project.run("rollback", "test")
    assert ran.code == 0, ran.stderr
    assert "extra-extra" not in config_maps(core_api, namespace)
    assert "web-config" in config_maps(core_api, namespace)


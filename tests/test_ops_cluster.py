"""logs, exec and restart of Kubernetes services, on the real control plane: finding the service,
a service without pods, and the recorded rolling restart under the stage lock. (Reading logs and
running commands in pods needs a real node: tests/test_ops_pods.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.deployproject import make_project, run_while_locked


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


@pytest.fixture
def deployed(project):
    project.node = project.commit("running")
    ran = project.run("deploy", "test", f"rev={project.node}")
    assert ran.code == 0, ran.stderr
    return project


@pytest.mark.parametrize("command", [("logs",), ("exec", "--", "true"), ("restart",)])
def test_a_service_that_does_not_exist_is_bad_input_naming_the_known_ones(project, command):
    ran = project.run(command[0], "test", "nosuch", *command[1:])
    assert ran.code == 2
    assert "no service 'nosuch'" in ran.stderr
    assert "notifier, web, worker" in ran.stderr


def test_logs_and_exec_of_a_service_without_pods_say_so_and_the_last_release(deployed, core_api, namespace):
    import time

    assert deployed.run("scale", "test", "worker=0").code == 0
    deadline = time.monotonic() + 60  # a scaled-down pod runs (and logs) until its container has stopped
    while client.CoreV1Api(core_api).list_namespaced_pod(namespace, label_selector="skycap.io/service=worker").items:
        assert time.monotonic() < deadline, "the worker pod did not go away"
        time.sleep(0.2)
    for command in (("logs", "test", "worker"), ("logs", "test", "worker", "-f"),
                    ("exec", "test", "worker", "--", "true"), ("exec", "test", "worker", "--all", "--", "true")):
        ran = deployed.run(*command)
        assert ran.code == 2, (command, ran.stderr)
        assert "service worker of stage test has no" in ran.stderr
        assert "pod (its pods: none)" in ran.stderr
        assert "the last release, 2 (scale rev=" in ran.stderr and "is deployed: scale worker=0" in ran.stderr


def test_exec_without_a_command_or_with_a_terminal_and_all_is_bad_input(deployed):
    assert deployed.run("exec", "test", "web").code == 2
    ran = deployed.run("exec", "test", "web", "--all", "-it", "--", "sh")
    assert ran.code == 2 and "need one target" in ran.stderr


def test_logs_since_must_be_a_duration(deployed):
    ran = deployed.run("logs", "test", "web", "--since", "yesterday")
    assert ran.code == 2 and "30s, 10m" in ran.stderr


def template_annotations(core_api, namespace, name) -> dict:
    deployment = client.AppsV1Api(core_api).read_namespaced_deployment(name, namespace)
    return deployment.spec.template.metadata.annotations or {}


def test_restart_rolls_the_pods_records_a_release_and_status_shows_no_drift(deployed, core_api, namespace):
    core = client.CoreV1Api(core_api)
    before = {p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="skycap.io/service=web").items}
    ran = deployed.run("restart", "test", "web")
    assert ran.code == 0, ran.stderr
    assert "wait for the rollout" in ran.stderr and "release 2: restart web" in ran.stderr
    assert "kubectl.kubernetes.io/restartedAt" in template_annotations(core_api, namespace, "web")
    assert "kubectl.kubernetes.io/restartedAt" not in template_annotations(core_api, namespace, "worker")
    after = {p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector="skycap.io/service=web").items
             if not p.metadata.deletion_timestamp}
    assert after and not after & before
    history = json.loads(deployed.run("history", "test", "--output", "json").stdout)["releases"]
    assert [(r["number"], r["kind"], r["status"]) for r in history] == [(2, "restart", "deployed"),
                                                                        (1, "deploy", "superseded")]
    assert history[0]["rev"] == deployed.node and history[0]["target"] == 1
    status = json.loads(deployed.run("status", "test", "--output", "json").stdout)
    assert status["release"]["number"] == 2
    assert all(row["drift"] == [] for row in status["services"]), status["services"]


def test_restart_of_a_locked_stage_is_exit_3_and_changes_nothing(deployed, core_api, namespace):
    ran = run_while_locked(deployed, core_api, "deploy rev=other", "restart", "test", "web")
    assert ran.code == 3
    assert "deploy rev=other" in ran.stderr
    assert "kubectl.kubernetes.io/restartedAt" not in template_annotations(core_api, namespace, "web")
    history = json.loads(deployed.run("history", "test", "--output", "json").stdout)["releases"]
    assert len(history) == 1


def test_restart_of_a_stage_never_deployed_is_bad_input(project):
    ran = project.run("restart", "test", "web")
    assert ran.code == 2 and "no deployed release" in ran.stderr


def kubeconfig_variant(project, tmp_path, kubeconfig, change) -> Path:
    """A copy of the test kubeconfig, changed, that the stage file names."""
    data = yaml.safe_load(Path(kubeconfig).read_text())
    change(data["clusters"][0]["cluster"], data["users"][0]["user"])
    path = tmp_path / "variant.kubeconfig"
    path.write_text(yaml.safe_dump(data))
    project.edit_stage(lambda stage: stage["kubernetes"].update(kubeconfig=str(path)))
    return path


def test_logs_reads_the_cluster_through_a_kubeconfig_exec_plugin_too(project, tmp_path, kubeconfig):
    """logs lists pods with plain HTTPS for a plain kubeconfig; one that needs a plugin goes through the
    kubernetes client, which runs it."""
    ran_marker = tmp_path / "plugin-ran"

    def through_plugin(cluster, user):
        plugin = tmp_path / "credential-plugin"
        credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                      "status": {"token": user.pop("token")}}
        plugin.write_text(f"#!/bin/sh\ntouch {ran_marker}\necho '{json.dumps(credential)}'\n")
        plugin.chmod(0o700)
        user["exec"] = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}

    kubeconfig_variant(project, tmp_path, kubeconfig, through_plugin)
    ran = project.run("logs", "test", "web")
    assert ran.code == 2, ran.stderr
    assert "has no running pod (its pods: none); stage test has no release yet" in ran.stderr
    assert ran_marker.exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda cluster, user: cluster.update(server="https://127.0.0.1:1"),
     "cannot reach the Kubernetes API (context skycap-local): connection refused"),
    (lambda cluster, user: user.update(token="not-a-token"), "the Kubernetes API refused (list pods): 401"),
])
def test_logs_of_a_cluster_it_cannot_use_is_a_clear_error(project, tmp_path, kubeconfig, change, message):
    kubeconfig_variant(project, tmp_path, kubeconfig, change)
    ran = project.run("logs", "test", "web")
    assert ran.code != 0 and message in ran.stderr, ran.stderr
    assert "unexpected" not in ran.stderr


@pytest.mark.parametrize(("user", "cluster", "plain"), [
    ({"token": "t"}, {}, True),
    ({"tokenFile": "token"}, {}, True),
    ({"exec": {"command": "aws"}}, {}, False),
    ({"auth-provider": {"name": "gcp"}}, {}, False),
    ({"username": "u", "password": "p"}, {}, False),
    ({"token": "t"}, {"proxy-url": "http://proxy:3128"}, False),
    ({"token": "t"}, {"tls-server-name": "api"}, False),
])
def test_only_plain_kubeconfigs_are_read_without_the_client(tmp_path, user, cluster, plain):
    from types import SimpleNamespace

    from skycap.commands.running.rest import plain_endpoint

    (tmp_path / "token").write_text("from-a-file\n")
    config = {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
              "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443/prefix",
                                                       "insecure-skip-tls-verify": True, **cluster}}],
              "users": [{"name": "u", "user": user}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    stage = SimpleNamespace(kubeconfig=str(path), context=None, path=tmp_path / "stage.yaml")
    endpoint = plain_endpoint(stage)
    assert (endpoint is not None) == plain
    if plain:
        assert (endpoint.host, endpoint.port, endpoint.prefix) == ("127.0.0.1", 6443, "/prefix")
        assert endpoint.token in ("t", "from-a-file")
    assert plain_endpoint(SimpleNamespace(kubeconfig=str(path), context="nosuch", path=stage.path)) is None

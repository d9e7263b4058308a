"""The embedded control plane: real apiserver, controller-manager, registry and node simulator."""

import json
import os
import subprocess
import time

import pytest

from skycap.localcluster import cluster


def kubectl(local_cluster, *args, stdin=None):
    from skycap.kubectl import find_kubectl

    argv = [find_kubectl(), "--kubeconfig", str(local_cluster.kubeconfig), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout


def deployment(name, image, replicas=1):
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": image}]}}}})


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def pod_waiting_reasons(local_cluster, namespace, app):
    pods = json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-l", f"app={app}", "-o", "json"))
    return {s.get("state", {}).get("waiting", {}).get("reason")
            for p in pods["items"] for s in p.get("status", {}).get("containerStatuses", [])}


def test_deployment_becomes_available_through_the_simulator(local_cluster, namespace, publish):
    publish("demo/web", "v1")
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("web", f"{local_cluster.registry}/demo/web:v1", replicas=2))
    out = kubectl(local_cluster, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    assert "successfully rolled out" in out
    pods = json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-o", "json"))["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" and p["spec"]["nodeName"].startswith("sim-node-") for p in pods)


def test_missing_image_goes_to_image_pull_back_off(local_cluster, namespace):
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("ghost", f"{local_cluster.registry}/demo/never-pushed:v1"))
    wait_for(lambda: "ImagePullBackOff" in pod_waiting_reasons(local_cluster, namespace, "ghost"), timeout=20)
    events = kubectl(local_cluster, "-n", namespace, "get", "events", "--field-selector", "type=Warning")
    assert "not found" in events


def test_crash_label_produces_crash_loop_back_off(local_cluster, namespace, publish):
    publish("demo/crasher", "v1", {"skycap.sim/behaviour": "crash"})
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("crasher", f"{local_cluster.registry}/demo/crasher:v1"))
    wait_for(lambda: "CrashLoopBackOff" in pod_waiting_reasons(local_cluster, namespace, "crasher"))


def test_terminating_pods_are_finished(local_cluster, namespace, publish):
    publish("demo/web", "v1")
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("web", f"{local_cluster.registry}/demo/web:v1"))
    kubectl(local_cluster, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    kubectl(local_cluster, "-n", namespace, "delete", "deployment", "web", "--wait=false")
    wait_for(lambda: json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-o", "json"))["items"] == [])


def test_status_reports_every_part_healthy(local_cluster):
    parts = cluster.status(local_cluster.path)
    assert set(parts) == set(cluster.PARTS)
    assert all(info["healthy"] for info in parts.values()), parts


def test_up_down_up_in_a_second_folder_leaves_no_process(tmp_path, monkeypatch):
    """A second, independent cluster: up is idempotent, down stops exactly its pids, up again works."""
    from tests.fixtures.cluster import BINARIES

    monkeypatch.setenv("SKYCAP_KUBE_BIN_DIR", str(BINARIES))
    names = list(cluster.DEFAULT_PORTS)
    ports = dict(zip(names, cluster.free_ports(len(names))))
    state = cluster.up(ports=ports, directory=tmp_path)
    try:
        pids = dict(state.pids)
        again = cluster.up(directory=tmp_path)
        assert again.pids == pids
        stopped = cluster.down(directory=tmp_path)
        assert set(stopped) == set(cluster.PARTS)
        assert not any(os.path.exists(f"/proc/{pid}") and cluster._alive(pid, state.commands[part])
                       for part, pid in pids.items())
        state = cluster.up(directory=tmp_path)
        assert all(info["healthy"] for info in cluster.status(tmp_path).values())
    finally:
        cluster.down(directory=tmp_path)


def test_a_taken_port_is_named(tmp_path, monkeypatch):
    import socket

    from skycap.errors import BadInput
    from tests.fixtures.cluster import BINARIES

    monkeypatch.setenv("SKYCAP_KUBE_BIN_DIR", str(BINARIES))
    names = list(cluster.DEFAULT_PORTS)
    ports = dict(zip(names, cluster.free_ports(len(names))))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["apiserver"]))
        squatter.listen()
        with pytest.raises(BadInput, match=f"port {ports['apiserver']} .*apiserver.* taken"):
            cluster.up(ports=ports, directory=tmp_path)
    assert cluster.status(tmp_path)["etcd"]["running"] is False


def test_missing_binaries_dir_says_what_to_do(tmp_path, monkeypatch):
    from skycap.errors import BadInput

    monkeypatch.setenv("SKYCAP_KUBE_BIN_DIR", str(tmp_path / "nothing-here"))
    with pytest.raises(BadInput, match="lacks kube-apiserver"):
        cluster.ensure_binaries()


def test_cli_up_prints_exports(local_cluster, monkeypatch):
    from click.testing import CliRunner

    from skycap.cli import cli

    monkeypatch.setenv("SKYCAP_LOCAL_CLUSTER_DIR", str(local_cluster.path))
    result = CliRunner().invoke(cli, ["local-cluster", "up"])
    assert result.exit_code == 0, result.output
    assert f"export KUBECONFIG={local_cluster.kubeconfig}" in result.stdout
    assert f"export SKYCAP_REGISTRY={local_cluster.registry}" in result.stdout

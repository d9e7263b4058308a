"""The embedded local cluster: real apiserver, controller-manager, scheduler, registry and a real node."""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from skycap.localcluster import cluster


def kubectl(local_cluster, *args, stdin=None):
    from skycap.cluster.kubectl import find_kubectl

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


def service(name, node_port=None):
    port = {"port": 80, "targetPort": 8080, **({"nodePort": node_port} if node_port else {})}
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                       "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [port]}})


def http_get(url, timeout=5.0):
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def test_pods_run_on_the_real_node_and_answer_through_a_node_port(local_cluster, real_node, namespace, publish):
    publish("demo/web", "v1")
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("web", f"{local_cluster.registry}/demo/web:v1", replicas=2))
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-", stdin=service("web"))
    out = kubectl(local_cluster, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    assert "successfully rolled out" in out
    pods = json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-o", "json"))["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert nodes == {"skycap-node"}
    info = json.loads(kubectl(local_cluster, "get", "node", "skycap-node", "-o", "json"))["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert all(p["status"]["podIP"].startswith("198.19.") for p in pods)

    # From the host: the pod by its own address, and the Service through its NodePort on the node.
    pod = pods[0]
    assert http_get(f"http://{pod['status']['podIP']}:8080/") == f"demo/web:v1 on pod {pod['metadata']['name']}\n"
    svc = json.loads(kubectl(local_cluster, "-n", namespace, "get", "service", "web", "-o", "json"))
    node_port = svc["spec"]["ports"][0]["nodePort"]
    page = wait_for(lambda: _try(http_get, f"http://{real_node.node_address}:{node_port}/"))
    assert page.startswith("demo/web:v1 on pod web-")

    logs = kubectl(local_cluster, "-n", namespace, "logs", pod["metadata"]["name"])
    assert f"skycap demo image demo/web:v1 starting on pod {pod['metadata']['name']}" in logs
    assert kubectl(local_cluster, "-n", namespace, "exec", pod["metadata"]["name"], "--", "cat",
                   "/tmp/www/health") == "ok\n"


def _try(func, *args):
    try:
        return func(*args)
    except OSError:
        return None


def test_missing_image_goes_to_image_pull_back_off(local_cluster, namespace):
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("ghost", f"{local_cluster.registry}/demo/never-pushed:v1"))
    wait_for(lambda: pod_waiting_reasons(local_cluster, namespace, "ghost") & {"ErrImagePull", "ImagePullBackOff"},
             timeout=30)
    wait_for(lambda: "not found" in kubectl(local_cluster, "-n", namespace, "get", "events",
                                            "--field-selector", "type=Warning"), timeout=20)


def test_a_crashing_image_exits_3_and_goes_to_crash_loop_back_off(local_cluster, namespace, publish):
    publish("demo/crasher", "v1", {"skycap.io/behaviour": "crash"})
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("crasher", f"{local_cluster.registry}/demo/crasher:v1"))
    wait_for(lambda: "CrashLoopBackOff" in pod_waiting_reasons(local_cluster, namespace, "crasher"), timeout=40)
    if local_cluster.nodes == "real":
        pod = json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-l", "app=crasher",
                                 "-o", "json"))["items"][0]
        last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
        assert (last["exitCode"], last["reason"]) == (3, "Error")
        logs = kubectl(local_cluster, "-n", namespace, "logs", "--previous", pod["metadata"]["name"])
        assert "crashing on purpose: exit 3" in logs


def test_terminating_pods_are_finished(local_cluster, namespace, publish):
    publish("demo/web", "v1")
    kubectl(local_cluster, "-n", namespace, "apply", "-f", "-",
            stdin=deployment("web", f"{local_cluster.registry}/demo/web:v1"))
    kubectl(local_cluster, "-n", namespace, "rollout", "status", "deployment/web", "--timeout=60s")
    kubectl(local_cluster, "-n", namespace, "delete", "deployment", "web", "--wait=false")
    wait_for(lambda: json.loads(kubectl(local_cluster, "-n", namespace, "get", "pods", "-o", "json"))["items"] == [],
             timeout=120)


def test_status_reports_every_part_healthy(local_cluster):
    parts = cluster.status(local_cluster.path)
    assert set(parts) == set(local_cluster.parts)
    assert all(info["healthy"] for info in parts.values()), parts


def _second_cluster(tmp_path, monkeypatch, nodes="real"):
    from tests.fixtures.cluster import BINARIES

    monkeypatch.setenv("SKYCAP_KUBE_BIN_DIR", str(BINARIES))
    names = list(cluster.DEFAULT_PORTS)
    ports = dict(zip(names, cluster.free_ports(len(names))))
    try:
        return cluster.up(ports=ports, directory=tmp_path, nodes=nodes)
    except BaseException:
        cluster.down(directory=tmp_path)  # an up that failed half-way leaves parts running
        raise


def _pod_namespaces_inside(holder: int) -> list[str]:
    """The pods' network namespaces: mount points, inside the node's mount namespace, of files under
    the node's containerd state (not in the machine's /run/netns)."""
    mounts = Path(f"/proc/{holder}/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in mounts if "/run/skycap/node-" in line.split()[4] and "nsfs" in line]


def _traces(state):
    """What of this cluster's node is left on the machine."""
    from skycap.localcluster import network, node

    paths = state.node_paths
    mounts = [line.split()[4] for line in open("/proc/self/mountinfo")
              if line.split()[4].startswith((str(state.path), str(paths.run)))]
    return {"processes": [part for part, pid in state.pids.items() if cluster._alive(pid, state.commands[part])],
            "containers and shims": node.shims_and_containers(paths),
            "netns": network.Link(state.slot).netns_path.exists(),
            "veth": subprocess.run(["ip", "link", "show", state.link.host_veth], capture_output=True).returncode == 0,
            "mounts": mounts}


def test_what_is_left_in_the_node_mount_namespace_is_ended_and_the_machine_s_is_never_touched():
    """down's last step: the holder's sleep outlives unshare by a moment (a full run once found it)."""
    from skycap.localcluster import node

    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "--",
                               "sh", "-c", "sleep infinity & exec sleep infinity"])
    namespace = wait_for(lambda: node.mount_namespace(holder.pid), timeout=10)
    try:
        wait_for(lambda: len(node.processes_in(namespace)) >= 3, timeout=10)  # unshare and its two sleeps
        assert node.mount_namespace(os.getpid()) is None
        node.end_processes_in(namespace)
        assert not node.processes_in(namespace)
        assert holder.wait(timeout=5) == -9
    finally:
        for pid in node.processes_in(namespace):
            os.kill(pid, 9)
        holder.wait()


def test_down_leaves_nothing_behind_and_up_recovers_from_a_killed_containerd_and_a_reboot(
        tmp_path, monkeypatch, local_cluster, real_node):
    host_netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    state = _second_cluster(tmp_path, monkeypatch)
    try:
        assert state.slot != local_cluster.slot
        kubectl(state, "apply", "-f", "-", stdin=deployment("pause", f"{state.registry}/skycap/pause:3.4"))
        kubectl(state, "rollout", "status", "deployment/pause", "--timeout=60s")
        from skycap.localcluster import node

        assert _traces(state)["containers and shims"]

        # A killed containerd: up starts it again, and the node runs pods again.
        os.kill(state.pids["containerd"], 9)
        wait_for(lambda: not cluster._alive(state.pids["containerd"], "containerd"), timeout=10)
        again = cluster.up(directory=tmp_path)
        assert again.pids["containerd"] != state.pids["containerd"]
        kubectl(again, "scale", "deployment/pause", "--replicas=2")
        kubectl(again, "rollout", "status", "deployment/pause", "--timeout=60s")
        holder = again.pids["node-mounts"]
        pod_netns = _pod_namespaces_inside(holder)
        assert len(pod_netns) >= 2
        assert not node._pod_namespaces(again.link), "the pods' namespaces are the node's own, not the host's"
        node_mounts = os.readlink(f"/proc/{holder}/ns/mnt")

        stopped = cluster.down(directory=tmp_path)
        assert set(stopped) == set(again.parts)
        traces = _traces(again)
        assert traces == {"processes": [], "containers and shims": [], "netns": False, "veth": False,
                          "mounts": []}
        assert not node.processes_in(node_mounts), "the node's mount namespace, with the pods' network ones, is gone"
        left = {name for name in os.listdir("/run/netns") if name.startswith("cni-")} - host_netns_before
        assert not left, "pod network namespaces pinned in the machine's /run/netns"

        # A reboot: every process gone, /run emptied, the namespace gone; up makes it all again.
        state = cluster.up(directory=tmp_path)
        assert all(info["healthy"] for info in cluster.status(tmp_path).values())
        for part, pid in state.pids.items():
            os.kill(pid, 9)
        node_pids = _traces(state)["containers and shims"]
        for pid in node_pids:
            os.kill(pid, 9)
        wait_for(lambda: not _traces(state)["processes"], timeout=10)  # SIGKILL takes a moment
        from skycap.localcluster import network

        node.remove_runtime_state(state.node_paths)
        network.remove(state.link)
        state = cluster.up(directory=tmp_path)
        kubectl(state, "rollout", "status", "deployment/pause", "--timeout=60s")
    finally:
        cluster.down(directory=tmp_path)


def test_simulated_nodes_are_named_as_a_simulation(tmp_path, monkeypatch, local_cluster, publish):
    state = _second_cluster(tmp_path, monkeypatch, nodes="simulated")
    try:
        nodes = json.loads(kubectl(state, "get", "nodes", "-o", "json"))["items"]
        assert nodes and all(n["metadata"]["name"].startswith("simulated-node-") for n in nodes)
        assert set(cluster.status(tmp_path)) == set(cluster.CONTROL_PLANE + cluster.SIMULATED_NODE)
        with pytest.raises(cluster.BadInput, match="runs with simulated nodes"):
            cluster.up(directory=tmp_path, nodes="real")
    finally:
        cluster.down(directory=tmp_path)


def test_a_machine_that_cannot_run_containers_is_told_why_and_what_to_do():
    """Not root: one message naming the cause and the two ways out; nothing started."""
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="skycap-not-root-"))  # in /tmp: the user `nobody` can reach it
    os.chown(folder, 65534, 65534)
    env = {**os.environ, "SKYCAP_LOCAL_CLUSTER_DIR": str(folder / "cluster"), "HOME": str(folder),
           "XDG_STATE_HOME": str(folder / "state"), "XDG_CACHE_HOME": str(folder / "cache")}
    try:
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                               "-m", "skycap.cli", "local-cluster", "up"], capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 2, done.stderr
    assert "cannot run the local cluster's real node: it runs as root only" in done.stderr
    assert "skycap local-cluster up --nodes simulated" in done.stderr


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
    with pytest.raises(BadInput, match="lacks kube-apiserver, kube-controller-manager, kube-scheduler, kubelet"):
        cluster.ensure_binaries()


def test_cli_up_prints_exports(local_cluster, monkeypatch):
    from click.testing import CliRunner

    from skycap.cli_commands import cli

    monkeypatch.setenv("SKYCAP_LOCAL_CLUSTER_DIR", str(local_cluster.path))
    result = CliRunner().invoke(cli, ["local-cluster", "up"])
    assert result.exit_code == 0, result.output
    assert f"export KUBECONFIG={local_cluster.kubeconfig}" in result.stdout
    assert f"export SKYCAP_REGISTRY={local_cluster.registry}" in result.stdout


def test_clusters_starting_at_once_get_links_of_their_own(tmp_path):
    """Parallel test workers each start a cluster: the slot is chosen and claimed under one lock."""
    from concurrent.futures import ThreadPoolExecutor

    from skycap.localcluster import network

    states = [cluster.ClusterState(dir=str(tmp_path / f"c{i}")) for i in range(4)]
    for state in states:
        state.path.mkdir()
    barrier = threading.Barrier(len(states))

    def make(state):
        barrier.wait()
        cluster._make_link(state)
        return state.slot

    try:
        with ThreadPoolExecutor(len(states)) as pool:
            slots = list(pool.map(make, states))
        assert len(set(slots)) == len(states), slots
        assert all(network.exists(state.link) for state in states)
    finally:
        for state in states:
            if state.slot is not None:
                network.remove(state.link)


def test_a_stopped_clusters_slot_taken_by_another_is_not_shared(tmp_path):
    """A cluster started again after another took its slot gets a new one: sharing the link would put
    two kubelets on one address (seen: the demo's kubelet died on "address already in use")."""
    from skycap.localcluster import network

    first = cluster.ClusterState(dir=str(tmp_path / "first"))
    second = cluster.ClusterState(dir=str(tmp_path / "second"))
    first.path.mkdir()
    second.path.mkdir()
    try:
        cluster._make_link(first)
        taken = first.slot
        cluster._make_link(first)
        assert first.slot == taken  # its own link: kept
        network.remove(first.link)  # first is down; second starts on the slot it left
        second.slot = taken
        cluster._make_link(second)
        assert second.slot == taken
        cluster._make_link(first)
        assert first.slot != taken
        assert network.owned_by(first.link, first.dir) and network.owned_by(second.link, second.dir)
    finally:
        for state in (first, second):
            if state.slot is not None:
                network.remove(state.link)

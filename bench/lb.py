"""The load balancer sync under load, on the real node: a bounded load (2,000 requests at 100/s) through a
real HAProxy on loopback to a service of 3 replicas while `skycap deploy` rolls it to a new revision, then
while `skycap rollback` rolls it back; then CYCLES scale cycles (3 -> 8 -> 3 replicas) for enough member
changes that a p99 means something (10 cycles: about 110 changes).

Every member change is timed by the bench itself, apart from lb-sync: its own watches see a pod turn Ready
(or start terminating) and its endpoint turn ready (or leave the EndpointSlice); HAProxy, polled every
10 ms, shows the member enabled (or taken out of rotation). Printed side by side: pod -> endpoint (the
cluster's own part, what kube-proxy waits for too), endpoint -> pool (lb-sync's part, the goal), and
lb-sync's own figure from its log. Goals: 0 failed; endpoint -> pool p99 <= 1 s.

    python bench/lb.py [CYCLES]

Needs the real node (pods reachable from the host); on the node simulator it says so and exits 2."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, private_cluster

sys.path.insert(0, str(ROOT))

from tests.deployproject import make_project  # noqa: E402
from tests.fixtures.hg import make_repo  # noqa: E402
from tests.lbcluster import LbSyncProcess, scale, wait_pool, wait_ready  # noqa: E402
from tests.lbkit import HAProxyProcess, change_latencies, lb_block, load_loop, node_is_real  # noqa: E402
from tests.test_lb_real_node import PRESTOP  # noqa: E402

REQUESTS, RATE = 2000, 100
CYCLES, LOW, HIGH = 10, 3, 8
POLL_SECONDS = 0.01
PORT = 8080


class ChangeClock:
    """When the bench saw each member change, per source: "pod", "endpoint", "pool".
    Keys are (action, ADDRESS:PORT), action "add" or "drain"; only transitions after arm() count."""

    def __init__(self, api, namespace: str, haproxy):
        self.api, self.namespace, self.haproxy = api, namespace, haproxy
        self.seen: dict[str, dict[tuple[str, str], float]] = {"pod": {}, "endpoint": {}, "pool": {}}
        self.lock, self.stopped = threading.Lock(), threading.Event()

    def start(self) -> None:
        for target in (self._watch_pods, self._watch_slices, self._poll_pool):
            threading.Thread(target=target, daemon=True).start()

    def arm(self) -> None:
        with self.lock:
            for marks in self.seen.values():
                marks.clear()

    def stop(self) -> None:
        self.stopped.set()

    def _note(self, source: str, before: set[str], after: set[str]) -> None:
        now = time.monotonic()
        with self.lock:
            for member in after - before:
                self.seen[source].setdefault(("add", member), now)
            for member in before - after:
                self.seen[source].setdefault(("drain", member), now)

    def _stream(self, path: str):
        """Every event of a watch on `path`, from its current state (ADDED for each object first)."""
        from kubernetes.watch.watch import iter_resp_lines

        from skycap.lb.sources import get_json

        while not self.stopped.is_set():
            try:
                response = get_json(self.api, path, watch="true", timeoutSeconds=300, _preload_content=False,
                                    _request_timeout=(10, 330))
                for line in iter_resp_lines(response):
                    if self.stopped.is_set():
                        return
                    yield json.loads(line)
            except Exception:  # noqa: BLE001 - a broken watch (the cluster going down at the end): again, or stop
                self.stopped.wait(0.5)

    def _watch_pods(self) -> None:
        ready: dict[str, str] = {}   # pod name -> ADDRESS:PORT while Ready and not terminating
        for event in self._stream(f"/api/v1/namespaces/{self.namespace}/pods"):
            pod = event["object"]
            before = set(ready.values())
            name, status = pod["metadata"]["name"], pod.get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            if event["type"] != "DELETED" and conditions.get("Ready") == "True" and status.get("podIP") \
                    and not pod["metadata"].get("deletionTimestamp"):
                ready[name] = f"{status['podIP']}:{PORT}"
            else:
                ready.pop(name, None)
            self._note("pod", before, set(ready.values()))

    def _watch_slices(self) -> None:
        from skycap.lb.sources import endpoint_source

        _kind, prefix = endpoint_source(self.api)
        slices: dict[str, set[str]] = {}
        for event in self._stream(f"{prefix}/namespaces/{self.namespace}/endpointslices"):
            piece = event["object"]
            before = set().union(*slices.values())
            slices[piece["metadata"]["name"]] = set() if event["type"] == "DELETED" else {
                f"{address}:{PORT}" for endpoint in piece.get("endpoints") or []
                if (endpoint.get("conditions") or {}).get("ready") is not False
                for address in endpoint.get("addresses") or []}
            self._note("endpoint", before, set().union(*slices.values()))

    def _poll_pool(self) -> None:
        enabled: set[str] = set()
        while not self.stopped.is_set():
            now = {name for name, state in self.haproxy.members("be_web").items() if state == "enabled"}
            self._note("pool", enabled, now)
            enabled = now
            time.sleep(POLL_SECONDS)

    def lags(self, since: str, until: str = "pool") -> list[float]:
        with self.lock:
            return [self.seen[until][key] - at for key, at in self.seen[since].items() if key in self.seen[until]]


def summary(name: str, lags: list[float]) -> str:
    if len(lags) < 2:
        return f"{name}: {len(lags)} changes, too few for percentiles"
    p99 = statistics.quantiles(lags, n=100, method="inclusive")[98]
    return (f"{name}: p50 {statistics.median(lags):.3f} s, p99 {p99:.3f} s, max {max(lags):.3f} s "
            f"over {len(lags)} changes")


def slice_retries(log: Path) -> str:
    """Why pod -> endpoint has a tail here: Kubernetes 1.20's EndpointSlice controller writes from its cache;
    a write that meets a newer slice fails and is retried after a 1 s backoff."""
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if "Error syncing endpoint slices" in line and "bench-lb/" in line]
    conflicts = sum("the object has been modified" in line for line in lines)
    return (f"the EndpointSlice controller retried {len(lines)} syncs of the bench's Service after a failed write "
            f"({conflicts} of them conflicts with its own earlier write); each retry waits a 1 s backoff")


def under_load(project, haproxy, name: str, action: tuple[str, ...]) -> None:
    results = {}
    loop = threading.Thread(target=lambda: results.update(
        load_loop("127.0.0.1", haproxy.frontend_port, REQUESTS, RATE)))
    loop.start()
    time.sleep(1)
    ran = project.run(*action)
    loop.join(REQUESTS / RATE + 60)
    print(f"{name}: exit {ran.code}; requests sent {results['sent']}, failed {results['failed']} "
          f"in {results['seconds']} s (goal: 0 failed)", flush=True)


def scale_cycles(api, namespace: str, haproxy, cycles: int) -> None:
    started = time.monotonic()
    for _ in range(cycles):
        for count in (HIGH, LOW):
            scale(api, namespace, count)
            wait_pool(haproxy, wait_ready(api, namespace, count, timeout=120), timeout=30)
    print(f"scale cycles: {cycles} x {LOW} -> {HIGH} -> {LOW} replicas in {time.monotonic() - started:.0f} s",
          flush=True)


def main(cycles: int) -> int:
    import os

    from kubernetes import client, config

    with private_cluster() as state, tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        os.environ["KUBECONFIG"] = str(state.kubeconfig)
        api_config = client.Configuration()
        config.load_kube_config(config_file=str(state.kubeconfig), client_configuration=api_config)
        api = client.ApiClient(api_config)
        if not node_is_real(api):
            print("bench/lb.py needs the real node: this cluster's node is simulated", file=sys.stderr)
            return 2
        namespace = "bench-lb"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
        haproxy = HAProxyProcess(folder)
        haproxy.start()
        from skycap.localcluster.images import publish_image

        project = make_project(folder, make_repo(folder / "repo"), state, namespace,
                               lambda repo, tag, labels=None: publish_image(state.registry, repo, tag, labels))
        project.edit_template("web.yaml.j2", "readinessProbe:", PRESTOP)
        project.edit_stage(lambda s: (s["services"]["web"].update(replicas=LOW),
                                      s.update(load_balancer=lb_block("haproxy", haproxy, drain_seconds=5))))
        sync, clock = None, ChangeClock(api, namespace, haproxy)
        try:
            first = project.commit("first")
            assert project.run("deploy", "test", f"rev={first}").code == 0
            sync = LbSyncProcess(project.root)
            sync.wait_listening()
            wait_pool(haproxy, wait_ready(api, namespace, LOW))
            clock.start()
            time.sleep(2)  # the clock's watches list what is there; only what changes after counts
            clock.arm()
            second = project.commit("second")
            under_load(project, haproxy, "deploy", ("deploy", "test", f"rev={second}"))
            under_load(project, haproxy, "rollback", ("rollback", "test"))
            scale_cycles(api, namespace, haproxy, cycles)
            time.sleep(1)
        finally:
            clock.stop()
            if sync:
                sync.stop()
            haproxy.stop()
        print("member changes timed by the bench (machine shared with other sessions' tests):")
        print("  " + summary("pod -> endpoint (the cluster)", clock.lags("pod", "endpoint")))
        print("  " + summary("endpoint -> pool (lb-sync; goal p99 <= 1 s)", clock.lags("endpoint")))
        print("  " + summary("pod -> pool (end to end)", clock.lags("pod")))
        print("  " + summary("lb-sync's own log, endpoint change received -> pool changed",
                             change_latencies(sync.text()) if sync else []))
        print(slice_retries(state.path / "logs" / "controller-manager.log"))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else CYCLES))

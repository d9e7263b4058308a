"""The load balancer sync under load, on the real node: a bounded load (2,000 requests at 100/s) through a
real HAProxy on loopback to a service of 3 replicas while `skycap deploy` rolls it to a new revision, then
while `skycap rollback` rolls it back. Prints requests sent and failed, and the p50/p99 time from an
endpoint change to the pool change (from lb-sync's log). Goals: 0 failed; p99 <= 1 s.

Needs the real node (pods reachable from the host); on the node simulator it says so and exits 2."""

from __future__ import annotations

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
from tests.lbcluster import LbSyncProcess, wait_pool, wait_ready  # noqa: E402
from tests.lbkit import HAProxyProcess, change_latencies, lb_block, load_loop, node_is_real  # noqa: E402
from tests.test_lb_real_node import PRESTOP  # noqa: E402

REQUESTS, RATE = 2000, 100


def main() -> int:
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
        project.edit_stage(lambda s: (s["services"]["web"].update(replicas=3),
                                      s.update(load_balancer=lb_block("haproxy", haproxy, drain_seconds=5))))
        sync = None
        try:
            first = project.commit("first")
            assert project.run("deploy", "test", f"rev={first}").code == 0
            sync = LbSyncProcess(project.root)
            sync.wait_listening()
            wait_pool(haproxy, wait_ready(api, namespace, 3))
            second = project.commit("second")
            for name, action in (("deploy", ("deploy", "test", f"rev={second}")), ("rollback", ("rollback", "test"))):
                results = {}
                loop = threading.Thread(target=lambda: results.update(
                    load_loop("127.0.0.1", haproxy.frontend_port, REQUESTS, RATE)))
                loop.start()
                time.sleep(1)
                ran = project.run(*action)
                loop.join(REQUESTS / RATE + 60)
                print(f"{name}: exit {ran.code}; requests sent {results['sent']}, failed {results['failed']} "
                      f"in {results['seconds']} s (goal: 0 failed)")
        finally:
            if sync:
                sync.stop()
            haproxy.stop()
        lags = change_latencies(sync.text()) if sync else []
        if len(lags) >= 2:
            print(f"endpoint change -> pool change: p50 {statistics.median(lags):.3f} s, "
                  f"p99 {statistics.quantiles(lags, n=100)[98]:.3f} s over {len(lags)} changes (goal: p99 <= 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

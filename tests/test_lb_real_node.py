"""Traffic through a real HAProxy to real pods: these need the real node (pods reachable from the host in
198.19.0.0/24). On the node simulator (pods get addresses nothing answers on) they are skipped."""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from tests.deployproject import make_project
from tests.lbcluster import LbSyncProcess, scale, wait_pool, wait_ready
from tests.lbkit import allowed_target, change_latencies, haproxy, lb_block, load_loop, node_is_real  # noqa: F401

PRESTOP = """lifecycle:
            preStop:
              exec:
                command: ["sleep", "3"]
          readinessProbe:"""


@pytest.fixture
def real_node(core_api):
    if not node_is_real(core_api):
        pytest.skip("real_node: the cluster's node is simulated (no containerd://); pods carry no traffic")


@pytest.fixture
def web_project(real_node, tmp_path, hg_repo, local_cluster, namespace, publish, kubeconfig, haproxy):  # noqa: F811
    project = make_project(tmp_path, hg_repo, local_cluster, namespace, publish)
    # The pattern the README documents: readiness decides membership; preStop keeps a stopping pod
    # serving while lb-sync drains it (the endpoint leaves at once, the process a few seconds later).
    project.edit_template("web.yaml.j2", "readinessProbe:", PRESTOP)
    project.edit_stage(lambda s: (s["services"]["web"].update(replicas=3),
                                  s.update(load_balancer=lb_block("haproxy", haproxy, drain_seconds=5,
                                                                  resync_seconds=5))))
    return project


def test_http_reaches_the_pods_through_haproxy(web_project, haproxy, core_api, namespace):  # noqa: F811
    node = web_project.commit("first")
    assert web_project.run("deploy", "test", f"rev={node}").code == 0
    pods = wait_ready(core_api, namespace, 3)
    for member in pods:
        allowed_target(member.rpartition(":")[0])
    sync = LbSyncProcess(web_project.root)
    try:
        sync.wait_listening()
        wait_pool(haproxy, pods)
        result = load_loop("127.0.0.1", haproxy.frontend_port, count=60, rate=30)
        assert result["failed"] == 0, result
    finally:
        sync.stop()


def test_scaling_2_5_1_is_followed_within_a_second(web_project, haproxy, core_api, namespace):  # noqa: F811
    node = web_project.commit("first")
    web_project.edit_stage(lambda s: s["services"]["web"].update(replicas=2))
    assert web_project.run("deploy", "test", f"rev={node}").code == 0
    sync = LbSyncProcess(web_project.root)
    lags = []
    try:
        sync.wait_listening()
        wait_pool(haproxy, wait_ready(core_api, namespace, 2))
        for count in (5, 1):
            scale(core_api, namespace, count)
            want = wait_ready(core_api, namespace, count, timeout=90)
            lags.append(wait_pool(haproxy, want, timeout=3))   # generous bound; the goal is 1 s
    finally:
        sync.stop()
    print(f"pool followed the endpoints in {', '.join(f'{lag:.3f}' for lag in lags)} s after the pods said so")
    assert max(lags) <= 1.0, lags


def test_no_request_is_lost_in_a_deploy_and_a_rollback(web_project, haproxy, core_api, namespace):  # noqa: F811
    first = web_project.commit("first")
    assert web_project.run("deploy", "test", f"rev={first}").code == 0
    sync = LbSyncProcess(web_project.root)
    try:
        sync.wait_listening()
        wait_pool(haproxy, wait_ready(core_api, namespace, 3))
        second = web_project.commit("second")
        for action in (("deploy", "test", f"rev={second}"), ("rollback", "test")):
            results = {}
            loop = threading.Thread(target=lambda: results.update(
                load_loop("127.0.0.1", haproxy.frontend_port, count=2000, rate=100)))
            loop.start()
            time.sleep(1)
            ran = web_project.run(*action)
            loop.join(60)
            assert ran.code == 0, ran.stderr
            assert results["sent"] == 2000 and results["failed"] == 0, results
    finally:
        sync.stop()
    lags = change_latencies(sync.text())
    print(f"endpoint change -> pool change: p50 {statistics.median(lags):.3f} s, "
          f"p99 {statistics.quantiles(lags, n=100)[98]:.3f} s over {len(lags)} changes")

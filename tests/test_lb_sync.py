"""lb-sync against real Services and EndpointSlices in the test cluster, with the same tests for a real HAProxy
and for the iControl REST test server (no BIG-IP can run here)."""

from __future__ import annotations

import re
import secrets
import signal
import time

import pytest

from tests.deployproject import skycap
from tests.lbcluster import (LbSyncProcess, edit_lb, enabled, make_web, ready_members, scale, wait_pool, wait_ready,
                             write_project)
from tests.lbkit import balancer, f5, haproxy, lb_block, wait_for  # noqa: F401 - fixtures


@pytest.fixture
def web(core_api, namespace, publish, local_cluster):
    tag = secrets.token_hex(6)
    publish("skytap/web", tag)
    make_web(core_api, namespace, local_cluster.registry, tag, replicas=2)
    return wait_ready(core_api, namespace, 2)


@pytest.fixture
def project(tmp_path, local_cluster, namespace, kubeconfig, balancer):  # noqa: F811
    kind, fake = balancer
    return write_project(tmp_path / "project", local_cluster, namespace, lb_block(kind, fake))


@pytest.fixture
def f5_project(tmp_path, local_cluster, namespace, kubeconfig, f5):  # noqa: F811
    return write_project(tmp_path / "project", local_cluster, namespace, lb_block("f5", f5))


@pytest.fixture
def haproxy_project(tmp_path, local_cluster, namespace, kubeconfig, haproxy):  # noqa: F811
    return write_project(tmp_path / "project", local_cluster, namespace, lb_block("haproxy", haproxy))


def once(root, *extra):
    return skycap("--project", str(root), "lb-sync", "test", "--once", *extra)


def test_once_makes_the_pool_equal_to_the_ready_endpoints(project, balancer, web):  # noqa: F811
    kind, fake = balancer
    fake.add_member("be_web", "10.244.9.9:8080")                 # stale: no such endpoint
    keep = sorted(web)[0]
    fake.add_member("be_web", keep)                               # right already: adopted, not touched
    dry = once(project, "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "would drain 10.244.9.9:8080" in dry.stderr and f"would add {sorted(web)[1]}" in dry.stderr
    assert enabled(fake) == {keep, "10.244.9.9:8080"}             # the dry run changed nothing
    ran = once(project)
    assert ran.code == 0, ran.stderr
    assert f"added {sorted(web)[1]}" in ran.stderr and f"added {keep}" not in ran.stderr
    assert "draining 10.244.9.9:8080" in ran.stderr and "every pool is in step" in ran.stderr
    assert fake.members("be_web") == {**{m: "enabled" for m in web}, "10.244.9.9:8080": "draining"}
    ran = once(project)                                           # the next run (cron) removes the drained one
    assert ran.code == 0, ran.stderr
    assert fake.members("be_web") == {m: "enabled" for m in web}
    assert "removed 10.244.9.9:8080" in ran.stderr


def test_running_follows_scaling_and_reports_metrics(project, balancer, web, core_api, namespace):  # noqa: F811
    kind, fake = balancer
    sync = LbSyncProcess(project)
    try:
        sync.wait_listening()
        wait_pool(fake, web)
        for count in (4, 1, 3):
            scale(core_api, namespace, count)
            want = wait_ready(core_api, namespace, count)
            wait_pool(fake, want, timeout=5)
        wait_for(lambda: fake.members("be_web").keys() == want, 5, "drained members removed")
        code, health = sync.get("/healthz")
        assert code == 200 and health.startswith("ok"), health
        code, metrics = sync.get("/metrics")
        assert 'skycap_lb_pool_members{pool="be_web",state="enabled"} 3' in metrics
        assert 'skycap_lb_pool_in_step{pool="be_web"} 1' in metrics
        assert 'skycap_lb_changes_total{pool="be_web",action="add"}' in metrics
        assert 'skycap_lb_changes_total{pool="be_web",action="remove"}' in metrics
        assert "skycap_lb_sync_latency_seconds_count" in metrics
    finally:
        assert sync.stop() == 0
    text = sync.text()
    assert "(service web: ready endpoint" in text and "(service web: no longer a ready endpoint" in text
    assert re.search(r"added \S+ \(service web: ready endpoint; [0-9.]+ s after the endpoint change\)", text)


def test_a_pool_missing_on_the_balancer_is_named(project, balancer, web):  # noqa: F811
    kind, fake = balancer
    edit_lb(project, pools={"web": {"pool": "be_missing", "port": "http"}})
    ran = once(project)
    assert ran.code == 2
    assert "pool 'be_missing' does not exist on the balancer" in ran.stderr
    assert "create_pools: true" in ran.stderr
    edit_lb(project, create_pools=True)
    ran = once(project)
    if kind == "haproxy":
        assert ran.code == 2 and "declare it in haproxy.cfg" in ran.stderr
    else:
        assert ran.code == 0, ran.stderr
        assert "pool be_missing: created" in ran.stderr
        assert enabled(fake, "be_missing") == web


def test_a_service_without_a_node_port_in_nodeport_mode(project, balancer, web):  # noqa: F811
    edit_lb(project, members="nodeport")
    ran = once(project)
    assert ran.code == 2
    assert "Service web has no node port for port http (80) (it is of type ClusterIP)" in ran.stderr
    assert "type: NodePort" in ran.stderr


def test_nodeport_mode_members_are_the_ready_nodes(project, balancer, core_api, namespace, publish,  # noqa: F811
                                                   local_cluster):
    from kubernetes import client

    kind, fake = balancer
    tag = secrets.token_hex(6)
    publish("skytap/web", tag)
    make_web(core_api, namespace, local_cluster.registry, tag, replicas=1, service_type="NodePort", name="front")
    wait_ready(core_api, namespace, 1, name="front")
    service = client.CoreV1Api(core_api).read_namespaced_service("front", namespace)
    node_port = service.spec.ports[0].node_port
    nodes = {a.address for n in client.CoreV1Api(core_api).list_node().items for a in n.status.addresses
             if a.type == "InternalIP"}
    edit_lb(project, members="nodeport", pools={"front": {"pool": "be_web", "port": "http"}})
    ran = once(project)
    assert ran.code == 0, ran.stderr
    assert enabled(fake) == {f"{address}:{node_port}" for address in nodes}


def test_the_balancer_down_at_start_then_back(project, balancer, web):  # noqa: F811
    kind, fake = balancer
    fake.stop()
    ran = once(project)
    assert ran.code == 1 and "cannot reach" in ran.stderr
    sync = LbSyncProcess(project)
    try:
        sync.wait_listening()
        wait_for(lambda: "retrying with backoff" in sync.text(), 10, "the error logged")
        code, health = sync.get("/healthz")
        assert code == 503 and "cannot reach" in health
        fake.start()
        wait_pool(fake, web, timeout=10)
        wait_for(lambda: sync.get("/healthz")[0] == 200, 5, "healthy again")
    finally:
        sync.stop()
    assert "pool be_web: working again" in sync.text()


def test_the_balancer_down_mid_run_removes_nothing_on_its_account(project, balancer, web, core_api,  # noqa: F811
                                                                  namespace):
    kind, fake = balancer
    sync = LbSyncProcess(project)
    try:
        sync.wait_listening()
        wait_pool(fake, web)
        fake.stop()
        time.sleep(1.5)  # resyncs fail meanwhile
        fake.start()
        if kind == "haproxy":  # a restarted HAProxy has lost its dynamic servers: they come back
            wait_pool(fake, web, timeout=5)
        else:
            assert enabled(fake) == web
            time.sleep(1.5)
            assert not [r for r in fake.state.requests if r[0] in ("DELETE", "PATCH")]
        scale(core_api, namespace, 3)
        want = wait_ready(core_api, namespace, 3)
        wait_pool(fake, want)
    finally:
        sync.stop()
    assert "no member is removed on this account" in sync.text()


def test_a_wrong_password(f5_project, f5, web, monkeypatch):  # noqa: F811
    project = f5_project
    monkeypatch.setenv("F5TEST_PASSWORD", "not-the-password")
    ran = once(project)
    assert ran.code == 2
    assert "refused the credentials of user 'admin'" in ran.stderr and "not-the-password" not in ran.stderr
    sync = LbSyncProcess(project)
    try:
        sync.wait_listening()
        wait_for(lambda: len([r for r in f5.state.requests if r[1] == "/mgmt/shared/authn/login"]) >= 3, 10,
                 "login retried")
        assert sync.get("/healthz")[0] == 503
        f5.state.password = "not-the-password"   # the device's password is changed to what lb-sync has
        wait_pool(f5, web, timeout=35)
    finally:
        sync.stop()
    logins = [i for i, r in enumerate(f5.state.requests) if r[1] == "/mgmt/shared/authn/login"]
    assert "not-the-password" not in sync.text()
    assert len(logins) < 40, "retried with backoff, not in a tight loop"


def test_restarted_lb_sync_changes_nothing_that_is_right(project, balancer, web, core_api, namespace):  # noqa: F811
    kind, fake = balancer
    first = LbSyncProcess(project)
    first.wait_listening()
    wait_pool(fake, web)
    first.stop(signal.SIGKILL)
    second = LbSyncProcess(project)
    try:
        second.wait_listening()
        time.sleep(1.5)  # a resync or two
        assert enabled(fake) == web
        code, metrics = second.get("/metrics")
        assert "skycap_lb_changes_total{" not in metrics, metrics
        assert 'skycap_lb_pool_in_step{pool="be_web"} 1' in metrics
    finally:
        second.stop()


def test_a_restarted_haproxy_gets_its_members_back(haproxy_project, haproxy, web):  # noqa: F811
    project = haproxy_project
    sync = LbSyncProcess(project)
    try:
        sync.wait_listening()
        wait_pool(haproxy, web)
        haproxy.stop()
        haproxy.start()
        assert enabled(haproxy) == set()
        wait_pool(haproxy, web, timeout=5)   # resync_seconds is 1
    finally:
        sync.stop()


def test_status_shows_the_pools(project, balancer, web):  # noqa: F811
    kind, fake = balancer
    ran = skycap("--project", str(project), "status", "test")
    assert ran.code == 0, ran.stderr
    assert "be_web" in ran.stdout and "NO: missing" in ran.stdout
    assert once(project).code == 0
    ran = skycap("--project", str(project), "status", "test", "--output", "json")
    import json

    pools = json.loads(ran.stdout)["load_balancer"]
    assert pools == [{"service": "web", "pool": "be_web", "members": {m: "enabled" for m in sorted(web)},
                      "ready_endpoints": sorted(web), "in_step": True}]


def test_ready_members_helper_sees_pods(core_api, namespace, web):
    assert ready_members(core_api, namespace) == web


def test_the_api_server_unreachable_empties_no_pool(tmp_path, local_cluster, namespace, core_api, haproxy,  # noqa: F811
                                                    web):
    """lb-sync reaches the API server through a forwarder that the test cuts: while it is cut, the pods
    go away, HAProxy restarts and the grace period passes; no pool is emptied, and the members lb-sync
    knew come back. Once the API answers again, the pool follows the endpoints."""
    import json as jsonlib

    from tests.lbkit import Forwarder

    forwarder = Forwarder(local_cluster.ports["apiserver"])
    forwarder.start()
    config = jsonlib.loads(local_cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{forwarder.port}"
    kubeconfig = tmp_path / "kubeconfig-via-forwarder"
    kubeconfig.write_text(jsonlib.dumps(config))
    root = write_project(tmp_path / "project", local_cluster, namespace, lb_block("haproxy", haproxy),
                         kubeconfig=str(kubeconfig))
    sync = LbSyncProcess(root, env={"SKYCAP_API_TIMEOUT": "2"})
    try:
        sync.wait_listening()
        wait_pool(haproxy, web)
        forwarder.cut()
        wait_for(lambda: "the Kubernetes API is unreachable" in sync.text(), 10, "the outage noticed")
        scale(core_api, namespace, 0)          # lb-sync cannot see this
        wait_ready(core_api, namespace, 0)
        haproxy.stop()
        haproxy.start()                          # and HAProxy forgets its servers meanwhile
        wait_pool(haproxy, web, timeout=5)       # re-added from what lb-sync last knew
        time.sleep(3)                            # past empty_grace_seconds (2)
        assert enabled(haproxy) == web
        code, health = sync.get("/healthz")
        assert code == 503 and "unreachable" in health
        forwarder.restore()
        wait_for(lambda: sync.get("/healthz")[0] == 200, 20, "healthy again")
        wait_for(lambda: "emptying the pool" in sync.text(), 10, "the real zero endpoints acted on, loudly")
        wait_for(lambda: haproxy.members("be_web") == {}, 10, "the pool emptied after the grace period")
    finally:
        sync.stop()
        forwarder.cut()


def test_lb_sync_killed_and_restarted_in_a_rolling_update(project, balancer, web, core_api, namespace):  # noqa: F811
    """Killed mid-rollout and started again: the pool is never empty, and ends equal to the ready pods."""
    import threading

    from kubernetes import client

    kind, fake = balancer
    first = LbSyncProcess(project)
    first.wait_listening()
    wait_pool(fake, web)
    smallest, watching = [len(web)], threading.Event()

    def watch_pool():
        while not watching.is_set():
            smallest[0] = min(smallest[0], len(enabled(fake)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_pool)
    watcher.start()
    second = None
    try:
        client.AppsV1Api(core_api).patch_namespaced_deployment("web", namespace, {"spec": {"template": {
            "metadata": {"annotations": {"rolled": "yes"}}}}})
        time.sleep(0.3)
        first.stop(signal.SIGKILL)
        second = LbSyncProcess(project)
        second.wait_listening()
        wait_for(lambda: ready_members(core_api, namespace) and web.isdisjoint(ready_members(core_api, namespace))
                 and len(ready_members(core_api, namespace)) == 2, 60, "the rollout done")
        wait_pool(fake, ready_members(core_api, namespace), timeout=10)
    finally:
        watching.set()
        watcher.join()
        if second:
            second.stop()
    assert smallest[0] >= 1, "the pool was never empty"

"""The API server really restarted under a running lb-sync: its process stopped, then started again, while
lb-sync keeps a real HAProxy's pool. No pool is emptied meanwhile, and lb-sync catches up afterwards.

Runs on a cluster of its own (it stops that cluster's apiserver), with simulated nodes: what is restarted
is the control plane, and HAProxy needs no traffic to show its members."""

from __future__ import annotations

import os
import secrets
import threading
import time

import pytest

from skycap.localcluster import cluster
from tests.lbcluster import (LbSyncProcess, enabled, make_web, ready_members, scale, wait_pool, wait_ready,
                             write_project)
from tests.lbkit import haproxy, lb_block, wait_for  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def restart_cluster(tmp_path_factory):
    from tests.fixtures.cluster import BINARIES

    directory = tmp_path_factory.mktemp("lb-restart-cluster")
    names = list(cluster.DEFAULT_PORTS)
    os.environ.setdefault("SKYCAP_KUBE_BIN_DIR", str(BINARIES))
    try:
        yield cluster.up(ports=dict(zip(names, cluster.free_ports(len(names)))), directory=directory,
                         nodes="simulated")
    finally:
        cluster.down(directory=directory)


@pytest.fixture
def restart_api(restart_cluster):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(restart_cluster.kubeconfig))
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "lb-restart"}})
    yield api, "lb-restart"
    client.CoreV1Api(api).delete_namespace("lb-restart")


class PoolLow:
    """The fewest enabled members the pool had, sampled every 20 ms while it runs."""

    def __init__(self, balancer):
        self.balancer, self.lowest, self.done = balancer, None, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.is_set():
            count = len(enabled(self.balancer))
            self.lowest = count if self.lowest is None else min(self.lowest, count)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def test_the_api_server_restarted_empties_no_pool(tmp_path, restart_cluster, restart_api, haproxy):  # noqa: F811
    """While the apiserver is down the pool keeps every member, past the grace period; once it is back,
    lb-sync follows the endpoints again. A long outage (a slow start on a loaded machine) lets the node
    controller mark the nodes NotReady when it returns, whose pods then leave the endpoints for a while:
    a real change, which lb-sync follows, so afterwards only the convergence is asserted."""
    from skycap.localcluster.images import publish_image

    api, namespace = restart_api
    tag = secrets.token_hex(6)
    publish_image(restart_cluster.registry, "skytap/web", tag)
    make_web(api, namespace, restart_cluster.registry, tag, replicas=2)
    web = wait_ready(api, namespace, 2)
    root = write_project(tmp_path / "project", restart_cluster, namespace, lb_block("haproxy", haproxy),
                         kubeconfig=str(restart_cluster.kubeconfig))
    sync = LbSyncProcess(root, env={"SKYCAP_API_TIMEOUT": "2"})
    try:
        sync.wait_listening()
        wait_pool(haproxy, web)
        with PoolLow(haproxy) as outage:
            cluster.stop_part(restart_cluster, "apiserver")
            wait_for(lambda: "the Kubernetes API is unreachable" in sync.text(), 20, "the outage noticed")
            time.sleep(3)                       # past empty_grace_seconds (2), with resyncs (1 s) meanwhile
            code, health = sync.get("/healthz")
            assert code == 503 and "unreachable" in health, health
            cluster.start_part(restart_cluster, "apiserver", timeout=180)  # slow on a loaded machine
            wait_for(lambda: "the Kubernetes API answers again" in sync.text(), 30, "the watches back")
        assert outage.lowest == len(web), f"the pool went down to {outage.lowest} members in the outage"
        scale(api, namespace, 3)                # a change after the restart is followed
        wait_for(lambda: (lambda ready: len(ready) == 3 and enabled(haproxy) == ready)(ready_members(api, namespace)),
                 120, "the pool equal to 3 ready pods")
    finally:
        sync.stop()
    text = sync.text()
    outage_log = text[text.index("the Kubernetes API is unreachable"):text.index("the Kubernetes API answers again")]
    assert ": draining " not in outage_log and ": removed " not in outage_log, outage_log

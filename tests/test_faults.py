"""The apiserver stopped and restarted in the middle of a rollout: skycap retries, then reports
a clear result. Runs on a cluster of its own, since it kills that cluster's apiserver."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from skycap.localcluster import cluster
from tests.deployproject import make_project, start_deploy

# Its module-wide fixture is costly: under pytest-xdist these tests share one worker.
pytestmark = pytest.mark.xdist_group("test_faults")


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    from tests.fixtures.cluster import BINARIES

    directory = tmp_path_factory.mktemp("fault-cluster")
    names = list(cluster.DEFAULT_PORTS)
    os.environ.setdefault("SKYCAP_KUBE_BIN_DIR", str(BINARIES))
    state = cluster.up(ports=dict(zip(names, cluster.free_ports(len(names)))), directory=directory)
    yield state
    cluster.down(directory=directory)


@pytest.fixture
def own_namespace(own_cluster):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(own_cluster.kubeconfig))
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "faults"}})
    return "faults"


def test_apiserver_restart_mid_rollout_is_survived(tmp_path, hg_repo, own_cluster, own_namespace, monkeypatch):
    from skycap.localcluster.images import publish_image

    monkeypatch.setenv("KUBECONFIG", str(own_cluster.kubeconfig))
    project = make_project(tmp_path, hg_repo, own_cluster, own_namespace,
                           lambda repo, tag, labels=None: publish_image(own_cluster.registry, repo, tag, labels))
    # After the restart, kubelet's ConfigMap watch takes a while to come back ("failed to sync configmap
    # cache" for a pod meanwhile): the test is about surviving the restart, not about its speed.
    project.edit_stage(lambda data: data.update(rollout_timeout=150, vars={"progress_deadline": 120}))
    node = project.commit("slow to start", labels={"skycap.sim/behaviour": "ready-after=15"})
    proc, seen = start_deploy(project, own_cluster.kubeconfig, node)
    time.sleep(1)
    os.kill(own_cluster.pids["apiserver"], signal.SIGKILL)
    time.sleep(3)
    cluster.up(directory=own_cluster.path)  # starts what is not running: the apiserver
    rest = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert code == 0, seen + rest
    assert "release 1" in rest
    ran = project.run("history", "test", "--output", "json")
    assert [(r["number"], r["status"]) for r in json.loads(ran.stdout)["releases"]] == [(1, "deployed")]

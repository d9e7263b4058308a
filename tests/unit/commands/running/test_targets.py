"""skycap.commands.running.targets, its pure parts: the label selector a service's pods are found by, the short
names they are shown by, and which service a name means."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skycap.commands.running.targets import describe_pod, find_service, is_ready, selector, short_name, source_name
from skycap.errors import BadInput

STAGE = SimpleNamespace(name="staging", services={"web": "k8s-web", "api": "k8s-api"}, vm={"legacy": "vm"})


def pod(name: str, template_hash: str | None = None, containers=("app",), **status) -> dict:
    labels = {"pod-template-hash": template_hash} if template_hash else {}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": c} for c in containers]}, "status": status}


def test_pods_are_selected_by_stage_and_service_labels():
    assert selector(STAGE, "web") == "skycap.io/stage=staging,skycap.io/service=web"


@pytest.mark.parametrize("name, template_hash, short", [
    ("web-5d8f7c9b4-x2k9p", "5d8f7c9b4", "x2k9p"),
    ("web-0", None, "web-0"),  # a StatefulSet's ordinal alone would say nothing
    ("web-agent-abcde", None, "agent-abcde"),
    ("other-abcde", None, "other-abcde"),
    ("web-", None, "web-"),
])
def test_short_names(name, template_hash, short):
    assert short_name(pod(name, template_hash), "web") == short


def test_the_container_is_named_only_when_the_pod_has_several():
    assert source_name(pod("web-1a2b3-x", "1a2b3"), "web", "app") == "x"
    assert source_name(pod("web-1a2b3-x", "1a2b3", containers=("app", "proxy")), "web", "proxy") == "x/proxy"


def test_a_service_of_the_cluster_or_of_the_vms():
    assert find_service(STAGE, "web").kubernetes == "k8s-web"
    assert find_service(STAGE, "legacy").vm == "vm"
    with pytest.raises(BadInput) as info:
        find_service(STAGE, "db")
    assert info.value.message == "stage staging has no service 'db'"
    assert info.value.hint == "its services: api, web, legacy (vm)"


def test_describe_and_readiness():
    waiting = pod("web-h-x", "h", phase="Pending", containerStatuses=[
        {"state": {"running": {}}}, {"state": {"waiting": {"reason": "ImagePullBackOff"}}}])
    assert describe_pod(waiting, "web") == "x Pending: ImagePullBackOff"
    leaving = pod("web-h-y", "h", phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    assert is_ready(leaving)
    leaving["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    assert describe_pod(leaving, "web") == "y Terminating" and not is_ready(leaving)

"""skycap.cluster.kinds.daemon_set: the current generation's pods only; no node, nothing to wait for."""

from __future__ import annotations

from tests.unit.cluster.kinds.objects import check, daemon_set, pod


def test_a_daemon_set_fails_on_its_current_generations_pods_only():
    ds = daemon_set()
    old = pod("agent-a", ds, ready=False, waiting="CrashLoopBackOff", labels={"pod-template-generation": "1"})
    assert check(ds, old).reason == "1 of 2 updated pods available"
    new = pod("agent-a", ds, ready=False, waiting="CrashLoopBackOff", labels={"pod-template-generation": "2"})
    status = check(ds, new)
    assert (status.state, status.pods) == ("failed", ["agent-a"])


def test_a_daemon_set_on_no_node_has_nothing_to_wait_for():
    status = check(daemon_set(desiredNumberScheduled=0, updatedNumberScheduled=0, numberAvailable=0))
    assert (status.state, status.reason) == ("succeeded", "0 pods available")

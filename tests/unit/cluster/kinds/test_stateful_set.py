"""skycap.cluster.kinds.stateful_set: OnDelete, the controller's first look, old revisions ignored."""

from __future__ import annotations

from tests.unit.cluster.kinds.objects import check, pod, stateful_set


def test_on_delete_succeeds_once_the_pods_are_ready_whatever_their_revision():
    status = check(stateful_set({"type": "OnDelete"}))
    assert (status.state, status.reason) == ("succeeded", "2 pods ready (OnDelete: pods update when deleted)")


def test_a_stateful_set_never_observed_waits_even_at_generation_zero():
    sts = stateful_set(observedGeneration=0)
    sts["metadata"]["generation"] = 0
    assert check(sts).reason == "waiting for the statefulset controller to see the new spec"


def test_a_doomed_pod_of_the_old_revision_does_not_fail_a_stateful_set():
    sts = stateful_set(readyReplicas=1)
    old = pod("db-1", sts, ready=False, waiting="CrashLoopBackOff", labels={"controller-revision-hash": "r1"})
    assert check(sts, old).state == "waiting"
    new = pod("db-1", sts, ready=False, waiting="CrashLoopBackOff", labels={"controller-revision-hash": "r2"})
    assert check(sts, new).state == "failed"

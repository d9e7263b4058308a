"""skycap.cluster.kinds.deployment: a rollout through the new ReplicaSet; old revisions ignored."""

from __future__ import annotations

from skycap.cluster.kinds import deployment as deployment_kind
from skycap.cluster.rollout_rules import View
from tests.unit.cluster.kinds.objects import check, deployment, pod, replica_set


def test_a_deployment_without_replicas_says_one_is_wanted():
    dep = deployment(replicas=0, updatedReplicas=0, availableReplicas=0)
    del dep["spec"]["replicas"]
    status = check(dep)
    assert (status.state, status.desired, status.reason) == ("waiting", 1, "0 of 1 new replicas updated")


def test_while_old_pods_remain_only_the_new_replica_sets_available_pods_count():
    dep = deployment(replicas=3, updatedReplicas=2, availableReplicas=3)
    old, new = replica_set(dep, "1", available=1), replica_set(dep, "2", available=2)
    status = check(dep, old, new)
    assert (status.state, status.ready, status.reason) == ("waiting", 2, "1 old replica pending termination")


def test_the_newest_replica_set_is_the_one_of_the_deployments_revision():
    dep = deployment(revision="3")
    view = View.of(dep, replica_set(dep, "1"), replica_set(dep, "2"))
    assert deployment_kind.newest_replica_set(dep, view) is None  # revision 3's is not made yet
    newest = replica_set(dep, "3")
    view.set("ReplicaSet", newest)
    assert deployment_kind.newest_replica_set(dep, view) is newest


def test_one_doomed_pod_of_two_fails_the_deployment():
    """Its siblings run the same image and configuration: waiting for them only delays the verdict."""
    dep = deployment(updatedReplicas=2, availableReplicas=1)
    new = replica_set(dep, "2")
    good = pod("web-a", new)
    bad = pod("web-b", new, ready=False, waiting="CrashLoopBackOff")
    verdict = check(dep, new, good, bad)
    assert verdict.state == "failed" and verdict.pods == ["web-b"]
    assert check(dep, new, good, pod("web-b", new, ready=False)).state == "waiting"  # not ready yet is not doomed


def test_a_terminating_pod_says_nothing_about_the_new_revision():
    dep = deployment()
    new = replica_set(dep, "2", available=2)
    leaving = pod("web-x", new, ready=False, waiting="CrashLoopBackOff")
    leaving["metadata"]["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    assert check(dep, new, leaving).state == "succeeded"

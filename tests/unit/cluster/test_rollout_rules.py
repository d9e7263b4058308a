"""skycap.cluster.rollout_rules: what the kinds' rules share: a pod's problem in words, summaries, the
objects whose events matter, and whether the controller has seen the latest spec.

tests/test_rollout.py holds the first cases (kubectl rollout status' own); these are the edges."""

from __future__ import annotations

from datetime import timedelta

from skycap.cluster import rollout_rules as rules
from tests.unit.cluster.kinds.objects import NOW, deployment, obj, pod, replica_set, service


def test_with_several_containers_the_problem_names_the_container_and_its_image():
    p = pod("p", ready=False, containers=("init", "app"), waiting="ErrImagePull", message="pull access denied")
    assert rules.pod_problem(p, NOW) == "container app cannot pull image reg/app:1 (not found)"


def test_a_crash_loop_says_how_the_last_instance_ended():
    status = {"name": "app", "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
              "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    assert rules.container_problem(status, "img", 0) == "CrashLoopBackOff (restarted 1 time; last exit 137, OOMKilled)"
    status["lastState"]["terminated"] = {"exitCode": 3}
    assert rules.last_exit(status) == "; last exit 3, no reason given"


def test_a_pull_error_that_may_clear_up_gets_its_grace_from_the_pods_creation():
    p = pod("p", ready=False, waiting="ErrImagePull", message="i/o timeout")
    assert rules.pod_problem(p, NOW) == ""
    grace_over = NOW + timedelta(seconds=rules.PULL_GRACE_SECONDS - 5)  # the pod is 5 s old at NOW
    assert rules.pod_problem(p, grace_over).startswith("cannot pull image reg/app:1 (ErrImagePull 60 s after")


def test_summaries():
    assert rules.summarize({"a": "x", "b": "x"}, 3, "new pods") == "2 of 3 new pods x"
    assert rules.summarize({"a": "x", "b": "y", "c": "y"}, 3, "pods") == "pod a x (and 2 other pods failing)"
    assert rules.summarize({"a": "x"}, 3, "pods") == "pod a x"


def test_related_names_follow_the_owner_references_down():
    dep = deployment()
    new = replica_set(dep, "2")
    mine, stranger = pod("web-a", new), pod("other", obj("ReplicaSet", "else"))
    view = rules.View.of(dep, new, mine, stranger, service())
    assert rules.related_names("Deployment", "web", view) == {("Deployment", "web"), ("ReplicaSet", "web-r2"),
                                                              ("Pod", "web-a")}
    assert rules.related_names("Service", "web", view) == {("Service", "web"), ("Endpoints", "web")}
    assert rules.related_names("Deployment", "gone", view) == {("Deployment", "gone")}


def test_observed_and_controller():
    dep = deployment(observedGeneration=1)
    dep["metadata"]["generation"] = 2
    assert not rules.observed(dep)
    owned = obj("Pod", "p", dep)
    owned["metadata"]["ownerReferences"].insert(0, {"uid": "not-the-controller"})
    assert rules.controller_uid(owned) == dep["metadata"]["uid"]
    assert rules.controller_uid(obj("Pod", "orphan")) is None

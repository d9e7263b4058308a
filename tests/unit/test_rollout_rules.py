"""skycap.cluster.rollout_rules: what a status means for each kind, on plain dicts and a fixed clock.

tests/test_rollout.py holds the first cases (kubectl rollout status' own); these are the edges: old
revisions and generations ignored, OnDelete, Jobs whose pods cannot start, several containers, and
which objects' changes a target watches. Pods that should count as ready carry a readiness probe."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from skycap.cluster import rollout_rules as rules
from skycap.cluster.labels import DEPLOYMENT_REVISION

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
PROBE = {"httpGet": {"path": "/", "port": 80}}


def obj(kind: str, name: str, owner: dict | None = None, **metadata) -> dict:
    meta = {"name": name, "uid": f"uid-{kind}-{name}", "generation": 1,
            "creationTimestamp": (NOW - timedelta(seconds=5)).isoformat().replace("+00:00", "Z"), **metadata}
    if owner:
        meta["ownerReferences"] = [{"uid": owner["metadata"]["uid"], "controller": True}]
    return {"kind": kind, "metadata": meta}


def pod(name: str, owner: dict | None = None, *, ready=True, phase="Running", waiting=None, message="",
        containers=("app",), labels=None, **status) -> dict:
    spec = {"containers": [{"name": c, "image": f"reg/{c}:1", "readinessProbe": PROBE} for c in containers]}
    states = [{"name": c, "restartCount": 0, "state": {"waiting": {"reason": waiting, "message": message}}
               if waiting and c == containers[-1] else {"running": {}}} for c in containers]
    return {**obj("Pod", name, owner, labels=labels or {}), "spec": spec,
            "status": {"phase": phase, "containerStatuses": states, **status,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def check(target: dict, *others: dict) -> rules.Status:
    view = rules.View.of(target, *others)
    return rules.evaluate(target["kind"], target["metadata"]["name"], view, NOW)


# ----- Deployment -----

def deployment(revision="2", **status) -> dict:
    counts = dict(observedGeneration=1, replicas=2, updatedReplicas=2, availableReplicas=2)
    return {**obj("Deployment", "web", annotations={DEPLOYMENT_REVISION: revision}), "spec": {"replicas": 2},
            "status": {**counts, **status}}


def replica_set(owner: dict, revision: str, available=0) -> dict:
    return {**obj("ReplicaSet", f"web-r{revision}", owner, annotations={DEPLOYMENT_REVISION: revision}),
            "status": {"availableReplicas": available}}


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
    view = rules.View.of(dep, replica_set(dep, "1"), replica_set(dep, "2"))
    assert rules.newest_replica_set(dep, view) is None  # revision 3's is not made yet
    newest = replica_set(dep, "3")
    view.set("ReplicaSet", newest)
    assert rules.newest_replica_set(dep, view) is newest


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


# ----- StatefulSet and DaemonSet -----

def stateful_set(strategy: dict | None = None, **status) -> dict:
    counts = dict(observedGeneration=1, readyReplicas=2, updatedReplicas=0, currentRevision="r1",
                  updateRevision="r2")
    return {**obj("StatefulSet", "db"), "spec": {"replicas": 2, "updateStrategy": strategy or {}},
            "status": {**counts, **status}}


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


def daemon_set(generation=2, **status) -> dict:
    counts = dict(observedGeneration=generation, desiredNumberScheduled=2, updatedNumberScheduled=2,
                  numberAvailable=1)
    return {**obj("DaemonSet", "agent", generation=generation), "status": {**counts, **status}}


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


# ----- Job and Pod -----

def job(*conditions, **status) -> dict:
    return {**obj("Job", "migrate"), "spec": {"completions": 3},
            "status": {"conditions": list(conditions), **status}}


def test_a_failed_job_names_its_failed_pods():
    failed = job({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"})
    pods = [pod("m-b", failed, phase="Failed", ready=False), pod("m-a", failed, phase="Failed", ready=False),
            pod("m-c", failed)]
    status = check(failed, *pods)
    assert (status.state, status.reason, status.pods) == ("failed", "BackoffLimitExceeded", ["m-a", "m-b"])


def test_a_job_whose_pods_cannot_start_fails_without_waiting_for_its_backoff():
    running = job(active=2)
    pods = [pod(f"m-{n}", running, ready=False, waiting="InvalidImageName") for n in "ab"]
    status = check(running, *pods)
    assert status.state == "failed"
    assert status.reason == "2 of 2 pods has an invalid image name reg/app:1"
    assert (status.desired, status.updated) == (3, 2)


def test_a_job_counts_its_completions():
    assert check(job(succeeded=1, active=1)).reason == "1 of 3 completions"
    assert check(job({"type": "Complete", "status": "True"}, succeeded=3)).reason == "complete (3 pods succeeded)"
    assert check(job({"type": "Complete", "status": "False"})).state == "waiting"


@pytest.mark.parametrize("kwargs, state, reason", [
    (dict(phase="Succeeded", ready=False), "succeeded", "completed"),
    (dict(), "succeeded", "ready"),
    (dict(ready=False, phase="Pending"), "waiting", "pod p Pending, not ready"),
    (dict(ready=False, phase=None), "waiting", "pod p Pending, not ready"),
    (dict(ready=False, waiting="ErrImagePull", message="manifest unknown"), "failed",
     "pod p cannot pull image reg/app:1 (not found)"),
])
def test_a_bare_pod(kwargs, state, reason):
    status = check(pod("p", **kwargs))
    assert (status.state, status.reason) == (state, reason)


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


# ----- Service -----

def service(**spec) -> dict:
    return {**obj("Service", "web"), "spec": {"selector": {"app": "web"}, **spec}}


def test_an_external_name_service_has_nothing_to_wait_for():
    assert check(service(type="ExternalName")).reason == "no selector: nothing to wait for"


def test_finished_pods_and_other_labels_do_not_keep_a_service_waiting():
    done = pod("web-job", phase="Succeeded", ready=False, labels={"app": "web"})
    other = pod("api-0", ready=False, labels={"app": "api"})
    assert check(service(), done, other).state == "succeeded"
    workload = {**obj("StatefulSet", "web"), "spec": {"replicas": 1,
                                                      "template": {"metadata": {"labels": {"app": "web", "x": "y"}}}}}
    assert check(service(), workload).reason == "no ready endpoints yet"


# ----- what a target watches -----

def test_watched_kinds_are_the_union_in_first_seen_order():
    assert rules.watched_kinds(["Job", "Deployment", "ConfigMap"]) == ["Job", "Pod", "Deployment", "ReplicaSet"]
    assert rules.watched_kinds([]) == []


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

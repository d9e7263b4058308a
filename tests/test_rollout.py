"""Rollout: the pure rules on plain dicts (fast), then real rollouts on the local control plane."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from skycap.cluster import kinds, rollout
from skycap.cluster import rollout_rules as rules
from skycap.cluster.kinds import deployment as deployment_kind
from skycap.cluster.kinds import pod as pod_kind
from skycap.cluster.labels import DEPLOYMENT_REVISION
from skycap.cluster.rollout import Outcome, RolloutResult, Target, failure_report, render_progress, wait_for_rollout

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


# ===== the rules, on plain dicts =====

def meta(name, kind, uid=None, owner=None, generation=1, **extra):
    metadata = {"name": name, "uid": uid or f"uid-{name}", "generation": generation,
                "creationTimestamp": (NOW - timedelta(seconds=5)).isoformat().replace("+00:00", "Z"), **extra}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner["kind"], "name": owner["metadata"]["name"],
                                        "uid": owner["metadata"]["uid"], "controller": True}]
    return {"kind": kind, "metadata": metadata}


def dep(replicas=2, generation=2, observed=2, updated=2, total=2, available=2, revision="2", conditions=()):
    return {**meta("web", "Deployment", generation=generation, annotations={DEPLOYMENT_REVISION: revision}),
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": list(conditions)}}


def rs(owner, revision, name=None, available=0):
    return {**meta(name or f"web-r{revision}", "ReplicaSet", owner=owner, annotations={DEPLOYMENT_REVISION: revision}),
            "status": {"availableReplicas": available}}


def pod(name, owner=None, waiting=None, message="", phase="Running", ready=False, restarts=0, image="reg/web:1",
        **status):
    container = {"name": "app", "image": image, "restartCount": restarts, "ready": ready,
                 "state": {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}}
    return {**meta(name, "Pod", owner=owner), "spec": {"containers": [{"name": "app", "image": image}]},
            "status": {"phase": phase, "containerStatuses": [container], **status,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def check(obj, *others):
    return kinds.of(obj["kind"]).rollout(obj, rules.View.of(obj, *others), NOW)


def test_the_view_knows_what_each_object_owns_as_it_changes():
    deployment = dep()
    old, new = rs(deployment, "1"), rs(deployment, "2")
    view = rules.View.of(deployment, old)
    assert view.owned_by("ReplicaSet", deployment) == [old]
    view.set("ReplicaSet", new)
    assert view.owned_by("ReplicaSet", deployment) == [old, new]
    view.drop("ReplicaSet", old["metadata"]["name"])
    assert view.owned_by("ReplicaSet", deployment) == [new]
    view.set("Pod", pod("web-a", owner=new))
    assert [p["metadata"]["name"] for p in view.owned_by("Pod", new)] == ["web-a"]
    view.replace("Pod", [pod("web-b", owner=new), pod("other", owner=old)])
    assert [p["metadata"]["name"] for p in view.owned_by("Pod", new)] == ["web-b"]
    assert view.owned_by("Pod", deployment) == []


@pytest.mark.parametrize("kwargs, state, reason", [
    (dict(observed=1), "waiting", "controller to see"),
    (dict(updated=1), "waiting", "1 of 2 new replicas updated"),
    (dict(total=3), "waiting", "1 old replica pending termination"),
    (dict(available=1), "waiting", "1 of 2 updated replicas available"),
    (dict(), "succeeded", "2 replicas available"),
    (dict(replicas=0, updated=0, total=0, available=0), "succeeded", ""),
    (dict(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded",
                       "message": 'ReplicaSet "web-r2" has timed out progressing.'}]),
     "failed", 'ProgressDeadlineExceeded: ReplicaSet "web-r2" has timed out progressing.'),
])
def test_deployment_rule_follows_kubectl_rollout_status(kwargs, state, reason):
    status = check(dep(**kwargs))
    assert (status.state, status.desired) == (state, kwargs.get("replicas", 2))
    assert reason in status.reason


def test_deployment_fails_as_soon_as_one_pod_of_the_newest_replica_set_is_doomed():
    d = dep(updated=2, available=0)
    old, new = rs(d, "1", available=2), rs(d, "2")
    pods = [pod("web-old", old, "CrashLoopBackOff", restarts=3),
            pod("web-a", new, "ImagePullBackOff", 'Back-off pulling image "reg/web:2"', image="reg/web:2"),
            pod("web-b", new, "ContainerCreating", image="reg/web:2")]
    assert check(d, old, new, *pods).state == "waiting"  # the old revision's troubles are not this rollout's
    pods[1] = pod("web-a", new, "ErrImagePull", 'failed to pull "reg/web:2": not found', image="reg/web:2")
    status = check(d, old, new, *pods)
    assert (status.state, status.reason) == ("failed", "pod web-a cannot pull image reg/web:2 (not found)")
    pods[2] = pod("web-b", new, "ErrImagePull", "manifest unknown", image="reg/web:2")
    status = check(d, old, new, *pods)
    assert status.state == "failed"
    assert status.reason == "2 of 2 new pods cannot pull image reg/web:2 (not found)"
    assert status.pods == ["web-a", "web-b"]


def test_doomed_pods_of_the_previous_revision_do_not_fail_a_new_rollout():
    d = dep(updated=0, available=0, revision="3")  # the controller has not made revision 3's ReplicaSet yet
    old = rs(d, "2")
    assert check(d, old, pod("web-a", old, "CrashLoopBackOff", restarts=4)).state == "waiting"


@pytest.mark.parametrize("kwargs, problem", [
    (dict(waiting="CrashLoopBackOff", restarts=3), "CrashLoopBackOff (restarted 3 times)"),
    (dict(waiting="CreateContainerConfigError", message='configmap "x" not found'),
     'CreateContainerConfigError: configmap "x" not found'),
    (dict(waiting="CreateContainerConfigError", message="failed to sync configmap cache: timed out"), ""),
    (dict(waiting="ImagePullBackOff", message="Back-off pulling image"), ""),
    (dict(waiting="InvalidImageName"), "has an invalid image name reg/web:1"),
    (dict(waiting="ContainerCannotRun", message="exec: no such file"), "ContainerCannotRun: exec: no such file"),
    (dict(phase="Failed", reason="Evicted"), ""),
    (dict(phase="Failed", reason="DeadlineExceeded"), "failed (DeadlineExceeded)"),
    (dict(ready=True), ""),
])
def test_pod_problems(kwargs, problem):
    assert rules.pod_problem(pod("p", **kwargs), NOW) == problem


def test_image_pull_back_off_dooms_a_pod_once_it_persists():
    stuck = pod("p", waiting="ImagePullBackOff", message="unauthorized")
    assert rules.pod_problem(stuck, NOW) == ""
    later = NOW + timedelta(seconds=rules.PULL_GRACE_SECONDS)
    assert rules.pod_problem(stuck, later) == ("cannot pull image reg/web:1 (ImagePullBackOff 65 s after the pod was "
                                               "created: unauthorized)")


def test_pods_without_a_readiness_probe_count_once_seen_ready_for_a_while():
    d = dep()
    new = rs(d, "2", available=2)
    pods = [pod("web-a", new, ready=True), pod("web-b", new, ready=True)]
    settle = timedelta(seconds=rules.PROBELESS_SETTLE_SECONDS)
    just_ready = deployment_kind.rollout(d, rules.View.of(d, new, *pods, seen=NOW - settle / 2), NOW)
    assert (just_ready.state, just_ready.pods) == ("waiting", ["web-a", "web-b"])
    assert just_ready.reason == (f"2 pods without a readiness probe: not yet seen Ready for {settle.seconds} s "
                                 "(plus the node's delay in reporting its start)")
    assert deployment_kind.rollout(d, rules.View.of(d, new, *pods, seen=NOW - settle), NOW).state == "succeeded"
    for probed in pods:
        probed["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/health", "port": 8080}}
    assert deployment_kind.rollout(d, rules.View.of(d, new, *pods, seen=NOW), NOW).state == "succeeded"


def test_a_node_that_reported_the_start_late_gets_as_much_longer_to_report_an_exit():
    settle = timedelta(seconds=rules.PROBELESS_SETTLE_SECONDS)
    late = pod("p", ready=True)
    late["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] = "2024-05-01T11:59:53Z"
    seen = NOW - settle  # 4 s after the container started (NOW is 12:00:00, seen at 11:59:57)
    assert rules.View.of(late, seen=seen).settle_seconds(late) == rules.PROBELESS_SETTLE_SECONDS + 4
    assert pod_kind.rollout(late, rules.View.of(late, seen=seen), NOW).state == "waiting"
    assert pod_kind.rollout(late, rules.View.of(late, seen=seen), NOW + timedelta(seconds=4)).state == "succeeded"
    very_late = rules.View.of(late, seen=NOW + timedelta(hours=1))
    assert very_late.settle_seconds(late) == rules.PROBELESS_SETTLE_SECONDS + rules.MAX_REPORT_LAG_SECONDS


def test_a_pod_that_stops_being_ready_starts_its_settling_again():
    view = rules.View.of(pod("p", ready=True), seen=NOW - timedelta(seconds=10))
    assert pod_kind.rollout(view.get("Pod", "p"), view, NOW).state == "succeeded"
    view.set("Pod", pod("p", ready=False, restarts=1), seen=NOW - timedelta(seconds=2))
    view.set("Pod", pod("p", ready=True, restarts=1), seen=NOW - timedelta(seconds=1))
    status = pod_kind.rollout(view.get("Pod", "p"), view, NOW)
    assert (status.state, status.reason) == ("waiting", "pod p without a readiness probe: not yet seen Ready for "
                                                        f"{rules.PROBELESS_SETTLE_SECONDS:g} s (plus the node's "
                                                        "delay in reporting its start)")
    view.replace("Pod", [], seen=NOW)
    assert view.ready_since == {}


def test_job_pods_may_fail_and_be_retried():
    assert rules.pod_problem(pod("p", phase="Failed", reason="Error"), NOW, job=True) == ""


def test_stateful_set_rule():
    def sts(partition=0, ready=3, updated=3, current="r2", observed=1):
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
        return {**meta("db", "StatefulSet"), "spec": {"replicas": 3, "updateStrategy": strategy},
                "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated,
                           "currentRevision": current, "updateRevision": "r2"}}
    assert check(sts(observed=0)).state == "waiting"
    assert check(sts(ready=2)).reason == "2 of 3 pods ready"
    assert check(sts(current="r1", updated=1)).state == "waiting"
    assert check(sts(partition=2, current="r1", updated=1)).state == "succeeded"
    assert check(sts(partition=1, current="r1", updated=1)).reason == "1 of 2 pods updated (partition 1)"
    assert check(sts()).state == "succeeded"
    s = sts(ready=0, updated=1)
    crashing = pod("db-0", s, "CrashLoopBackOff", restarts=1)
    crashing["metadata"]["labels"] = {"controller-revision-hash": "r2"}
    assert check(s, crashing).reason == "pod db-0 CrashLoopBackOff (restarted 1 time)"


def test_daemon_set_rule():
    def ds(updated, available):
        return {**meta("agent", "DaemonSet"), "status": {"observedGeneration": 1, "desiredNumberScheduled": 2,
                                                         "updatedNumberScheduled": updated,
                                                         "numberAvailable": available}}
    assert check(ds(1, 1)).reason == "1 of 2 updated pods scheduled"
    assert check(ds(2, 1)).reason == "1 of 2 updated pods available"
    assert check(ds(2, 2)).state == "succeeded"


def test_job_rule():
    def job(*conditions):
        return {**meta("migrate", "Job"), "spec": {"completions": 1}, "status": {"conditions": list(conditions)}}
    assert check(job()).state == "waiting"
    assert check(job({"type": "Complete", "status": "True"})).state == "succeeded"
    failed = check(job({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit"}))
    assert (failed.state, failed.reason) == ("failed", "BackoffLimitExceeded: Job has reached the specified "
                                                       "backoff limit")


def test_service_rule():
    svc = {**meta("web", "Service"), "spec": {"selector": {"app": "web"}}}
    assert check({**svc, "spec": {}}).state == "succeeded"
    assert check(svc, dep()).reason == "no ready endpoints yet"
    assert check(svc, dep(replicas=0)).reason == "selects nothing that should run (app=web matches no workload or pod)"
    assert check(svc).state == "succeeded"
    operated = pod("web-0")
    operated["metadata"]["labels"] = {"app": "web"}
    assert check(svc, operated).state == "waiting"  # pods from elsewhere (an operator, say) count too
    endpoints = {**meta("web", "Endpoints"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]}
    assert check(svc, dep(), endpoints).reason == "2 ready endpoints"


def test_unknown_kinds_succeed_and_missing_objects_wait():
    assert kinds.evaluate("ConfigMap", "web-config", rules.View(), NOW).state == "succeeded"
    assert kinds.evaluate("Deployment", "web", rules.View({"Deployment": {}}), NOW).state == "waiting"


def test_event_lines_keep_warnings_of_related_objects_counted():
    def event(name, reason, message, kind="Pod", type_="Warning"):
        return {"type": type_, "reason": reason, "message": message, "count": 1,
                "involvedObject": {"kind": kind, "name": name}, "metadata": {}}
    events = [event("web-a", "Failed", "not found"), event("web-a", "Pulling", "pulling", type_="Normal"),
              event("web-a", "Failed", "not found"), event("other", "Failed", "x"), event("web-a", "BackOff", "b")]
    lines = rollout.event_lines(events, {("Pod", "web-a")})
    assert lines == ["Pod web-a Failed: not found (x2)", "Pod web-a BackOff: b"]


def test_evidence_reads_run_side_by_side_and_those_not_back_in_time_are_left_out():
    blocked, started = threading.Event(), []

    def hangs():
        started.append("hangs")
        blocked.wait(30)
        return "too late"

    try:
        results = rollout.in_parallel([hangs, lambda: "quick", lambda: "also quick"], time.monotonic() + 0.5)
    finally:
        blocked.set()
    assert results == [None, "quick", "also quick"] and started == ["hangs"]


def test_render_progress_on_a_terminal_and_elsewhere():
    outcomes = [Outcome("web", "Deployment", "web", "waiting", "1 of 2 updated replicas available", 2, 2, 1),
                Outcome("web", "Service", "web", "waiting", "no ready endpoints yet"),
                Outcome("migrate", "Job", "migrate", "succeeded", "complete", 1, 1, 1)]
    assert render_progress(outcomes, terminal=True) == [
        "web      2/2 updated  1/2 ready  (waiting: no ready endpoints yet)",
        "migrate  1/1 complete  (succeeded)"]
    plain = render_progress(outcomes, terminal=False, previous=[*outcomes[:2]])
    assert len(plain) == 1 and plain[0].endswith("migrate  1/1 complete  (succeeded)")


def test_failure_report_names_reason_events_and_logs():
    result = RolloutResult([
        Outcome("web", "Deployment", "web", "failed", "pod web-a CrashLoopBackOff (restarted 3 times)", 2, 2, 0,
                events=["Pod web-a BackOff: Back-off restarting failed container (x3)"],
                logs={"web-a/app": ["starting", "panic: no DATABASE_URL"]}),
        Outcome("db", "StatefulSet", "db", "succeeded", desired=1, updated=1, ready=1)])
    report = failure_report(result)
    assert report.splitlines()[0] == "web: Deployment web failed"
    assert "reason: pod web-a CrashLoopBackOff (restarted 3 times)" in report
    assert "Pod web-a BackOff: Back-off restarting failed container (x3)" in report
    assert "    | panic: no DATABASE_URL" in report
    assert "db" not in report
    assert result.failed and not result.succeeded and not result.timed_out


# ===== real rollouts on the local control plane =====

def apps(core_api):
    from kubernetes import client
    return client.AppsV1Api(core_api)


# The published images serve /health once ready (or never, or late, as their behaviour says).
READINESS = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1}


def deployment_body(name, image, replicas=1, **spec):
    container = {"name": "app", "image": image, "readinessProbe": READINESS, **spec.pop("container", {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"skycap.io/service": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
                     **spec}}


@pytest.fixture
def deploy(core_api, namespace, local_cluster, publish):
    """deploy(name, behaviour=None, replicas=1, timeout=30, missing=False, cancel=None, **spec) -> (result, seconds)"""

    def _deploy(name, behaviour=None, replicas=1, timeout=30.0, missing=False, cancel=None, **spec):
        image = f"{local_cluster.registry}/rollout/{name}:v1"
        if not missing:
            publish(f"rollout/{name}", "v1", {"skycap.sim/behaviour": behaviour} if behaviour else None)
        since = datetime.now(timezone.utc)
        apps(core_api).create_namespaced_deployment(namespace, deployment_body(name, image, replicas, **spec))
        return timed(core_api, namespace, [Target("Deployment", name, name)], timeout=timeout, since=since,
                     cancel=cancel)

    return _deploy


def timed(core_api, namespace, targets, **kwargs):
    kwargs.setdefault("since", datetime.now(timezone.utc))
    start = time.monotonic()
    result = wait_for_rollout(core_api, namespace, targets, **kwargs)
    return result, time.monotonic() - start


def only(result):
    (outcome,) = result.outcomes
    return outcome


def test_deployment_becomes_available(deploy):
    result, _ = deploy("avail", replicas=2)
    assert result.succeeded
    outcome = only(result)
    assert (outcome.state, outcome.desired, outcome.updated, outcome.ready) == ("succeeded", 2, 2, 2)


def test_missing_image_fails_fast_with_the_image_and_its_events(deploy, local_cluster):
    result, seconds = deploy("ghost", replicas=2, missing=True, timeout=60)
    outcome = only(result)
    image = f"{local_cluster.registry}/rollout/ghost:v1"
    assert outcome.state == "failed" and seconds < 20
    # "2 of 2 new pods cannot pull ..." or, when one pod was doomed first, "pod ghost-... cannot pull ..."
    assert outcome.reason.endswith(f"cannot pull image {image} (not found)")
    report = failure_report(result)
    assert f'Failed: Failed to pull image "{image}"' in report
    assert f"reason: {outcome.reason}" in report


def test_crash_loop_fails(deploy):
    outcome = only(deploy("crash", "crash")[0])
    assert outcome.state == "failed"
    assert "CrashLoopBackOff (restarted" in outcome.reason
    assert any("BackOff" in event for event in outcome.events)


# No readiness probe: Ready the moment the container runs.
PROBELESS = {"readinessProbe": None}


def test_a_container_without_a_readiness_probe_that_exits_a_second_after_it_starts_fails(deploy):
    command = ["sh", "-c", "echo working; sleep 1; echo giving up; exit 3"]
    result, _ = deploy("brief", timeout=90, container={**PROBELESS, "command": command})
    outcome = only(result)
    assert outcome.state == "failed", outcome
    assert "CrashLoopBackOff (restarted" in outcome.reason and "last exit 3, Error" in outcome.reason


def test_a_healthy_container_without_a_readiness_probe_succeeds(deploy):
    result, _ = deploy("calm", replicas=2, container=PROBELESS)
    assert result.succeeded and only(result).ready == 2


def test_never_ready_times_out(deploy):
    result, _ = deploy("never", "never-ready", timeout=3)
    assert result.timed_out and not result.failed
    assert only(result).reason == "0 of 1 updated replicas available"
    assert "never: Deployment never timed out" in failure_report(result)


def test_ready_after_two_seconds_succeeds_no_sooner(deploy):
    result, seconds = deploy("slow", "ready-after=2")
    assert result.succeeded and seconds >= 2


def test_progress_deadline_exceeded_fails(deploy):
    result, seconds = deploy("stuck", "never-ready", timeout=40, progressDeadlineSeconds=1)
    assert only(result).state == "failed" and seconds < 40
    assert only(result).reason.startswith("ProgressDeadlineExceeded")


def test_missing_config_map_fails(deploy):
    env = [{"name": "LOG_LEVEL", "valueFrom": {"configMapKeyRef": {"name": "nowhere", "key": "LOG_LEVEL"}}}]
    outcome = only(deploy("noconf", container={"env": env})[0])
    assert outcome.state == "failed"
    assert 'CreateContainerConfigError: configmap "nowhere" not found' in outcome.reason


def test_zero_replicas_and_unknown_kinds_succeed(deploy, core_api, namespace):
    assert deploy("none", replicas=0)[0].succeeded
    from kubernetes import client
    client.CoreV1Api(core_api).create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}})
    assert timed(core_api, namespace, [Target("ConfigMap", "cfg", "")], timeout=5)[0].succeeded


def test_new_revision_succeeds_only_once_its_pods_are_ready(deploy, core_api, namespace, local_cluster, publish):
    assert deploy("roll", replicas=2)[0].succeeded
    publish("rollout/roll", "v2", {"skycap.sim/behaviour": "ready-after=2"})
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app",
                                                            "image": f"{local_cluster.registry}/rollout/roll:v2"}]}}}}
    apps(core_api).patch_namespaced_deployment("roll", namespace, patch)
    seen = []
    result, seconds = timed(core_api, namespace, [Target("Deployment", "roll", "roll")], timeout=30,
                            on_change=seen.append)
    assert result.succeeded and seconds >= 2
    assert any(outcomes[0].state == "waiting" for outcomes in seen)
    from kubernetes import client
    pods = client.CoreV1Api(core_api).list_namespaced_pod(namespace, label_selector="app=roll").items
    new = [p for p in pods if p.spec.containers[0].image.endswith(":v2") and not p.metadata.deletion_timestamp]
    assert len(new) == 2 and all(c.status == "True" for p in new for c in p.status.conditions if c.type == "Ready")


def test_cancel_returns_promptly_as_waiting(deploy):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    result, seconds = deploy("cancel", "never-ready", timeout=30, cancel=cancel)
    assert only(result).state == "waiting" and seconds < 3
    assert not result.succeeded and not result.failed and not result.timed_out


def test_stateful_set_and_daemon_set(core_api, namespace, local_cluster, publish):
    publish("rollout/sets", "v1")
    image = f"{local_cluster.registry}/rollout/sets:v1"
    template = {"metadata": {"labels": {"app": "sets"}}, "spec": {"containers": [{"name": "app", "image": image}]}}
    selector = {"matchLabels": {"app": "sets"}}
    apps(core_api).create_namespaced_stateful_set(namespace, {
        "metadata": {"name": "db"}, "spec": {"replicas": 2, "serviceName": "db", "selector": selector,
                                             "podManagementPolicy": "Parallel", "template": template}})
    apps(core_api).create_namespaced_daemon_set(namespace, {
        "metadata": {"name": "agent"}, "spec": {"selector": selector, "template": template}})
    result, _ = timed(core_api, namespace, [Target("StatefulSet", "db", "db"), Target("DaemonSet", "agent", "agent")],
                      timeout=30)
    from kubernetes import client
    nodes = len(client.CoreV1Api(core_api).list_node().items)
    assert [(o.state, o.ready) for o in result.outcomes] == [("succeeded", 2), ("succeeded", nodes)]


def test_jobs_complete_or_fail(core_api, namespace, local_cluster, publish):
    from kubernetes import client
    publish("rollout/job-ok", "v1", {"skycap.sim/behaviour": "exit-after=0"})
    publish("rollout/job-bad", "v1", {"skycap.sim/behaviour": "fail"})
    for name in ("job-ok", "job-bad"):
        spec = {"containers": [{"name": "app", "image": f"{local_cluster.registry}/rollout/{name}:v1"}],
                "restartPolicy": "Never"}
        client.BatchV1Api(core_api).create_namespaced_job(namespace, {
            "metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {"spec": spec}}})
    # One at a time: a failed target ends the wait for the others.
    ok = only(timed(core_api, namespace, [Target("Job", "job-ok", "ok")], timeout=30)[0])
    bad = only(timed(core_api, namespace, [Target("Job", "job-bad", "bad")], timeout=30)[0])
    assert ok.state == "succeeded"
    assert bad.state == "failed" and bad.reason.startswith("BackoffLimitExceeded")


def test_service_waits_for_ready_endpoints(core_api, namespace, local_cluster, publish):
    from kubernetes import client
    publish("rollout/svc", "v1", {"skycap.sim/behaviour": "ready-after=1"})
    image = f"{local_cluster.registry}/rollout/svc:v1"
    apps(core_api).create_namespaced_deployment(namespace, deployment_body("svc", image))
    client.CoreV1Api(core_api).create_namespaced_service(namespace, {
        "metadata": {"name": "svc"}, "spec": {"selector": {"app": "svc"}, "ports": [{"port": 80}]}})
    result, _ = timed(core_api, namespace, [Target("Deployment", "svc", "svc"), Target("Service", "svc", "svc")],
                      timeout=30)
    assert result.succeeded
    assert result.outcomes[1].reason == "1 ready endpoint"


def test_a_broken_watch_relists_and_carries_on(deploy, monkeypatch):
    from kubernetes.client.rest import ApiException

    from skycap.cluster.watch import Feed

    real_watch, broken = Feed._watch, []

    def watch(self, kind, lister, version):
        if not broken:
            broken.append(kind)
            raise ApiException(status=410, reason="Gone: too old resource version")
        return real_watch(self, kind, lister, version)

    monkeypatch.setattr(Feed, "_watch", watch)
    assert deploy("relist")[0].succeeded
    assert broken


def test_changes_arrive_as_watch_events_after_one_list(core_api, namespace, monkeypatch):
    """Watch, not poll: one LIST per kind, then every change as an event on the open stream."""
    from kubernetes import client

    from skycap.cluster.watch import Feed

    seen, real_apply = [], Feed._apply
    monkeypatch.setattr(Feed, "_apply", lambda self, kind, event, payload: (seen.append((kind, event)),
                                                                            real_apply(self, kind, event, payload)))
    core = client.CoreV1Api(core_api)
    core.create_namespaced_service(namespace, {"metadata": {"name": "seen"}, "spec": {"ports": [{"port": 80}]}})
    feed = Feed(core_api, namespace, ["Service"])
    feed.start()
    try:
        deadline = time.monotonic() + 10
        while not feed.ready and time.monotonic() < deadline:
            feed.wait(0.1)
        for number in range(3):
            core.patch_namespaced_service("seen", namespace, {"metadata": {"labels": {"change": str(number)}}})
        while time.monotonic() < deadline and labels(feed.view.get("Service", "seen")) != {"change": "2"}:
            feed.wait(0.1)
        time.sleep(1.2)  # longer than the re-list pause: a broken watch would have listed again by now
        feed.wait(0)
    finally:
        feed.stop()
    assert labels(feed.view.get("Service", "seen")) == {"change": "2"}
    assert seen.count(("Service", "LIST")) == 1, seen
    assert ("Service", "MODIFIED") in seen and not feed.errors


def test_stopping_as_a_watch_ends_by_itself_is_quiet():
    from skycap.cluster.watch import Feed

    class Ended:  # urllib3's response once the server ended the stream and the pool has its connection back
        def shutdown(self):
            raise RuntimeError("Cannot shutdown as connection has already been released to the pool")

    feed = Feed(None, "any", [])
    feed.streams.append(Ended())
    feed.stop()
    assert feed.stopped.is_set()


def labels(obj):
    return obj["metadata"].get("labels")


def test_one_failure_ends_the_wait_for_the_others_soon(core_api, namespace, local_cluster):
    from kubernetes import client
    image = f"{local_cluster.registry}/rollout/never-built:v1"
    apps(core_api).create_namespaced_deployment(namespace, deployment_body("broken", image))
    client.CoreV1Api(core_api).create_namespaced_service(namespace, {
        "metadata": {"name": "broken"}, "spec": {"selector": {"app": "broken"}, "ports": [{"port": 80}]}})
    result, seconds = timed(core_api, namespace, [Target("Deployment", "broken", "broken"),
                                                  Target("Service", "broken", "broken")], timeout=60)
    assert [o.state for o in result.outcomes] == ["failed", "waiting"] and seconds < 15
    assert failure_report(result).endswith("still in progress when the rollout stopped: "
                                           "Service broken (no ready endpoints yet)")


def test_an_unreachable_api_server_times_out_saying_so():
    from kubernetes import client
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:9"
    result = wait_for_rollout(client.ApiClient(configuration), "nowhere", [Target("Deployment", "web", "web")],
                              timeout=1, since=NOW)
    (outcome,) = result.outcomes
    assert outcome.state == "timeout"
    assert outcome.reason == ("no answer from the API server (listing Deployment, Pod, ReplicaSet: "
                              "connection refused)")

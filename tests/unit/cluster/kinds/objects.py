"""Plain API objects for the kinds' rule tests: as the API returns them, at a fixed clock. Pods that
should count as ready carry a readiness probe."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from skycap.cluster import kinds
from skycap.cluster.labels import DEPLOYMENT_REVISION
from skycap.cluster.rollout_rules import Status, View

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


def check(target: dict, *others: dict) -> Status:
    view = View.of(target, *others)
    return kinds.evaluate(target["kind"], target["metadata"]["name"], view, NOW)


def deployment(revision="2", **status) -> dict:
    counts = dict(observedGeneration=1, replicas=2, updatedReplicas=2, availableReplicas=2)
    return {**obj("Deployment", "web", annotations={DEPLOYMENT_REVISION: revision}), "spec": {"replicas": 2},
            "status": {**counts, **status}}


def replica_set(owner: dict, revision: str, available=0) -> dict:
    return {**obj("ReplicaSet", f"web-r{revision}", owner, annotations={DEPLOYMENT_REVISION: revision}),
            "status": {"availableReplicas": available}}


def stateful_set(strategy: dict | None = None, **status) -> dict:
    counts = dict(observedGeneration=1, readyReplicas=2, updatedReplicas=0, currentRevision="r1",
                  updateRevision="r2")
    return {**obj("StatefulSet", "db"), "spec": {"replicas": 2, "updateStrategy": strategy or {}},
            "status": {**counts, **status}}


def daemon_set(generation=2, **status) -> dict:
    counts = dict(observedGeneration=generation, desiredNumberScheduled=2, updatedNumberScheduled=2,
                  numberAvailable=1)
    return {**obj("DaemonSet", "agent", generation=generation), "status": {**counts, **status}}


def job(*conditions, **status) -> dict:
    return {**obj("Job", "migrate"), "spec": {"completions": 3},
            "status": {"conditions": list(conditions), **status}}


def service(**spec) -> dict:
    return {**obj("Service", "web"), "spec": {"selector": {"app": "web"}, **spec}}

"""Pod: watched for what the workloads own; a bare Pod in a stage is applied, not waited for."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds.base import Kind
from skycap.cluster.rollout_rules import (FAILED, SUCCEEDED, WAITING, Status, View, pod_problem, pod_ready, settling,
                                          unsettled)


def rollout(obj: dict, view: View, now: datetime) -> Status:
    name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
    counts = dict(desired=1, updated=1, ready=int(pod_ready(obj)))
    if phase == "Succeeded":
        return Status(SUCCEEDED, "completed", **counts)
    problem = pod_problem(obj, now)
    if problem:
        return Status(FAILED, f"pod {name} {problem}", pods=[name], **counts)
    if pod_ready(obj):
        young = unsettled([obj], view, now)
        return Status(WAITING, settling(young), pods=young, **counts) if young else Status(SUCCEEDED, "ready",
                                                                                              **counts)
    return Status(WAITING, f"pod {name} {phase or 'Pending'}, not ready", pods=[name], **counts)


KIND = Kind("Pod", ("", "pods"), rollout=rollout, watches=("Pod",), runs_pods=True,
            lister=("CoreV1Api", "list_namespaced_pod"))

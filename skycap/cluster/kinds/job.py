"""Job: done once complete; a pod that fails is the Job's to retry, a pod that cannot start is not."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds.base import Kind
from skycap.cluster.rollout_rules import (FAILED, SUCCEEDED, WAITING, Status, View, condition, live, plural,
                                          problems, summarize)


def rollout(obj: dict, view: View, now: datetime) -> Status:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    succeeded = status.get("succeeded", 0)
    counts = dict(desired=spec.get("completions") or 1, updated=succeeded + status.get("active", 0), ready=succeeded)
    pods = view.owned_by("Pod", obj)
    failed = condition(obj, "Failed") or {}
    if failed.get("status") == "True":
        failed_pods = sorted(p["metadata"]["name"] for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        return Status(FAILED, f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": "),
                      pods=failed_pods, **counts)
    if (condition(obj, "Complete") or {}).get("status") == "True":
        return Status(SUCCEEDED, f"complete ({plural(succeeded, 'pod')} succeeded)", **counts)
    # A failed pod is the Job's to retry (backoffLimit); a pod that cannot start at all is not.
    doomed = problems(live(pods), now, job=True)
    if doomed:
        return Status(FAILED, summarize(doomed, len(live(pods)), "pods"), pods=list(doomed), **counts)
    return Status(WAITING, f"{succeeded} of {counts['desired']} completions", **counts)


KIND = Kind("Job", ("batch", "jobs"), rollout=rollout, watches=("Job", "Pod"), followed=True, runs_pods=True,
            lister=("BatchV1Api", "list_namespaced_job"), pod_template=("spec", "template"))

"""DaemonSet: one pod per node; how many it wants is the nodes it is scheduled on, not a replica count."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds.base import Kind
from skycap.cluster.rollout_rules import (FAILED, SUCCEEDED, WAITING, Status, View, live, not_ready, observed,
                                          plural, problems, settling, summarize, unsettled)


def rollout(ds: dict, view: View, now: datetime) -> Status:
    status = ds.get("status") or {}
    desired = status.get("desiredNumberScheduled", 0)
    updated, available = status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0)
    counts = dict(desired=desired, updated=updated, ready=available)
    if not observed(ds):
        return Status(WAITING, "waiting for the daemonset controller to see the new spec", **counts)
    generation = str(ds["metadata"].get("generation", ""))
    pods = [p for p in live(view.owned_by("Pod", ds))
            if (p["metadata"].get("labels") or {}).get("pod-template-generation", generation) == generation]
    doomed = problems(pods, now)
    if doomed:
        return Status(FAILED, summarize(doomed, len(pods), "updated pods"), pods=list(doomed), **counts)
    if updated < desired:
        return Status(WAITING, f"{updated} of {desired} updated pods scheduled", pods=not_ready(pods), **counts)
    if available < desired:
        return Status(WAITING, f"{available} of {desired} updated pods available", pods=not_ready(pods), **counts)
    young = unsettled(pods, view, now)
    if young:
        return Status(WAITING, settling(young), pods=young, **counts)
    return Status(SUCCEEDED, plural(available, "pod") + " available", **counts)


KIND = Kind("DaemonSet", ("apps", "daemonsets"), rollout=rollout, watches=("DaemonSet", "Pod"), followed=True,
            runs_pods=True, lister=("AppsV1Api", "list_namespaced_daemon_set"), pod_template=("spec", "template"),
            desired=("status", "desiredNumberScheduled"), ready=("status", "numberReady"), restartable=True)

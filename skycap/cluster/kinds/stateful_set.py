"""StatefulSet: pods roll one at a time, in order, unless its update strategy says otherwise."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds.base import Kind
from skycap.cluster.rollout_rules import (FAILED, SUCCEEDED, WAITING, Status, View, live, not_ready, observed,
                                          plural, problems, settling, summarize, unsettled)


def rollout(sts: dict, view: View, now: datetime) -> Status:
    spec, status = sts.get("spec") or {}, sts.get("status") or {}
    desired, updated, ready = spec.get("replicas", 1), status.get("updatedReplicas", 0), status.get("readyReplicas", 0)
    counts = dict(desired=desired, updated=updated, ready=ready)
    if not observed(sts) or not status.get("observedGeneration"):
        return Status(WAITING, "waiting for the statefulset controller to see the new spec", **counts)
    revision = status.get("updateRevision")
    pods = [p for p in live(view.owned_by("Pod", sts))
            if not revision or (p["metadata"].get("labels") or {}).get("controller-revision-hash") == revision]
    # Pods roll one at a time: one doomed pod of the new revision stops the whole set.
    doomed = problems(pods, now)
    if doomed:
        return Status(FAILED, summarize(doomed, len(pods), "updated pods"), pods=list(doomed), **counts)
    if ready < desired:
        return Status(WAITING, f"{ready} of {desired} pods ready", pods=not_ready(pods), **counts)
    young = unsettled(pods, view, now)
    if young:
        return Status(WAITING, settling(young), pods=young, **counts)
    strategy = spec.get("updateStrategy") or {}
    if strategy.get("type") == "OnDelete":
        return Status(SUCCEEDED, f"{plural(ready, 'pod')} ready (OnDelete: pods update when deleted)", **counts)
    partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
    if partition:
        if updated < desired - partition:
            return Status(WAITING, f"{updated} of {desired - partition} pods updated (partition {partition})",
                          **counts)
        return Status(SUCCEEDED, f"{updated} pods updated above partition {partition}", **counts)
    if status.get("updateRevision") != status.get("currentRevision"):
        return Status(WAITING, f"{updated} of {desired} pods updated", **counts)
    return Status(SUCCEEDED, plural(ready, "pod") + " ready", **counts)


KIND = Kind("StatefulSet", ("apps", "statefulsets"), rollout=rollout, watches=("StatefulSet", "Pod"), followed=True,
            runs_pods=True, lister=("AppsV1Api", "list_namespaced_stateful_set"), pod_template=("spec", "template"),
            replicas=("spec", "replicas"), desired=("spec", "replicas"), ready=("status", "readyReplicas"),
            restartable=True)

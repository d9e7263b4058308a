"""Deployment: rolls out through a new ReplicaSet; done once every new replica is available."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds.base import Kind
from skycap.cluster.labels import DEPLOYMENT_REVISION
from skycap.cluster.rollout_rules import (FAILED, SUCCEEDED, WAITING, Status, View, condition, live, not_ready,
                                          observed, plural, problems, settling, summarize, unsettled)


def rollout(dep: dict, view: View, now: datetime) -> Status:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    desired, updated = spec.get("replicas", 1), status.get("updatedReplicas", 0)
    replicas, available = status.get("replicas", 0), status.get("availableReplicas", 0)
    rs = newest_replica_set(dep, view)
    pods = live(view.owned_by("Pod", rs)) if rs else []
    counts = dict(desired=desired, updated=updated, ready=new_available(status, rs))
    if not observed(dep):
        return Status(WAITING, "waiting for the deployment controller to see the new spec", **counts)
    progressing = condition(dep, "Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Status(FAILED, f"ProgressDeadlineExceeded: {progressing.get('message', '')}".rstrip(": "),
                      pods=not_ready(pods), **counts)
    # One doomed pod of the new revision dooms the rollout: its siblings run the same image and configuration.
    # Waiting for all of them let a crashing worker (Ready for an instant, so the controller surged on)
    # keep the verdict waiting for pods that had yet to start.
    doomed = problems(pods, now)
    if doomed:
        return Status(FAILED, summarize(doomed, len(pods), "new pods"), pods=list(doomed), **counts)
    if updated < desired:
        return Status(WAITING, f"{updated} of {desired} new replicas updated", pods=not_ready(pods), **counts)
    if replicas > updated:
        return Status(WAITING, f"{plural(replicas - updated, 'old replica')} pending termination", **counts)
    if available < updated:
        return Status(WAITING, f"{available} of {updated} updated replicas available", pods=not_ready(pods),
                      **counts)
    young = unsettled(pods, view, now)
    if young:
        return Status(WAITING, settling(young), pods=young, **counts)
    return Status(SUCCEEDED, plural(available, "replica") + " available", **counts)


def newest_replica_set(dep: dict, view: View) -> dict | None:
    """The ReplicaSet of the deployment's current revision, once the controller has made it."""
    owned = view.owned_by("ReplicaSet", dep)
    if not owned:
        return None
    newest = max(owned, key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(DEPLOYMENT_REVISION, 0)))
    # Until the controller has created the new ReplicaSet, the newest one is the previous revision's.
    wanted = (dep["metadata"].get("annotations") or {}).get(DEPLOYMENT_REVISION)
    have = (newest["metadata"].get("annotations") or {}).get(DEPLOYMENT_REVISION)
    return newest if wanted is None or wanted == have else None


def new_available(status: dict, rs: dict | None) -> int:
    # The deployment's own counts mix old and new pods until the old ones are gone.
    if status.get("replicas", 0) <= status.get("updatedReplicas", 0):
        return status.get("availableReplicas", 0)
    return ((rs or {}).get("status") or {}).get("availableReplicas", 0)


KIND = Kind("Deployment", ("apps", "deployments"), rollout=rollout, watches=("Deployment", "ReplicaSet", "Pod"),
            followed=True, runs_pods=True, lister=("AppsV1Api", "list_namespaced_deployment"),
            pod_template=("spec", "template"), replicas=("spec", "replicas"), desired=("spec", "replicas"),
            ready=("status", "readyReplicas"), restartable=True)

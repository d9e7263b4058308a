"""Service: ready once it has a ready endpoint, or once nothing it selects should run."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds import daemon_set, deployment, stateful_set
from skycap.cluster.kinds.base import Kind
from skycap.cluster.rollout_rules import SUCCEEDED, WAITING, Status, View, live, plural

WORKLOADS = (deployment.KIND, stateful_set.KIND, daemon_set.KIND)  # what a Service's endpoints come from


def rollout(svc: dict, view: View, now: datetime) -> Status:
    spec = svc.get("spec") or {}
    selector = spec.get("selector")
    if spec.get("type") == "ExternalName" or not selector:
        return Status(SUCCEEDED, "no selector: nothing to wait for")
    endpoints = view.get("Endpoints", svc["metadata"]["name"]) or {}
    ready = sum(len(subset.get("addresses") or []) for subset in endpoints.get("subsets") or [])
    if ready:
        return Status(SUCCEEDED, plural(ready, "ready endpoint"))
    workloads = [w for kind in WORKLOADS for w in view.all(kind.name)
                 if selects(selector, template_labels(kind, w)) and kind.wants(w)]
    pods = [p for p in live(view.all("Pod")) if selects(selector, p["metadata"].get("labels") or {})
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if not workloads and not pods:
        words = ",".join(f"{key}={value}" for key, value in selector.items())
        return Status(SUCCEEDED, f"selects nothing that should run ({words} matches no workload or pod)")
    return Status(WAITING, "no ready endpoints yet")


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def template_labels(kind, workload: dict) -> dict:
    return ((kind.template_of(workload) or {}).get("metadata") or {}).get("labels") or {}


KIND = Kind("Service", ("", "services"), rollout=rollout,
            watches=("Service", "Endpoints", "Deployment", "StatefulSet", "DaemonSet", "Pod"), followed=True,
            lister=("CoreV1Api", "list_namespaced_service"))

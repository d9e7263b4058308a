"""One record per Kubernetes kind, krane-style (base.py: Kind): its apply order, its rollout rule, where its
replica count and pod template are, how status lists and reads it, what doctor checks the rights to.
A kind without a record is generic(): applied with the rest, done once applied."""

from __future__ import annotations

from datetime import datetime

from skycap.cluster.kinds import (cron_job, daemon_set, deployment, early, job, plain, pod, replica_set, service,
                                  stateful_set)
from skycap.cluster.kinds.base import Kind, generic
from skycap.cluster.rollout_rules import SUCCEEDED, WAITING, Status, View

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    deployment.KIND, stateful_set.KIND, daemon_set.KIND, replica_set.KIND, job.KIND, cron_job.KIND, service.KIND,
    pod.KIND, *early.KINDS, *plain.KINDS)}
# The kinds whose pods serve: what status shows per service, and what a Service's endpoints come from.
WORKLOADS = service.WORKLOADS


def of(name: str) -> Kind:
    return KINDS.get(name) or generic(name)


def evaluate(kind: str, name: str, view: View, now: datetime) -> Status:
    rule = of(kind).rollout
    if rule is None:
        # kubectl apply has just created or updated it; there is no rollout to follow.
        return Status(SUCCEEDED, "applied")
    obj = view.get(kind, name)
    if obj is None:
        return Status(WAITING, f"{kind} {name} not found")
    return rule(obj, view, now)


def watched_kinds(kinds) -> list[str]:
    """The kinds to watch to follow the rollouts of objects of these kinds."""
    wanted: list[str] = []
    for kind in kinds:
        for watched in of(kind).watches:
            if watched not in wanted:
                wanted.append(watched)
    return wanted

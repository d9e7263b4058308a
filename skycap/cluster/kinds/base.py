"""The record of one Kubernetes kind: all Skycap knows about it, in one place (krane's one class per kind)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Kind:
    name: str
    api: tuple[str, str]  # (API group, resource): the rights `skycap doctor` checks; "" is the core group
    applied_early: bool = False  # applied before the rest: what the workloads read or need to exist
    cluster_scoped: bool = False  # has no namespace: rendering leaves metadata.namespace alone
    rollout: Callable | None = None  # rule(obj, view, now) -> Status; None: done once applied
    watches: tuple[str, ...] = ()  # the kinds whose changes can change the rollout's verdict
    followed: bool = False  # a deploy waits until its rollout succeeds or fails
    runs_pods: bool = False  # its pods' log tails explain a failure
    lister: tuple[str, str] | None = None  # (kubernetes.client API class, its namespaced list method)
    pod_template: tuple[str, ...] | None = None  # where its pod template is: Skycap's labels, restarts
    replicas: tuple[str, ...] | None = None  # where the replica count is that `skycap scale` sets
    desired: tuple[str, ...] | None = None  # on a live object, how many pods it wants...
    ready: tuple[str, ...] | None = None  # ...and how many of them are ready
    restartable: bool = False  # `skycap restart` rolls its pods by stamping its pod template
    kept_on_prune: str = ""  # why pruning never deletes it, even once it left the stage

    def read(self, obj: dict, path: tuple[str, ...] | None, default=None):
        """The value at `path` in obj (a plain dict, as the API returns it), or default."""
        if path is None:
            return default
        for key in path:
            if not isinstance(obj, dict) or key not in obj:
                return default
            obj = obj[key]
        return obj

    def write(self, obj: dict, path: tuple[str, ...], value) -> None:
        for key in path[:-1]:
            obj = obj.setdefault(key, {})
        obj[path[-1]] = value

    def wants(self, obj: dict) -> int:
        """How many pods the object wants; a replica count left out is 1, Kubernetes' default."""
        return self.read(obj, self.desired, 1 if self.desired == self.replicas else 0)

    def template_of(self, obj: dict) -> dict | None:
        template = self.read(obj, self.pod_template)
        return template if isinstance(template, dict) else None


def generic(name: str) -> Kind:
    """A kind Skycap has no record of: applied with the rest, nothing to wait for once applied. Its resource
    name is guessed from the kind, as kubectl's plural (an exact one comes from API discovery)."""
    lower = name.lower()
    return Kind(name, ("", lower + ("es" if lower.endswith("s") else "s")))

"""When is a rollout done, failed or still going: one small rule per kind, on plain API dicts.

Every rule has the same shape, rule(obj, view, now) -> Status, and reads nothing but the
object, the other objects of the namespace in `view`, and the clock it is given; so each
rule is a pure function, tested with plain dicts. The deadlines and retries live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from skycap.cluster.labels import DEPLOYMENT_REVISION

SUCCEEDED, FAILED, WAITING, TIMEOUT = "succeeded", "failed", "waiting", "timeout"

# Pull errors that retrying will not fix: the image or its repository does not exist.
MISSING_IMAGE = ("not found", "manifest unknown", "pull access denied")
# Any other pull error (auth, network) gets this long, counted from the pod's creation, to clear up.
PULL_GRACE_SECONDS = 60
# A container without a readiness probe is Ready the moment it runs, so one that crashes an instant
# after it starts looks Ready first. A pod with such a container counts as ready only once the watch
# has seen it Ready this long without a break (Kubernetes' minReadySeconds, for probe-less pods only).
# The kubelet notices a container's start and its exit on its 1 s relist, so a container that dies
# about 1 s after it starts can look Ready for up to about 2 s.
PROBELESS_SETTLE_SECONDS = 3.0


@dataclass
class Status:
    state: str
    reason: str = ""
    desired: int = 0
    updated: int = 0
    ready: int = 0
    pods: list[str] = field(default_factory=list)  # the pods that explain the state: their logs go in the report


class View:
    """The namespace as last seen: kind -> name -> object (plain dicts, as the API returns them).

    Change it through set, drop and replace: they keep the index of owned objects true. The rules
    ask every workload for its ReplicaSets and pods after each batch of changes; without the index
    each of those questions scanned every object of the kind."""

    def __init__(self, objects: dict[str, dict[str, dict]] | None = None):
        self.objects = objects if objects is not None else {}
        self._owned: dict[str, dict[str | None, list[dict]]] = {}  # kind -> controller uid -> objects
        # pod uid -> when this view first saw the pod Ready, unbroken since (our clock, not the node's)
        self.ready_since: dict[str, datetime] = {}

    @classmethod
    def of(cls, *objs: dict, seen: datetime | None = None) -> "View":
        view = cls()
        for obj in objs:
            view.set(obj["kind"], obj, seen)
        return view

    def set(self, kind: str, obj: dict, seen: datetime | None = None) -> None:
        """Store the object as seen at `seen` (now unless said)."""
        self.objects.setdefault(kind, {})[obj["metadata"]["name"]] = obj
        self._owned.pop(kind, None)
        if kind == "Pod":
            self._note_readiness(obj, seen or datetime.now(timezone.utc))

    def drop(self, kind: str, name: str) -> None:
        gone = self.objects.get(kind, {}).pop(name, None)
        self._owned.pop(kind, None)
        if gone is not None:
            self.ready_since.pop(gone["metadata"].get("uid"), None)

    def replace(self, kind: str, objs: list[dict], seen: datetime | None = None) -> None:
        self.objects[kind] = {obj["metadata"]["name"]: obj for obj in objs}
        self._owned.pop(kind, None)
        if kind == "Pod":
            listed = {obj["metadata"].get("uid") for obj in objs}
            self.ready_since = {uid: t for uid, t in self.ready_since.items() if uid in listed}
            for obj in objs:
                self._note_readiness(obj, seen or datetime.now(timezone.utc))

    def _note_readiness(self, pod: dict, seen: datetime) -> None:
        uid = pod["metadata"].get("uid")
        if pod_ready(pod):
            self.ready_since.setdefault(uid, seen)
        else:
            self.ready_since.pop(uid, None)

    def ready_for(self, pod: dict, now: datetime) -> float:
        """Seconds this view has seen the pod Ready without a break; 0 if it is not Ready."""
        since = self.ready_since.get(pod["metadata"].get("uid"))
        return (now - since).total_seconds() if since and pod_ready(pod) else 0.0

    def get(self, kind: str, name: str) -> dict | None:
        return self.objects.get(kind, {}).get(name)

    def all(self, kind: str) -> list[dict]:
        return list(self.objects.get(kind, {}).values())

    def owned_by(self, kind: str, owner: dict) -> list[dict]:
        index = self._owned.get(kind)
        if index is None:
            index = self._owned[kind] = {}
            for obj in self.objects.get(kind, {}).values():
                index.setdefault(controller_uid(obj), []).append(obj)
        return list(index.get(owner["metadata"].get("uid"), ()))


# ----- helpers on plain objects -----

def controller_uid(obj: dict) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def observed(obj: dict) -> bool:
    """Has the controller acted on the object's latest spec? Nothing else counts before."""
    return (obj.get("status") or {}).get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)


def condition(obj: dict, kind: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def live(pods: list[dict]) -> list[dict]:
    """Pods not on their way out: a terminating pod says nothing about the new revision."""
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict) -> bool:
    cond = condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def probeless(pod: dict) -> bool:
    """Has the pod a container that is Ready as soon as it runs (no readiness probe)?"""
    return any(not c.get("readinessProbe") for c in (pod.get("spec") or {}).get("containers") or [])


def unsettled(pods: list[dict], view: View, now: datetime) -> list[str]:
    """The pods, among those that should run, with a container without a readiness probe that have not
    yet been seen Ready for PROBELESS_SETTLE_SECONDS."""
    return sorted(p["metadata"]["name"] for p in pods
                  if probeless(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and view.ready_for(p, now) < PROBELESS_SETTLE_SECONDS)


def settling(names: list[str]) -> str:
    """Why we still wait for these (unsettled) pods, in words."""
    who = f"pod {names[0]}" if len(names) == 1 else f"{len(names)} pods"
    return f"{who} without a readiness probe: not yet seen Ready for {PROBELESS_SETTLE_SECONDS:g} s"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# ----- doomed pods -----

def pod_problem(pod: dict, now: datetime, job: bool = False) -> str:
    """Why this pod will never run as asked without a new deploy; "" while it still might."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed" and not job and status.get("reason") != "Evicted":
        return f"failed ({status.get('reason') or status.get('message') or 'phase Failed'})"
    spec = pod.get("spec") or {}
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    images = {c["name"]: c.get("image", "") for c in containers}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        who = f"container {cs['name']} " if len(containers) > 1 else ""
        problem = container_problem(cs, images.get(cs["name"]) or cs.get("image", ""), pod_age(pod, now))
        if problem:
            return who + problem
    return ""


def container_problem(cs: dict, image: str, age: float) -> str:
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    reason, message = waiting.get("reason", ""), waiting.get("message") or ""
    terminated_reason = (state.get("terminated") or {}).get("reason", "")
    if reason == "CrashLoopBackOff":
        return f"CrashLoopBackOff (restarted {plural(cs.get('restartCount', 0), 'time')}{last_exit(cs)})"
    if reason in ("ErrImagePull", "ImagePullBackOff"):
        if any(marker in message.lower() for marker in MISSING_IMAGE):
            return f"cannot pull image {image} (not found)"
        if age >= PULL_GRACE_SECONDS:
            return f"cannot pull image {image} ({reason} {age:.0f} s after the pod was created: {message})"
    if reason == "InvalidImageName":
        return f"has an invalid image name {image}"
    # The kubelet reports this one while its ConfigMap/Secret cache warms up; it clears by itself.
    if reason == "CreateContainerConfigError" and not ("failed to sync" in message and "cache" in message):
        return f"CreateContainerConfigError: {message}"
    if "ContainerCannotRun" in (reason, terminated_reason):
        detail = message or (state.get("terminated") or {}).get("message", "")
        return f"ContainerCannotRun: {detail}".rstrip(": ")
    return ""


def last_exit(cs: dict) -> str:
    """"; last exit 3, Error" or "; last exit 137, OOMKilled": how the previous instance ended."""
    ended = (cs.get("lastState") or {}).get("terminated") or {}
    if "exitCode" not in ended:
        return ""
    return f"; last exit {ended['exitCode']}, {ended.get('reason') or 'no reason given'}"


def pod_age(pod: dict, now: datetime) -> float:
    created = parse_time(pod["metadata"].get("creationTimestamp"))
    return (now - created).total_seconds() if created else 0.0


def problems(pods: list[dict], now: datetime, job: bool = False) -> dict[str, str]:
    """pod name -> problem, for the doomed ones."""
    found = {p["metadata"]["name"]: pod_problem(p, now, job) for p in pods}
    return {name: problem for name, problem in sorted(found.items()) if problem}


def summarize(found: dict[str, str], total: int, noun: str) -> str:
    """"2 of 2 new pods cannot pull image x (not found)" or "pod web-abc CrashLoopBackOff (...)"."""
    distinct = set(found.values())
    if len(found) > 1 and len(distinct) == 1:
        return f"{len(found)} of {total} {noun} {distinct.pop()}"
    name, problem = next(iter(found.items()))
    more = f" (and {plural(len(found) - 1, 'other pod')} failing)" if len(found) > 1 else ""
    return f"pod {name} {problem}{more}"


def not_ready(pods: list[dict]) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods if not pod_ready(p))


# ----- the rules, one per kind -----

def deployment(dep: dict, view: View, now: datetime) -> Status:
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


def stateful_set(sts: dict, view: View, now: datetime) -> Status:
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


def daemon_set(ds: dict, view: View, now: datetime) -> Status:
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


def job(obj: dict, view: View, now: datetime) -> Status:
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


def service(svc: dict, view: View, now: datetime) -> Status:
    spec = svc.get("spec") or {}
    selector = spec.get("selector")
    if spec.get("type") == "ExternalName" or not selector:
        return Status(SUCCEEDED, "no selector: nothing to wait for")
    endpoints = view.get("Endpoints", svc["metadata"]["name"]) or {}
    ready = sum(len(subset.get("addresses") or []) for subset in endpoints.get("subsets") or [])
    if ready:
        return Status(SUCCEEDED, plural(ready, "ready endpoint"))
    workloads = [w for kind in ("Deployment", "StatefulSet", "DaemonSet") for w in view.all(kind)
                 if selects(selector, template_labels(w)) and wanted_pods(w)]
    pods = [p for p in live(view.all("Pod")) if selects(selector, p["metadata"].get("labels") or {})
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    if not workloads and not pods:
        words = ",".join(f"{key}={value}" for key, value in selector.items())
        return Status(SUCCEEDED, f"selects nothing that should run ({words} matches no workload or pod)")
    return Status(WAITING, "no ready endpoints yet")


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def template_labels(workload: dict) -> dict:
    return (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def wanted_pods(workload: dict) -> int:
    if workload.get("kind") == "DaemonSet":
        return (workload.get("status") or {}).get("desiredNumberScheduled", 0)
    return (workload.get("spec") or {}).get("replicas", 1)


def pod(obj: dict, view: View, now: datetime) -> Status:
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


@dataclass(frozen=True)
class Rule:
    check: Callable[[dict, View, datetime], Status]
    watches: tuple[str, ...]  # the kinds whose changes can change the verdict


RULES: dict[str, Rule] = {
    "Deployment": Rule(deployment, ("Deployment", "ReplicaSet", "Pod")),
    "StatefulSet": Rule(stateful_set, ("StatefulSet", "Pod")),
    "DaemonSet": Rule(daemon_set, ("DaemonSet", "Pod")),
    "Job": Rule(job, ("Job", "Pod")),
    "Service": Rule(service, ("Service", "Endpoints", "Deployment", "StatefulSet", "DaemonSet", "Pod")),
    "Pod": Rule(pod, ("Pod",)),
}


def evaluate(kind: str, name: str, view: View, now: datetime) -> Status:
    rule = RULES.get(kind)
    if rule is None:
        # Generic kinds: kubectl apply has just created or updated it; there is no rollout to follow.
        return Status(SUCCEEDED, "applied")
    obj = view.get(kind, name)
    if obj is None:
        return Status(WAITING, f"{kind} {name} not found")
    return rule.check(obj, view, now)


def watched_kinds(kinds) -> list[str]:
    wanted: list[str] = []
    for kind in kinds:
        for watched in RULES[kind].watches if kind in RULES else ():
            if watched not in wanted:
                wanted.append(watched)
    return wanted


def related_names(kind: str, name: str, view: View) -> set[tuple[str, str]]:
    """(kind, name) of the object and of what it owns (ReplicaSets, their pods): whose events matter."""
    obj = view.get(kind, name)
    found = {(kind, name)}
    if obj is None:
        return found
    if kind == "Service":
        return found | {("Endpoints", name)}
    owners = {obj["metadata"].get("uid")}
    for child_kind in ("ReplicaSet", "Pod"):
        for child in view.all(child_kind):
            if controller_uid(child) in owners:
                owners.add(child["metadata"].get("uid"))
                found.add((child_kind, child["metadata"]["name"]))
    return found

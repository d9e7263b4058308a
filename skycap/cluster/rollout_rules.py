"""What every kind's rollout rule is made of: the Status it returns, the View of the namespace it reads,
and the helpers on pods (ready, settled, doomed) the rules share, on plain API dicts.

Every rule (one per kind, in skycap.cluster.kinds) has the same shape, rule(obj, view, now) -> Status,
and reads nothing but the object, the other objects of the namespace in `view`, and the clock it is
given; so each rule is a pure function, tested with plain dicts. The deadlines and retries live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

SUCCEEDED, FAILED, WAITING, TIMEOUT = "succeeded", "failed", "waiting", "timeout"

# Pull errors that retrying will not fix: the image or its repository does not exist.
MISSING_IMAGE = ("not found", "manifest unknown", "pull access denied")
# Any other pull error (auth, network) gets this long, counted from the pod's creation, to clear up.
PULL_GRACE_SECONDS = 60
# A container without a readiness probe is Ready the moment it runs, so one that crashes an instant
# after it starts looks Ready first. A pod with such a container counts as ready only once the watch
# has seen it Ready this long without a break (Kubernetes' minReadySeconds, for probe-less pods only).
# The kubelet notices a container's start and its exit on its 1 s relist, so a container that dies
# about 1 s after it starts can look Ready for up to about 2 s. A busy kubelet reports both later: the
# settle grows by how late the start was seen (Ready seen - container started, at most
# MAX_REPORT_LAG_SECONDS), since its report of the exit will be about as late.
PROBELESS_SETTLE_SECONDS = 3.0
MAX_REPORT_LAG_SECONDS = 10.0


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

    def settle_seconds(self, pod: dict) -> float:
        """How long a probe-less pod must be seen Ready: the settle, plus how late its start was seen."""
        since = self.ready_since.get(pod["metadata"].get("uid"))
        started = [parse_time(((c.get("state") or {}).get("running") or {}).get("startedAt"))
                   for c in (pod.get("status") or {}).get("containerStatuses") or []]
        started = [t for t in started if t is not None]
        if since is None or not started:
            return PROBELESS_SETTLE_SECONDS
        lag = (since - max(started)).total_seconds()
        return PROBELESS_SETTLE_SECONDS + min(max(lag, 0.0), MAX_REPORT_LAG_SECONDS)

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
    yet been seen Ready for their settle (View.settle_seconds)."""
    return sorted(p["metadata"]["name"] for p in pods
                  if probeless(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                  and view.ready_for(p, now) < view.settle_seconds(p))


def settling(names: list[str]) -> str:
    """Why we still wait for these (unsettled) pods, in words."""
    who = f"pod {names[0]}" if len(names) == 1 else f"{len(names)} pods"
    return (f"{who} without a readiness probe: not yet seen Ready for {PROBELESS_SETTLE_SECONDS:g} s "
            "(plus the node's delay in reporting its start)")


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

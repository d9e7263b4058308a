"""Watching applied objects until each one succeeds, fails or times out.

The rules per kind are in kinds/ (pure functions on plain dicts, over rollout_rules), the watch
threads in watch. This module runs the loop, gathers the evidence for a failure (events, log
tails) and words the progress lines and the failure report.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

from skycap.cluster import kinds
from skycap.cluster import rollout_rules as rules

SUCCEEDED, FAILED, WAITING, TIMEOUT = rules.SUCCEEDED, rules.FAILED, rules.WAITING, rules.TIMEOUT
TERMINAL = (SUCCEEDED, FAILED, TIMEOUT)
TICK_SECONDS = 0.25  # re-check the clock (deadline, cancel, pull grace) at least this often; no API call
# Once one target has failed the deploy has failed: the verdict comes then, with the evidence (events,
# log tails) read side by side in this many threads for at most this long; what is not back by then
# is left out of the report rather than holding up the verdict.
EVIDENCE_WORKERS = 8
EVIDENCE_SECONDS = 3.0  # the old per-read timeout: a loaded API server and kubelet answer slowly
# The kubelet writes its event just after the pod status that told us: the events are read again, this
# often for at most this long, until each failed object has a warning.
EVENT_RETRY_SECONDS = 0.2
EVENT_LAG_SECONDS = 1.0
LOG_LINES = 25
MAX_EVENTS = 10
ROUTINE_EVENTS = frozenset({"Scheduled", "Pulling", "Pulled", "Created", "Started", "SuccessfulCreate",
                            "SuccessfulDelete", "ScalingReplicaSet", "Killing", "Completed", "SawCompletedJob"})


@dataclass
class Target:
    kind: str
    name: str
    service: str  # the object's skycap.io/service label, "" if none


@dataclass
class Outcome:
    service: str
    kind: str
    name: str
    state: str  # succeeded | failed | timeout | waiting
    reason: str = ""
    desired: int = 0
    updated: int = 0
    ready: int = 0
    events: list[str] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)  # "pod/container" -> last lines


@dataclass
class RolloutResult:
    outcomes: list[Outcome]

    @property
    def succeeded(self) -> bool:
        return all(o.state == SUCCEEDED for o in self.outcomes)

    @property
    def failed(self) -> bool:
        return any(o.state == FAILED for o in self.outcomes)

    @property
    def timed_out(self) -> bool:
        return any(o.state == TIMEOUT for o in self.outcomes)


def wait_for_rollout(api_client, namespace: str, targets: list[Target], *, timeout: float, since: datetime,
                     on_change: Callable[[list[Outcome]], None] | None = None,
                     cancel: threading.Event | None = None,
                     lock_lost: Callable[[], bool] | None = None) -> RolloutResult:
    """Watch the targets until every one is terminal, the timeout passes, `cancel` is set or the stage
    lock is lost (lock_lost() says so).

    Failed and timed-out outcomes carry their recent events and log tails; cancelled ones stay "waiting"."""
    from skycap.cluster.watch import Feed  # imports the kubernetes client, slow to import: only when needed

    deadline = time.monotonic() + timeout
    feed = Feed(api_client, namespace, kinds.watched_kinds(t.kind for t in targets))
    feed.start()
    statuses = [rules.Status(WAITING, "waiting for the first list from the API server") for _ in targets]
    outcomes = [to_outcome(t, s) for t, s in zip(targets, statuses)]
    try:
        while True:
            if (cancel is not None and cancel.is_set()) or (lock_lost is not None and lock_lost()):
                return RolloutResult([o if o.state == SUCCEEDED else replace(o, state=WAITING) for o in outcomes])
            if feed.ready:
                now = datetime.now(timezone.utc)
                # A verdict is final: a pod alternating between ErrImagePull and ImagePullBackOff is doomed in
                # one state and not in the other.
                statuses = [s if s.state in TERMINAL else kinds.evaluate(t.kind, t.name, feed.view, now)
                            for t, s in zip(targets, statuses)]
                latest = [to_outcome(t, s) for t, s in zip(targets, statuses)]
                if latest != outcomes and on_change:
                    on_change(latest)
                outcomes = latest
            # A failed target is a failed deploy: waiting for the others would only delay the verdict.
            if all(o.state in TERMINAL for o in outcomes) or any(o.state == FAILED for o in outcomes):
                break
            clock = time.monotonic()
            if clock >= deadline:
                unseen = "" if feed.ready else f"no answer from the API server ({describe(feed.errors)})"
                outcomes = [o if o.state in TERMINAL else replace(o, state=TIMEOUT, reason=unseen or o.reason)
                            for o in outcomes]
                if on_change:
                    on_change(outcomes)
                break
            feed.wait(min(TICK_SECONDS, deadline - clock))
    finally:
        feed.stop()
    if feed.ready:  # else the API server is not answering: no events or logs to be had either
        add_evidence(api_client, namespace, outcomes, [s.pods for s in statuses], feed.view, since)
    return RolloutResult(outcomes)


def describe(errors: dict[str, str]) -> str:
    """"listing Deployment, Pod: connection refused", from kind -> error."""
    kinds: dict[str, list[str]] = {}
    for kind, error in sorted(errors.items()):
        kinds.setdefault(error, []).append(kind)
    return "; ".join(f"listing {', '.join(names)}: {error}" for error, names in kinds.items()) or "still listing"


def to_outcome(target: Target, status: rules.Status) -> Outcome:
    return Outcome(target.service, target.kind, target.name, status.state, status.reason,
                   status.desired, status.updated, status.ready)


# ----- evidence for the report: events and log tails, best effort -----

def add_evidence(api_client, namespace: str, outcomes: list[Outcome], pods: list[list[str]], view: rules.View,
                 since: datetime) -> None:
    """Fill in the events and log tails of the failed and timed-out outcomes (in place): every read side by
    side, all of them within EVIDENCE_SECONDS."""
    troubled = [(o, names) for o, names in zip(outcomes, pods) if o.state in (FAILED, TIMEOUT)]
    if not troubled:
        return
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    until = time.monotonic() + EVIDENCE_SECONDS
    related = [rules.related_names(o.kind, o.name, view) for o, _ in troubled]
    must_have = [names for (o, _), names in zip(troubled, related) if o.state == FAILED]
    reads = [(o, key, pod, container, previous) for o, names in troubled
             for key, pod, container, previous in log_reads(names[:1], view)]  # one pod's logs tell the story
    results = in_parallel([lambda: events_in_time(core, namespace, since, must_have, until)]
                          + [lambda r=r: read_log(core, namespace, *r[2:], until=until) for r in reads], until)
    events = results[0] or []
    for (outcome, _), names in zip(troubled, related):
        outcome.events = event_lines(events, names)
    for (outcome, key, *_), tail in zip(reads, results[1:]):
        if tail:
            outcome.logs[key] = tail


def in_parallel(calls: list[Callable[[], object]], until: float) -> list:
    """The calls' results in order, run EVIDENCE_WORKERS at a time; None for each not back by `until`.
    The threads are daemons: one still waiting on the network never holds up the process's exit."""
    results: list = [None] * len(calls)
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for item in enumerate(calls):
        pending.put(item)

    def work() -> None:
        while time.monotonic() < until:
            try:
                index, call = pending.get_nowait()
            except queue.Empty:
                return
            results[index] = call()

    workers = [threading.Thread(target=work, name="rollout-evidence", daemon=True)
               for _ in range(min(EVIDENCE_WORKERS, len(calls)))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(until - time.monotonic(), 0))
    return list(results)


def events_in_time(core, namespace: str, since: datetime, must_have: list[set[tuple[str, str]]],
                   until: float) -> list[dict]:
    """The namespace's events since `since`, read again (briefly) until each failed object has a warning."""
    give_up = min(until, time.monotonic() + EVENT_LAG_SECONDS)
    while True:
        events = list_events(core, namespace, since, until)
        if all(event_lines(events, names) for names in must_have) or \
                time.monotonic() + EVENT_RETRY_SECONDS >= give_up:
            return events
        time.sleep(EVENT_RETRY_SECONDS)


def list_events(core, namespace: str, since: datetime, until: float) -> list[dict]:
    """Events of the namespace from `since` on, oldest first; none if they cannot be read by `until`."""
    try:
        response = core.list_namespaced_event(namespace, _preload_content=False,
                                              _request_timeout=remaining(until))
        items = json.loads(response.data).get("items") or []
    except Exception:  # noqa: BLE001 - the report is still useful without events
        return []
    # Event times have one-second resolution: an event in the deploy's first second must count.
    start = as_utc(since).replace(microsecond=0)
    dated = [(event_time(e), e) for e in items]
    return [e for t, e in sorted(dated, key=lambda pair: pair[0] or start) if t is None or t >= start]


def remaining(until: float) -> float:
    return max(until - time.monotonic(), 0.05)


def as_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)  # a naive datetime is taken as local time


def event_time(event: dict) -> datetime | None:
    return rules.parse_time(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
                            or event["metadata"].get("creationTimestamp"))


def event_lines(events: list[dict], related: set[tuple[str, str]]) -> list[str]:
    """One line per distinct warning, with its count: "Pod web-abc Failed: Failed to pull image ... (x3)"."""
    counts: dict[str, int] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("type") != "Warning" or event.get("reason") in ROUTINE_EVENTS:
            continue
        if (involved.get("kind"), involved.get("name")) not in related:
            continue
        what = f"{involved.get('kind')} {involved.get('name')} {event.get('reason')}"
        line = f"{what}: {(event.get('message') or '').strip()}"
        # popped and re-inserted, so that the latest occurrence decides the order
        counts[line] = counts.pop(line, 0) + (event.get("count") or 1)
    lines = [line if n == 1 else f"{line} (x{n})" for line, n in counts.items()]
    return lines[-MAX_EVENTS:]


def log_reads(pods: list[str], view: rules.View) -> list[tuple[str, str, str, bool]]:
    """(report key, pod, container, previous?) of each log tail worth reading: of every container of these
    pods, the current instance's, and the one that ended before when it restarted."""
    reads = []
    for name in pods:
        pod = view.get("Pod", name) or {}
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            key = f"{name}/{cs['name']}"
            if cs.get("restartCount", 0) > 0:
                reads.append((f"{key} (previous instance)", name, cs["name"], True))
            reads.append((key, name, cs["name"], False))
    return reads


def read_log(core, namespace: str, pod: str, container: str, previous: bool, until: float) -> list[str]:
    try:
        text = core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=LOG_LINES,
                                            previous=previous, _request_timeout=remaining(until))
    except Exception:  # noqa: BLE001 - no kubelet, container never started, log rotated: no tail
        return []
    return text.splitlines()[-LOG_LINES:] if isinstance(text, str) else []


# ----- words for people -----

def render_progress(outcomes: list[Outcome], terminal: bool, previous: list[Outcome] | None = None) -> list[str]:
    """The lines to show. On a terminal: one line per service, to redraw in place. Elsewhere: timestamped
    lines, and with `previous` only those of services whose line changed since then."""
    words = service_words(outcomes)
    width = max((len(key) for key in words), default=0)
    lines = {key: f"{key:<{width}}  {text}" for key, text in words.items()}
    if terminal:
        return list(lines.values())
    before = service_words(previous) if previous is not None else {}
    stamp = datetime.now().strftime("%H:%M:%S")
    return [f"{stamp} {line}" for key, line in lines.items() if before.get(key) != words[key]]


def service_words(outcomes: list[Outcome]) -> dict[str, str]:
    """service (or kind/name when it has none) -> its progress in words."""
    groups: dict[str, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.service or f"{o.kind.lower()}/{o.name}", []).append(o)
    return {key: progress_words(group) for key, group in groups.items()}


def progress_words(group: list[Outcome]) -> str:
    state = overall_state(group)
    counted = [o for o in group if o.desired]
    desired, updated, ready = (sum(getattr(o, n) for o in counted) for n in ("desired", "updated", "ready"))
    if counted and all(o.kind == "Job" for o in counted):
        counts = f"{ready}/{desired} complete"
    elif counted:
        counts = f"{updated}/{desired} updated  {ready}/{desired} ready"
    else:
        counts = ", ".join(f"{o.kind} {o.name}" for o in group)
    # The counts say why a workload is waiting; say it in words for failures and for objects without counts.
    reasons = [o.reason for o in group if o.state == state != SUCCEEDED and o.reason
               and not (state == WAITING and o.desired)]
    return f"{counts}  ({state}{': ' + reasons[0] if reasons else ''})"


def overall_state(group: list[Outcome]) -> str:
    for state in (FAILED, TIMEOUT, WAITING):
        if any(o.state == state for o in group):
            return state
    return SUCCEEDED


def failure_report(result: RolloutResult) -> str:
    """Per failing or timed-out object: what went wrong, the recent warnings, and the last log lines."""
    sections = []
    for o in result.outcomes:
        if o.state not in (FAILED, TIMEOUT):
            continue
        title = f"{o.service or o.name}: {o.kind} {o.name} {'timed out' if o.state == TIMEOUT else 'failed'}"
        lines = [title, f"  reason: {o.reason or 'unknown'}"]
        if o.desired:
            lines.append(f"  pods: {o.updated}/{o.desired} updated, {o.ready}/{o.desired} ready")
        lines.append("  events:" if o.events else "  events: none since the deploy began")
        lines += [f"    {event}" for event in o.events]
        for container, tail in o.logs.items():
            lines.append(f"  last {len(tail)} log lines of {container}:")
            lines += [f"    | {line}" for line in tail]
        if not o.logs and kinds.of(o.kind).runs_pods:
            lines.append("  logs: none could be read")
        sections.append("\n".join(lines))
    unfinished = [f"{o.kind} {o.name} ({o.reason})" if o.reason else f"{o.kind} {o.name}"
                  for o in result.outcomes if o.state == WAITING]
    if unfinished:
        sections.append("still in progress when the rollout stopped: " + ", ".join(unfinished))
    return "\n\n".join(sections)

"""The pure decision: from the members a pool should have and the members it has, the changes to make.

No I/O here. The rules that keep traffic flowing:
- nothing is drained or removed while the Kubernetes view is partial (a watch not yet synced) or stale
  (the API server unreachable); adds still happen, so a balancer that lost its members gets them back;
- an endpoint that stops being ready is drained first, and removed once it has no connections or
  `drain_seconds` have passed;
- a Service whose ready endpoints all went away keeps its pool for `empty_grace_seconds` (a transient
  empty list is common in a deploy or an apiserver hiccup); after that the pool empties, loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skycap.lb.backends import DISABLED, DRAINING, ENABLED, Member, MemberState

ADD, ENABLE, DRAIN, REMOVE = "add", "enable", "drain", "remove"


@dataclass(frozen=True)
class Change:
    action: str
    member: Member
    reason: str


@dataclass
class PoolMemory:
    """What the reconciler remembers about one pool between passes."""

    draining_since: dict[Member, float] = field(default_factory=dict)
    empty_since: float | None = None


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    held: str | None = None           # why removals are held back, when they are
    loud: str | None = None           # a warning to log loudly (the pool is being emptied)
    wake_in: float | None = None      # seconds until a timer (drain, grace) needs another pass

    def wake(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.wake_in = seconds if self.wake_in is None else min(self.wake_in, seconds)


def plan(desired: set[Member] | None, current: dict[Member, MemberState], memory: PoolMemory, *, now: float,
         trusted: bool, drain_seconds: float, empty_grace_seconds: float) -> Plan:
    """`desired` is None when it is not known (the view is not synced, the Service is broken): no change.
    `trusted` is False while the view may be stale: only adds and re-enables."""
    result = Plan()
    if desired is None:
        result.held = "the desired members are not known"
        return result
    for member in sorted(desired):
        state = current.get(member)
        if state is None:
            result.changes.append(Change(ADD, member, "ready endpoint"))
        elif state.state != ENABLED:
            result.changes.append(Change(ENABLE, member, f"ready endpoint ({state.state} in the pool)"))
        memory.draining_since.pop(member, None)
    leaving = {m: s for m, s in current.items() if m not in desired}
    for member in list(memory.draining_since):
        if member not in leaving:
            memory.draining_since.pop(member)
    if not desired:
        if not any(s.state == ENABLED for s in current.values()):
            memory.empty_since = None
        elif memory.empty_since is None:
            memory.empty_since = now
    else:
        memory.empty_since = None
    if not leaving:
        return result
    if not trusted:
        result.held = "the Kubernetes view may be stale (API server unreachable): no member is drained or removed"
        return result
    if not desired and memory.empty_since is not None:
        waited = now - memory.empty_since
        if waited < empty_grace_seconds:
            result.held = (f"the Service has no ready endpoint; the pool is kept for {empty_grace_seconds:g} s "
                           f"in case that is transient ({waited:.1f} s so far)")
            result.wake(empty_grace_seconds - waited)
            return result
        result.loud = (f"the Service has had no ready endpoint for {waited:.0f} s (more than "
                       f"empty_grace_seconds={empty_grace_seconds:g}): emptying the pool")
    for member in sorted(leaving):
        _leave(result, memory, member, leaving[member], now, drain_seconds)
    return result


def _leave(result: Plan, memory: PoolMemory, member: Member, state: MemberState, now: float,
           drain_seconds: float) -> None:
    if state.state == ENABLED:
        memory.draining_since[member] = now
        result.changes.append(Change(DRAIN, member, "no longer a ready endpoint"))
        if drain_seconds <= 0:
            result.changes.append(Change(REMOVE, member, "drained (drain_seconds is 0)"))
        else:
            result.wake(drain_seconds)
        return
    since = memory.draining_since.setdefault(member, now)
    waited = now - since
    if state.connections == 0:
        result.changes.append(Change(REMOVE, member, f"{state.state} with no connections left"))
    elif waited >= drain_seconds:
        left = "" if state.connections is None else f", {state.connections} connections cut"
        result.changes.append(Change(REMOVE, member, f"drained for {waited:.1f} s (drain_seconds){left}"))
    else:
        result.wake(drain_seconds - waited)


def in_step(desired: set[Member], current: dict[Member, MemberState]) -> bool:
    """Every desired member takes connections; anything else only drains."""
    enabled = {m for m, s in current.items() if s.state == ENABLED}
    return enabled == desired


__all__ = ["ADD", "ENABLE", "DRAIN", "REMOVE", "DISABLED", "DRAINING", "Change", "Plan", "PoolMemory", "plan",
           "in_step"]

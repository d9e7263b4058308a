"""`skycap lb-sync`: keep each pool equal to its Service's ready endpoints, once or for as long as it runs.

Each pass over a pool reads the pool from the balancer, asks the reconciler what to change, and makes
those changes one by one, logging each with why. A pass runs when a watched object of its Service
changes, when a drain or grace timer is due, after a failure (with backoff), and on every resync."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from skycap.errors import BadInput, DeployFailed, SkycapError
from skycap.lb import reconciler
from skycap.lb.backends import (DISABLED, DRAINING, ENABLED, BalancerAuthFailed, BalancerUnavailable, Member,
                                MemberState, PoolMissing)
from skycap.lb.config import LoadBalancer, PoolSpec
from skycap.lb.server import Metrics

log = logging.getLogger("skycap.lb")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
ONCE_SYNC_TIMEOUT = 30.0
PAST_TENSE = {"add": "added", "enable": "enabled", "drain": "draining", "remove": "removed"}


def make_backend(lb: LoadBalancer, api, namespace: str):
    if lb.kind == "haproxy":
        from skycap.lb.backends.haproxy import HAProxy

        return HAProxy(lb.api)
    from skycap.lb.backends.f5 import F5
    from skycap.lb.sources import read_credentials

    username, password = read_credentials(lb, api, namespace)
    return F5(lb.api, username, password, partition=lb.partition, verify=lb.ca_file or True)


@dataclass
class Assessment:
    spec: PoolSpec
    desired: set[Member] | None
    current: dict[Member, MemberState]
    plan: reconciler.Plan


@dataclass
class PoolSync:
    """The sync of every pool of the stage against one balancer, with what it remembers between passes."""

    lb: LoadBalancer
    backend: object
    metrics: Metrics = field(default_factory=Metrics)
    dry_run: bool = False
    memory: dict[str, reconciler.PoolMemory] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    backoff: dict[str, float] = field(default_factory=dict)
    wake_at: dict[str, float] = field(default_factory=dict)
    pending_since: dict[str, float] = field(default_factory=dict)  # pool -> when its endpoints changed
    errors: dict[str, str] = field(default_factory=dict)            # pool -> why its last pass failed
    held: dict[str, str] = field(default_factory=dict)              # pool -> why removals are held back

    def assess(self, spec: PoolSpec, view, endpoint_kind: str, trusted: bool, now: float,
               found_drained: bool = False) -> Assessment:
        """`found_drained`: members out of rotation when first seen have drained long enough (--once, run
        from cron: they were drained by an earlier run, at least one interval ago)."""
        from skycap.lb.sources import desired_members

        desired = desired_members(view, spec, self.lb, endpoint_kind) if view is not None else None
        current = self._read_pool(spec.pool)
        memory = self.memory.setdefault(spec.pool, reconciler.PoolMemory())
        if found_drained:
            for member, state in current.items():
                if state.state != ENABLED:
                    memory.draining_since.setdefault(member, now - self.lb.drain_seconds)
        plan = reconciler.plan(desired, current, memory, now=now, trusted=trusted,
                               drain_seconds=self.lb.drain_seconds, empty_grace_seconds=self.lb.empty_grace_seconds)
        return Assessment(spec, desired, current, plan)

    def _read_pool(self, pool: str) -> dict[Member, MemberState]:
        try:
            return self.backend.list_pool(pool)
        except PoolMissing:
            if not self.lb.create_pools:
                raise
            if self.dry_run:
                log.info("pool %s: would be created on the %s (create_pools: true)", pool, self.backend.describe)
                return {}
            self.backend.create_pool(pool)
            log.warning("pool %s: created on the %s (it did not exist; create_pools: true)", pool,
                        self.backend.describe)
            return self.backend.list_pool(pool)

    def apply(self, assessment: Assessment, since: float | None = None) -> int:
        """Make the plan's changes; the number made. `since`: when the endpoint change behind them came."""
        spec, plan = assessment.spec, assessment.plan
        if plan.loud:
            log.warning("pool %s (service %s): %s", spec.pool, spec.service, plan.loud)
        if plan.held and assessment.current and plan.held.split(" (")[0] != self.held.get(spec.pool):
            log.info("pool %s (service %s): holding: %s", spec.pool, spec.service, plan.held)
        self.held[spec.pool] = (plan.held or "").split(" (")[0]
        current = dict(assessment.current)
        for change in plan.changes:
            if self.dry_run:
                log.info("pool %s: would %s %s (service %s: %s)", spec.pool, change.action, change.member,
                         spec.service, change.reason)
                continue
            getattr(self.backend, change.action)(spec.pool, change.member)
            self.metrics.changed(spec.pool, change.action)
            after = "" if since is None else f"; {time.monotonic() - since:.3f} s after the endpoint change"
            log.info("pool %s: %s %s (service %s: %s%s)", spec.pool, PAST_TENSE[change.action], change.member,
                     spec.service, change.reason, after)
            _track(current, change)
        if assessment.desired is not None:
            counts = {state: sum(1 for s in current.values() if s.state == state)
                      for state in (ENABLED, DRAINING, DISABLED)}
            self.metrics.set_pool(spec.pool, counts, reconciler.in_step(assessment.desired, current))
        return 0 if self.dry_run else len(plan.changes)

    # ----- the running loop's bookkeeping -----
    def run_pass(self, spec: PoolSpec, view, endpoint_kind: str, trusted: bool, now: float) -> None:
        """One pass over one pool; failures are logged once and retried with backoff."""
        pool = spec.pool
        try:
            assessment = self.assess(spec, view, endpoint_kind, trusted, now)
            made = self.apply(assessment, self.pending_since.get(pool))
        except (BalancerUnavailable, BalancerAuthFailed, PoolMissing) as exc:
            self.metrics.error("balancer")
            self._failed(pool, exc, now)
            return
        except SkycapError as exc:  # the Service does not fit the stage file: wait for a change or the resync
            self._failed(pool, exc, now, backoff=False)
            return
        if self.errors.pop(pool, None):
            log.info("pool %s: working again", pool)
        self.backoff.pop(pool, None)
        self.retry_at.pop(pool, None)
        since = self.pending_since.pop(pool, None)
        if made and since is not None:
            self.metrics.observe_latency(time.monotonic() - since)
        wake = assessment.plan.wake_in
        self.wake_at[pool] = now + wake + 0.01 if wake is not None else float("inf")

    def _failed(self, pool: str, exc: SkycapError, now: float, backoff: bool = True) -> None:
        text = str(exc)
        if self.errors.get(pool) != text:
            log.error("pool %s: %s; no member is removed on this account%s", pool, text,
                      ", retrying with backoff" if backoff else "")
        self.errors[pool] = text
        if backoff:  # else it is tried again when its Service changes, or at the resync
            delay = min(self.backoff.get(pool, BACKOFF_FIRST / 2) * 2, BACKOFF_MAX)
            self.backoff[pool] = delay
            self.retry_at[pool] = now + delay
        self.wake_at.pop(pool, None)

    def due(self, now: float) -> set[str]:
        return {pool for pool, at in {**self.wake_at, **self.retry_at}.items() if at <= now}


def _track(current: dict[Member, MemberState], change: reconciler.Change) -> None:
    if change.action == reconciler.REMOVE:
        current.pop(change.member, None)
    elif change.action == reconciler.DRAIN:
        current[change.member] = MemberState(DRAINING)
    else:
        current[change.member] = MemberState(ENABLED)


# ----- the command -----

def lb_sync(run, stage_name: str, once: bool, dry_run: bool, listen: str) -> int:
    from skycap.lb import sources
    from skycap.lb.server import serve
    from skycap.session import open_stage

    session = open_stage(run, stage_name)
    stage, lb = session.stage, session.stage.load_balancer
    if lb is None:
        raise BadInput(f"stage {stage.name} has no load_balancer block",
                       "add one to the stage file (kind, api, members, pools); see the README")
    _setup_logging(run)
    api = sources.api_client(stage)
    try:
        endpoint_kind, prefix = sources.endpoint_source(api)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the API server
        from skycap.cluster.errors import short_reason

        raise DeployFailed(f"cannot reach the Kubernetes API: {short_reason(exc)}") from None
    backend = make_backend(lb, api, stage.namespace)
    sync = PoolSync(lb, backend, dry_run=dry_run)
    feed = sources.KubeFeed(api, stage.namespace, endpoint_kind, prefix, nodes=lb.members == "nodeport")
    log.info("lb-sync %s: %s pools on the %s, members from %s (%s mode)%s", stage.name, len(lb.pools),
             backend.describe, endpoint_kind, lb.members, ", dry run" if dry_run else "")
    feed.start()
    try:
        if once:
            return _once(sync, feed, endpoint_kind)
        server = serve(sync.metrics, listen)
        log.info("health and metrics on http://%s/healthz and /metrics", listen)
        try:
            return _forever(sync, feed, endpoint_kind)
        finally:
            server.shutdown()
    finally:
        feed.stop()
        backend.close()


def _setup_logging(run) -> None:
    for old in list(log.handlers):
        log.removeHandler(old)
    handler = logging.StreamHandler(run.screen.stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _wait_synced(feed, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not feed.ready and time.monotonic() < deadline:
        feed.wait(0.1)
        refused = {kind: why for kind, why in feed.errors.items() if why in ("Forbidden", "Unauthorized")}
        if refused:
            raise DeployFailed("the Kubernetes API refused to list " + ", ".join(
                f"{kind} ({why})" for kind, why in refused.items()) + "; nothing was changed",
                "lb-sync needs get/list/watch on services, endpoints, endpointslices (a Role) and nodes (a "
                "ClusterRole): see templates/skycap-lb.yaml.j2")
    if not feed.ready:
        reasons = "; ".join(f"{kind}: {why}" for kind, why in feed.errors.items()) or "no answer"
        raise DeployFailed(f"could not list the Services, endpoints and Nodes within {timeout:g} s ({reasons})",
                           "nothing was changed")


def _once(sync: PoolSync, feed, endpoint_kind: str) -> int:
    """Plan every pool, and change nothing unless every pool could be planned."""
    _wait_synced(feed, ONCE_SYNC_TIMEOUT)
    now = time.monotonic()
    assessments, problems = [], []
    for spec in sync.lb.pools.values():
        try:
            assessments.append(sync.assess(spec, feed.view, endpoint_kind, feed.trusted, now, found_drained=True))
        except BalancerUnavailable:
            raise
        except SkycapError as exc:
            problems.append(exc)
    if problems:
        if len(problems) == 1:
            raise problems[0]
        raise BadInput("; ".join(p.message for p in problems), "nothing was changed")
    in_step = True
    for assessment in assessments:
        sync.apply(assessment)
        plan = assessment.plan
        if plan.held and assessment.desired is not None:
            log.warning("pool %s: %s", assessment.spec.pool, plan.held)
            in_step = False
    if sync.dry_run:
        changes = sum(len(a.plan.changes) for a in assessments)
        log.info("dry run: %s", f"{changes} changes would be made" if changes else "every pool is in step")
        return 0
    log.info("every pool is in step" if in_step else "some pools are not in step (see above)")
    return 0 if in_step else 1


def _forever(sync: PoolSync, feed, endpoint_kind: str) -> int:
    from skycap.session import interruptible

    pools = {spec.service: spec for spec in sync.lb.pools.values()}
    next_resync, was_trusted = 0.0, None
    try:
        with interruptible():
            while True:
                now = time.monotonic()
                timers = [next_resync, *sync.wake_at.values(), *sync.retry_at.values()]
                feed.wait(min(max(min(timers) - now, 0.0), 1.0))
                now = time.monotonic()
                for service, when in feed.take_touched().items():
                    for spec in (pools.values() if service == "*" else [pools.get(service)]):
                        if spec is not None:
                            sync.pending_since.setdefault(spec.pool, when)
                if not feed.ready:
                    sync.metrics.health(False, "the watches have not synced yet")
                    continue
                if feed.trusted != was_trusted:
                    before, was_trusted = was_trusted, feed.trusted
                    if not was_trusted:
                        sync.metrics.error("kubernetes")
                        log.warning("the Kubernetes API is unreachable (%s): members are added, none removed, "
                                    "until the watches are back", "; ".join(feed.errors.values()))
                    elif before is not None:
                        log.info("the Kubernetes API answers again: every watch has listed anew")
                due = {spec.pool for spec in sync.lb.pools.values() if spec.pool in sync.pending_since}
                due |= sync.due(now)
                if now >= next_resync:
                    due = {spec.pool for spec in sync.lb.pools.values()}
                    next_resync = now + sync.lb.resync_seconds
                for spec in sync.lb.pools.values():
                    if spec.pool in due and sync.retry_at.get(spec.pool, 0) <= now:
                        sync.run_pass(spec, feed.view, endpoint_kind, feed.trusted, now)
                _report_health(sync, feed)
    except KeyboardInterrupt:
        log.info("lb-sync stopped; the pools stay as they are")
        return 0


def _report_health(sync: PoolSync, feed) -> None:
    failing = sync.errors
    if failing:
        sync.metrics.health(False, "; ".join(f"pool {pool}: {why}" for pool, why in sorted(failing.items())))
    elif not feed.trusted:
        sync.metrics.health(False, "the Kubernetes API is unreachable: " + "; ".join(feed.errors.values()))
    else:
        sync.metrics.health(True, f"{len(sync.lb.pools)} pools in sync")


# ----- skycap status -----

def pool_report(stage, api) -> list[dict]:
    """Per pool: its members, the ready endpoints' members, and whether they match; errors as text."""
    from skycap.lb.sources import desired_members, list_view

    lb = stage.load_balancer
    try:
        view, endpoint_kind = list_view(api, stage.namespace, lb)
        backend = make_backend(lb, api, stage.namespace)
    except Exception as exc:  # noqa: BLE001 - status reports what it could not learn, and goes on
        from skycap.cluster.errors import short_reason

        why = exc.message if isinstance(exc, SkycapError) else short_reason(exc)
        return [{"service": s.service, "pool": s.pool, "error": why} for s in lb.pools.values()]
    rows = []
    try:
        for spec in lb.pools.values():
            row = {"service": spec.service, "pool": spec.pool}
            try:
                desired = desired_members(view, spec, lb, endpoint_kind)
                current = backend.list_pool(spec.pool)
            except SkycapError as exc:
                row["error"] = exc.message
            else:
                row["members"] = {m.name: s.state for m, s in sorted(current.items())}
                row["ready_endpoints"] = sorted(m.name for m in desired)
                row["in_step"] = reconciler.in_step(desired, current)
            rows.append(row)
    finally:
        backend.close()
    return rows


def print_pools(rows: list[dict]) -> None:
    from skycap.session import print_table

    table = [("SERVICE", "POOL", "MEMBERS", "MATCHES READY ENDPOINTS")]
    for row in rows:
        if "error" in row:
            table.append((row["service"], row["pool"], "-", f"UNKNOWN: {row['error']}"))
            continue
        members = ", ".join(f"{name}" + ("" if state == ENABLED else f" ({state})")
                            for name, state in row["members"].items()) or "none"
        missing = sorted(set(row["ready_endpoints"]) - {n for n, s in row["members"].items() if s == ENABLED})
        verdict = "yes" if row["in_step"] else "NO" + (f": missing {', '.join(missing)}" if missing else "")
        table.append((row["service"], row["pool"], members, verdict))
    print_table(table)

"""One deploy, rollback or scale at a time per stage: a coordination.k8s.io/v1 Lease in the stage's namespace.

Taken atomically (create; an expired lease is taken over with a replace that carries its
resourceVersion, so of two racers exactly one wins), renewed by a daemon thread while the work runs,
deleted on release only if it is still ours, and expiring on its own when its holder dies.

Expiry is judged as Kubernetes' leader election judges it: by how long this process has watched the
lease unchanged, on its own monotonic clock, never by comparing the holder's renewTime with the local
clock, so a machine whose clock runs ahead cannot take a live lock. The holder's renewTime only
decides whether a lease is worth watching: one that looks fresh is refused at once.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from skycap.cluster.kube import drained
from skycap.cluster.labels import MANAGED_BY, PURPOSE_ANNOTATION, SINCE_ANNOTATION, STAGE_LABEL, TOKEN_ANNOTATION
from skycap.cluster.ledger import Ledger, Release, user_name, who_am_i
from skycap.errors import BadInput, LockLost, StageLocked

DEFAULT_TTL = 30.0
WATCH_POLL_SECONDS = 0.5  # how often a lease being watched for expiry is read again
log = logging.getLogger("skycap.cluster.lock")


@dataclass
class LockInfo:
    holder: str
    purpose: str
    since: str  # ISO 8601 UTC
    renewed: str  # ISO 8601 UTC
    expires_in: float  # seconds; negative once expired


def lease_name(stage: str) -> str:
    return f"skycap-lock-{stage}"


class StageLock:
    """The stage's lock; `with StageLock(...):` holds it for the block, renewing it every ttl/3."""

    def __init__(self, api_client, namespace: str, stage: str, purpose: str, ttl: float = DEFAULT_TTL,
                 notice=None):
        from kubernetes import client

        self.leases = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.stage = stage
        self.purpose = purpose
        self.ttl = ttl
        self.holder = f"{user_name()}@{socket.gethostname()}:{os.getpid()}"
        self._token = secrets.token_hex(8)
        self._lease: dict | None = None  # our lease as last written; None when not held
        self._writing = threading.Lock()  # the renewer and set_purpose write the same lease
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._renewed_at = 0.0  # time.monotonic() of the last successful write
        self._lost = False
        self._lost_why = ""
        self._last_error = ""  # why the last renewal failed
        self.notice = notice  # notice(text): tells the person waiting why (watching a lease that looks expired)

    # -- the public face ------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock or raise StageLocked at once, naming who holds it."""
        if self._lease is not None:
            raise RuntimeError("this lock is already held")
        for _attempt in range(5):
            if self._create():
                break
            standing = _read_lease(self.leases, self.namespace, lease_name(self.stage))
            if standing is None:
                continue  # released between our create and our read
            if not _looks_expired(standing):
                raise locked_error(self.stage, standing)
            if _held(standing):
                standing = unchanged_for_its_duration(self.leases, standing,
                                                      lambda now: locked_error(self.stage, now), self.notice)
                if standing is None:
                    continue  # released while we watched
            if self._take_over(standing):
                break
        else:
            raise StageLocked(f"stage {self.stage}'s lock keeps changing hands; try again")
        self._start_renewing()

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Never raises: it runs in a finally,
        and a lease we failed to delete expires on its own."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.ttl)
        with self._writing:
            lease, self._lease = self._lease, None
        if lease is None:
            return
        try:
            _delete_lease(self.leases, lease, only_if_token=self._token)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("could not release the lock of stage %s (it expires in %.0f s): %s",
                        self.stage, self.ttl, exc)

    def set_purpose(self, purpose: str) -> None:
        """Say what the holder does now (e.g. once the release number is known), for whoever is refused."""
        self.purpose = purpose
        if self._lease is None:
            return
        try:
            self._renew()
        except Exception as exc:  # noqa: BLE001 - the next renewal writes it; the work must not fail for it
            log.warning("could not update the lock of stage %s: %s", self.stage, exc)

    @property
    def lost(self) -> bool:
        """True once someone else holds the lease, or our last renewal is older than the ttl; for good:
        once the ttl passed, another process may have taken the stage and let it go again."""
        if not self._lost and self._lease is not None and time.monotonic() - self._renewed_at > self._duration():
            self._lost = True
            self._lost_why = (f"it could not be renewed for longer than its TTL ({self._duration()} s; "
                              f"{self._last_error or 'no answer from the API server'})")
        return self._lost

    def check(self) -> None:
        """Raise LockLost once the lock is lost: the work must stop before its next change."""
        if self.lost:
            raise LockLost(f"this run lost the lock of stage {self.stage}: {self._lost_why}; "
                           f"it stopped before its next change",
                           f"another deploy may be running; see `skycap status {self.stage}` and "
                           f"`skycap history {self.stage}`")

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()

    # -- taking it ------------------------------------------------------------------------------

    def _duration(self) -> int:
        return max(1, math.ceil(self.ttl))  # leaseDurationSeconds is whole seconds

    def _new_lease(self, standing: dict | None = None) -> dict:
        now = _micro_time()
        metadata = {"name": lease_name(self.stage), "namespace": self.namespace,
                    "labels": {MANAGED_BY: "skycap", STAGE_LABEL: self.stage},
                    "annotations": {PURPOSE_ANNOTATION: self.purpose, SINCE_ANNOTATION: now,
                                    TOKEN_ANNOTATION: self._token}}
        transitions = 0
        if standing is not None:
            metadata["resourceVersion"] = standing["metadata"]["resourceVersion"]
            transitions = (standing.get("spec") or {}).get("leaseTransitions", 0) + 1
        spec = {"holderIdentity": self.holder, "leaseDurationSeconds": self._duration(), "acquireTime": now,
                "renewTime": now, "leaseTransitions": transitions}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _create(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.leases.create_namespaced_lease(self.namespace, self._new_lease(),
                                                           _preload_content=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status == 404:
                raise BadInput(f"namespace {self.namespace} (stage {self.stage}) does not exist") from None
            raise
        self._hold(json.loads(response.data))
        return True

    def _take_over(self, expired: dict) -> bool:
        """Replace an expired lease; False when another taker got there first (or it vanished)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.leases.replace_namespaced_lease(lease_name(self.stage), self.namespace,
                                                            self._new_lease(expired), _preload_content=False)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        self._hold(json.loads(response.data))
        return True

    def _hold(self, lease: dict) -> None:
        self._lease, self._renewed_at, self._lost = lease, time.monotonic(), False

    # -- keeping it -----------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                         name=f"skycap-lock-{self.stage}")
        self._renewer.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._renew()
            except Exception as exc:  # noqa: BLE001 - keep trying: a blip must not end the renewals
                from skycap.cluster.errors import short_reason

                self._last_error = f"last error: {short_reason(exc)}"
                log.warning("renewing the lock of stage %s failed: %s", self.stage, short_reason(exc))
            if self.lost:
                return

    def _renew(self) -> None:
        from kubernetes.client.exceptions import ApiException

        with self._writing:
            if self._lease is None or self.lost:
                return
            lease = copy.deepcopy(self._lease)
            lease["spec"]["renewTime"] = _micro_time()
            lease["metadata"].setdefault("annotations", {})[PURPOSE_ANNOTATION] = self.purpose
            try:
                # A renewal later than the ttl is useless: don't let a hung connection block release().
                response = self.leases.replace_namespaced_lease(lease_name(self.stage), self.namespace, lease,
                                                                _preload_content=False, _request_timeout=self.ttl)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                self._recheck()
                return
            self._hold(json.loads(response.data))

    def _recheck(self) -> None:
        """After a conflict: adopt the lease if it is still ours (edited by hand), else we lost it."""
        standing = _read_lease(self.leases, self.namespace, lease_name(self.stage))
        if standing is not None and _token(standing) == self._token:
            self._lease = standing  # the next renewal writes on top of this version
            return
        self._lost, self._lease = True, None
        taker = f"to {lease_info(standing).holder}" if standing is not None else "(it was deleted)"
        self._lost_why = (f"it was taken by {lease_info(standing).holder}" if standing is not None
                          else "it was deleted (`skycap unlock`?)")
        log.warning("lost the lock of stage %s %s", self.stage, taker)


# -- reading and breaking it from outside ------------------------------------------------------------


def read_lock(api_client, namespace: str, stage: str) -> LockInfo | None:
    """Who holds the stage's lock, for `skycap status`; None when nobody does (or the lease expired)."""
    from kubernetes import client

    lease = _read_lease(client.CoordinationV1Api(api_client), namespace, lease_name(stage))
    return None if lease is None or _looks_expired(lease) else lease_info(lease)


def break_lock(api_client, namespace: str, stage: str, force: bool = False, notice=None) -> LockInfo | None:
    """Delete the stage's lock (for `skycap unlock`); returns what was there. Without force, only a lock
    nobody renewed while we watched it for its whole duration: a live holder's lock is refused (exit 3)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    leases = client.CoordinationV1Api(api_client)
    for _attempt in range(5):
        lease = _read_lease(leases, namespace, lease_name(stage))
        if lease is None:
            return None
        if not force and _held(lease):
            lease = unchanged_for_its_duration(leases, lease, lambda now: alive_error(stage, now), notice)
            if lease is None:
                return None
        try:
            _delete_lease(leases, lease)
            return lease_info(lease)
        except ApiException as exc:
            if exc.status != 409:  # 409: written between our read and delete
                raise
            if not force:
                raise alive_error(stage, _read_lease(leases, namespace, lease_name(stage)) or lease) from None
    raise StageLocked(f"stage {stage}'s lock keeps changing; try again")


def unchanged_for_its_duration(leases, lease: dict, refuse, notice=None) -> dict | None:
    """Watch the lease for its whole duration on this process's monotonic clock, as client-go's leader
    election does. Returns it as it stood if nobody wrote it meanwhile (expired: its holder stopped
    renewing), None if it was deleted; any write (a renewal, a takeover) raises refuse(the lease now)."""
    metadata = lease["metadata"]
    duration = float((lease.get("spec") or {}).get("leaseDurationSeconds") or 0)
    if notice is not None:
        info = lease_info(lease)
        notice(f"the lock of stage {metadata['name'].removeprefix('skycap-lock-')} (held by {info.holder}, doing: "
               f"{info.purpose}) may be stale; watching it for {duration:g} s to see whether its holder still "
               f"renews it")
    until = time.monotonic() + duration
    while True:
        remaining = until - time.monotonic()
        if remaining <= 0:
            return lease
        time.sleep(min(WATCH_POLL_SECONDS, remaining))
        now = _read_lease(leases, metadata["namespace"], metadata["name"])
        if now is None:
            return None
        if now["metadata"]["resourceVersion"] != metadata["resourceVersion"]:
            raise refuse(now)


def alive_error(stage: str, lease: dict) -> StageLocked:
    info = lease_info(lease)
    return StageLocked(f"stage {stage}'s lock is alive: {info.holder} renewed it in the last "
                       f"{(lease.get('spec') or {}).get('leaseDurationSeconds', '?')} s (doing: {info.purpose}); "
                       f"not broken",
                       f"a live deploy holds it; if you know that process is hung rather than working, "
                       f"run: skycap unlock {stage} --force")


@dataclass
class Unlocked:
    broken: LockInfo | None  # the lock that was there
    interrupted: list[int] = field(default_factory=list)  # pending releases now marked interrupted
    release: Release | None = None  # the ledger's record of this unlock (None when there was nothing to do)


def unlock(api_client, namespace: str, stage: str, ttl: float = DEFAULT_TTL, force: bool = False,
           notice=None) -> Unlocked:
    """`skycap unlock`: break the lock (a live one only with force), mark the dead holder's pending
    release interrupted, and record it.

    It takes the lock itself while it writes the ledger, so a deploy starting right after the break
    cannot have its fresh pending release marked interrupted."""
    broken = break_lock(api_client, namespace, stage, force=force, notice=notice)
    with StageLock(api_client, namespace, stage, purpose="unlock", ttl=ttl):
        ledger = Ledger(api_client, namespace, stage)
        interrupted = ledger.interrupt_pending(f"interrupted: its lock was broken by {who_am_i()}")
        if broken is None and not interrupted:
            return Unlocked(None)
        record = ledger.begin("unlock", note=unlock_note(broken, interrupted))
        ledger.finish(record, "recorded")
    return Unlocked(broken, interrupted, record)


def unlock_note(broken: LockInfo | None, interrupted: list[int]) -> str:
    if broken is None:
        note = "no lock was held"
    else:
        note = f"lock broken (held by {broken.holder} since {broken.since}, doing: {broken.purpose})"
    if interrupted:
        note += "; marked interrupted: release " + ", ".join(str(number) for number in interrupted)
    return note


# -- the Lease as stored -----------------------------------------------------------------------------


def lease_info(lease: dict) -> LockInfo:
    spec = lease.get("spec") or {}
    annotations = lease["metadata"].get("annotations") or {}
    renewed = spec.get("renewTime") or spec.get("acquireTime") or ""
    return LockInfo(holder=spec.get("holderIdentity") or "(nobody)",
                    purpose=annotations.get(PURPOSE_ANNOTATION, "(not said)"),
                    since=annotations.get(SINCE_ANNOTATION) or spec.get("acquireTime") or "",
                    renewed=renewed, expires_in=_expires_in(lease))


def locked_error(stage: str, lease: dict) -> StageLocked:
    info = lease_info(lease)
    duration = (lease.get("spec") or {}).get("leaseDurationSeconds", "?")
    since = f"{clock(info.since)} ({ago(info.since)})" if info.since else "an unknown time"
    return StageLocked(f"stage {stage} is locked by {info.holder} since {since}, doing: {info.purpose}",
                       f"it expires {duration} s after its holder stops renewing it; "
                       f"if that deploy is dead, run: skycap unlock {stage}")


def _read_lease(leases, namespace: str, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        response = leases.read_namespaced_lease(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(response.data)


def _delete_lease(leases, lease: dict, only_if_token: str | None = None) -> None:
    """Delete exactly this version of the lease (409 if it changed since). With only_if_token, a
    version changed by someone else is left alone, and one merely edited while still ours is deleted."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    metadata = lease["metadata"]
    preconditions = client.V1Preconditions(resource_version=metadata["resourceVersion"], uid=metadata["uid"])
    try:
        drained(leases.delete_namespaced_lease(metadata["name"], metadata["namespace"], _preload_content=False,
                                               body=client.V1DeleteOptions(preconditions=preconditions)))
    except ApiException as exc:
        if exc.status == 404:
            return
        if exc.status != 409 or only_if_token is None:
            raise
        standing = _read_lease(leases, metadata["namespace"], metadata["name"])
        if standing is not None and _token(standing) == only_if_token:
            _delete_lease(leases, standing)


def _token(lease: dict) -> str | None:
    return (lease["metadata"].get("annotations") or {}).get(TOKEN_ANNOTATION)


def _expires_in(lease: dict) -> float:
    spec = lease.get("spec") or {}
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not spec.get("holderIdentity") or not renewed:
        return -1.0  # a lease nobody holds is free
    expiry = _parse_time(renewed).timestamp() + float(spec.get("leaseDurationSeconds") or 0)
    return expiry - time.time()


def _looks_expired(lease: dict) -> bool:
    """By the holder's renewTime and the local clock: only a hint (see unchanged_for_its_duration)."""
    return _expires_in(lease) <= 0


def _held(lease: dict) -> bool:
    return bool((lease.get("spec") or {}).get("holderIdentity"))


def _micro_time() -> str:
    # The apiserver's MicroTime wants exactly six fraction digits; isoformat drops them at .000000.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def clock(iso: str) -> str:
    """10:02:11 UTC today, 2024-05-01 10:02:11 UTC another day."""
    moment = _parse_time(iso).astimezone(timezone.utc)
    if moment.date() == datetime.now(timezone.utc).date():
        return moment.strftime("%H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(iso: str) -> str:
    seconds = max(0, int(time.time() - _parse_time(iso).timestamp()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"

"""What every pipeline shares: the stage session (config, API client, kubectl, ledger), phases,
error translation for API calls, interrupt handling, and recording a release's outcome."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

from skycap.errors import BadInput, DeployFailed, LockLost, SkycapError
from skycap.record import Record, fresh


class StageSession(Record):
    """One stage's loaded config and its connections, made once per run."""

    run: object
    stage: object
    _api = None
    _kubectl = None
    lock = None  # the StageLock the work holds, once taken

    def require_lock(self) -> None:
        """Before each change: LockLost once the stage lock is lost (renewals failed past its TTL, broken)."""
        if self.lock is not None:
            self.lock.check()

    def lock_lost(self) -> bool:
        return self.lock is not None and self.lock.lost

    @property
    def api(self):
        if self._api is None:
            from skycap.cluster.kube import api_client

            self._api = api_client(self.stage)
        return self._api

    @property
    def kubectl(self):
        if self._kubectl is None:
            from skycap.cluster.kube import kubeconfig_path
            from skycap.cluster.kubectl import Kubectl

            self._kubectl = Kubectl(namespace=self.stage.namespace, log=self.run.log_for(self.stage.name),
                                    screen=self.run.screen, kubeconfig=kubeconfig_path(self.stage),
                                    context=self.stage.context, verbose=self.run.verbose)
        return self._kubectl

    _ledger = None

    @property
    def ledger(self):
        if self._ledger is None:
            from skycap.cluster.ledger import Ledger

            self._ledger = Ledger(self.api, self.stage.namespace, self.stage.name)
        return self._ledger


def open_stage(run, name: str) -> StageSession:
    stage = run.project.load_stage(name)
    run.log_for(name)
    return StageSession(run, stage)


class Phases:
    """Prints each phase as it starts and keeps its timing for the summary and the log."""

    def __init__(self, run, stage_name: str):
        self.run = run
        self.log = run.log_for(stage_name)
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def phase(self, name: str):
        self.run.screen.phase(name)
        self.log.write("skycap", f"phase: {name}")
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings.append((name, round(time.monotonic() - started, 3)))


@contextmanager
def interruptible():
    """SIGTERM behaves as Ctrl-C, so CI cancelling a job releases the lock too."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def lock_ttl() -> float:
    """How long a dead deploy's lock outlives it (SKYCAP_LOCK_TTL seconds, default 30)."""
    import os

    try:
        return max(2.0, float(os.environ.get("SKYCAP_LOCK_TTL", "30")))
    except ValueError:
        raise BadInput("SKYCAP_LOCK_TTL must be a number of seconds") from None


def emit_json(document: dict) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


def print_table(rows) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def load_objects(manifests_yaml: str) -> list[dict]:
    from skycap.yamlio import load_all

    return [doc for doc in load_all(manifests_yaml) if isinstance(doc, dict)]


class DeployState(Record):
    """What a deploy knows as it goes; read by the summary, the failure path and --output json."""

    stage: str
    rev: str
    revision: object = None
    release: object = None
    rendered: object = None
    applied: list[str] = fresh(list)
    result: object = None
    status: str = "pending"
    rolled_back_to: int | None = None
    vm_results: dict = fresh(dict)
    error: str = ""
    releases: list | None = None  # the ledger as listed under the lock, newest first, this release included


def record(ledger, state, status: str, note: str) -> None:
    from skycap.cluster.ledger import vm_releases

    state.status = status
    release = state.release
    release.applied = list(state.applied)
    release.vm = vm_releases(release.vm, state.vm_results)
    ledger.finish(release, status, note=note[:2000], releases=state.releases)


RECORD_ATTEMPTS = 3
RECORD_RETRY_SECONDS = 2.0


def record_failed(session, state, note: str) -> bool:
    """Record the release as failed, trying again on an error (the API server may be restarting);
    False, and said on screen, when it could not be written: the caller's rollback runs anyway."""
    screen = session.run.screen
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            record(session.ledger, state, "failed", note)
            return True
        except LockLost as exc:  # someone else wrote it meanwhile (marked it interrupted): theirs stands
            screen.warn(f"release {state.release.number} not recorded as failed: {exc.message}")
            return False
        except Exception as exc:  # noqa: BLE001 - any error: try again, then go on to the rollback
            reason = exc.message if isinstance(exc, SkycapError) else f"{type(exc).__name__}: {exc}"
            if attempt == RECORD_ATTEMPTS or isinstance(exc, BadInput):  # BadInput: the entry is gone for good
                tries = f" in {attempt} attempts" if attempt > 1 else ""
                screen.warn(f"could not record release {state.release.number} as failed{tries} ({reason}); "
                            f"the ledger may still say pending")
                return False
            screen.warn(f"recording release {state.release.number} as failed did not work ({reason}); "
                        f"trying again in {RECORD_RETRY_SECONDS * attempt:g} s")
            time.sleep(RECORD_RETRY_SECONDS * attempt)
    return False


def record_interrupted(session, state, note: str) -> None:
    """Best effort: the work stops anyway, and a release left pending is marked by the next holder."""
    try:
        record(session.ledger, state, "interrupted", note)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        reason = exc.message if isinstance(exc, SkycapError) else f"{type(exc).__name__}: {exc}"
        session.run.screen.warn(f"could not record release {state.release.number} as interrupted: {reason}")


def as_failure(session, exc: BaseException) -> SkycapError:
    """What stopped work that had changed the stage, as the error of a failed deploy (exit 1): a rollout
    timeout stays one (exit 4); bad input can no longer be "nothing changed"; a crash of ours or of a
    library is said in one line, its traceback kept in the run's log."""
    from skycap.errors import RolloutTimeout

    if isinstance(exc, (DeployFailed, RolloutTimeout)):
        return exc
    if isinstance(exc, SkycapError):
        return DeployFailed(exc.message, exc.hint)
    import traceback

    session.run.log.write("skycap", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return DeployFailed(f"skycap hit an unexpected {type(exc).__name__}: {exc}",
                        f"its traceback is in the run's log ({session.run.log.path}); please report it")


@contextmanager
def recorded(session, state, what: str):
    """Whatever stops the block, the release's ledger entry says so (interrupted or failed); until the
    block has begun the release (state.release is None), there is nothing to record."""
    try:
        yield
    except KeyboardInterrupt:
        if state.release is not None:
            record(session.ledger, state, "interrupted", f"{what} interrupted by the user")
        raise
    except LockLost as exc:
        if state.release is not None:
            record_interrupted(session, state, exc.message)
        raise
    except Exception as exc:  # noqa: BLE001 - a crash too is a failure, never a release left pending
        if state.release is None:
            raise
        error = as_failure(session, exc)
        record_failed(session, state, error.message)
        if error is exc:
            raise
        raise error from None


def mark_dead_releases(session, releases=None) -> None:
    """Pending releases found while we hold the lock belong to deploys that died (their lease expired)."""
    marked = session.ledger.interrupt_pending("its deploy stopped without finishing (the holder died; the lock "
                                              "expired or was broken)", releases)
    for number in marked:
        session.run.screen.warn(f"release {number} was left pending by a deploy that died; marked interrupted")


def host_printer(session):
    lock = threading.Lock()

    def on_event(host: str, message: str) -> None:
        with lock:
            session.run.screen.line(f"    {host}: {message}")
    return on_event


def vm_result_dict(result) -> dict:
    from dataclasses import asdict

    return asdict(result)


def prefetch(func, *args):
    """Start func(*args) on a thread now; .result() later re-raises what it raised."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(func, *args)
    pool.shutdown(wait=False)
    return future

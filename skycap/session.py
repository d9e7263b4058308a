"""What every pipeline shares: the stage session (config, API client, kubectl, ledger), phases,
error translation for API calls, interrupt handling, and recording a release's outcome."""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from skycap.errors import BadInput, SkycapError


@dataclass
class StageSession:
    """One stage's loaded config and its connections, made once per run."""

    run: object
    stage: object
    _api = None
    _kubectl = None

    @property
    def api(self):
        if self._api is None:
            from skycap.kube import api_client

            self._api = api_client(self.stage)
        return self._api

    @property
    def kubectl(self):
        if self._kubectl is None:
            from skycap.kube import kubeconfig_path
            from skycap.kubectl import Kubectl

            self._kubectl = Kubectl(namespace=self.stage.namespace, log=self.run.log_for(self.stage.name),
                                    screen=self.run.screen, kubeconfig=kubeconfig_path(self.stage),
                                    context=self.stage.context, verbose=self.run.verbose)
        return self._kubectl

    _ledger = None

    @property
    def ledger(self):
        if self._ledger is None:
            from skycap.ledger import Ledger

            self._ledger = Ledger(self.api, self.stage.namespace, self.stage.name)
        return self._ledger


def open_stage(run, name: str) -> StageSession:
    stage = run.project.load_stage(name)
    run.log_for(name)
    return StageSession(run, stage)


def call_api(session: StageSession, what: str, func, *args, **kwargs):
    """A Kubernetes API call whose connection failure becomes a clear, typed error."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return func(*args, **kwargs)
    except HTTPError as exc:
        from skycap.kube import unreachable

        raise unreachable(session.stage, exc) from None
    except ApiException as exc:
        hint = ("the kubeconfig's user may lack RBAC rights in namespace " + session.stage.namespace
                if exc.status in (401, 403) else None)
        raise SkycapError(f"the Kubernetes API refused ({what}): {exc.status} {exc.reason}", hint) from None


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


@dataclass
class DeployState:
    """What a deploy knows as it goes; read by the summary, the failure path and --output json."""

    stage: str
    rev: str
    revision: object = None
    release: object = None
    rendered: object = None
    applied: list[str] = field(default_factory=list)
    result: object = None
    status: str = "pending"
    rolled_back_to: int | None = None
    vm_results: dict = field(default_factory=dict)
    error: str = ""
    releases: list | None = None  # the ledger as listed under the lock, newest first, this release included


def record(ledger, state, status: str, note: str) -> None:
    state.status = status
    release = state.release
    release.applied = list(state.applied)
    release.vm = {name: result.get("release") for name, result in state.vm_results.items()
                  if result.get("action") == "deploy" and result.get("hosts")}
    ledger.finish(release, status, note=note[:2000], releases=state.releases)


@contextmanager
def recorded(ledger, state, what: str):
    """Whatever stops the block, the release's ledger entry says so (interrupted or failed)."""
    try:
        yield
    except KeyboardInterrupt:
        record(ledger, state, "interrupted", f"{what} interrupted by the user")
        raise
    except SkycapError as exc:
        record(ledger, state, "failed", exc.message)
        raise


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

"""The cluster side of a deploy, done on a thread from the start: the client's slow import, the
namespace (made when the stage asks for it), the stage lock, and the ledger read under the lock
(releases left pending by dead deploys marked, the next release number).

The render and the checks run beside it (unless a template reads `release`), and a locked stage is
reported before any check's verdict. Nothing here changes the stage's services; a namespace made
here is deleted again if the deploy stops before its first change.
"""

from __future__ import annotations

import threading

from skycap.errors import BadInput, SkycapError
from skycap.kube import drained
from skycap.session import StageSession, call_api, lock_ttl, mark_dead_releases, prefetch


class ClusterSide:
    def __init__(self, session: StageSession, purpose: str):
        self.session = session
        self.purpose = purpose
        self.made_namespace = False
        self.lock = None
        self.next_number: int | None = None
        self.releases: list = []  # the ledger as listed under the lock, newest first
        self.client_imported = threading.Event()
        self._work = prefetch(self._prepare)

    def ready(self) -> ClusterSide:
        """Wait for the work; re-raise what stopped it (a missing namespace, a locked stage ...)."""
        self._work.result()
        return self

    def close(self, *, nothing_changed: bool) -> None:
        """Release the lock; after a deploy that changed nothing, delete the namespace this run made."""
        self._work.exception()  # wait: a lock still being taken must not outlive us
        if self.lock is not None:
            self.lock.release()
        if nothing_changed and self.made_namespace:
            delete_namespace(self.session)

    def _prepare(self) -> None:
        try:
            from kubernetes import client, config  # noqa: F401 - see client_imported
        finally:
            self.client_imported.set()
        from skycap.lock import StageLock

        session, stage = self.session, self.session.stage
        self.made_namespace = ensure_namespace(session)
        lock = StageLock(session.api, stage.namespace, stage.name, purpose=self.purpose, ttl=lock_ttl())
        call_api(session, "lock", lock.acquire)
        self.lock = lock
        self.releases = call_api(session, "ledger", session.ledger.releases)
        mark_dead_releases(session, self.releases)
        self.next_number = session.ledger.next_number


def namespace_exists(core, name: str) -> None:
    """LookupError when the namespace is missing; other API errors pass through."""
    from kubernetes.client.rest import ApiException

    try:
        drained(core.read_namespace(name, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(name) from None
        raise


def ensure_namespace(session: StageSession) -> bool:
    """True when this call created the namespace (create_namespace); BadInput when it is missing otherwise."""
    from kubernetes import client

    stage = session.stage
    core = client.CoreV1Api(session.api)
    try:
        call_api(session, "namespace", namespace_exists, core, stage.namespace)
        return False
    except LookupError:
        pass
    if not stage.create_namespace:
        raise BadInput(f"namespace {stage.namespace} does not exist",
                       "create it, or set kubernetes.create_namespace: true in the stage file")
    from skycap.render import MANAGED_BY, STAGE_LABEL

    drained(call_api(session, "create namespace", core.create_namespace,
                     {"metadata": {"name": stage.namespace, "labels": {MANAGED_BY: "skycap", STAGE_LABEL: stage.name}}},
                     _preload_content=False))
    return True


def delete_namespace(session: StageSession) -> None:
    """The namespace this deploy made before it stopped: nothing of the stage's is in it yet."""
    from kubernetes import client

    name = session.stage.namespace
    try:
        drained(call_api(session, "delete namespace", client.CoreV1Api(session.api).delete_namespace, name,
                         _preload_content=False))
        session.run.screen.line(f"    deleted namespace {name} again: this deploy made it, and stopped before using it")
    except SkycapError as exc:
        session.run.screen.warn(f"could not delete namespace {name}, which this deploy made: {exc.message}")

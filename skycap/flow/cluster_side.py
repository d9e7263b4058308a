"""The cluster side of a deploy, done on a thread from the start: the client's slow import, the
namespace (made when the stage asks for it), the stage lock, and the ledger read under the lock
(releases left pending by dead deploys marked, the next release number).

The render and the checks run beside it (unless a template reads `release`), and a locked stage is
reported before any check's verdict. Nothing here changes the stage's services; a namespace made
here is deleted again if the deploy stops before its first change, but only while this deploy holds
the stage lock: one that lost the lock race leaves it to the deploy that won.
"""

from __future__ import annotations

import threading

from skycap.cluster.errors import call_api
from skycap.cluster.kube import drained
from skycap.errors import BadInput, SkycapError
from skycap.session import StageSession, lock_ttl, mark_dead_releases, prefetch


class ClusterSide:
    def __init__(self, session: StageSession, purpose: str):
        self.session = session
        self.purpose = purpose
        self.made_namespace = False
        self.namespace_uid: str | None = None  # of the namespace this run made: its deletion is conditional on it
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
        """After a deploy that changed nothing, delete the namespace this run made, while still holding
        the lock (so no other deploy is using it); then release the lock."""
        self._work.exception()  # wait: a lock still being taken must not outlive us
        if nothing_changed and self.made_namespace:
            if self.lock is not None and not self.lock.lost:
                delete_namespace(self.session, self.namespace_uid)
            else:
                self.session.run.screen.line(f"    left namespace {self.session.stage.namespace}, which this deploy "
                                             f"made: it does not hold the stage lock, and another deploy may be "
                                             f"using the namespace")
        if self.lock is not None:
            self.lock.release()

    def _prepare(self) -> None:
        try:
            from kubernetes import client, config  # noqa: F401 - see client_imported
        finally:
            self.client_imported.set()
        from skycap.cluster.lock import StageLock

        session, stage = self.session, self.session.stage
        self.namespace_uid = ensure_namespace(session)
        self.made_namespace = self.namespace_uid is not None
        lock = StageLock(session.api, stage.namespace, stage.name, purpose=self.purpose, ttl=lock_ttl(),
                         notice=session.run.screen.line)
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


def ensure_namespace(session: StageSession) -> str | None:
    """The uid of the namespace when this call created it (create_namespace), else None; BadInput when
    it is missing and the stage does not ask for it."""
    import json

    from kubernetes import client

    stage = session.stage
    core = client.CoreV1Api(session.api)
    try:
        call_api(session, "namespace", namespace_exists, core, stage.namespace)
        return None
    except LookupError:
        pass
    if not stage.create_namespace:
        raise BadInput(f"namespace {stage.namespace} does not exist",
                       "create it, or set kubernetes.create_namespace: true in the stage file")
    from skycap.cluster.labels import MANAGED_BY, STAGE_LABEL

    body = {"metadata": {"name": stage.namespace, "labels": {MANAGED_BY: "skycap", STAGE_LABEL: stage.name}}}
    try:
        response = call_api(session, "create namespace", _create_unless_there, core, body)
    except LookupError:  # another deploy of the stage made it a moment ago: it is theirs
        return None
    return json.loads(response.data)["metadata"]["uid"]


def _create_unless_there(core, body):
    """LookupError when the namespace is there already (409)."""
    from kubernetes.client.rest import ApiException

    try:
        return core.create_namespace(body, _preload_content=False)
    except ApiException as exc:
        if exc.status == 409:
            raise LookupError(body["metadata"]["name"]) from None
        raise


def delete_namespace(session: StageSession, uid: str | None) -> None:
    """The namespace this deploy made before it stopped: nothing of the stage's is in it yet. Exactly
    that one (its uid is a precondition), never one someone else made under the same name since."""
    from kubernetes import client

    name = session.stage.namespace
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
    try:
        drained(call_api(session, "delete namespace", client.CoreV1Api(session.api).delete_namespace, name,
                         body=options, _preload_content=False))
        session.run.screen.line(f"    deleted namespace {name} again: this deploy made it, and stopped before using it")
    except SkycapError as exc:
        session.run.screen.warn(f"could not delete namespace {name}, which this deploy made: {exc.message}")

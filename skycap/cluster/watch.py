"""Watching a namespace: one thread per kind lists, then watches from the list's resourceVersion,
and feeds every change into one queue; a broken watch (apiserver restart, 410 Gone) re-lists."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from skycap.cluster import kinds
from skycap.cluster.errors import short_reason
from skycap.cluster.rollout_rules import View

log = logging.getLogger(__name__)

WATCH_SECONDS = 240  # the server ends each watch after this; we resume from the last resourceVersion
REQUEST_TIMEOUT = 15
RETRY_SECONDS = 0.5
BATCH_SECONDS = 0.02


class Feed:
    """Keeps `view` current from a queue that watch threads fill; only the caller's thread touches the view."""

    def __init__(self, api_client, namespace: str, kinds: list[str]):
        self.api_client, self.namespace, self.kinds = api_client, namespace, kinds
        self.changes: queue.Queue = queue.Queue()
        self.view = View({kind: {} for kind in kinds})
        self.synced: set[str] = set()
        self.errors: dict[str, str] = {}  # kind -> why its last list or watch failed
        self.stopped = threading.Event()
        self.streams: list = []  # the open watch responses, so stop() can shut their sockets
        self.lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Has every kind been listed at least once? Before that, a missing object proves nothing."""
        return self.synced >= set(self.kinds)

    def start(self) -> None:
        for kind in self.kinds:
            threading.Thread(target=self._run, args=(kind,), name=f"rollout-watch-{kind}", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            for response in self.streams:
                try:
                    response.shutdown()  # the thread's blocked read ends now, not when the server next writes
                except (RuntimeError, ValueError, OSError):
                    # The stream just ended: its connection went back to the pool (RuntimeError, ValueError),
                    # or its read broke and urllib3 closed the socket under us (OSError EBADF).
                    pass

    def wait(self, seconds: float) -> None:
        """Wait up to `seconds` for a change, then apply it and those that follow within BATCH_SECONDS.

        A rollout sends changes one by one, hundreds a second at its height; the caller judges every
        workload after each batch, so batching them keeps that work (and the CPU the cluster needs
        for the rollout itself) small, for at most BATCH_SECONDS of delay."""
        try:
            item = self.changes.get(timeout=max(seconds, 0))
        except queue.Empty:
            return
        until = time.monotonic() + BATCH_SECONDS
        while True:
            self._apply(*item)
            try:
                item = self.changes.get(timeout=max(until - time.monotonic(), 0))
            except queue.Empty:
                return

    def _apply(self, kind: str, event: str, payload) -> None:
        if event == "LIST":
            self.view.replace(kind, [{**obj, "kind": kind} for obj in payload])
            self.synced.add(kind)
        elif event == "DELETED":
            self.view.drop(kind, payload["metadata"]["name"])
        else:
            self.view.set(kind, {**payload, "kind": kind})

    # ----- the watch threads -----
    def _lister(self, kind: str):
        api_class, method = kinds.of(kind).lister
        return getattr(getattr(client, api_class)(self.api_client), method)

    def _run(self, kind: str) -> None:
        lister = self._lister(kind)
        while not self.stopped.is_set():
            try:
                version = self._list(kind, lister)
                while not self.stopped.is_set():
                    version = self._watch(kind, lister, version)
            except Exception as exc:  # noqa: BLE001 - any break (410 Gone, reset, apiserver down): re-list
                if self.stopped.is_set():
                    return
                log.debug("watch of %s broke, re-listing: %s", kind, exc)
                self.errors[kind] = short_reason(exc)
                self.stopped.wait(RETRY_SECONDS)

    def _list(self, kind: str, lister) -> str:
        response = lister(self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        body = json.loads(response.data)
        self.errors.pop(kind, None)
        self.changes.put((kind, "LIST", body.get("items") or []))
        return body["metadata"]["resourceVersion"]

    def _watch(self, kind: str, lister, version: str) -> str:
        """Stream changes from `version` until the server ends the watch; return the last version seen.

        The raw stream, read line by line: the client's Watch helper would build a model object for
        every event, which costs more than the rules spend on it."""
        response = lister(self.namespace, watch=True, resource_version=version, allow_watch_bookmarks=True,
                          timeout_seconds=WATCH_SECONDS, _preload_content=False,
                          _request_timeout=(REQUEST_TIMEOUT, WATCH_SECONDS + REQUEST_TIMEOUT))
        with self.lock:
            if self.stopped.is_set():
                _discard(response)
                return version
            self.streams.append(response)
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                kind_of_event, obj = event["type"], event["object"]
                if kind_of_event == "ERROR":  # 410 Gone among them: the caller re-lists
                    raise RuntimeError(f"watch error: {obj.get('message', obj)}")
                version = obj["metadata"]["resourceVersion"]
                if kind_of_event != "BOOKMARK":
                    self.changes.put((kind, kind_of_event, obj))
                if self.stopped.is_set():
                    break
        finally:
            with self.lock:
                self.streams.remove(response)
            _discard(response)
        return version


def _discard(response) -> None:
    """Close the connection before the pool gets it back: a half-read watch body must never be mistaken
    for the next request's response."""
    response.close()
    response.release_conn()

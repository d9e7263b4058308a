"""The stage's namespace: checked, made when the stage file asks for it (create_namespace), and deleted
again, exactly the one made, when the deploy that made it stops before its first change."""

from __future__ import annotations

from skycap.cluster.errors import call_api
from skycap.cluster.kube import drained
from skycap.errors import BadInput, SkycapError


def namespace_exists(core, name: str) -> None:
    """LookupError when the namespace is missing; other API errors pass through."""
    from kubernetes.client.rest import ApiException

    try:
        drained(core.read_namespace(name, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            raise LookupError(name) from None
        raise


def ensure_namespace(session) -> str | None:
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


def delete_namespace(session, uid: str | None) -> None:
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

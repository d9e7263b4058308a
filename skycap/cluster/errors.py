"""The one place Kubernetes API errors become Skycap's errors: a refusal or an unreachable API server,
said so that a person can act on it."""

from __future__ import annotations

import json

from skycap.errors import BadInput, SkycapError


def call_api(session, what: str, func, *args, **kwargs):
    """A Kubernetes API call whose connection failure becomes a clear, typed error."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return func(*args, **kwargs)
    except HTTPError as exc:
        raise unreachable(session.stage, exc) from None
    except ApiException as exc:
        hint = ("the kubeconfig's user may lack RBAC rights in namespace " + session.stage.namespace
                if exc.status in (401, 403) else None)
        raise SkycapError(f"the Kubernetes API refused ({what}): {exc.status} {exc.reason}", hint) from None


def unreachable(stage, exc: BaseException) -> BadInput:
    where = f"context {stage.context}" if stage.context else "the current kubeconfig context"
    return BadInput(f"cannot reach the Kubernetes API ({where}): {short_reason(exc)}",
                    "check the cluster is up and the kubeconfig points at it (skycap local-cluster status "
                    "for the local one)")


def short_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", None) or exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "certificate verify failed"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def api_message(exc) -> str:
    """The API server's own words from an ApiException."""
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"

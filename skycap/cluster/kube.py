"""The Kubernetes API client for a stage: its kubeconfig and context, with errors a person can act on.

Imported only by commands that talk to the cluster (the client takes a while to import)."""

from __future__ import annotations

import os
from pathlib import Path

from skycap.errors import BadInput


def kubeconfig_path(stage) -> str | None:
    """The stage's kubeconfig if it names one, else KUBECONFIG's first file, else ~/.kube/config."""
    if stage.kubeconfig:
        return str((stage.path.parent / os.path.expanduser(stage.kubeconfig)).resolve())
    env = os.environ.get("KUBECONFIG")
    if env:
        return env.split(os.pathsep)[0]
    return None


def _config_file(stage) -> str:
    path = kubeconfig_path(stage) or os.path.expanduser("~/.kube/config")
    if not Path(path).is_file():
        raise BadInput(f"no kubeconfig at {path}",
                       "set KUBECONFIG (for the local cluster: eval \"$(skycap local-cluster up)\"), "
                       "or kubernetes.kubeconfig in the stage file")
    return path


def api_client(stage):
    """A kubernetes.client.ApiClient for the stage's context."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = _config_file(stage)
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=path, context=stage.context, client_configuration=configuration,
                                persist_config=False)
    except ConfigException as exc:
        if stage.context:
            contexts = _context_names(path)
            if stage.context not in contexts:
                raise BadInput(f"kubeconfig context {stage.context!r} (stage {stage.name}) is not in {path}",
                               f"contexts there: {', '.join(contexts) or 'none'}") from None
        raise BadInput(f"cannot use kubeconfig {path}: {exc}") from None
    configuration.connection_pool_maxsize = 32
    configuration.retries = 3
    api = client.ApiClient(configuration)
    give_requests_a_timeout(api, api_timeout())
    return api


def api_timeout() -> float:
    """Seconds an API request may take (SKYCAP_API_TIMEOUT, default 30) before it counts as unreachable."""
    try:
        return max(0.1, float(os.environ.get("SKYCAP_API_TIMEOUT", "30")))
    except ValueError:
        raise BadInput("SKYCAP_API_TIMEOUT must be a number of seconds") from None


def give_requests_a_timeout(api, seconds: float) -> None:
    """The client waits forever by default: an API server that accepts and never answers would hang a
    deploy, a rollback or a status at 3 a.m. Calls that pass their own timeout (the watches) keep it."""
    rest = api.rest_client
    request = rest.request

    def request_with_timeout(*args, _request_timeout=None, **kwargs):
        return request(*args, _request_timeout=_request_timeout or (min(seconds, 10), seconds), **kwargs)

    rest.request = request_with_timeout


def drained(response) -> bytes:
    """The body of a `_preload_content=False` response, read to the end, which hands its connection
    back to the pool. Left unread, the connection stays taken and the next request opens a new one:
    a TLS handshake and a CA load each time."""
    return response.data


def _context_names(path: str) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return [c.get("name", "?") for c in data.get("contexts") or []]

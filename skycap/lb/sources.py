"""The Kubernetes side of the sync: the API client (in-cluster in a pod), watches of Services, their
endpoints (EndpointSlices where the server has them, else Endpoints) and Nodes, and the members each
pool should have according to them."""

from __future__ import annotations

import base64
import json
import os
import queue
import time
from pathlib import Path

from skycap.cluster.labels import SERVICE_NAME_LABEL
from skycap.cluster.watch import Feed
from skycap.errors import BadInput
from skycap.lb.backends import Member
from skycap.lb.config import LoadBalancer, PoolSpec

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class PoolConfigError(BadInput):
    """What the stage file asks of a Service does not fit it (no node port, no such port, no Service)."""


# ----- the API client -----

def service_account_dir() -> Path:
    return Path(os.environ.get("SKYCAP_SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR))


def in_cluster() -> bool:
    """In a pod: the kubelet sets KUBERNETES_SERVICE_HOST and mounts the service account's token."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (service_account_dir() / "token").is_file()


def api_client(stage):
    """In a pod, the pod's service account (nothing else); elsewhere the stage's kubeconfig."""
    if not in_cluster():
        from skycap.cluster.kube import api_client as from_kubeconfig

        return from_kubeconfig(stage)
    from kubernetes import client, config

    from skycap.cluster.kube import api_timeout, give_requests_a_timeout

    folder = service_account_dir()
    configuration = client.Configuration()
    loader = config.incluster_config.InClusterConfigLoader(token_filename=str(folder / "token"),
                                                           cert_filename=str(folder / "ca.crt"))
    loader.load_and_set(configuration)
    api = client.ApiClient(configuration)
    give_requests_a_timeout(api, api_timeout())
    return api


def get_json(api, path: str, **query):
    """GET an API path as plain JSON (the raw response, unread, when _preload_content=False is given)."""
    preload = query.pop("_preload_content", True)
    timeout = query.pop("_request_timeout", None)
    params = [(key, value) for key, value in query.items() if value is not None]
    response = api.call_api(path, "GET", query_params=params, header_params={"Accept": "application/json"},
                            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=timeout,
                            _return_http_data_only=True)
    return response if not preload else json.loads(response.data)


def endpoint_source(api) -> tuple[str, str]:
    """(kind, API path prefix) of what lists endpoints here: EndpointSlices v1, v1beta1 (1.17-1.20), or Endpoints."""
    from kubernetes.client.rest import ApiException

    try:
        versions = [v["version"] for v in get_json(api, "/apis/discovery.k8s.io").get("versions", [])]
    except ApiException as exc:
        if exc.status != 404:
            raise
        versions = []
    for version in ("v1", "v1beta1"):
        if version in versions:
            return "EndpointSlice", f"/apis/discovery.k8s.io/{version}"
    return "Endpoints", "/api/v1"


def read_credentials(lb: LoadBalancer, api, namespace: str) -> tuple[str, str]:
    """(username, password) from the environment or a Secret; never from the stage file, never logged."""
    if "env" in lb.credentials:
        prefix = lb.credentials["env"]
        username, password = os.environ.get(f"{prefix}_USERNAME"), os.environ.get(f"{prefix}_PASSWORD")
        if not username or not password:
            raise BadInput(f"the balancer's credentials are not set: {prefix}_USERNAME and {prefix}_PASSWORD "
                           "must both be in the environment", "load_balancer.credentials says {env: " + prefix + "}")
        return username, password
    from kubernetes.client.rest import ApiException

    name = lb.credentials["secret"]
    try:
        secret = get_json(api, f"/api/v1/namespaces/{namespace}/secrets/{name}")
    except ApiException as exc:
        raise BadInput(f"cannot read Secret {name} in namespace {namespace} for the balancer's credentials: "
                       f"{exc.status} {exc.reason}", "it needs keys username and password") from None
    data = secret.get("data") or {}
    try:
        return tuple(base64.b64decode(data[key]).decode() for key in ("username", "password"))
    except (KeyError, ValueError):
        raise BadInput(f"Secret {name} in namespace {namespace} lacks the keys username and password") from None


# ----- the watches -----

class ReceivedQueue(queue.Queue):
    """The feed's queue, stamping each change with the moment its watch thread received it: the time
    from there to the pool change is lb-sync's own (batching, a pass in progress, the balancer's API).
    The endpoints' trigger-time annotation is no substitute: it comes from the pod's Ready condition,
    to the second, so it reads up to a second late."""

    received = 0.0  # when the change last taken by get() was received

    def put(self, item, block=True, timeout=None):
        super().put((time.monotonic(), item), block, timeout)

    def get(self, block=True, timeout=None):
        self.received, item = super().get(block, timeout)
        return item


class KubeFeed(Feed):
    """The rollout watch's list-then-watch threads, over raw API paths (EndpointSlice v1beta1 has no
    typed client here), plus which Services each change touches and when it was received."""

    def __init__(self, api, namespace: str, endpoint_kind: str, endpoint_prefix: str, nodes: bool):
        kinds = ["Service", endpoint_kind] + (["Node"] if nodes else [])
        super().__init__(api, namespace, kinds)
        self.changes = ReceivedQueue()
        self.endpoint_kind = endpoint_kind
        plural = "endpointslices" if endpoint_kind == "EndpointSlice" else "endpoints"
        self.paths = {"Service": f"/api/v1/namespaces/{namespace}/services",
                      endpoint_kind: f"{endpoint_prefix}/namespaces/{namespace}/{plural}",
                      "Node": "/api/v1/nodes"}
        self.touched: dict[str, float] = {}  # service name ("*": all) -> when its first unhandled change came

    def _lister(self, kind: str):
        path = self.paths[kind]

        def lister(_namespace, watch=False, resource_version=None, allow_watch_bookmarks=None, timeout_seconds=None,
                   _preload_content=False, _request_timeout=None):
            return get_json(self.api_client, path, watch="true" if watch else None, resourceVersion=resource_version,
                            allowWatchBookmarks="true" if allow_watch_bookmarks else None,
                            timeoutSeconds=timeout_seconds, _preload_content=False, _request_timeout=_request_timeout)

        return lister

    def _apply(self, kind: str, event: str, payload) -> None:
        super()._apply(kind, event, payload)
        received = self.changes.received
        self._touch("*" if event == "LIST" or kind == "Node" else _service_of(kind, payload), received)

    def _touch(self, service: str | None, when: float) -> None:
        if service and service not in self.touched:
            self.touched[service] = when

    def take_touched(self) -> dict[str, float]:
        touched, self.touched = self.touched, {}
        return touched

    @property
    def trusted(self) -> bool:
        """Every kind listed, and no watch broken since: only then is a missing endpoint a fact."""
        return self.ready and not self.errors


def _service_of(kind: str, obj: dict) -> str | None:
    if kind == "EndpointSlice":
        return (obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
    return obj["metadata"]["name"]


# ----- what each pool should have -----

def desired_members(view, spec: PoolSpec, lb: LoadBalancer, endpoint_kind: str) -> set[Member]:
    """The members `spec`'s pool should have, from the view; PoolConfigError when the Service does not fit."""
    service = view.get("Service", spec.service)
    if service is None:
        raise PoolConfigError(f"Service {spec.service} (for pool {spec.pool}) does not exist",
                              "deploy it, or fix load_balancer.pools; its pool is left as it is")
    port = service_port(service, spec)
    endpoints = ready_endpoints(view, endpoint_kind, spec.service, port.get("name") or "")
    if lb.members == "pods":
        return {Member(address, number) for address, number, _node in endpoints}
    node_port = port.get("nodePort")
    if not node_port:
        kind = (service.get("spec") or {}).get("type", "ClusterIP")
        raise PoolConfigError(f"Service {spec.service} has no node port for port {_port_label(port)} (it is of type "
                              f"{kind}), and load_balancer.members is nodeport (pool {spec.pool})",
                              "make the Service type: NodePort (or LoadBalancer), or use members: pods")
    if not endpoints:
        return set()
    local = (service.get("spec") or {}).get("externalTrafficPolicy") == "Local"
    hosting = {node for _a, _p, node in endpoints}
    members = set()
    for node in view.all("Node"):
        address = _internal_ip(node)
        if address and _node_ready(node) and (not local or node["metadata"]["name"] in hosting):
            members.add(Member(address, int(node_port)))
    return members


def service_port(service: dict, spec: PoolSpec) -> dict:
    ports = (service.get("spec") or {}).get("ports") or []
    if spec.port is None:
        if len(ports) == 1:
            return ports[0]
        raise PoolConfigError(f"Service {spec.service} has {len(ports)} ports; say which one feeds pool {spec.pool}",
                              f"load_balancer.pools.{spec.service}.port: one of "
                              f"{', '.join(_port_label(p) for p in ports) or 'none'}")
    for port in ports:
        if spec.port in (port.get("name"), port.get("port")):
            return port
    raise PoolConfigError(f"Service {spec.service} has no port {spec.port!r} (pool {spec.pool})",
                          f"its ports: {', '.join(_port_label(p) for p in ports) or 'none'}")


def _port_label(port: dict) -> str:
    return f"{port.get('name')} ({port.get('port')})" if port.get("name") else str(port.get("port"))


def ready_endpoints(view, kind: str, service: str, port_name: str) -> list[tuple[str, int, str | None]]:
    """(address, port, node name) of each ready endpoint of the Service's port."""
    found = []
    if kind == "Endpoints":
        obj = view.get("Endpoints", service) or {}
        for subset in obj.get("subsets") or []:
            number = next((p["port"] for p in subset.get("ports") or [] if (p.get("name") or "") == port_name), None)
            if number is None:
                continue
            for address in subset.get("addresses") or []:
                found.append((address["ip"], number, address.get("nodeName")))
        return found
    for piece in view.all("EndpointSlice"):
        if (piece["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        if piece.get("addressType") not in ("IPv4", "IPv6"):
            continue
        number = next((p.get("port") for p in piece.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if number is None:
            continue
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue  # an unset ready means ready, as kube-proxy reads it
            node = endpoint.get("nodeName") or (endpoint.get("topology") or {}).get("kubernetes.io/hostname")
            for address in endpoint.get("addresses") or []:
                found.append((address, number, node))
    return found


def _internal_ip(node: dict) -> str | None:
    addresses = (node.get("status") or {}).get("addresses") or []
    return next((a["address"] for a in addresses if a.get("type") == "InternalIP"), None)


def _node_ready(node: dict) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def list_view(api, namespace: str, lb: LoadBalancer):
    """(view, endpoint kind): one list of each kind, for a one-off look (skycap status)."""
    from skycap.cluster.rollout_rules import View

    kind, prefix = endpoint_source(api)
    feed = KubeFeed(api, namespace, kind, prefix, nodes=lb.members == "nodeport")
    view = View()
    for each in feed.kinds:
        view.replace(each, [{**obj, "kind": each} for obj in get_json(api, feed.paths[each]).get("items") or []])
    return view, kind

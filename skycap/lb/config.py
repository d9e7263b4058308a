"""The stage file's `load_balancer:` block: which balancer, how to reach it, which Service feeds which pool."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skycap.errors import BadInput

KEYS = {"kind", "api", "credentials", "partition", "members", "drain_seconds", "create_pools", "pools",
        "empty_grace_seconds", "resync_seconds", "ca_file"}
POOL_KEYS = {"pool", "port", "frontend"}
KINDS = ("haproxy", "f5")
MEMBER_MODES = ("nodeport", "pods")
POOL_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,127}$")
ENV_PREFIX_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class PoolSpec:
    service: str            # the Kubernetes Service, in the stage's namespace
    pool: str               # the HAProxy backend or F5 pool
    port: str | int | None  # the Service port, by name or number; None: its only port
    frontend: str | None = None  # where clients reach the pool through the balancer (optional; printed only)


@dataclass
class LoadBalancer:
    kind: str
    api: str
    credentials: dict[str, str] = field(default_factory=dict)  # {"env": PREFIX} or {"secret": NAME}
    partition: str = "Common"
    members: str = "nodeport"
    drain_seconds: float = 10.0
    create_pools: bool = False
    empty_grace_seconds: float = 30.0
    resync_seconds: float = 30.0
    ca_file: str | None = None
    pools: dict[str, PoolSpec] = field(default_factory=dict)


def parse_load_balancer(path: Path, data: Any) -> LoadBalancer:
    where = "load_balancer"
    if not isinstance(data, dict):
        raise BadInput(f"{path}: {where} must be a mapping (kind, api, credentials, members, pools, ...)")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise BadInput(f"{path}: unknown key {where}.{unknown[0]}", f"allowed here: {', '.join(sorted(KEYS))}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise BadInput(f"{path}: {where}.kind must be one of {', '.join(KINDS)}, not {kind!r}")
    lb = LoadBalancer(kind=kind, api=_api(path, kind, data.get("api")))
    lb.credentials = _credentials(path, kind, data.get("credentials"))
    lb.partition = _text(path, "partition", data, "Common")
    if not re.match(r"^[A-Za-z0-9_.-]+$", lb.partition):
        raise BadInput(f"{path}: {where}.partition {lb.partition!r} is not an F5 partition name")
    lb.members = _text(path, "members", data, "nodeport")
    if lb.members not in MEMBER_MODES:
        raise BadInput(f"{path}: {where}.members must be nodeport (each ready node's address and the Service's "
                       f"node port) or pods (each ready pod's address and port), not {lb.members!r}")
    lb.drain_seconds = _seconds(path, "drain_seconds", data, 10.0)
    lb.empty_grace_seconds = _seconds(path, "empty_grace_seconds", data, 30.0)
    lb.resync_seconds = _seconds(path, "resync_seconds", data, 30.0, minimum=0.1)
    create = data.get("create_pools", False)
    if not isinstance(create, bool):
        raise BadInput(f"{path}: {where}.create_pools must be true or false, not {create!r}")
    lb.create_pools = create
    lb.ca_file = _text(path, "ca_file", data, None)
    if lb.ca_file:
        lb.ca_file = str((path.parent / lb.ca_file).resolve())
    lb.pools = _pools(path, data.get("pools"))
    return lb


def _text(path: Path, key: str, data: dict, default):
    value = data.get(key, default)
    if value is not default and not isinstance(value, str):
        raise BadInput(f"{path}: load_balancer.{key} must be a string, not {value!r}")
    return value


def _seconds(path: Path, key: str, data: dict, default: float, minimum: float = 0.0) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise BadInput(f"{path}: load_balancer.{key} must be a number of seconds ({minimum:g} or more), "
                       f"not {value!r}")
    return float(value)


def _api(path: Path, kind: str, api: Any) -> str:
    if not isinstance(api, str) or not api:
        example = "tcp://127.0.0.1:9999 or unix:///run/haproxy/admin.sock" if kind == "haproxy" \
            else "https://bigip.example.com"
        raise BadInput(f"{path}: load_balancer.api is required: where the balancer's API is, like {example}")
    parts = urlsplit(api)
    if kind == "haproxy":
        if parts.scheme == "unix" and parts.path:
            return api
        if parts.scheme == "tcp" and parts.hostname and parts.port:
            return api
        raise BadInput(f"{path}: load_balancer.api {api!r} is not an HAProxy runtime API address",
                       "write tcp://HOST:PORT or unix:///path/to/admin.sock (the `stats socket ... level admin`)")
    if parts.scheme == "https" and parts.hostname:
        return api.rstrip("/")
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return api.rstrip("/")
    raise BadInput(f"{path}: load_balancer.api {api!r} is not an iControl REST address",
                   "write https://HOST[:PORT] (plain http is accepted on loopback only)")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _credentials(path: Path, kind: str, data: Any) -> dict[str, str]:
    where = "load_balancer.credentials"
    if data is None:
        if kind == "f5":
            raise BadInput(f"{path}: {where} is required for f5",
                           "write {env: F5} (F5_USERNAME / F5_PASSWORD) or {secret: NAME} (a Secret in the "
                           "stage's namespace with keys username and password); never the password itself")
        return {}
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in ("env", "secret"):
        raise BadInput(f"{path}: {where} must be {{env: PREFIX}} or {{secret: NAME}}",
                       "passwords never go in the stage file")
    (source, value), = data.items()
    if not isinstance(value, str) or not value:
        raise BadInput(f"{path}: {where}.{source} must be a name")
    if source == "env" and not ENV_PREFIX_RE.match(value):
        raise BadInput(f"{path}: {where}.env {value!r} is not an environment variable prefix (like F5)")
    if source == "secret" and not re.match(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", value):
        raise BadInput(f"{path}: {where}.secret {value!r} is not a Secret name")
    return {source: value}


def _pools(path: Path, data: Any) -> dict[str, PoolSpec]:
    if not isinstance(data, dict) or not data:
        raise BadInput(f"{path}: load_balancer.pools must map each Service to its pool",
                       "like: pools: {web: {pool: be_web, port: http}}")
    pools, seen = {}, {}
    for service, block in data.items():
        where = f"load_balancer.pools.{service}"
        if not isinstance(service, str) or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", service):
            raise BadInput(f"{path}: {where}: {service!r} is not a Service name")
        if not isinstance(block, dict):
            raise BadInput(f"{path}: {where} must be a mapping like {{pool: be_web, port: http}}")
        unknown = sorted(set(block) - POOL_KEYS)
        if unknown:
            raise BadInput(f"{path}: unknown key {where}.{unknown[0]}", "allowed here: pool, port, frontend")
        pool = block.get("pool")
        if not isinstance(pool, str) or not POOL_NAME_RE.match(pool):
            raise BadInput(f"{path}: {where}.pool must name the pool (letters, digits, _ . : -), not {pool!r}")
        if pool in seen:
            raise BadInput(f"{path}: pool {pool!r} is named by both {seen[pool]} and {service}",
                           "each pool follows one Service")
        seen[pool] = service
        port = block.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, (str, int))):
            raise BadInput(f"{path}: {where}.port must be the Service port's name or number, not {port!r}")
        pools[service] = PoolSpec(service=service, pool=pool, port=port,
                                  frontend=_frontend(path, where, block.get("frontend")))
    return pools


def _frontend(path: Path, where: str, value: Any) -> str | None:
    """The balancer's address for the pool, as clients use it: an http(s) URL."""
    if value is None:
        return None
    try:
        url = urlsplit(value) if isinstance(value, str) else None
    except ValueError:  # an unbalanced [ in the host, say
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise BadInput(f"{path}: {where}.frontend must be the URL clients reach the pool at through the "
                       f"balancer, not {value!r}", "like: frontend: http://lb.example.com:8081/")
    return value

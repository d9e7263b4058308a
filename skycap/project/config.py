"""Finding the deploy project and loading, validating stages/<stage>.yaml."""

from __future__ import annotations

import os
import re
from pathlib import Path

from skycap.errors import BadInput
from skycap.record import Record, fresh

TYPE_CHECKING = False  # as typing's, without importing typing (3 ms of `skycap logs`, which never needs it)
if TYPE_CHECKING:
    from typing import Any

    from skycap.lb.config import LoadBalancer

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IMAGE_RE = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
MIN_KEEP_RELEASES = 3

STAGE_KEYS = {"hg", "registry", "registry_insecure", "image_tag", "kubernetes", "services", "vars", "vm",
              "vm_order", "keep_releases", "rollout_timeout", "hook_timeout", "load_balancer", "env_replicas", "env_hosts"}
KUBERNETES_KEYS = {"namespace", "context", "create_namespace", "kubeconfig"}
SERVICE_KEYS = {"image", "template", "replicas", "config", "vars"}
VM_KEYS = {"hosts", "deploy_to", "restart", "check", "parallel", "keep_releases", "linked_dirs", "linked_files",
           "check_retries", "check_delay", "connect_timeout", "command_timeout", "known_hosts", "log_files"}


class Service(Record):
    name: str
    image: str
    template: str
    replicas: int = 1
    config: dict[str, str] = fresh(dict)
    vars: dict[str, Any] = fresh(dict)

    def as_template_value(self) -> dict[str, Any]:
        return {"name": self.name, "image": self.image, "template": self.template, "replicas": self.replicas,
                "config": dict(self.config), "vars": dict(self.vars)}


class VmService(Record):
    name: str
    hosts: list[str]
    deploy_to: str
    restart: str | None = None
    check: str | None = None
    parallel: int = 5
    keep_releases: int = 5
    linked_dirs: list[str] = fresh(list)
    linked_files: list[str] = fresh(list)
    check_retries: int = 5
    check_delay: float = 1.0
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
    known_hosts: str | None = None
    log_files: list[str] = fresh(list)  # under current/ or shared/, for `skycap logs`


class Stage(Record):
    name: str
    path: Path
    project: "Project"
    hg: str
    registry: str
    namespace: str
    image_tag: str = "{node|short}"
    registry_insecure: bool = False
    context: str | None = None
    kubeconfig: str | None = None
    create_namespace: bool = False
    services: dict[str, Service] = fresh(dict)
    vars: dict[str, Any] = fresh(dict)
    vm: dict[str, VmService] = fresh(dict)
    vm_order: str = "after"
    keep_releases: int = 20
    rollout_timeout: float = 300.0
    hook_timeout: float = 600.0  # seconds a hook or task of tasks.py may run before it is killed
    load_balancer: "LoadBalancer | None" = None
    env_replicas: int = 1  # the replica cap of environments made from this stage
    env_hosts: dict[str, list[str]] = fresh(dict)  # VM service -> hosts, for env --with-vm
    environment: Any = None  # the skycap.environments.Environment when this stage is an environment
    node_ports: bool = False  # render ClusterIP Services as NodePort (environments: reachable from outside)

    @property
    def hg_source(self) -> str:
        """A URL as given; a path relative to the stage file's folder made absolute."""
        if re.match(r"^[a-z][a-z0-9+.-]*://", self.hg):
            return self.hg
        return str((self.path.parent / os.path.expanduser(self.hg)).resolve())


class Project(Record):
    root: Path
    environments: dict[str, Stage] = fresh(dict, repr=False)  # environments resolved this run

    @property
    def stages_dir(self) -> Path:
        return self.root / "stages"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def tasks_file(self) -> Path:
        return self.root / "tasks.py"

    def stage_names(self) -> list[str]:
        return sorted(p.stem for p in self.stages_dir.glob("*.yaml"))

    def has_stage_file(self, name: str) -> bool:
        return bool(NAME_RE.match(name)) and (self.stages_dir / f"{name}.yaml").is_file()

    def load_stage(self, name: str) -> Stage:
        """stages/NAME.yaml, else the environment called NAME, looked up in the cluster (skycap.environments)."""
        path = self.stages_dir / f"{name}.yaml"
        if name not in self.environments and self.has_stage_file(name):
            return parse_stage(name, path, self, _read_yaml(path))
        if name not in self.environments:
            from skycap.environments.lookup import find_environment_stage

            self.environments[name] = find_environment_stage(self, name)
        return self.environments[name]

    def unknown_stage(self, name: str, note: str = "") -> BadInput:
        known = ", ".join(self.stage_names()) or "none"
        return BadInput(f"unknown stage {name!r} in {self.root}{note}",
                        f"known stages: {known} (one file per stage under {self.stages_dir}); "
                        f"environments: skycap env list")

    def read_stage_data(self, name: str) -> dict:
        return _read_yaml(self.stages_dir / f"{name}.yaml")


def find_project(explicit: str | None = None, cwd: Path | None = None) -> Project:
    """--project DIR, else $SKYCAP_PROJECT, else the nearest folder at or above cwd that holds stages/."""
    chosen = explicit or os.environ.get("SKYCAP_PROJECT")
    if chosen:
        root = Path(chosen).expanduser().resolve()
        if not (root / "stages").is_dir():
            raise BadInput(f"{root} is not a deploy project: it has no stages/ folder",
                           "point --project (or SKYCAP_PROJECT) at the folder that holds stages/ and templates/")
        return Project(root)
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "stages").is_dir():
            return Project(folder)
    raise BadInput(f"no deploy project found at or above {here}",
                   "run skycap inside a folder that holds stages/, or pass --project DIR")


def _read_yaml(path: Path) -> dict:
    from skycap import yamlio  # libyaml: a 20-service stage file in 1 ms instead of 13

    try:
        data = yamlio.load(path.read_text())
    except yamlio.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise BadInput(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a stage file must be a mapping of keys (hg, registry, kubernetes, services, ...)")
    return data


def _check_keys(path: Path, where: str, data: Any, allowed: set[str]) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"{path}: {where} must be a mapping")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadInput(f"{path}: unknown key {where + '.' if where else ''}{unknown[0]}",
                       f"allowed here: {', '.join(sorted(allowed))}")
    return data


def _require(path: Path, where: str, data: dict, key: str, kind: type = str):
    value = data.get(key)
    if value is None or value == "":
        raise BadInput(f"{path}: {where}{key} is required")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadInput(f"{path}: {where}{key} must be a {kind.__name__}, not {value!r}")
    return value


def _optional(path: Path, where: str, data: dict, key: str, kind, default):
    value = data.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadInput(f"{path}: {where}{key} must be a {name}, not {value!r}")
    return value


def _string_map(path: Path, where: str, data: Any) -> dict[str, str]:
    data = data or {}
    if not isinstance(data, dict):
        raise BadInput(f"{path}: {where} must be a mapping of names to values")
    out = {}
    for key, value in data.items():
        if not isinstance(key, str) or not re.match(r"^[-._a-zA-Z0-9]+$", key):
            raise BadInput(f"{path}: {where}: {key!r} is not a valid ConfigMap key (letters, digits, - _ .)")
        if isinstance(value, (dict, list)) or value is None:
            raise BadInput(f"{path}: {where}.{key} must be a plain value (string, number or boolean)")
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def parse_stage(name: str, path: Path, project: Project, data: dict) -> Stage:
    _check_keys(path, "", data, STAGE_KEYS)
    hg = _require(path, "", data, "hg")
    registry = _require(path, "", data, "registry")
    if not REGISTRY_RE.match(registry):
        raise BadInput(f"{path}: registry {registry!r} is not host[:port]", "write it without a scheme or path")
    kube = _check_keys(path, "kubernetes", data.get("kubernetes"), KUBERNETES_KEYS)
    namespace = _require(path, "kubernetes.", kube, "namespace")
    if not NAME_RE.match(namespace) or len(namespace) > 63:
        raise BadInput(f"{path}: kubernetes.namespace {namespace!r} is not a valid namespace name")
    stage = Stage(
        name=name, path=path, project=project, hg=hg, registry=registry, namespace=namespace,
        image_tag=_optional(path, "", data, "image_tag", str, "{node|short}"),
        registry_insecure=_optional(path, "", data, "registry_insecure", bool, False),
        context=_optional(path, "kubernetes.", kube, "context", str, None),
        kubeconfig=_optional(path, "kubernetes.", kube, "kubeconfig", str, None),
        create_namespace=_optional(path, "kubernetes.", kube, "create_namespace", bool, False),
        vars=_optional(path, "", data, "vars", dict, {}) or {},
        vm_order=_optional(path, "", data, "vm_order", str, "after"),
        keep_releases=_optional(path, "", data, "keep_releases", int, 20),
        rollout_timeout=float(_optional(path, "", data, "rollout_timeout", (int, float), 300.0)),
        hook_timeout=float(_optional(path, "", data, "hook_timeout", (int, float), 600.0)),
    )
    if stage.vm_order not in ("before", "after"):
        raise BadInput(f"{path}: vm_order must be 'before' or 'after', not {stage.vm_order!r}")
    if stage.hook_timeout <= 0:
        raise BadInput(f"{path}: hook_timeout must be a number of seconds above 0, not {stage.hook_timeout:g}")
    if stage.keep_releases < MIN_KEEP_RELEASES:
        raise BadInput(f"{path}: keep_releases must be at least {MIN_KEEP_RELEASES}, not {stage.keep_releases}",
                       "the ledger always keeps the current release and the one a rollback goes back to")
    stage.env_replicas = _optional(path, "", data, "env_replicas", int, 1)
    if stage.env_replicas < 0:
        raise BadInput(f"{path}: env_replicas must be 0 or more")
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise BadInput(f"{path}: services must be a mapping of service names to their settings")
    for svc_name, block in services.items():
        stage.services[svc_name] = _parse_service(path, project, str(svc_name), block)
    vms = data.get("vm") or {}
    if not isinstance(vms, dict):
        raise BadInput(f"{path}: vm must be a mapping of service names to their settings")
    for svc_name, block in vms.items():
        stage.vm[svc_name] = _parse_vm(path, str(svc_name), block)
    if data.get("load_balancer") is not None:
        from skycap.lb.config import parse_load_balancer

        stage.load_balancer = parse_load_balancer(path, data["load_balancer"])
    stage.env_hosts = _parse_env_hosts(path, data.get("env_hosts"), stage.vm)
    if not stage.services and not stage.vm:
        raise BadInput(f"{path}: the stage has no services and no vm services: nothing to deploy")
    return stage


def _parse_service(path: Path, project: Project, name: str, block: Any) -> Service:
    where = f"services.{name}"
    if not NAME_RE.match(name) or len(name) > 50:
        raise BadInput(f"{path}: {where}: {name!r} is not a valid service name (lower-case letters, digits, -)")
    block = _check_keys(path, where, block, SERVICE_KEYS)
    image = _require(path, where + ".", block, "image")
    if not IMAGE_RE.match(image):
        raise BadInput(f"{path}: {where}.image {image!r} is not a repository name",
                       "write the repository only (like skytap/web); the registry and tag are added by skycap")
    template = _require(path, where + ".", block, "template")
    if ".." in Path(template).parts or Path(template).is_absolute():
        raise BadInput(f"{path}: {where}.template must name a file under templates/, not {template!r}")
    replicas = _optional(path, where + ".", block, "replicas", int, 1)
    if replicas < 0:
        raise BadInput(f"{path}: {where}.replicas must be 0 or more")
    return Service(name=name, image=image, template=template, replicas=replicas,
                   config=_string_map(path, where + ".config", block.get("config")),
                   vars=_optional(path, where + ".", block, "vars", dict, {}) or {})


def _parse_env_hosts(path: Path, data: Any, vms: dict) -> dict[str, list[str]]:
    data = _check_keys(path, "env_hosts", data, set(vms))
    for name, hosts in data.items():
        if not isinstance(hosts, list) or not hosts or not all(is_host(h) for h in hosts):
            raise BadInput(f"{path}: env_hosts.{name} must be a list of user@host[:port]")
    return dict(data)


HOST_RE = re.compile(r"^(?:(?P<user>[a-z_][-a-z0-9_.]*)@)?"
                     r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?$")


def is_host(spec) -> bool:
    """user@host[:port]: a host name never starts with '-' (no option smuggling), a port is 1-65535."""
    match = isinstance(spec, str) and HOST_RE.match(spec)
    return bool(match) and (not match["port"] or 1 <= int(match["port"]) <= 65535)


def _parse_vm(path: Path, name: str, block: Any) -> VmService:
    where = f"vm.{name}"
    if not NAME_RE.match(name):
        raise BadInput(f"{path}: {where}: {name!r} is not a valid service name (lower-case letters, digits, -)")
    block = _check_keys(path, where, block, VM_KEYS)
    hosts = block.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise BadInput(f"{path}: {where}.hosts must be a list of user@host[:port]")
    for host in hosts:
        if not is_host(host):
            raise BadInput(f"{path}: {where}.hosts: {host!r} is not user@host[:port]")
    deploy_to = _require(path, where + ".", block, "deploy_to")
    if not deploy_to.startswith("/") or not re.match(r"^[-/._a-zA-Z0-9]+$", deploy_to) or ".." in deploy_to:
        raise BadInput(f"{path}: {where}.deploy_to must be an absolute path of letters, digits, - _ . /")
    links = {}
    for key in ("linked_dirs", "linked_files"):
        value = block.get(key) or []
        if not isinstance(value, list) or not all(
                isinstance(v, str) and re.match(r"^[-._a-zA-Z0-9][-/._a-zA-Z0-9]*$", v) and ".." not in v
                for v in value):
            raise BadInput(f"{path}: {where}.{key} must be a list of relative paths (letters, digits, - _ . /)")
        links[key] = value
    vm = VmService(
        name=name, hosts=hosts, deploy_to=deploy_to.rstrip("/") or "/",
        restart=_optional(path, where + ".", block, "restart", str, None),
        check=_optional(path, where + ".", block, "check", str, None),
        parallel=_optional(path, where + ".", block, "parallel", int, 5),
        keep_releases=_optional(path, where + ".", block, "keep_releases", int, 5),
        check_retries=_optional(path, where + ".", block, "check_retries", int, 5),
        check_delay=float(_optional(path, where + ".", block, "check_delay", (int, float), 1.0)),
        connect_timeout=float(_optional(path, where + ".", block, "connect_timeout", (int, float), 10.0)),
        command_timeout=float(_optional(path, where + ".", block, "command_timeout", (int, float), 120.0)),
        known_hosts=_optional(path, where + ".", block, "known_hosts", str, None),
        log_files=_log_files(path, where, block.get("log_files")),
        **links,
    )
    if vm.parallel < 1 or vm.keep_releases < 2:
        raise BadInput(f"{path}: {where}: parallel must be 1 or more and keep_releases 2 or more")
    return vm


def _log_files(path: Path, where: str, value: Any) -> list[str]:
    """Files `skycap logs` tails on each host: relative to deploy_to, under current/ or shared/."""
    value = value or []
    good = isinstance(value, list) and all(
        isinstance(v, str) and re.match(r"^(current|shared)/[-._a-zA-Z0-9][-/._a-zA-Z0-9]*$", v)
        and ".." not in v.split("/") for v in value)
    if not good:
        raise BadInput(f"{path}: {where}.log_files must be a list of paths under current/ or shared/ "
                       "(letters, digits, - _ . /), like shared/log/app.log")
    return value

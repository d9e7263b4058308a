"""An environment's definition, as kept in the cluster, and the stage it stands for.

The definition is a ConfigMap `skycap-environment` in the environment's own namespace: which stage it
was made from (and that stage's namespace, which ties it to this project), the --set overrides,
--with-vm, its TTL, owner, creation and expiry, and the rev last deployed. Nothing is written into
stages/: the environment's stage is derived each time from the source stage's file as it is now,
with the overrides on top, so a change to the stage file reaches its environments at their next deploy.
The namespace carries the labels too, so a namespace being deleted (its ConfigMap gone first) is
still found by `env gc`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from skycap.cluster.labels import ENVIRONMENT_LABEL, MANAGED_BY, SOURCE_LABEL, SOURCE_NAMESPACE_LABEL
from skycap.environments.naming import namespace_for, stage_name
from skycap.errors import BadInput

DEFINITION = "skycap-environment"  # the ConfigMap's name, in the environment's namespace
FORBIDDEN_OVERRIDES = ("kubernetes", "env_replicas", "env_hosts")


@dataclass
class Environment:
    name: str  # as the user typed it, e.g. feature/JIRA-1234_new-billing
    stage: str  # the source stage
    source_namespace: str
    ttl: int  # seconds; each deploy pushes the expiry out by this much
    owner: str
    created: str  # ISO 8601 UTC
    expires: str
    overrides: list[str] = field(default_factory=list)  # the --set KEY=VALUE words, in order
    with_vm: bool = False
    rev: str = ""  # the rev= last deployed, and its node
    node: str = ""

    @property
    def stage_name(self) -> str:
        return stage_name(self.name)

    @property
    def namespace(self) -> str:
        return namespace_for(self.source_namespace, self.name)

    @property
    def seconds_left(self) -> float:
        return parse_time(self.expires) - time.time()

    def labels(self) -> dict[str, str]:
        return {MANAGED_BY: "skycap", ENVIRONMENT_LABEL: self.stage_name, SOURCE_LABEL: self.stage,
                SOURCE_NAMESPACE_LABEL: self.source_namespace}

    def config_map(self) -> dict:
        data = {key: (json.dumps(value) if isinstance(value, (list, bool, int)) else value)
                for key, value in asdict(self).items()}
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": DEFINITION, "namespace": self.namespace, "labels": self.labels()},
                "data": data}

    @classmethod
    def from_config_map(cls, data: dict) -> Environment:
        def value(key, default):
            raw = data.get(key)
            return default if raw is None else (json.loads(raw) if not isinstance(default, str) else raw)

        return cls(name=data["name"], stage=data["stage"], source_namespace=data["source_namespace"],
                   ttl=value("ttl", 0), owner=value("owner", ""), created=value("created", ""),
                   expires=value("expires", ""), overrides=value("overrides", []), with_vm=value("with_vm", False),
                   rev=value("rev", ""), node=value("node", ""))


def utc_iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else 0.0


def environment_stage(project, env: Environment):
    """The stage an environment stands for: the source stage's file as it is now, in the environment's
    namespace, replicas capped at env_replicas, VM services on their env_hosts (or left out), then
    the overrides."""
    from skycap.project.config import parse_stage

    if not project.has_stage_file(env.stage):
        raise BadInput(f"environment {env.name} was made from stage {env.stage}, which has no file under "
                       f"{project.stages_dir} any more", f"skycap env destroy {env.name}")
    path = project.stages_dir / f"{env.stage}.yaml"
    data = derived_data(project.read_stage_data(env.stage), env, path)
    stage = parse_stage(env.stage_name, path, project, data)
    stage.environment = env
    stage.node_ports = True
    return stage


def derived_data(source: dict, env: Environment, path) -> dict:
    data = copy.deepcopy(source)
    kube = dict(data.get("kubernetes") or {})
    kube["namespace"] = env.namespace
    kube["create_namespace"] = False  # `env create` makes it, labelled; a deploy must never make it again
    data["kubernetes"] = kube
    cap = data.get("env_replicas", 1)
    for block in (data.get("services") or {}).values():
        if isinstance(block, dict) and isinstance(block.get("replicas", 1), int) and isinstance(cap, int):
            block["replicas"] = min(block.get("replicas", 1), cap)
    vms = data.pop("vm", None) or {}
    if env.with_vm and vms:
        hosts = data.get("env_hosts") or {}
        missing = sorted(set(vms) - set(hosts))
        if missing:
            raise BadInput(f"{path}: --with-vm needs env_hosts for VM service {missing[0]}",
                           f"add to the stage file: env_hosts: {{{missing[0]}: [deploy@env-vm1.example.com]}}")
        data["vm"] = {name: {**block, "hosts": hosts[name]} for name, block in vms.items()}
    for word in env.overrides:
        apply_override(data, word, path)
    return data


def apply_override(data: dict, word: str, path) -> None:
    """KEY=VALUE into the stage data: a dotted path into the stage file (vars.queue=jobs-x,
    services.web.replicas=2), `config.SERVICE.KEY` for services.SERVICE.config.KEY. A value that
    reads as JSON (a number, true/false, a list) is that; anything else is a string."""
    key, sep, raw = word.partition("=")
    parts = key.split(".")
    if not sep or not key or "" in parts:
        raise BadInput(f"--set {word!r} is not KEY=VALUE", "for example: --set config.web.LOG_LEVEL=debug "
                       "--set vars.queue=jobs-feature-x")
    if parts[0] == "config":
        if len(parts) != 3:
            raise BadInput(f"--set {key}: config takes config.SERVICE.KEY, like config.web.LOG_LEVEL")
        parts = ["services", parts[1], "config", parts[2]]
    if parts[0] in FORBIDDEN_OVERRIDES or len(parts) == 1 and parts[0] in ("services", "vm", "vars"):
        raise BadInput(f"--set {key}: {parts[0]} cannot be overridden in an environment",
                       "the environment's namespace and cluster follow from its source stage")
    if parts[0] in ("services", "vm"):
        known = data.get(parts[0]) or {}
        if parts[1] not in known:
            raise BadInput(f"--set {key}: {path.name} has no {'service' if parts[0] == 'services' else 'VM service'} "
                           f"{parts[1]!r}", f"known: {', '.join(sorted(known)) or 'none'}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    target = data
    for part in parts[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            raise BadInput(f"--set {key}: {part} is not a mapping in {path.name}")
        target = child
    target[parts[-1]] = value

"""Rendering a stage: Jinja templates (StrictUndefined) into Kubernetes objects, plus one
ConfigMap per service whose content hash reaches the pod template, so a config change rolls pods."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skycap.cluster import kinds
from skycap.cluster.labels import (
    CONFIG_HASH_ANNOTATION,
    MANAGED_BY,
    NODE_ANNOTATION,
    RELEASE_ANNOTATION,
    SERVICE_LABEL,
    STAGE_LABEL,
)
from skycap.errors import BadInput



@dataclass
class Manifest:
    """One object, with where it came from (for error messages)."""

    obj: dict
    source: str  # template file name, or "(skycap)" for generated objects
    service: str | None

    @property
    def kind(self) -> str:
        return self.obj["kind"]

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def key(self) -> tuple[str, str, str, str]:
        group = self.obj["apiVersion"].rpartition("/")[0]
        return group, self.kind, self.obj["metadata"].get("namespace", ""), self.name

    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class Rendered:
    manifests: list[Manifest] = field(default_factory=list)

    def to_yaml(self) -> str:
        from skycap.yamlio import dump_all

        return dump_all(m.obj for m in self.manifests)


@dataclass
class RenderInput:
    """What every template sees besides the service: the resolved revision and the release number."""

    node: str
    tag: str
    rev: str
    release: int


def config_hash(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _environment(templates_dir: Path):
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def render_stage(stage, revision: RenderInput) -> Rendered:
    env = _environment(stage.project.templates_dir)
    rendered = Rendered()
    if stage.create_namespace:
        rendered.manifests.append(Manifest({"apiVersion": "v1", "kind": "Namespace",
                                            "metadata": {"name": stage.namespace}}, "(skycap)", None))
    for service in stage.services.values():
        rendered.manifests.extend(render_service(env, stage, service, revision))
    for manifest in rendered.manifests:
        stamp(manifest, stage, revision)
        if stage.node_ports:
            expose_node_port(manifest.obj)
    check_collisions(rendered)
    return rendered


def render_service(env, stage, service, revision: RenderInput) -> list[Manifest]:
    image = f"{stage.registry}/{service.image}:{revision.tag}"
    config_name = f"{service.name}-config"
    digest = config_hash(service.config)
    context = {
        "stage": stage.name, "namespace": stage.namespace, "service": service.as_template_value(),
        "image": image, "tag": revision.tag, "node": revision.node, "rev": revision.rev,
        "release": revision.release, "vars": {**stage.vars, **service.vars},
        "config_map": config_name, "config_hash": digest,
    }
    text = _render_template(env, service.template, context)
    manifests = [Manifest({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": config_name}, "data": dict(service.config)},
                          "(skycap)", service.name)]
    for index, document in enumerate(_load_documents(service.template, text), start=1):
        _check_object(service.template, index, document)
        manifests.append(Manifest(document, service.template, service.name))
    for manifest in manifests:
        _add_config_hash(manifest.obj, digest)
    return manifests


def _render_template(env, name: str, context: dict[str, Any]) -> str:
    import jinja2

    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound:
        raise BadInput(f"templates/{name} does not exist",
                       "the stage file's services.<name>.template names a file under templates/") from None
    except jinja2.TemplateSyntaxError as exc:
        raise BadInput(f"templates/{name}:{exc.lineno}: template syntax error: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, name)
        where = f"templates/{name}:{line}" if line else f"templates/{name}"
        raise BadInput(f"{where}: undefined template variable: {exc.message}",
                       "templates see stage, namespace, service, image, tag, node, rev, release, vars, "
                       "config_map, config_hash; add free values under vars: in the stage file") from None
    except jinja2.TemplateError as exc:
        raise BadInput(f"templates/{name}: {exc}") from None


def _template_line(exc: BaseException, name: str) -> int | None:
    """The template line Jinja's rewritten traceback points at."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _load_documents(name: str, text: str) -> list[dict]:
    from skycap.yamlio import YAMLError, load_all

    try:
        return [doc for doc in load_all(text) if doc is not None]
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        lines = text.splitlines()
        if mark is not None and mark.line < len(lines):
            detail = f" at rendered line {mark.line + 1}: {lines[mark.line].strip()!r}"
        else:
            detail = ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BadInput(f"templates/{name} renders invalid YAML{detail}: {problem}",
                       "see the output with: skycap render STAGE rev=REV") from None


def _check_object(name: str, index: int, document: Any) -> None:
    where = f"templates/{name}, document {index}"
    if not isinstance(document, dict):
        raise BadInput(f"{where} is not a Kubernetes object (a mapping with apiVersion, kind and metadata)")
    missing = [key for key in ("apiVersion", "kind") if not document.get(key)]
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        missing.append("metadata.name")
    if missing:
        what = document.get("kind") or "object"
        raise BadInput(f"{where} ({what}) has no {', '.join(missing)}")


def stamp(manifest: Manifest, stage, revision: RenderInput) -> None:
    """The stage's namespace, Skycap's labels and annotations on every object."""
    obj = manifest.obj
    metadata = obj.setdefault("metadata", {})
    if not kinds.of(obj["kind"]).cluster_scoped:
        declared = metadata.get("namespace")
        if declared and declared != stage.namespace:
            raise BadInput(f"{manifest.source}: {manifest.ref()} sets namespace {declared!r}, but stage "
                           f"{stage.name} deploys to {stage.namespace!r}",
                           "leave metadata.namespace out of templates; skycap sets it")
        metadata["namespace"] = stage.namespace
    labels = metadata.setdefault("labels", {}) or {}
    metadata["labels"] = labels
    labels[MANAGED_BY] = "skycap"
    labels[STAGE_LABEL] = stage.name
    if manifest.service:
        labels[SERVICE_LABEL] = manifest.service
    annotations = metadata.get("annotations") or {}
    metadata["annotations"] = annotations
    annotations[RELEASE_ANNOTATION] = str(revision.release)
    annotations[NODE_ANNOTATION] = revision.node
    template = _pod_template(obj)
    if template is not None and manifest.service:
        pod_labels = template.setdefault("metadata", {}).setdefault("labels", {})
        pod_labels[STAGE_LABEL] = stage.name
        pod_labels[SERVICE_LABEL] = manifest.service


def expose_node_port(obj: dict) -> None:
    """Environments: a ClusterIP Service becomes a NodePort one, reachable at node:nodePort from outside."""
    spec = obj.get("spec")
    if obj["kind"] == "Service" and isinstance(spec, dict) and spec.get("type", "ClusterIP") == "ClusterIP" \
            and spec.get("clusterIP") != "None":
        spec["type"] = "NodePort"


def _pod_template(obj: dict) -> dict | None:
    return kinds.of(obj.get("kind") or "").template_of(obj)


def _add_config_hash(obj: dict, digest: str) -> None:
    template = _pod_template(obj)
    if template is not None:
        annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[CONFIG_HASH_ANNOTATION] = digest


def check_collisions(rendered: Rendered) -> None:
    seen: dict[tuple, Manifest] = {}
    for manifest in rendered.manifests:
        other = seen.get(manifest.key)
        if other:
            raise BadInput(f"{manifest.ref()} is defined twice: in {other.source} (service {other.service}) "
                           f"and in {manifest.source} (service {manifest.service})",
                           "give each object a unique name, e.g. with {{ service.name }} in it")
        seen[manifest.key] = manifest

"""Rendering: StrictUndefined, labels, namespace, ConfigMaps whose hash rolls pods, precise errors."""

from pathlib import Path

import pytest
import yaml

from skycap.cluster.labels import CONFIG_HASH_ANNOTATION
from skycap.errors import BadInput
from skycap.project.config import Project
from skycap.project.render import RenderInput, render_stage

ROOT = Path(__file__).resolve().parent.parent
REVISION = RenderInput(node="a" * 40, tag="aaaaaaaaaaaa", rev="tip", release=7)


def test_the_example_stage_renders_with_labels_namespace_and_config():
    stage = Project(ROOT).load_stage("demo")
    rendered = render_stage(stage, REVISION)
    kinds = [m.ref() for m in rendered.manifests]
    assert kinds[0] == "Namespace/skycap-demo"
    assert {"ConfigMap/web-config", "Deployment/web", "Service/web", "Deployment/worker",
            "ConfigMap/notifier-config", "Deployment/notifier"} <= set(kinds)
    web = next(m.obj for m in rendered.manifests if m.ref() == "Deployment/web")
    assert web["metadata"]["namespace"] == "skycap-demo"
    assert web["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "skycap"
    assert web["metadata"]["labels"]["skycap.io/stage"] == "demo"
    assert web["metadata"]["labels"]["skycap.io/service"] == "web"
    assert web["metadata"]["annotations"]["skycap.io/release"] == "7"
    assert web["metadata"]["annotations"]["skycap.io/node"] == "a" * 40
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "127.0.0.1:15000/skytap/web:aaaaaaaaaaaa"
    assert web["spec"]["template"]["metadata"]["labels"]["skycap.io/service"] == "web"
    assert list(yaml.safe_load_all(rendered.to_yaml()))[1:] == [m.obj for m in rendered.manifests][1:]


def test_a_config_change_changes_the_pod_template_hash():
    stage = Project(ROOT).load_stage("demo")
    before = render_stage(stage, REVISION)
    stage.services["notifier"].config["CHANNEL"] = "#other"
    after = render_stage(stage, REVISION)

    def hash_of(rendered, name):
        obj = next(m.obj for m in rendered.manifests if m.ref() == f"Deployment/{name}")
        return obj["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]

    assert hash_of(before, "notifier") != hash_of(after, "notifier")
    assert hash_of(before, "web") == hash_of(after, "web")


def test_rendering_200_services_is_fast_enough_to_not_matter():
    stage = Project(ROOT).load_stage("demo")
    template = stage.services["web"]
    for i in range(200):
        stage.services[f"web{i}"] = type(template)(name=f"web{i}", image="skytap/web", template="web.yaml.j2")
    rendered = render_stage(stage, REVISION)
    assert len([m for m in rendered.manifests if m.kind == "Deployment"]) == 203


@pytest.fixture
def project(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "templates").mkdir()
    return Project(tmp_path)


def stage_with(project, template_text, extra=""):
    (project.templates_dir / "svc.yaml.j2").write_text(template_text)
    (project.stages_dir / "s.yaml").write_text(
        "hg: .\nregistry: r.example.com\nkubernetes:\n  namespace: ns\n"
        "services:\n  svc:\n    image: team/svc\n    template: svc.yaml.j2\n" + extra)
    return project.load_stage("s")


DOC = "apiVersion: v1\nkind: Service\nmetadata:\n  name: same\n"


@pytest.mark.parametrize("template, message", [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ service.nmae }}\n",
     r"templates/svc.yaml.j2:4: undefined template variable: .*nmae"),
    ("apiVersion: v1\nkind: ConfigMap\n{% if %}\n", r"templates/svc.yaml.j2:3: template syntax error"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n", r"templates/svc.yaml.j2 renders invalid YAML"),
    ("apiVersion: v1\nmetadata:\n  name: x\n---\nkind: Service\nmetadata: {}\n",
     r"templates/svc.yaml.j2, document 1 \(object\) has no kind"),
    ("apiVersion: v1\nkind: Service\nmetadata: {}\n", r"document 1 \(Service\) has no metadata.name"),
    (DOC + "---\n" + DOC, r"Service/same is defined twice"),
    ("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: other\n",
     r"sets namespace 'other', but stage s deploys to 'ns'"),
])
def test_template_errors_name_template_line_and_object(project, template, message):
    stage = stage_with(project, template)
    with pytest.raises(BadInput, match=message):
        render_stage(stage, REVISION)


def test_templates_see_the_contract_context(project):
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ctx\ndata:\n"
            "  stage: {{ stage }}\n  namespace: {{ namespace }}\n  service: {{ service.name }}\n"
            "  image: {{ image }}\n  tag: {{ tag }}\n  node: {{ node }}\n  rev: {{ rev }}\n"
            "  release: '{{ release }}'\n  var: {{ vars.colour }}\n")
    stage = stage_with(project, text, "    vars:\n      colour: blue\n")
    data = next(m.obj for m in render_stage(stage, REVISION).manifests if m.name == "ctx")["data"]
    assert data == {"stage": "s", "namespace": "ns", "service": "svc", "image": "r.example.com/team/svc:aaaaaaaaaaaa",
                    "tag": "aaaaaaaaaaaa", "node": "a" * 40, "rev": "tip", "release": "7", "var": "blue"}


def test_a_missing_template_is_named(project):
    stage = stage_with(project, "kind: x\n")
    stage.services["svc"].template = "nope.yaml.j2"
    with pytest.raises(BadInput, match=r"templates/nope.yaml.j2 does not exist"):
        render_stage(stage, REVISION)

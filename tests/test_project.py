"""Finding the deploy project and validating stage files: every complaint names the file and key."""

from pathlib import Path

import pytest

from skycap.errors import BadInput
from skycap.project.config import Project, find_project

ROOT = Path(__file__).resolve().parent.parent

STAGE = """\
hg: ../platform
registry: 127.0.0.1:5000
kubernetes:
  namespace: demo
services:
  web:
    image: skytap/web
    template: web.yaml.j2
    replicas: 2
    config:
      LOG_LEVEL: info
      DEBUG: false
"""


@pytest.fixture
def project(tmp_path) -> Project:
    (tmp_path / "stages").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "web.yaml.j2").write_text("kind: ConfigMap\n")
    (tmp_path / "stages" / "demo.yaml").write_text(STAGE)
    return Project(tmp_path)


def write(project: Project, text: str, name="demo"):
    (project.stages_dir / f"{name}.yaml").write_text(text)


def test_the_example_project_stages_all_load():
    example = Project(ROOT)
    assert example.stage_names() == ["demo", "production", "staging"]
    for name in example.stage_names():
        stage = example.load_stage(name)
        assert set(stage.services) == {"web", "worker", "notifier"}
    assert Project(ROOT).load_stage("production").vm["legacy-api"].hosts[1] == "deploy@vm2.example.com:2222"


def test_a_valid_stage(project):
    stage = project.load_stage("demo")
    assert stage.namespace == "demo" and stage.image_tag == "{node|short}"
    assert stage.services["web"].config == {"LOG_LEVEL": "info", "DEBUG": "false"}
    assert stage.hg_source == str((project.root / "platform").resolve())


def test_unknown_stage_lists_the_known_ones(project):
    write(project, STAGE, "production")
    with pytest.raises(BadInput, match=r"unknown stage 'prod'") as info:
        project.load_stage("prod")
    assert "known stages: demo, production" in str(info.value)


def test_a_stage_name_cannot_walk_out_of_stages(project):
    with pytest.raises(BadInput, match="unknown stage"):
        project.load_stage("../demo")


@pytest.mark.parametrize("text, message", [
    (STAGE + "colour: blue\n", r"demo.yaml: unknown key colour"),
    (STAGE.replace("    replicas: 2\n", "    replicas: 2\n    replica: 3\n"), r"unknown key services.web.replica"),
    (STAGE.replace("  namespace: demo\n", "  namespace: demo\n  cluster: x\n"), r"unknown key kubernetes.cluster"),
    (STAGE.replace("hg: ../platform\n", ""), r"demo.yaml: hg is required"),
    (STAGE.replace("replicas: 2", "replicas: two"), r"services.web.replicas must be a int"),
    (STAGE.replace("namespace: demo", "namespace: Demo_NS"), r"not a valid namespace name"),
    (STAGE.replace("image: skytap/web", "image: reg.io/skytap/web:1.0"), r"not a repository name"),
    (STAGE.replace("web.yaml.j2", "../../etc/passwd"), r"must name a file under templates/"),
    (STAGE.replace("registry: 127.0.0.1:5000", "registry: https://reg.io/v2"), r"is not host\[:port\]"),
    (STAGE.replace("      DEBUG: false\n", "      DEBUG: [1, 2]\n"), r"config.DEBUG must be a plain value"),
    ("- just\n- a list\n", r"must be a mapping"),
    ("hg: [unclosed\n", r"demo.yaml:\d+: not valid YAML"),
    (STAGE + "vm:\n  api:\n    hosts: ['bad host']\n    deploy_to: /srv/api\n", r"vm.api.hosts: 'bad host'"),
    (STAGE + "vm:\n  api:\n    hosts: [a@b]\n    deploy_to: srv/api\n", r"deploy_to must be an absolute path"),
    (STAGE + "vm:\n  api:\n    hosts: [a@b]\n    deploy_to: /srv/api\n    linked_dirs: ['../x']\n",
     r"linked_dirs must be a list of relative paths"),
])
def test_bad_stage_files_are_named_precisely(project, text, message):
    write(project, text)
    with pytest.raises(BadInput, match=message):
        project.load_stage("demo")


def test_find_project_walks_up_from_a_subfolder(project, monkeypatch):
    deep = project.root / "templates"
    assert find_project(cwd=deep).root == project.root


def test_find_project_prefers_the_flag_then_the_environment(project, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("other")
    (other / "stages").mkdir()
    monkeypatch.setenv("SKYCAP_PROJECT", str(other))
    assert find_project(cwd=project.root).root == other
    assert find_project(str(project.root)).root == project.root


def test_no_project_says_how_to_point_at_one(tmp_path):
    with pytest.raises(BadInput, match="no deploy project found") as info:
        find_project(cwd=tmp_path)
    assert "--project" in str(info.value)

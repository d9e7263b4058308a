"""`skycap diff` tells the truth: what Skycap stamps on every release is not a change, and diff
agrees object by object with `deploy --dry-run`, against the real control plane."""

from __future__ import annotations

import re

import pytest

from tests.deployproject import make_project

PLAN_LINE = re.compile(r"\b(create|change|unchanged)\s+(\S+/\S+)\s*$")


@pytest.fixture
def project(tmp_path, hg_repo, local_cluster, namespace, kubeconfig, publish):
    return make_project(tmp_path, hg_repo, local_cluster, namespace, publish)


def plan_of(text: str) -> dict[str, str]:
    return {m.group(2): m.group(1) for m in map(PLAN_LINE.search, text.splitlines()) if m}


def diffed_objects(diff_text: str) -> set[str]:
    """Kind/name of each object a kubectl diff shows (its files are named group.version.Kind.namespace.name)."""
    names = set()
    for line in diff_text.splitlines():
        if line.startswith("diff "):
            parts = line.split()[-1].rsplit("/", 1)[-1].split(".")
            kind_at = next(i for i, part in enumerate(parts) if part[:1].isupper())
            names.add(f"{parts[kind_at]}/{'.'.join(parts[kind_at + 2:])}")
    return names


def test_diff_of_the_running_revision_shows_no_change(project):
    node = project.commit("running")
    assert project.run("deploy", "test", f"rev={node}").code == 0
    ran = project.run("diff", "test", f"rev={node}")
    assert ran.code == 0, ran.stdout + ran.stderr
    assert ran.stdout == ""
    assert "no change" in ran.stderr
    verbose = project.run("diff", "test", f"rev={node}", "-v")  # Skycap's own stamps, still there to see
    assert verbose.code == 0 and "skycap.io/release" in verbose.stdout


def test_a_config_change_is_the_only_change_and_the_dry_run_agrees(project):
    node = project.commit("running")
    assert project.run("deploy", "test", f"rev={node}").code == 0
    project.edit_stage(lambda s: s["services"]["notifier"]["config"].update(CHANNEL="#ops"))
    ran = project.run("diff", "test", f"rev={node}")
    assert ran.code == 1, ran.stdout + ran.stderr
    planned = project.run("deploy", "test", f"rev={node}", "--dry-run")
    assert planned.code == 0, planned.stderr
    changed = {ref for ref, action in plan_of(planned.stderr).items() if action != "unchanged"}
    assert "ConfigMap/notifier-config" in changed
    assert changed <= {"ConfigMap/notifier-config", "Deployment/notifier"}  # its pod template's config hash
    assert plan_of(ran.stderr) == plan_of(planned.stderr)
    assert diffed_objects(ran.stdout) == changed
    changed_lines = [line for line in ran.stdout.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert "+  CHANNEL: '#ops'" in changed_lines
    assert not [line for line in changed_lines if "skycap.io/release" in line or "generation:" in line]

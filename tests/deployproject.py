"""A deploy project in a temporary folder, aimed at the test cluster, a test namespace and a real hg repo."""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("web", "worker", "notifier")


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


def skycap(*args: str) -> Ran:
    """Run the real CLI entry point in-process; exit code and both streams."""
    from skycap.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Ran(code, out.getvalue(), err.getvalue())


@dataclass
class DeployProject:
    root: Path
    repo: object          # tests.fixtures.hg.HgRepo
    cluster: object       # the local cluster state
    namespace: str
    publish_image: object

    @property
    def stage_file(self) -> Path:
        return self.root / "stages" / "test.yaml"

    def stage(self) -> dict:
        return yaml.safe_load(self.stage_file.read_text())

    def write_stage(self, data: dict) -> None:
        self.stage_file.write_text(yaml.safe_dump(data, sort_keys=False))

    def edit_stage(self, change) -> None:
        data = self.stage()
        change(data)
        self.write_stage(data)

    def edit_template(self, name: str, old: str, new: str) -> None:
        template = self.root / "templates" / name
        text = template.read_text()
        assert old in text, f"{old!r} is not in templates/{name}"
        template.write_text(text.replace(old, new, 1))

    def commit(self, message: str = "change", publish: bool = True, labels: dict | None = None,
               only: tuple[str, ...] = SERVICES) -> str:
        node = self.repo.commit(f"{message} ({self.namespace})")  # unique per test: tags never collide
        if publish:
            self.publish(node, labels, only)
        return node

    def publish(self, node: str, labels: dict | None = None, only: tuple[str, ...] = SERVICES) -> None:
        for service in only:
            self.publish_image(f"skytap/{service}", node[:12], labels)

    def run(self, *args: str) -> Ran:
        return skycap("--project", str(self.root), *args)


def run_while_locked(project: DeployProject, core_api, purpose: str, *args: str) -> Ran:
    """Run skycap while another holder has the test stage's lock."""
    from skycap.cluster.lock import StageLock

    lock = StageLock(core_api, project.namespace, "test", purpose=purpose)
    lock.acquire()
    try:
        return project.run(*args)
    finally:
        lock.release()


def make_project(tmp_path: Path, repo, cluster, namespace: str, publish_image) -> DeployProject:
    root = tmp_path / "project"
    (root / "stages").mkdir(parents=True)
    shutil.copytree(ROOT / "templates", root / "templates")
    stage = {
        "hg": str(repo.path),
        "registry": cluster.registry,
        "kubernetes": {"namespace": namespace, "context": "skycap-local"},
        "rollout_timeout": 60,
        "services": {
            "web": {"image": "skytap/web", "template": "web.yaml.j2", "replicas": 2,
                    "config": {"LOG_LEVEL": "info"}},
            "worker": {"image": "skytap/worker", "template": "worker.yaml.j2", "replicas": 1, "config": {}},
            "notifier": {"image": "skytap/notifier", "template": "notifier.yaml.j2", "replicas": 1,
                         "config": {"CHANNEL": "#deploys"}},
        },
        "vars": {"progress_deadline": 30},
    }
    project = DeployProject(root, repo, cluster, namespace, publish_image)
    project.write_stage(stage)
    return project


def start_deploy(project: DeployProject, kubeconfig: Path, node: str, **env: str):
    """`skycap deploy test rev=NODE` as a real process, returned once it waits for the rollout,
    with what it printed so far."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "skycap.cli", "--project", str(project.root), "deploy", "test", f"rev={node}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KUBECONFIG": str(kubeconfig), **env})
    seen = ""
    for line in proc.stderr:
        seen += line
        if "wait for the rollout" in line:
            break
    return proc, seen


def deployed(project: DeployProject, node: str, *flags: str) -> Ran:
    """`skycap deploy test rev=NODE`, which must succeed."""
    ran = project.run("deploy", "test", f"rev={node}", *flags)
    assert ran.code == 0, ran.stderr
    return ran


def history(project: DeployProject) -> list[tuple]:
    """(number, kind, status) of each release, newest first."""
    import json

    ran = project.run("history", "test", "--output", "json")
    assert ran.code == 0, ran.stderr
    return [(r["number"], r["kind"], r["status"]) for r in json.loads(ran.stdout)["releases"]]

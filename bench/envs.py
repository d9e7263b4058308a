#!/usr/bin/env python3
"""Environments: `skycap env create` of the demo's three services (web, worker, notifier) against
`skycap deploy` of the same revision to an existing stage (its namespace there, running the previous
revision), in the same run, alternating who goes first (goal: 1.3x or less); then `skycap env gc`
of 20 expired environments (goal: under 30 s).

env_replicas is set to the stage's replica counts, so both sides start the same pods. Runs a private
local cluster (kube-controller-manager at --kube-api-qps 200, see bench/common.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import BIN, ROOT, private_cluster, report, skycap, timed

ROUNDS, EXPIRED = 5, 20
SERVICES = ("web", "worker", "notifier")


def make_project(folder: Path, state) -> tuple[Path, list[str]]:
    """The demo's stage and templates, an hg repo with two commits, both published."""
    from skycap.localcluster.images import publish_image

    (folder / "stages").mkdir(parents=True)
    shutil.copytree(ROOT / "templates", folder / "templates")
    repo, hg = folder / "platform", str(BIN / "hg")
    env = {**os.environ, "HGPLAIN": "1", "HGUSER": "bench <bench@example.com>"}
    subprocess.run([hg, "init", str(repo)], check=True, env=env)
    nodes = []
    for number in range(2):
        (repo / "app.txt").write_text(f"bench {number} {time.time()}\n")
        subprocess.run([hg, "-R", str(repo), "commit", "-A", "-m", f"bench {number}"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        node = subprocess.run([hg, "-R", str(repo), "log", "-r", "tip", "-T", "{node}"], check=True, env=env,
                              capture_output=True, text=True).stdout
        for service in SERVICES:
            publish_image(state.registry, f"skytap/{service}", node[:12])
        nodes.append(node)
    stage = yaml.safe_load((ROOT / "stages" / "demo.yaml").read_text())
    stage.update(hg=str(repo), registry=state.registry, env_replicas=2)
    (folder / "stages" / "demo.yaml").write_text(yaml.safe_dump(stage))
    return folder, nodes


def stage_for(project: Path, name: str) -> str:
    data = yaml.safe_load((project / "stages" / "demo.yaml").read_text())
    data["kubernetes"]["namespace"] = f"bench-{name}"
    (project / "stages" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return name


def expired(project: Path, kubeconfig: Path) -> int:
    listed = json.loads(skycap(project, kubeconfig, "env", "list", "--output", "json").stdout)
    return sum(1 for env in listed if env["state"] == "expired")


def main() -> None:
    with private_cluster() as state:
        kubeconfig = state.kubeconfig
        project, (previous, node) = make_project(Path(tempfile.mkdtemp(prefix="skycap-bench-envs-")), state)
        created, deployed = [], []
        for number in range(ROUNDS):
            stage = stage_for(project, f"existing{number}")
            skycap(project, kubeconfig, "deploy", stage, f"rev={previous}")  # the stage exists and runs something

            def deploy():
                skycap(project, kubeconfig, "deploy", stage, f"rev={node}")

            def create():
                skycap(project, kubeconfig, "env", "create", f"feature/bench-{number}", "--from", "demo",
                       f"rev={node}")

            sides = [(create, created), (deploy, deployed)]
            for run, into in (sides[::-1] if number % 2 else sides):
                into.append(timed(run))
            print(f"round {number}: env create {created[-1]:.2f} s, deploy to an existing stage {deployed[-1]:.2f} s",
                  flush=True)
        report("env create vs deploy of the same revision, 3 services", created, deployed, goal=1.3)

        for number in range(EXPIRED):
            skycap(project, kubeconfig, "env", "create", f"expired-{number}", "--from", "demo", f"rev={node}",
                   "--ttl", "1s")
        time.sleep(1.5)
        listed = expired(project, kubeconfig)
        took = timed(skycap, project, kubeconfig, "env", "gc")
        left = expired(project, kubeconfig)
        print(f"env gc of {listed} expired environments: {took:.2f} s, {left} left "
              f"(goal < 30 s: {'met' if took < 30 and not left else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Rollback of a 20-service stage against the raw floor (one `kubectl apply` of the previous
manifests, then `kubectl rollout status` of every Deployment in parallel), and `skycap status`
of a 50-service stage, with the number of API requests it makes (it must not grow with services)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import kubectl, make_project, new_revision, private_cluster, raw_rollout, report, skycap, stage_for, timed

ROUNDS = 3


def rollback_bench(state) -> None:
    services = 20
    project, first = make_project(Path(tempfile.mkdtemp(prefix="skycap-bench-rb-")), state, services)
    second = new_revision(project, state, services)
    names = [f"svc{i:02d}" for i in range(services)]
    ours, floor = [], []
    for number in range(ROUNDS):
        stage = stage_for(project, f"rb{number}", f"bench-rb-skycap-{number}")
        for node in (first, second):
            skycap(project, state.kubeconfig, "deploy", stage, f"rev={node}")
        raw_stage = stage_for(project, f"rr{number}", f"bench-rb-raw-{number}")
        manifests = {node: skycap(project, state.kubeconfig, "render", raw_stage, f"rev={node}").stdout
                     for node in (first, second)}
        for node in (first, second):
            raw_rollout(state.kubeconfig, f"bench-rb-raw-{number}", manifests[node], names)
        def ours_now(stage=stage):
            ours.append(timed(skycap, project, state.kubeconfig, "rollback", stage))

        def floor_now(namespace=f"bench-rb-raw-{number}", previous=manifests[first]):
            floor.append(timed(raw_rollout, state.kubeconfig, namespace, previous, names))

        for run in ((ours_now, floor_now) if number % 2 == 0 else (floor_now, ours_now)):
            run()
        print(f"round {number}: skycap rollback {ours[-1]:.2f} s, raw {floor[-1]:.2f} s", flush=True)
    report(f"rollback of {services} services", ours, floor, goal=1.10)


def status_bench(state) -> None:
    counts = {}
    for services in (5, 50):
        project, node = make_project(Path(tempfile.mkdtemp(prefix="skycap-bench-st-")), state, services,
                                     replicas=1)
        stage = stage_for(project, f"st{services}", f"bench-status-{services}")
        skycap(project, state.kubeconfig, "deploy", stage, f"rev={node}")
        requests, took = status_in_process(project, stage, state.kubeconfig)
        counts[services] = requests
        raw = min(timed(kubectl, state.kubeconfig, "get", "deployments", "-n", f"bench-status-{services}")
                  for _ in range(3))
        print(f"status of {services} services: {took:.2f} s in process, {requests} API requests; "
              f"`kubectl get deployments` {raw:.2f} s")
    whole = min(timed(skycap, project, state.kubeconfig, "status", stage) for _ in range(3))
    print(f"`skycap status` of 50 services, whole command: {whole:.2f} s (goal < 1 s: "
          f"{'met' if whole < 1 else 'NOT met'}); requests with 5 services {counts[5]}, with 50 {counts[50]} "
          f"({'constant' if counts[5] == counts[50] else 'GROWS'})")


def status_in_process(project: Path, stage: str, kubeconfig: Path) -> tuple[int, float]:
    """Runs `skycap status` in this process, counting the HTTP requests the Kubernetes client sends."""
    import contextlib
    import io
    import os

    from kubernetes.client import rest

    from skycap.commands.status import status
    from skycap.context import RunContext

    sent = []
    original = rest.RESTClientObject.request

    def counted(self, method, url, *args, **kwargs):
        sent.append((method, url))
        return original(self, method, url, *args, **kwargs)

    rest.RESTClientObject.request = counted
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            status(RunContext(project_arg=str(project), command="status"), stage)
        return len(sent), time.perf_counter() - started
    finally:
        rest.RESTClientObject.request = original


def main() -> None:
    with private_cluster() as state:
        rollback_bench(state)
        status_bench(state)


if __name__ == "__main__":
    sys.exit(main())

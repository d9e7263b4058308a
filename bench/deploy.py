#!/usr/bin/env python3
"""Deploy of a 20-service project against the raw floor on the same control plane (one
`kubectl apply` of the same rendered manifests, then `kubectl rollout status` of every Deployment
in parallel); the time from the last pod becoming Ready to skycap's exit; rendering 200 services.

Runs a private local cluster (kube-controller-manager at --kube-api-qps 200, raised from 20 so
that the controller's client limit does not hide what skycap itself costs)."""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path

from common import make_project, private_cluster, raw_rollout, report, skycap, stage_for, timed

SERVICES, ROUNDS = 20, 5


class ReadyClock:
    """Watches pods in one namespace; notes when each pod first became Ready (local monotonic clock)."""

    def __init__(self, kubeconfig: Path, namespace: str):
        from kubernetes import client, config, watch

        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.watch = watch.Watch()
        self.namespace = namespace
        self.first_ready: dict[str, float] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @property
    def last_ready(self) -> float:
        return max(self.first_ready.values(), default=0.0)

    def run(self) -> None:
        stream = self.watch.stream(self.core.list_pod_for_all_namespaces,
                                   field_selector=f"metadata.namespace={self.namespace}", timeout_seconds=600)
        try:
            for event in stream:
                pod = event["object"]
                conditions = pod.status.conditions or []
                if any(c.type == "Ready" and c.status == "True" for c in conditions):
                    self.first_ready.setdefault(pod.metadata.uid, time.perf_counter())
        except Exception:  # noqa: BLE001 - stop() closes the stream under the reader
            pass

    def stop(self) -> None:
        self.watch.stop()


def deploy_round(project: Path, kubeconfig: Path, node: str, number: int) -> tuple[float, float]:
    namespace = f"bench-skycap-{number}"
    stage = stage_for(project, f"s{number}", namespace)
    clock = ReadyClock(kubeconfig, namespace)
    time.sleep(0.3)  # the watch is open before the first pod exists
    started = time.perf_counter()
    done = skycap(project, kubeconfig, "deploy", stage, f"rev={node}", "--output", "json")
    ended = time.perf_counter()
    clock.stop()
    phases = json.loads(done.stdout)["phases"]
    print("    skycap phases: " + ", ".join(f"{name.split(' (')[0]} {took:.2f}" for name, took in phases.items()))
    return ended - started, ended - clock.last_ready


def raw_round(project: Path, kubeconfig: Path, node: str, number: int) -> tuple[float, float]:
    stage = stage_for(project, f"r{number}", f"bench-raw-{number}")
    manifests = skycap(project, kubeconfig, "render", stage, f"rev={node}").stdout
    names = [f"svc{i:02d}" for i in range(SERVICES)]
    clock = ReadyClock(kubeconfig, f"bench-raw-{number}")
    time.sleep(0.3)
    started = time.perf_counter()
    raw_rollout(kubeconfig, f"bench-raw-{number}", manifests, names)
    ended = time.perf_counter()
    clock.stop()
    return ended - started, ended - clock.last_ready


def render_200() -> float:
    from skycap.project import Project, Service
    from skycap.render import RenderInput, render_stage

    stage = Project(Path(__file__).resolve().parent.parent).load_stage("demo")
    for i in range(200 - len(stage.services)):
        stage.services[f"svc{i:03d}"] = Service(name=f"svc{i:03d}", image="bench/x", template="web.yaml.j2",
                                                config={"A": str(i)})
    revision = RenderInput(node="a" * 40, tag="a" * 12, rev="tip", release=1)
    return min(timed(render_stage, stage, revision) for _ in range(3))


def main() -> None:
    import tempfile

    with private_cluster() as state:
        project, node = make_project(Path(tempfile.mkdtemp(prefix="skycap-bench-project-")), state, SERVICES)
        ours, floor, gaps, raw_gaps = [], [], [], []
        for number in range(ROUNDS):
            if number % 2:  # alternate who goes first
                raw, raw_gap = raw_round(project, state.kubeconfig, node, number)
                took, gap = deploy_round(project, state.kubeconfig, node, number)
            else:
                took, gap = deploy_round(project, state.kubeconfig, node, number)
                raw, raw_gap = raw_round(project, state.kubeconfig, node, number)
            ours.append(took)
            gaps.append(gap)
            floor.append(raw)
            raw_gaps.append(raw_gap)
            print(f"round {number}: skycap {took:.2f} s (exit {gap:.2f} s after the last pod Ready), "
                  f"raw {raw:.2f} s (exit {raw_gap:.2f} s after)", flush=True)
    report(f"deploy of {SERVICES} services", ours, floor, goal=1.10)
    gap = statistics.median(gaps)
    print(f"last pod Ready -> skycap exit: median {gap:.2f} s (goal <= 0.50: {'met' if gap <= 0.5 else 'NOT met'}; "
          f"krane polls every 3 s); raw kubectl rollout status: {statistics.median(raw_gaps):.2f} s")
    took = render_200()
    print(f"render of 200 services: {took:.3f} s (goal < 1 s: {'met' if took < 1 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())

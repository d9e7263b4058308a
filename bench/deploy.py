#!/usr/bin/env python3
"""Deploy of a 20-service project against the raw floor on the same cluster (one `kubectl apply`
of the same rendered manifests, then `kubectl rollout status` of every Deployment in parallel),
twice per round: a first deploy into a new namespace, then a new revision over it (the everyday
case); the time from the last pod becoming Ready to skycap's exit; for a crashing release, the time
from the kubelet posting CrashLoopBackOff to skycap's verdict; rendering 200 services.

Runs a private local cluster with a real node (kubelet and containerd run the pods;
kube-controller-manager at --kube-api-qps 200, raised from 20 so that the controller's client
limit does not hide what skycap itself costs)."""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path

from common import make_project, private_cluster, raw_rollout, report, skycap, stage_for, timed

SERVICES = 20
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5  # bench/deploy.py [ROUNDS]


class ReadyClock:
    """Watches pods in one namespace; notes when each pod first became Ready, and when a container
    first showed CrashLoopBackOff (local monotonic clock)."""

    def __init__(self, kubeconfig: Path, namespace: str):
        from kubernetes import client, config, watch

        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.watch = watch.Watch()
        self.namespace = namespace
        self.first_ready: dict[str, float] = {}
        self.first_crash_loop: float | None = None
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
                waiting = [cs.state.waiting.reason for cs in pod.status.container_statuses or [] if cs.state.waiting]
                if "CrashLoopBackOff" in waiting and self.first_crash_loop is None:
                    self.first_crash_loop = time.perf_counter()
        except Exception:  # noqa: BLE001 - stop() closes the stream under the reader
            pass

    def stop(self) -> None:
        self.watch.stop()


def skycap_deploy(project: Path, kubeconfig: Path, stage: str, namespace: str, node: str) -> tuple[float, float]:
    clock = ReadyClock(kubeconfig, namespace)
    time.sleep(0.3)  # the watch is open before the first pod exists
    started = time.perf_counter()
    done = skycap(project, kubeconfig, "deploy", stage, f"rev={node}", "--output", "json")
    ended = time.perf_counter()
    clock.stop()
    phases = json.loads(done.stdout)["phases"]
    print("    skycap phases: " + ", ".join(f"{name.split(' (')[0][:40]} {took:.2f}" for name, took in phases.items()))
    return ended - started, ended - clock.last_ready


def raw_deploy(project: Path, kubeconfig: Path, stage: str, namespace: str, node: str) -> tuple[float, float]:
    manifests = skycap(project, kubeconfig, "render", stage, f"rev={node}").stdout
    names = [f"svc{i:02d}" for i in range(SERVICES)]
    clock = ReadyClock(kubeconfig, namespace)
    time.sleep(0.3)
    started = time.perf_counter()
    raw_rollout(kubeconfig, namespace, manifests, names)
    ended = time.perf_counter()
    clock.stop()
    return ended - started, ended - clock.last_ready


def first_and_redeploy(deploy, project: Path, kubeconfig: Path, who: str, number: int, nodes: list[str]):
    """A first deploy into a new namespace, then a new revision over it: [(seconds, exit gap)] for each.
    The namespace is deleted afterwards (not waited for), so that the one node does not fill up."""
    from common import kubectl

    namespace = f"bench-{who}-{number}"
    stage = stage_for(project, f"{who}{number}", namespace)
    timings = [deploy(project, kubeconfig, stage, namespace, node) for node in nodes]
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    return timings


def crash_verdict(project: Path, kubeconfig: Path, state, number: int) -> float:
    """Seconds from the kubelet posting CrashLoopBackOff (as a watch sees it) to skycap's verdict
    (its exit, with --no-rollback, right after it records the release failed)."""
    from common import new_revision
    from skycap.localcluster.images import publish_image

    namespace = f"bench-crash-{number}"
    stage = stage_for(project, f"crash{number}", namespace)
    skycap(project, kubeconfig, "deploy", stage, f"rev={new_revision(project, state, SERVICES)}")
    crashing = new_revision(project, state, 0)
    for i in range(SERVICES):
        publish_image(state.registry, f"bench/svc{i:02d}", crashing[:12], {"skycap.io/behaviour": "crash"})
    clock = ReadyClock(kubeconfig, namespace)
    time.sleep(0.3)
    done = skycap(project, kubeconfig, "deploy", stage, f"rev={crashing}", "--no-rollback", check=False)
    ended = time.perf_counter()
    clock.stop()
    if done.returncode != 1 or clock.first_crash_loop is None:
        raise SystemExit(f"the crashing deploy did not fail as expected ({done.returncode}):\n{done.stderr}")
    return ended - clock.first_crash_loop


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

    from common import new_revision

    with private_cluster() as state:
        project, first = make_project(Path(tempfile.mkdtemp(prefix="skycap-bench-project-")), state, SERVICES)
        nodes = [first, new_revision(project, state, SERVICES)]
        ours, floor = {"first": [], "again": []}, {"first": [], "again": []}
        for number in range(ROUNDS):
            sides = [("skycap", skycap_deploy, ours), ("raw", raw_deploy, floor)]
            for who, deploy, into in (sides[::-1] if number % 2 else sides):  # alternate who goes first
                for scenario, timing in zip(("first", "again"),
                                            first_and_redeploy(deploy, project, state.kubeconfig, who, number, nodes)):
                    into[scenario].append(timing)
            print(f"round {number}: " + "; ".join(
                f"{scenario}: skycap {ours[scenario][-1][0]:.2f} s (exit {ours[scenario][-1][1]:.2f} s after the last "
                f"pod Ready), raw {floor[scenario][-1][0]:.2f} s" for scenario in ("first", "again")), flush=True)
        verdicts = [crash_verdict(project, state.kubeconfig, state, n) for n in range(3)]
    for scenario, title in (("first", "first deploy into a new namespace"), ("again", "deploy of a new revision")):
        report(f"{title}, {SERVICES} services", [t for t, _ in ours[scenario]], [t for t, _ in floor[scenario]],
               goal=1.10)
        added = statistics.median(t for t, _ in ours[scenario]) - statistics.median(t for t, _ in floor[scenario])
        print(f"  skycap adds {added:+.2f} s over the raw floor (medians)")
    verdict = statistics.median(verdicts)
    print(f"CrashLoopBackOff posted -> skycap's verdict: median {verdict:.2f} s of {len(verdicts)} "
          f"({', '.join(f'{v:.2f}' for v in verdicts)}; goal <= 1 s: {'met' if verdict <= 1 else 'NOT met'}; "
          "krane polls every 3 s, Helm waits for its timeout)")
    gap = statistics.median(g for scenario in ours.values() for _, g in scenario)
    raw_gap = statistics.median(g for scenario in floor.values() for _, g in scenario)
    print(f"last pod Ready -> skycap exit: median {gap:.2f} s (goal <= 0.50: {'met' if gap <= 0.5 else 'NOT met'}; "
          f"krane polls every 3 s); raw kubectl rollout status: {raw_gap:.2f} s")
    took = render_200()
    print(f"render of 200 services: {took:.3f} s (goal < 1 s: {'met' if took < 1 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())

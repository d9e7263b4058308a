#!/usr/bin/env python3
"""Deploy of a 20-service project against the raw floor on the same cluster (one `kubectl apply`
of the same rendered manifests, then `kubectl rollout status` of every Deployment in parallel),
twice per round: a first deploy into a new namespace, then a new revision over it (the everyday
case); the time from the last pod becoming Ready to skycap's exit; for a crashing release, the time
from the kubelet posting CrashLoopBackOff to skycap's verdict; rendering 200 services.

Runs a private local cluster with a real node (kubelet and containerd run the pods;
kube-controller-manager at --kube-api-qps 200, raised from 20 so that the controller's client
limit does not hide what skycap itself costs).

    bench/deploy.py [ROUNDS] [--crash-only]     # 5 rounds; --crash-only: only the crashing release
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from common import make_project, private_cluster, raw_rollout, report, skycap, stage_for, timed

SERVICES = 20
CRASH_RUNS = 3


class ReadyClock:
    """Watches pods in one namespace; notes when each pod first became Ready, and when each pod first
    showed a container in CrashLoopBackOff (local monotonic clock)."""

    def __init__(self, kubeconfig: Path, namespace: str):
        from kubernetes import client, config, watch

        api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(api)
        self.watch = watch.Watch()
        self.namespace = namespace
        self.first_ready: dict[str, float] = {}
        self.crash_loops: dict[str, tuple[float, float]] = {}  # pod uid -> (perf_counter, wall clock)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @property
    def last_ready(self) -> float:
        return max(self.first_ready.values(), default=0.0)

    @property
    def first_crash_loop(self) -> tuple[float, float] | None:
        return min(self.crash_loops.values(), default=None)

    @property
    def last_crash_loop(self) -> tuple[float, float] | None:
        return max(self.crash_loops.values(), default=None)

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
                if "CrashLoopBackOff" in waiting:
                    self.crash_loops.setdefault(pod.metadata.uid, (time.perf_counter(), time.time()))
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


def crash_verdict(project: Path, kubeconfig: Path, state, number: int) -> tuple[float, float]:
    """Seconds from the kubelet posting CrashLoopBackOff (as a watch sees it) to skycap's verdict (its
    exit, with --no-rollback, right after it records the release failed): from the first pod's and from
    the last pod's. Prints where the time went: to skycap's "rollout finished" log line, then to its exit."""
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
    done = skycap(project, kubeconfig, "deploy", stage, f"rev={crashing}", "--no-rollback", "--output", "json",
                  check=False)
    ended = time.perf_counter()
    time.sleep(0.5)  # pods that reach CrashLoopBackOff just after the verdict still count as "the last"
    clock.stop()
    first, last = clock.first_crash_loop, clock.last_crash_loop
    if done.returncode != 1 or first is None:
        raise SystemExit(f"the crashing deploy did not fail as expected ({done.returncode}):\n{done.stderr}")
    verdict = rollout_finished(json.loads(done.stdout).get("log"))
    split = f"; to the rollout's verdict {verdict - first[1]:.2f} s, then {ended - first[0] - (verdict - first[1]):.2f} " \
            "s to exit" if verdict else ""
    print(f"    crash run {number}: {len(clock.crash_loops)} pods in CrashLoopBackOff; first -> exit "
          f"{ended - first[0]:.2f} s{split}; last -> exit {ended - last[0]:.2f} s", flush=True)
    return ended - first[0], ended - last[0]


def rollout_finished(log: str | None) -> float | None:
    """The wall-clock time of skycap's "rollout finished" line in its run log (today, UTC)."""
    from datetime import datetime, timezone

    for line in Path(log).read_text().splitlines() if log else []:
        if "[skycap] rollout finished" in line:
            clock = datetime.strptime(line.split()[0], "%H:%M:%S.%f").time()
            return datetime.combine(datetime.now(timezone.utc).date(), clock, timezone.utc).timestamp()
    return None


def print_verdicts(verdicts: list[tuple[float, float]]) -> None:
    firsts, lasts = [f for f, _ in verdicts], [last for _, last in verdicts]
    verdict = statistics.median(firsts)
    print(f"CrashLoopBackOff posted -> skycap's verdict: median {verdict:.2f} s of {len(verdicts)} "
          f"({', '.join(f'{v:.2f}' for v in firsts)}; goal <= 1 s: {'met' if verdict <= 1 else 'NOT met'}; "
          "krane polls every 3 s, Helm waits for its timeout)")
    print(f"  from the last pod's CrashLoopBackOff: median {statistics.median(lasts):.2f} s "
          f"({', '.join(f'{v:.2f}' for v in lasts)}; negative: that pod reached it after the verdict)")


def render_200() -> float:
    from skycap.project.config import Project, Service
    from skycap.project.render import RenderInput, render_stage

    stage = Project(Path(__file__).resolve().parent.parent).load_stage("demo")
    for i in range(200 - len(stage.services)):
        stage.services[f"svc{i:03d}"] = Service(name=f"svc{i:03d}", image="bench/x", template="web.yaml.j2",
                                                config={"A": str(i)})
    revision = RenderInput(node="a" * 40, tag="a" * 12, rev="tip", release=1)
    return min(timed(render_stage, stage, revision) for _ in range(3))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5, help="rounds of skycap against the floor")
    parser.add_argument("--crash-only", action="store_true",
                        help="time only the crashing release's CrashLoopBackOff -> verdict")
    return parser.parse_args()


def main() -> None:
    import tempfile

    from common import new_revision

    args = parse_args()
    with private_cluster() as state:
        project, first = make_project(Path(tempfile.mkdtemp(prefix="skycap-bench-project-")), state, SERVICES)
        nodes = [first, new_revision(project, state, SERVICES)]
        ours, floor = {"first": [], "again": []}, {"first": [], "again": []}
        for number in range(0 if args.crash_only else args.rounds):
            sides = [("skycap", skycap_deploy, ours), ("raw", raw_deploy, floor)]
            for who, deploy, into in (sides[::-1] if number % 2 else sides):  # alternate who goes first
                for scenario, timing in zip(("first", "again"),
                                            first_and_redeploy(deploy, project, state.kubeconfig, who, number, nodes)):
                    into[scenario].append(timing)
            print(f"round {number}: " + "; ".join(
                f"{scenario}: skycap {ours[scenario][-1][0]:.2f} s (exit {ours[scenario][-1][1]:.2f} s after the last "
                f"pod Ready), raw {floor[scenario][-1][0]:.2f} s" for scenario in ("first", "again")), flush=True)
        verdicts = [crash_verdict(project, state.kubeconfig, state, n) for n in range(CRASH_RUNS)]
    print_verdicts(verdicts)
    if args.crash_only:
        return
    for scenario, title in (("first", "first deploy into a new namespace"), ("again", "deploy of a new revision")):
        report(f"{title}, {SERVICES} services", [t for t, _ in ours[scenario]], [t for t, _ in floor[scenario]],
               goal=1.10)
        added = statistics.median(t for t, _ in ours[scenario]) - statistics.median(t for t, _ in floor[scenario])
        print(f"  skycap adds {added:+.2f} s over the raw floor (medians)")
    gap = statistics.median(g for scenario in ours.values() for _, g in scenario)
    raw_gap = statistics.median(g for scenario in floor.values() for _, g in scenario)
    print(f"last pod Ready -> skycap exit: median {gap:.2f} s (goal <= 0.50: {'met' if gap <= 0.5 else 'NOT met'}; "
          f"krane polls every 3 s); raw kubectl rollout status: {raw_gap:.2f} s")
    took = render_200()
    print(f"render of 200 services: {took:.3f} s (goal < 1 s: {'met' if took < 1 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Soak: a bounded loop of deploy, deploy of a crashing revision (automatic rollback), manual
rollback and scale, on the real node (a small stage) and on simulated nodes (a 100-service stage
one real node cannot hold). After every command it checks that the ledger's story matches the
cluster: the current release's images are the ones its Deployments and live pods run, no release
is `pending`, the stage lock is free. It counts unexpected errors: an exit code other than the
expected one, or "please report it" in what skycap printed.

    bench/soak.py [--cycles 300] [--simulated-cycles 30] [--services 3] [--big-services 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import make_project, new_revision, private_cluster, skycap, stage_for

STAGE = "soak"
NAMESPACE = "soak"
# The real node's start script reads the first label, the node simulator only the second.
CRASH = {"skycap.io/behaviour": "crash", "skycap.sim/behaviour": "crash"}


@dataclass
class Tally:
    cycles: int = 0
    commands: int = 0
    unexpected: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def main() -> int:
    args = parse_args()
    real, simulated = Tally(), Tally()
    started = time.monotonic()
    if args.cycles:
        with private_cluster("real") as state:
            soak(state, args.services, args.cycles, real, "real node")
    if args.simulated_cycles:
        with private_cluster("simulated") as state:
            soak(state, args.big_services, args.simulated_cycles, simulated, "simulated nodes")
    minutes = (time.monotonic() - started) / 60
    for name, tally, services in (("real node", real, args.services), ("simulated nodes", simulated,
                                                                        args.big_services)):
        print(f"{name}, {services} services: {tally.cycles} cycles, {tally.commands} skycap commands, "
              f"unexpected errors {len(tally.unexpected)} (goal 0), ledger mismatches {len(tally.mismatches)} "
              f"(goal 0)")
        for problem in tally.unexpected + tally.mismatches:
            print(f"    {problem}")
    print(f"took {minutes:.1f} min")
    return 1 if real.unexpected or real.mismatches or simulated.unexpected or simulated.mismatches else 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300, help="cycles on the real node (default 300)")
    parser.add_argument("--simulated-cycles", type=int, default=None,
                        help="cycles of the big stage on simulated nodes (default: a tenth of --cycles)")
    parser.add_argument("--services", type=int, default=3, help="services of the real-node stage")
    parser.add_argument("--big-services", type=int, default=100, help="services of the simulated-node stage")
    args = parser.parse_args()
    if args.simulated_cycles is None:
        args.simulated_cycles = max(1, args.cycles // 10) if args.cycles else 0
    if min(args.cycles, args.simulated_cycles) < 0 or args.services < 1 or args.big_services < 1:
        parser.error("cycle counts must be >= 0 and service counts >= 1")
    return args


def soak(state, services: int, cycles: int, tally: Tally, where: str) -> None:
    from kubernetes import config

    project, node = make_project(Path(tempfile.mkdtemp(prefix="skycap-soak-")), state, services, replicas=1)
    stage = stage_for(project, STAGE, NAMESPACE)
    api = config.new_client_from_config(config_file=str(state.kubeconfig))
    step = Step(project, state.kubeconfig, api, tally)
    step.run("first deploy", 0, "deploy", stage, f"rev={node}")
    for cycle in range(1, cycles + 1):
        began = time.monotonic()
        node = new_revision(project, state, services)
        step.run(f"cycle {cycle}: deploy", 0, "deploy", stage, f"rev={node}")
        step.run(f"cycle {cycle}: deploy a crashing revision", 1, "deploy", stage,
                 f"rev={crashing_revision(project, state, services)}")
        step.run(f"cycle {cycle}: rollback", 0, "rollback", stage)
        step.run(f"cycle {cycle}: scale", 0, "scale", stage, f"svc00={1 + cycle % 2}")
        tally.cycles = cycle
        print(f"{where}: cycle {cycle}/{cycles} in {time.monotonic() - began:.1f} s; unexpected errors "
              f"{len(tally.unexpected)}, ledger mismatches {len(tally.mismatches)}", flush=True)


def crashing_revision(project: Path, state, services: int) -> str:
    """A new revision whose first service's image crashes at start (the others are fine)."""
    from skycap.localcluster.images import publish_image

    node = new_revision(project, state, 0)
    for i in range(services):
        publish_image(state.registry, f"bench/svc{i:02d}", node[:12],
                      CRASH if i == 0 else None)
    return node


class Step:
    """One skycap command, its exit code judged, then the ledger compared with the cluster."""

    def __init__(self, project: Path, kubeconfig: Path, api, tally: Tally):
        self.project, self.kubeconfig, self.api, self.tally = project, kubeconfig, api, tally

    def run(self, what: str, expected: int, *args: str) -> None:
        done = skycap(self.project, self.kubeconfig, *args, check=False)
        self.tally.commands += 1
        said = done.stdout + done.stderr
        if done.returncode != expected or "please report it" in said:
            tail = " | ".join(said.strip().splitlines()[-4:])
            self.tally.unexpected.append(f"{what}: exit {done.returncode} (expected {expected}): {tail}")
            print(f"UNEXPECTED {self.tally.unexpected[-1]}", flush=True)
        for problem in story_problems(self.api):
            self.tally.mismatches.append(f"{what}: {problem}")
            print(f"MISMATCH {self.tally.mismatches[-1]}", flush=True)


def story_problems(api) -> list[str]:
    """Where the ledger's story and the cluster disagree, each said in a line."""
    from kubernetes import client

    from skycap.cluster.ledger import Ledger
    from skycap.session import load_objects

    ledger = Ledger(api, NAMESPACE, STAGE)
    releases = ledger.releases()
    problems = [f"release {r.number} ({r.kind}) is pending" for r in releases if r.status == "pending"]
    problems += ledger.problems
    problems += lock_problems(api)
    current = next((r for r in releases if r.status == "deployed"), None)
    if current is None:
        return problems + ["no release is deployed"]
    wanted = {obj["metadata"]["name"]: obj for obj in load_objects(ledger.get(current.number).manifests or "")
              if obj["kind"] == "Deployment"}
    live = {d.metadata.name: d for d in client.AppsV1Api(api).list_namespaced_deployment(NAMESPACE).items}
    images_of_current = set()
    for name, obj in wanted.items():
        images = [c["image"] for c in obj["spec"]["template"]["spec"]["containers"]]
        images_of_current.update(images)
        deployment = live.get(name)
        if deployment is None:
            problems.append(f"Deployment {name} of release {current.number} does not exist")
            continue
        running = [c.image for c in deployment.spec.template.spec.containers]
        if running != images:
            problems.append(f"Deployment {name} runs {running}, release {current.number} says {images}")
        if deployment.spec.replicas != obj["spec"].get("replicas", 1):
            problems.append(f"Deployment {name} has {deployment.spec.replicas} replicas, release "
                            f"{current.number} says {obj['spec'].get('replicas', 1)}")
    for pod in client.CoreV1Api(api).list_namespaced_pod(NAMESPACE).items:
        if pod.metadata.deletion_timestamp is None and pod.status.phase in ("Pending", "Running"):
            strays = [c.image for c in pod.spec.containers if c.image not in images_of_current]
            if strays:
                problems.append(f"pod {pod.metadata.name} runs {strays[0]}, not an image of release {current.number}")
    return problems


def lock_problems(api) -> list[str]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from skycap.cluster.lock import lease_name

    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(lease_name(STAGE), NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise
    holder = lease.spec.holder_identity if lease.spec else None
    return [f"the stage lock is still held by {holder}"] if holder else []


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the running-service commands against a private local cluster and real sshd hosts.

1. Time to the first log line: `skycap logs STAGE svc00` against `kubectl logs -l` with the same
   label selector (the same pods), alternating, in the same run. Goal: ratio <= 1.5. Needs a real
   node (a simulated one keeps no logs): skipped, and said so, on a simulated node.
2. `skycap doctor` of a stage of 20 services and 3 VM hosts, as the CLI runs it. Goal: under 3 s.

    sudo .venv/bin/python bench/ops.py [--repeat 5]

Needs root (the fake VMs use mount namespaces) and openssh-server; leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, make_project, private_cluster, report, skycap, stage_for  # noqa: E402
from tests.fixtures.sshd import FakeVmFleet, generate_key, sshd_missing_reason  # noqa: E402

SERVICES = 20


def first_line_seconds(argv: list[str], env: dict) -> float:
    """Wall time from start to the first line on stdout; the command then runs to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    _, err = process.communicate()
    if not line:
        raise SystemExit(f"{' '.join(argv[:3])} printed no line (exit {process.returncode}): {err.decode()[-500:]}")
    return elapsed


def node_is_real(kubeconfig: Path) -> bool:
    out = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o",
                          "jsonpath={.items[*].status.nodeInfo.containerRuntimeVersion}"],
                         capture_output=True, text=True, check=True).stdout
    return "containerd://" in out


def fresh_pod(kubeconfig: Path, namespace: str, selector: str) -> None:
    """Replace the service's pod and wait until the new one is Ready: its first lines are then in its log.

    Needed where several local clusters with real nodes share the machine: every kubelet's log GC
    deletes the /var/log/pods entries of pods it does not know, so a pod's log vanishes within a
    minute or so of its start."""
    kubectl = [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "-n", namespace]
    subprocess.run([*kubectl, "delete", "pod", "-l", selector, "--timeout=120s"], check=True, capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Ready", "pod", "-l", selector, "--timeout=120s"], check=True,
                   capture_output=True)


def bench_logs(project: Path, kubeconfig: Path, stage: str, namespace: str, repeat: int) -> None:
    if not node_is_real(kubeconfig):
        print("logs: skipped: the node is simulated (no kubelet, no logs); run again on the real node")
        return
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "NO_COLOR": "1"}
    selector = f"skycap.io/stage={stage},skycap.io/service=svc00"
    ours = [str(BIN / "skycap"), "--project", str(project), "logs", stage, "svc00"]
    raw = [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "-n", namespace, "logs", "--prefix", "-l", selector]
    skycap_times, raw_times, lost = [], [], 0
    while len(skycap_times) < repeat and lost <= repeat:
        fresh_pod(kubeconfig, namespace, selector)
        try:
            pair = (first_line_seconds(ours, env), first_line_seconds(raw, env))
        except SystemExit as exc:  # the log was deleted under us (see fresh_pod): that round again
            print(f"logs: a round lost: {exc}", file=sys.stderr)
            lost += 1
            continue
        skycap_times.append(pair[0])
        raw_times.append(pair[1])
    print(f"logs: {len(skycap_times)} rounds measured, {lost} lost to a log deleted under the bench")
    if not skycap_times:
        print("logs: no round could be measured")
        return
    report("logs: time to the first line", skycap_times, raw_times, 1.5)


def bench_doctor(project: Path, kubeconfig: Path, stage: str, repeat: int) -> None:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = skycap(project, kubeconfig, "doctor", stage, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"doctor found problems:\n{done.stdout}{done.stderr}")
    median = statistics.median(times)
    print(f"doctor: {SERVICES} services, 3 hosts: median {median:.2f} s over {repeat} runs "
          f"(min {min(times):.2f}, max {max(times):.2f}; goal < 3 s: {'met' if median < 3 else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reason = sshd_missing_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="skycap-bench-ops-") as tmp, private_cluster() as state:
        base = Path(tmp)
        home = base / "home"
        home.mkdir()
        os.environ["HOME"] = str(home)  # skycap reads ~/.ssh/config and known_hosts from here
        fleet = FakeVmFleet(base / "vms", 3, generate_key(base / "id_ed25519", "skycap-bench")).start()
        try:
            fleet.configure_client(home)
            project, node = make_project(base / "project", state, SERVICES, replicas=1)
            stage, namespace = stage_for(project, "ops", "bench-ops"), "bench-ops"
            path = project / "stages" / "ops.yaml"
            data = yaml.safe_load(path.read_text())
            data["vm"] = {"legacy": {"hosts": fleet.hosts, "deploy_to": fleet.deploy_to, "restart": "true",
                                     "log_files": ["shared/app.log"]}}
            path.write_text(yaml.safe_dump(data))
            skycap(project, state.kubeconfig, "deploy", stage, f"rev={node}")
            bench_logs(project, state.kubeconfig, stage, namespace, args.repeat)
            bench_doctor(project, state.kubeconfig, stage, args.repeat)
        finally:
            fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

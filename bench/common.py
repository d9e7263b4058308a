"""Shared pieces of the benchmarks: a private local cluster, a deploy project of N services,
timing helpers. Every figure is a ratio against the raw tools run in the same session."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def private_cluster(nodes: str = "real"):
    """A local cluster on free ports in a temporary folder (a real node unless told otherwise), stopped
    afterwards."""
    from skycap.localcluster import cluster

    folder = Path(tempfile.mkdtemp(prefix="skycap-bench-"))
    names = list(cluster.DEFAULT_PORTS)
    try:  # an up that fails half-way leaves parts running: down stops them too
        state = cluster.up(ports=dict(zip(names, cluster.free_ports(len(names)))), directory=folder, nodes=nodes)
        print(f"cluster: {'a real node (kubelet, containerd)' if nodes == 'real' else 'SIMULATED nodes'}", flush=True)
        yield state
    finally:
        cluster.down(directory=folder)
        shutil.rmtree(folder, ignore_errors=True)


def make_project(folder: Path, state, services: int, replicas: int = 2) -> tuple[Path, str]:
    """A deploy project of `services` web-like services, an hg repo with one commit, images published."""
    from skycap.localcluster.images import publish_image

    (folder / "stages").mkdir(parents=True)
    shutil.copytree(ROOT / "templates", folder / "templates")
    repo = folder / "platform"
    hg = str(BIN / "hg")
    env = {**os.environ, "HGPLAIN": "1", "HGUSER": "bench <bench@example.com>"}
    subprocess.run([hg, "init", str(repo)], check=True, env=env)
    (repo / "app.txt").write_text(f"bench {time.time()}\n")
    subprocess.run([hg, "-R", str(repo), "commit", "-A", "-m", "bench"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    node = subprocess.run([hg, "-R", str(repo), "log", "-r", "tip", "-T", "{node}"], check=True, env=env,
                          capture_output=True, text=True).stdout
    names = [f"svc{i:02d}" for i in range(services)]
    for name in names:
        publish_image(state.registry, f"bench/{name}", node[:12])
    stage = {"hg": str(repo), "registry": state.registry,
             "kubernetes": {"namespace": "placeholder", "context": "skycap-local", "create_namespace": True},
             "rollout_timeout": 300, "vars": {"progress_deadline": 600},  # 40 pods on one node, 2 cores
             "services": {name: {"image": f"bench/{name}", "template": "worker.yaml.j2", "replicas": replicas}
                          for name in names}}
    (folder / "stages" / "template.yaml").write_text(yaml.safe_dump(stage))
    return folder, node


def new_revision(project: Path, state, services: int) -> str:
    """Another commit in the project's repository, with its images published."""
    from skycap.localcluster.images import publish_image

    repo, hg = project / "platform", str(BIN / "hg")
    env = {**os.environ, "HGPLAIN": "1", "HGUSER": "bench <bench@example.com>"}
    (repo / "app.txt").write_text(f"bench {time.time()}\n")
    subprocess.run([hg, "-R", str(repo), "commit", "-m", "next"], check=True, env=env)
    node = subprocess.run([hg, "-R", str(repo), "log", "-r", "tip", "-T", "{node}"], check=True, env=env,
                          capture_output=True, text=True).stdout
    for i in range(services):
        publish_image(state.registry, f"bench/svc{i:02d}", node[:12])
    return node


def stage_for(project: Path, name: str, namespace: str) -> str:
    data = yaml.safe_load((project / "stages" / "template.yaml").read_text())
    data["kubernetes"]["namespace"] = namespace
    (project / "stages" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return name


def skycap(project: Path, kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "NO_COLOR": "1"}
    done = subprocess.run([str(BIN / "skycap"), "--project", str(project), *args], env=env,
                          capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"skycap {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), *args], input=stdin,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def raw_rollout(kubeconfig: Path, namespace: str, manifests: str, deployments: list[str]) -> None:
    """The floor: one kubectl apply, then `kubectl rollout status` of every Deployment in parallel."""
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=manifests)
    procs = [subprocess.Popen([str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), "-n", namespace, "rollout",
                               "status", f"deployment/{name}", "--timeout=300s"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for name in deployments]
    failed = [(name, p) for name, p in zip(deployments, procs) if p.wait() != 0]
    if failed:
        name, proc = failed[0]
        raise SystemExit(f"raw kubectl rollout status of deployment/{name} (and {len(failed) - 1} more) failed: "
                         f"{proc.stderr.read().strip()}")


def timed(func, *args) -> float:
    started = time.perf_counter()
    func(*args)
    return time.perf_counter() - started


def report(name: str, skycap_times: list[float], raw_times: list[float], goal: float) -> None:
    ours, floor = statistics.median(skycap_times), statistics.median(raw_times)
    ratio = ours / floor
    print(f"{name}: skycap median {ours:.2f} s, raw median {floor:.2f} s, ratio {ratio:.2f} "
          f"(goal <= {goal:.2f}: {'met' if ratio <= goal else 'NOT met'})")

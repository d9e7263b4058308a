"""Services and Deployments in the test cluster for the load balancer tests, a stage that points lb-sync at
them, and lb-sync run as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.lbkit import free_port, wait_for


def make_web(core_api, namespace: str, registry: str, tag: str, replicas: int = 2, service_type: str = "ClusterIP",
             name: str = "web") -> None:
    """A Deployment of the test web image (HTTP on 8080, readiness on /health) and its Service on port 80."""
    from kubernetes import client

    labels = {"app": name}
    container = {"name": "web", "image": f"{registry}/skytap/web:{tag}", "ports": [{"containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1}}
    client.AppsV1Api(core_api).create_namespaced_deployment(namespace, {
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})
    client.CoreV1Api(core_api).create_namespaced_service(namespace, {
        "metadata": {"name": name},
        "spec": {"type": service_type, "selector": labels,
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})


def scale(core_api, namespace: str, replicas: int, name: str = "web") -> None:
    from kubernetes import client

    client.AppsV1Api(core_api).patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}})


def ready_members(core_api, namespace: str, name: str = "web", port: int = 8080) -> set[str]:
    """ADDRESS:PORT of the Service's ready pods, read from the pods themselves."""
    from kubernetes import client

    pods = client.CoreV1Api(core_api).list_namespaced_pod(namespace, label_selector=f"app={name}").items
    ready = set()
    for pod in pods:
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if pod.metadata.deletion_timestamp is None and conditions.get("Ready") == "True" and pod.status.pod_ip:
            ready.add(f"{pod.status.pod_ip}:{port}")
    return ready


def wait_ready(core_api, namespace: str, count: int, timeout: float = 60, name: str = "web") -> set[str]:
    found = wait_for(lambda: (lambda r: [r] if len(r) == count else None)(ready_members(core_api, namespace, name)),
                     timeout, f"{count} ready pods of {name}")
    return found[0]


def write_project(root: Path, cluster, namespace: str, load_balancer: dict, kubeconfig: str | None = None) -> Path:
    (root / "stages").mkdir(parents=True, exist_ok=True)
    stage = {"hg": ".", "registry": cluster.registry,
             "kubernetes": {"namespace": namespace, "context": "skycap-local"},
             "services": {"web": {"image": "skytap/web", "template": "web.yaml.j2"}},
             "load_balancer": load_balancer}
    if kubeconfig:
        stage["kubernetes"]["kubeconfig"] = kubeconfig
    (root / "stages" / "test.yaml").write_text(yaml.safe_dump(stage, sort_keys=False))
    return root


def edit_lb(root: Path, **changes) -> None:
    path = root / "stages" / "test.yaml"
    stage = yaml.safe_load(path.read_text())
    stage["load_balancer"].update(changes)
    path.write_text(yaml.safe_dump(stage, sort_keys=False))


class LbSyncProcess:
    """`skycap lb-sync test` as a real process; its output in a file."""

    def __init__(self, root: Path, env: dict | None = None, extra: tuple[str, ...] = ()):
        self.root = root
        self.port = free_port()
        self.log = root / f"lb-sync-{self.port}.log"
        argv = [sys.executable, "-m", "skycap.cli", "--project", str(root), "lb-sync", "test",
                "--listen", f"127.0.0.1:{self.port}", *extra]
        self.out = open(self.log, "w")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def text(self) -> str:
        return self.log.read_text()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_listening(self, timeout: float = 30) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"lb-sync exited {self.proc.returncode}:\n{self.text()}")
            try:
                return self.get("/healthz")
            except OSError:
                return None
        wait_for(up, timeout, "lb-sync's /healthz")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode


def enabled(balancer, pool: str = "be_web") -> set[str]:
    return {name for name, state in balancer.members(pool).items() if state == "enabled"}


def wait_pool(balancer, want: set[str], timeout: float = 10, pool: str = "be_web") -> float:
    """Seconds until the pool's enabled members are `want`."""
    started = time.monotonic()
    wait_for(lambda: enabled(balancer, pool) == want, timeout, f"pool {pool} == {sorted(want)}")
    return time.monotonic() - started

"""Load balancer test kit: a real HAProxy on loopback, the iControl REST test server, one face for both,
and the guard that keeps test traffic on loopback and pod addresses."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from skycap.localcluster.cluster import free_ports
from tests.icontrol import IControlServer

POOLS = ("be_web", "be_api")
# The local clusters' own range on this machine: each cluster's link, pods and Services (README,
# "The local cluster"), only in network namespaces they made.
LOCAL_CLUSTER_NETWORK = ipaddress.ip_network("198.18.0.0/15")


def allowed_target(address: str) -> str:
    """Test traffic goes only to loopback and to the networks the local cluster made itself."""
    ip = ipaddress.ip_address(address)
    if not (ip.is_loopback or ip in LOCAL_CLUSTER_NETWORK):
        raise AssertionError(f"refusing to send test traffic to {address}: not loopback nor the local cluster's")
    return address


def free_port() -> int:
    return free_ports(1)[0]


def haproxy_command(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode()


class HAProxyProcess:
    """haproxy -db (foreground, our child) from a generated config; never the system service."""

    def __init__(self, folder: Path, pools=POOLS):
        self.folder = folder
        # Chosen together: one at a time, the kernel may hand out the same port twice, and HAProxy
        # binds both (SO_REUSEPORT) without a word.
        self.api_port, self.frontend_port = free_ports(2)
        self.pools = pools
        self.proc: subprocess.Popen | None = None
        self.config = folder / "haproxy.cfg"
        backends = "".join(f"backend {pool}\n    balance roundrobin\n" for pool in pools)
        self.config.write_text(
            "global\n"
            f"    stats socket ipv4@127.0.0.1:{self.api_port} level admin\n"
            "    maxconn 2000\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 2s\n"
            "    timeout client 10s\n"
            "    timeout server 10s\n"
            "    retries 2\n"
            "    option redispatch\n"
            "frontend fe_web\n"
            f"    bind 127.0.0.1:{self.frontend_port}\n"
            f"    default_backend {pools[0]}\n" + backends)

    @property
    def api(self) -> str:
        return f"tcp://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        log = open(self.folder / "haproxy.log", "ab")
        self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                haproxy_command(self.api_port, "show info")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited: {(self.folder / 'haproxy.log').read_text()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError("haproxy did not open its runtime API in 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def members(self, pool: str) -> dict[str, str]:
        """name ADDRESS:PORT -> enabled / draining / disabled, read from `show servers state`."""
        out = {}
        for line in haproxy_command(self.api_port, f"show servers state {pool}").splitlines():
            fields = line.split()
            if len(fields) > 18 and fields[1] == pool:
                admin = int(fields[6])
                state = "disabled" if admin & 0x21 else "draining" if admin & 0x08 else "enabled"
                out[f"{fields[4]}:{fields[18]}"] = state
        return out

    def add_member(self, pool: str, name: str, state: str = "enabled") -> None:
        haproxy_command(self.api_port, f"add server {pool}/{name} {name}")
        haproxy_command(self.api_port, f"set server {pool}/{name} state "
                                       f"{'ready' if state == 'enabled' else 'drain'}")


class F5Fake:
    """The iControl REST test server with the same face as HAProxyProcess."""

    def __init__(self, pools=POOLS):
        self.server = IControlServer()
        self.pools = pools

    @property
    def api(self) -> str:
        return self.server.url

    @property
    def state(self):
        return self.server.state

    def start(self) -> None:
        self.server.start()
        for pool in self.pools:
            self.state.add_pool(pool)

    def stop(self) -> None:
        self.server.stop()

    def members(self, pool: str) -> dict[str, str]:
        out = {}
        for name, member in self.state.members(pool).items():
            out[name] = "disabled" if member["state"] == "user-down" else \
                "draining" if member["session"] == "user-disabled" else "enabled"
        return out

    def add_member(self, pool: str, name: str, state: str = "enabled") -> None:
        with self.state.lock:
            self.state.pools[("Common", pool)][name] = {
                "name": name, "address": name.rpartition(":")[0], "partition": "Common",
                "session": "user-enabled" if state == "enabled" else "user-disabled", "state": "unchecked"}


def lb_block(kind: str, balancer, **extra) -> dict:
    block = {"kind": kind, "api": balancer.api, "members": "pods", "drain_seconds": 1,
             "empty_grace_seconds": 2, "resync_seconds": 1,
             "pools": {"web": {"pool": "be_web", "port": 80}}}
    if kind == "f5":
        block["credentials"] = {"env": "F5TEST"}
    block.update(extra)
    return block


@pytest.fixture
def haproxy(tmp_path):
    process = HAProxyProcess(tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def f5(monkeypatch):
    fake = F5Fake()
    fake.start()
    monkeypatch.setenv("F5TEST_USERNAME", fake.state.username)
    monkeypatch.setenv("F5TEST_PASSWORD", fake.state.password)
    yield fake
    fake.stop()


@pytest.fixture(params=["haproxy", "f5"])
def balancer(request):
    """(kind, balancer): the same tests run against a real HAProxy and the iControl REST test server."""
    return request.param, request.getfixturevalue(request.param)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def node_is_real(core_api) -> bool:
    """A real kubelet says containerd://...; the simulator says sim://."""
    from kubernetes import client

    nodes = client.CoreV1Api(core_api).list_node().items
    return any((n.status.node_info.container_runtime_version or "").startswith("containerd://") for n in nodes)


def environ_without_kube(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(extra)
    return env


class Forwarder:
    """A TCP forwarder on loopback to another loopback port, which a test can cut (every connection
    closed, new ones refused) and restore: the API server unreachable, as seen from its client."""

    def __init__(self, target_port: int):
        import threading

        self.target_port, self.port = target_port, free_port()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.threading = threading

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        self.threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # cut while this one was being connected: it must not live
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self.threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            if self.listener:
                self.listener.close()
                self.listener = None
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self.sockets.clear()

    restore = start


def load_loop(url_host: str, port: int, count: int, rate: float, timeout: float = 2.0) -> dict:
    """`count` HTTP GETs at `rate` per second (bounded in count and time), each on a new connection;
    what was sent and what failed. Only to loopback or the local cluster's addresses."""
    import urllib.request

    allowed_target(url_host)
    sent, failures = 0, []
    started = time.monotonic()
    for index in range(count):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent += 1
        try:
            with urllib.request.urlopen(f"http://{url_host}:{port}/", timeout=timeout) as response:
                response.read()
                if response.status != 200:
                    failures.append(f"#{index}: HTTP {response.status}")
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever its kind
            failures.append(f"#{index}: {exc}")
    return {"sent": sent, "failed": len(failures), "failures": failures[:20],
            "seconds": round(time.monotonic() - started, 2)}


def change_latencies(log_text: str) -> list[float]:
    """Seconds from endpoint change to pool change, from lb-sync's log lines."""
    import re

    return [float(x) for x in re.findall(r"; ([0-9.]+) s after the endpoint change\)", log_text)]

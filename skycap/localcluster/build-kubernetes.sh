#!/usr/bin/env bash
# Builds the local cluster's Kubernetes 1.20.2 binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy) from Debian 12's `kubernetes` source package, once, into
# $1 (the cache folder), and keeps pause.c from the same tree beside them for the pause image.
# A cache that holds some of them (an older Skycap built two) is completed, not rebuilt.
# Needs: apt-get (a deb-src entry is made privately), golang-go, rsync, jq.
set -euo pipefail
dest=${1:?usage: build-kubernetes.sh DEST_DIR}
version=1.20.2
work=${SKYCAP_BUILD_DIR:-$(dirname "$dest")/build-$version}
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
missing=()
for name in "${binaries[@]}"; do
  [ -x "$dest/$name" ] || missing+=("$name")
done
if [ ${#missing[@]} -eq 0 ] && [ -f "$dest/pause.c" ]; then
  echo "already built: $dest"; exit 0
fi
for tool in go rsync jq make apt-get; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install golang-go rsync jq make)" >&2; exit 3; }
done
mkdir -p "$work/apt/lists/partial" "$work/apt/parts" "$work/src"
# A private deb-src list leaves the machine's apt setup untouched.
src_file=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
if [ -n "$src_file" ]; then
  sed 's/^Types: .*/Types: deb-src/' "$src_file" > "$work/apt/parts/debian-src.sources"
  : > "$work/apt/sources.list"
else
  grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > "$work/apt/sources.list"
fi
apt_opts=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=$work/apt/parts"
          -o "Dir::State::Lists=$work/apt/lists")
cd "$work/src"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  apt-get "${apt_opts[@]}" update -qq
  apt-get "${apt_opts[@]}" source --download-only kubernetes
fi
tarball=$(ls kubernetes_*.orig.tar.gz | head -n 1)
if [ ! -d "kubernetes-$version" ]; then
  tar xzf "$tarball"
fi
cd "kubernetes-$version"
what=()
for name in "${missing[@]}"; do what+=("cmd/$name"); done
if [ ${#what[@]} -gt 0 ]; then
  CGO_ENABLED=0 make WHAT="${what[*]}"
fi
mkdir -p "$dest.tmp"
[ -d "$dest" ] && cp -a "$dest/." "$dest.tmp/"
for name in "${missing[@]}"; do cp "_output/bin/$name" "$dest.tmp/"; done
cp build/pause/linux/pause.c "$dest.tmp/pause.c"
rm -rf "$dest"; mv "$dest.tmp" "$dest"
echo "built: $dest"

#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager 1.20.2 from Debian 12's
# `kubernetes` source package, once, into $1 (the cache folder).
# Needs: apt-get (a deb-src entry is made privately), golang-go, rsync, jq.
set -euo pipefail
dest=${1:?usage: build-kubernetes.sh DEST_DIR}
version=1.20.2
work=${SKYCAP_BUILD_DIR:-$(dirname "$dest")/build-$version}
if [ -x "$dest/kube-apiserver" ] && [ -x "$dest/kube-controller-manager" ]; then
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
CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
mkdir -p "$dest.tmp"
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$dest.tmp/"
rm -rf "$dest"; mv "$dest.tmp" "$dest"
echo "built: $dest"

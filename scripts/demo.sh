#!/usr/bin/env bash
# The main job on the embedded default: set up, start the local control plane, make the example
# project's Mercurial repository and the images CI would have pushed for it, deploy it to the
# `demo` stage, and show what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

eval "$(skycap local-cluster up)"

repo=.skycap/demo-platform
if [ ! -d "$repo/.hg" ]; then
  mkdir -p "$repo"
  hg init "$repo"
  echo "the platform's code would be here" > "$repo/README"
  hg -R "$repo" add -q "$repo/README"
  hg -R "$repo" commit -q -u "demo <demo@example.com>" -m "Platform: first release"
fi
echo "change $(date -u +%FT%TZ)" >> "$repo/README"
hg -R "$repo" commit -q -u "demo <demo@example.com>" -m "Platform: a change to deploy"
tag=$(hg -R "$repo" log -r tip -T '{node|short}')
for service in web worker notifier; do
  skycap local-cluster publish "skytap/$service:$tag" >/dev/null   # what CI would have pushed
done

skycap deploy demo rev=tip
skycap status demo
skycap history demo

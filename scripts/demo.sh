#!/usr/bin/env bash
# The main job on the embedded default: set up, start the local cluster (control plane and a real
# node), make the example project's Mercurial repository and the images CI would have pushed for
# it, deploy it to the `demo` stage and fetch its web page from the host through the NodePort;
# deploy a new revision (the page changes), roll back (it changes back), and show what runs.
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

new_revision() {  # a changeset, and the images CI would have pushed for it
  echo "change $(date -u +%FT%TZ.%N)" >> "$repo/README"
  hg -R "$repo" commit -q -u "demo <demo@example.com>" -m "Platform: $1"
  local tag
  tag=$(hg -R "$repo" log -r tip -T '{node|short}')
  for service in web worker notifier; do
    skycap local-cluster publish "skytap/$service:$tag" >/dev/null
  done
}

show_page() {  # the web service's page, fetched from the host through its NodePort on the node
  local address port
  address=$(kubectl --context skycap-local get node skycap-node \
              -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
  port=$(kubectl --context skycap-local -n skycap-demo get service web -o jsonpath='{.spec.ports[0].nodePort}')
  echo "--- http://$address:$port/ says:" >&2
  curl -fsS --max-time 5 "http://$address:$port/" >&2
}

new_revision "a change to deploy"
skycap deploy demo rev=tip
show_page
new_revision "another change"
skycap deploy demo rev=tip
show_page
skycap rollback demo
show_page
skycap status demo
skycap history demo

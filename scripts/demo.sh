#!/usr/bin/env bash
# The main job on the embedded default: set up, start the local cluster (control plane and a real
# node), make the example project's Mercurial repository and the images CI would have pushed for
# it, deploy it to the `demo` stage and fetch its web page from the host through the NodePort;
# deploy a new revision (the page changes), roll back (it changes back), and show what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

# Not `eval "$(...)"`: eval of an empty output succeeds, and the demo would go on without a cluster.
exports=$(skycap local-cluster up)
eval "$exports"

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
  local expect=$1 address port page=""
  address=$(kubectl --context skycap-local get node skycap-node \
              -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
  port=$(kubectl --context skycap-local -n skycap-demo get service web -o jsonpath='{.spec.ports[0].nodePort}')
  for _ in $(seq 50); do  # kube-proxy follows the Service's endpoints a moment after the rollout
    page=$(curl -fsS --max-time 2 "http://$address:$port/" 2>/dev/null || true)
    case "$page" in *"$expect"*) break ;; esac
    sleep 0.2
  done
  echo "--- http://$address:$port/ says: $page" >&2
  case "$page" in *"$expect"*) ;; *) echo "demo: expected the page to name $expect" >&2; exit 1 ;; esac
}

tip() { hg -R "$repo" log -r tip -T '{node|short}'; }

new_revision "a change to deploy"
first=$(tip)
skycap deploy demo rev=tip
show_page "skytap/web:$first"
new_revision "another change"
skycap deploy demo rev=tip
show_page "skytap/web:$(tip)"
skycap rollback demo
show_page "skytap/web:$first"
skycap status demo
skycap history demo

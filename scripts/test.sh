#!/usr/bin/env bash
# The whole test suite against the real parts (control plane, kubectl, hg, registry, sshd),
# which the tests start themselves. Sets up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# The whole test suite against the real parts (control plane, kubectl, hg, registry, sshd),
# which the tests start themselves. Sets up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers, each with a cluster of its own: much of a test's time is waiting for pods and
# watches, which the other worker fills. Tests sharing a costly module fixture stay together
# (xdist_group). SKYCAP_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${SKYCAP_TEST_WORKERS:-2}" --dist loadgroup "$@"

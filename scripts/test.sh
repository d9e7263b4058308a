#!/usr/bin/env bash
# The whole test suite against the real parts (control plane, kubectl, hg, registry, sshd),
# which the tests start themselves. Sets up first (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Three workers, each with a cluster of its own: much of a test's time is waiting for pods and
# watches, which the other workers fill (two workers kept these 2 cores about half busy: 893 s;
# three: 671 s). Tests sharing a costly module fixture stay together
# (xdist_group). SKYCAP_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${SKYCAP_TEST_WORKERS:-3}" --dist loadgroup "$@"

#!/usr/bin/env bash
# Set up and run the test suite, then ruff. As root (through sudo when needed), so the
# namespace/veth/TAP tests run too. Arguments go to pytest.
#
# Tests run in SPP_TEST_WORKERS pytest processes (default 3), a whole file per process
# (--dist loadfile keeps a module's shared bed in one process). Most of the suite waits on
# processes, sockets and guests rather than computing, so three workers on two cores finish
# in under half the serial time. `scripts/test.sh -n 0 ...` runs serially; `-m "not slow"` skips
# the VM, container and multi-host tests for a quick run.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
as_root "$0" "$@" || exit 1
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check spp tests bench
.venv/bin/ruff format --check spp tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${SPP_TEST_WORKERS:-3}" --dist loadfile "$@"

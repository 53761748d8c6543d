#!/usr/bin/env bash
# Set up and run the test suite, then ruff. As root (through sudo when needed), so the
# namespace/veth/TAP tests run too. Arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
as_root "$0" "$@" || exit 1
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check spp tests bench
.venv/bin/ruff format --check spp tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Set up and run the test suite (as root, so the namespace/veth/TAP tests run too), then ruff.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check spp tests bench
.venv/bin/ruff format --check spp tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"

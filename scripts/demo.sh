#!/usr/bin/env bash
# Set up and run the demo: spp-ctl, the primary and two nfv moving packets (and, as root, a ping
# between two network namespaces through the patch panel). Extra arguments go to spp-demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/spp-demo "$@"

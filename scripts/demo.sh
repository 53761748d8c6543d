#!/usr/bin/env bash
# Set up and run the demo: spp-ctl, the primary and two nfv moving packets, and a ping between two
# network namespaces through the patch panel. That part needs root: the script asks sudo for it
# when needed, and without sudo runs the rest. Arguments go to spp-demo.
set -euo pipefail
source "$(dirname "$0")/as-root.sh"
if ! as_root "$0" "$@"; then
    echo "demo.sh: going on without root: no system packages installed, no namespaces and no ping" >&2
fi
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/spp-demo "$@"

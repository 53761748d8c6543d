#!/usr/bin/env bash
# Installs what soft-patch-panel needs on a Debian/Ubuntu machine: the system tools its ports and
# tests use, and a virtual environment in .venv with the package. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in ip:iproute2 tcpdump:tcpdump tshark:tshark lz4:lz4 tmux:tmux dot:graphviz ping:iputils-ping; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# libatomic: the full barrier of ring doorbells (spp/engine/doorbell.py), loaded with ctypes.
ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1 ' || need_apt+=(libatomic1)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "install.sh: apt-get install ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "install.sh: missing system packages (${need_apt[*]}); run as root to install them" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"

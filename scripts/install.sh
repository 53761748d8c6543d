#!/usr/bin/env bash
# Installs what soft-patch-panel needs on a Debian/Ubuntu machine: every program that the product,
# its tests and its benchmarks run (see the list below), and a virtual environment in .venv with
# the package. Safe to run again; as root it installs missing system packages with apt-get,
# otherwise it names them. Nothing here needs hugepages (only bench/phy_vs_testpmd.py does, and it
# reserves and gives back its own).
set -euo pipefail
cd "$(dirname "$0")/.."

# command:package — one program a part of the project runs, and the Debian package that has it.
# A test never relies on a program missing here.
tools=(
    python3:python3           # everything
    ip:iproute2               # namespaces, veth, links (spp-demo, tests, bench)
    ping:iputils-ping         # spp-demo, tests across the panel
    curl:curl                 # README and USER_GUIDE's REST examples, run by tests/test_docs.py
    ethtool:ethtool           # tests: offloads off on test veths
    sysctl:procps             # tests, bench: IPv6 off on test links
    tcpdump:tcpdump           # tests: an independent pcap reader and filter
    tshark:tshark             # tests: an independent pcapng reader
    lz4:lz4                   # tests: an independent LZ4 frame reader
    dot:graphviz              # spp CLI: topo to svg/png
    tmux:tmux                 # interactive CLI sessions; spp up --tmux
    dpdk-testpmd:dpdk-dev     # tests and bench: the named peer (vhost-user both sides, phy)
    cc:gcc                    # bench: builds the traffic generator
    git:git                   # bench: records the commit measured
    taskset:util-linux        # bench: CPU pinning
    stdbuf:coreutils          # tests, bench: testpmd's output unbuffered
    iperf3:iperf3             # bench: TCP/UDP through the panel and its peers
    qemu-system-x86_64:qemu-system-x86  # spp vm: guests on vhost-user ports
    etcd:etcd-server          # spp-agent: the local etcd (spp-agent etcd, --local-etcd), multi-host cluster
    etcdctl:etcd-client       # spp-agent docs: keys by hand; multi-host harness: cluster health
    unshare:util-linux        # tests: each document's examples in namespaces of their own
    chromium:chromium         # tests: spp-ctl's web page in a headless browser (Playwright drives it)
    podman:podman             # sppc: the container engine (tests run it with runc)
    dockerd:docker.io         # sppc: the same containers under docker (tests start sppc's own dockerd)
    runc:runc                 # sppc: the OCI runtime podman is told to use here
    mmdebstrap:mmdebstrap     # sppc build: the image's Debian root
)
need_apt=()
for pair in "${tools[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# libatomic: the full barrier of ring doorbells (spp/engine/doorbell.py), loaded with ctypes.
ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1 ' || need_apt+=(libatomic1)
# python3 -m venv needs ensurepip, which Debian ships apart from python3.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    need_apt+=(python3-venv)
fi
# spp vm image: a static busybox and a Debian kernel with its modules, from distribution packages.
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
compgen -G "/boot/vmlinuz-*" >/dev/null || need_apt+=(linux-image-amd64)
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "install.sh: apt-get install ${need_apt[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
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

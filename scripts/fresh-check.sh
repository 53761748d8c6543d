#!/usr/bin/env bash
# The README's promise, checked from nothing: build a minimal Debian 12 root (mmdebstrap, from the
# Debian mirror this machine's apt uses), copy a clean clone of this repository's HEAD into it and
# run the README's test command there as root, the way a fresh machine would. Needs root and
# mmdebstrap. Everything lives in one temporary directory, removed at the end (--keep to look at it).
#
#   scripts/fresh-check.sh [--keep] [--demo] [-- pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
demo=0
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1; shift ;;
        --demo) demo=1; shift ;;
        --) shift; break ;;
        *) echo "usage: $0 [--keep] [--demo] [-- pytest arguments]" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -- "$0" "$@"
    fi
    echo "fresh-check.sh: needs root (chroot, mounts) and sudo is not installed" >&2
    exit 1
fi
command -v mmdebstrap >/dev/null 2>&1 || {
    echo "fresh-check.sh: needs mmdebstrap (apt-get install mmdebstrap)" >&2
    exit 1
}

# The mirror apt uses here (deb822 or one-line format), Debian's own otherwise.
mirror=$(
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
      grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
    } | grep -v -- '-security' | grep -m1 'debian' || true
)
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/spp-fresh-check.XXXXXX)
root="$work/root"
cleanup() {
    if [ "$keep" -eq 1 ]; then
        echo "fresh-check.sh: kept $work"
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT

echo "fresh-check.sh: Debian 12 (bookworm) minbase from $mirror into $root"
mmdebstrap --quiet --variant=minbase bookworm "$root" "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main"

echo "fresh-check.sh: clean clone of $(git rev-parse --short HEAD) into /src"
git clone --quiet --no-hardlinks "$(pwd)" "$root/src"
git -C "$root/src" checkout --quiet "$(git rev-parse HEAD)"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Where the network checks TLS against authorities of its own (a proxy), the host trusts them in
# its CA bundle and points pip at it; the fresh root gets that bundle for pip and nothing else of
# the host's set-up (no pip configuration, no wheels, no packages).
pip_cert=
host_ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$host_ca" ]; then
    cp "$host_ca" "$root/etc/fresh-check-host-ca.crt"
    pip_cert=/etc/fresh-check-host-ca.crt
fi

if [ "$demo" -eq 1 ]; then
    inner='cd /src && ./scripts/demo.sh --seconds 1 && ./scripts/test.sh "$@"'
else
    inner='cd /src && ./scripts/test.sh "$@"'
fi

# Private mount and PID namespaces: the mounts (and the netns mounts the tests make under the
# root's /run) and every process started inside go away with them, whatever happens inside. The
# network is the host's (apt-get and pip need it).
set +e
unshare --mount --propagation private --pid --fork -- /bin/bash -euc '
    root=$1; inner=$2; pip_cert=$3; shift 3
    # The root must be a mount point, as a machine'"'"'s / is: "ip netns exec" remounts / as a slave.
    mount --bind "$root" "$root"
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
    mount -t tmpfs -o mode=755 tmpfs "$root/run"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TERM=dumb LANG=C.UTF-8 ${pip_cert:+PIP_CERT=$pip_cert} /bin/bash -c "$inner" fresh-check "$@"
' fresh-check "$root" "$inner" "$pip_cert" "$@"
rc=$?
set -e
echo "fresh-check.sh: the README's test command in a fresh Debian 12 root exited with $rc"
exit $rc

# Sourced by the scripts that need root (network namespaces, veth and TAP devices, apt-get):
# as root, nothing happens; otherwise the calling script runs itself again through sudo when sudo
# is there, and when it is not, as_root says so and returns 1 for the caller to decide.
#
#   as_root "$0" "$@" || { echo "...what works without root..."; }
as_root() {
    local script=$1
    shift
    [ "$(id -u)" -eq 0 ] && return 0
    if command -v sudo >/dev/null 2>&1; then
        echo "$(basename "$script"): needs root (network namespaces, veth and TAP devices, apt-get): running it through sudo" >&2
        exec sudo -- "$(readlink -f "$script")" "$@"
    fi
    echo "$(basename "$script"): needs root (network namespaces, veth and TAP devices, apt-get), and sudo is not installed: run it as root" >&2
    return 1
}

# tests/guest/tap.sh — TAP helpers for guest test scripts (busybox sh).
# Installed in the guest as /usr/share/vmmbib/tap.sh; /init sources it before
# it runs the test script, so scripts just call:
#   tap_ok NAME                 record a pass
#   tap_fail NAME [WHY...]      record a failure, WHY lines become diagnostics
#   tap_skip NAME REASON        record a skipped test
#   tap_check NAME CMD [ARG...] run CMD; pass if it exits 0, else fail and show
#                               its output (always shown with VMMBIB_VERBOSE=1)
#   tap_diag TEXT...            a diagnostic line ("# ...")
#   wait_path PATH SECS [!]     wait up to SECS seconds for PATH to exist (with
#                               "!": to be gone); false if it never happened
#   tap_relay PREFIX FILE       a program's results in FILE as ours (below)
#   link_up IP [PEER_IP...]     the VMs' L2 link (below)
# Each result is one line "VMMBIB-TAP: ok N - NAME" on stdout; /init forwards
# the script's stdout to the console and to the host's results port, where
# tests/guest/run-guest-test.py turns these lines into TAP for meson. Call the
# helpers from the script's own shell (not inside $(...)), or the line is lost.

# The counter lives in a file so that subshells ( ... ) can record results too.
VMMBIB_TAP_STATE=${VMMBIB_TAP_STATE:-/run/vmmbib/tap}

_tap_next() {
    _tap_n=$(($(cat "$VMMBIB_TAP_STATE.count" 2>/dev/null || echo 0) + 1))
    echo "$_tap_n" >"$VMMBIB_TAP_STATE.count"
}

tap_ok() {
    _tap_next
    echo "VMMBIB-TAP: ok $_tap_n - $*"
}

tap_fail() {
    _tap_next
    _tap_name=$1
    shift
    echo "VMMBIB-TAP: not ok $_tap_n - $_tap_name"
    echo 1 >"$VMMBIB_TAP_STATE.failed"
    for _tap_line in "$@"; do
        tap_diag "$_tap_line"
    done
}

tap_skip() {
    _tap_next
    echo "VMMBIB-TAP: ok $_tap_n - $1 # SKIP ${2:-}"
}

tap_diag() {
    echo "$*" | while IFS= read -r _tap_l; do echo "VMMBIB-TAP: # $_tap_l"; done
}

tap_check() {
    _tap_name=$1
    shift
    _tap_out=$("$@" 2>&1)
    _tap_rc=$?
    if [ "$_tap_rc" -eq 0 ]; then
        tap_ok "$_tap_name"
        [ "${VMMBIB_VERBOSE:-0}" = 1 ] && [ -n "$_tap_out" ] && tap_diag "$_tap_out"
    else
        tap_fail "$_tap_name" "command: $*" "exit status: $_tap_rc" "$_tap_out"
    fi
    return "$_tap_rc"
}

wait_path() {
    _wp_n=0
    while [ "$_wp_n" -lt "$2" ]; do
        if [ "${3:-}" = "!" ]; then
            [ ! -e "$1" ] && return 0
        else
            [ -e "$1" ] && return 0
        fi
        sleep 1
        _wp_n=$((_wp_n + 1))
    done
    return 1
}

# Relays the results a program wrote to FILE as this test's results, each
# name prefixed "PREFIX: ": TAP lines ("ok 3 - NAME") and the lines of our
# guest programs ("ok NAME", "not ok NAME: WHY"); a plan line is dropped,
# other lines become diagnostics.
tap_relay() {
    while IFS= read -r _tap_l; do
        case $_tap_l in
        "ok "*) tap_ok "$1: $(_tap_name "${_tap_l#ok }")" ;;
        "not ok "*) tap_fail "$1: $(_tap_name "${_tap_l#not ok }")" ;;
        "1.."[0-9]*) ;;
        *) tap_diag "$_tap_l" ;;
        esac
    done <"$2"
}

# A result's name without TAP's "N - " (a name that merely starts with a
# number keeps it).
_tap_name() {
    _tn_digits=${1%%[!0-9]*}
    _tn_rest=${1#"$_tn_digits"}
    if [ -n "$_tn_digits" ] && [ "${_tn_rest# - }" != "$_tn_rest" ]; then
        echo "${_tn_rest# - }"
    else
        echo "$1"
    fi
}

# link_up IP [PEER_IP...]: the L2 link between VMs (virtio-net), for the
# programs' TCP address exchange.  Gives the first interface besides lo
# the address IP/24, brings it up and waits (90 pings in all: the other
# VMs may still be booting) until every PEER_IP but IP answers, one
# result each.  Sets link_ifc; returns 1, having failed a result, if not.
link_up() {
    _lu_ip=$1
    shift
    link_ifc=
    for _lu_n in /sys/class/net/*; do
        _lu_n=${_lu_n##*/}
        [ "$_lu_n" = lo ] || { link_ifc=$_lu_n; break; }
    done
    if [ -z "$link_ifc" ]; then
        tap_fail "a network interface between the VMs" \
            "no interface besides lo: is virtio_net in the image?"
        return 1
    fi
    if ! ip addr add "$_lu_ip/24" dev "$link_ifc" ||
        ! ip link set "$link_ifc" up; then
        tap_fail "$link_ifc takes the address $_lu_ip/24" "$(ip addr show "$link_ifc")"
        return 1
    fi
    _lu_n=90
    for _lu_peer in "$@"; do
        [ "$_lu_peer" = "$_lu_ip" ] && continue
        while [ "$_lu_n" -gt 0 ] && ! ping -c 1 -W 1 "$_lu_peer" >/dev/null 2>&1; do
            _lu_n=$((_lu_n - 1))
        done
        if [ "$_lu_n" = 0 ]; then
            tap_fail "$link_ifc $_lu_ip reaches the VM at $_lu_peer" \
                "$(ip addr show "$link_ifc")"
            return 1
        fi
        tap_ok "$link_ifc $_lu_ip reaches the VM at $_lu_peer"
    done
}

# Soft-RoCE on a dummy netdev (10.11.12.1): packets to its own address loop
# back inside rxe, so both ends of every connection live in this VM.  Sets
# RXE_GID_INDEX to the index of its IPv4-mapped GID (RoCE v2).
rxe_loopback_up() {
    tap_check "modprobe rdma_rxe" modprobe rdma_rxe
    ip link add vmmbib-d0 type dummy &&
        ip addr add 10.11.12.1/24 dev vmmbib-d0 &&
        ip link set vmmbib-d0 up
    tap_check "rdma link add rxe0 type rxe netdev vmmbib-d0" \
        rdma link add rxe0 type rxe netdev vmmbib-d0
    RXE_GID_INDEX=$(grep -lx "0000:0000:0000:0000:0000:ffff:0a0b:0c01" \
        /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null | head -n1)
    RXE_GID_INDEX=${RXE_GID_INDEX##*/}
    tap_diag "rxe0 GID index $RXE_GID_INDEX"
}

rxe_loopback_down() {
    rdma link delete rxe0 >/dev/null 2>&1
    ip link delete vmmbib-d0 2>/dev/null
}

# True when any result so far was "not ok"; /init uses it for the exit status.
tap_any_failed() {
    [ -e "$VMMBIB_TAP_STATE.failed" ]
}

# bench/guest-link.sh — the VMs' L2 link, set up in a guest (busybox sh).
# Sourced by bench/vms-guest.sh (the host passes it as a --file, so it is
# /run/vmmbib/files/guest-link.sh in the guest). It is the set-up
# tests/guest/two-vms.sh does inline; that script could source it too.
#
#   link_up IP PEER_IP   gives the first interface besides lo the address
#                        IP/24, brings it up and waits (up to 90 pings) for
#                        PEER_IP to answer; reports both as TAP results and
#                        returns 1 on failure. Sets $link_ifc.
# shellcheck shell=sh

link_up() {
    link_ifc=
    for _n in /sys/class/net/*; do
        _n=${_n##*/}
        [ "$_n" = lo ] || { link_ifc=$_n; break; }
    done
    if [ -z "$link_ifc" ]; then
        tap_fail "a network interface for the programs' TCP exchange" \
            "no interface besides lo: is virtio_net in the image?"
        return 1
    fi
    ip addr add "$1/24" dev "$link_ifc" && ip link set "$link_ifc" up
    # The other VM may still be booting: wait for it.
    for _i in $(seq 90); do
        if ping -c 1 -W 1 "$2" >/dev/null 2>&1; then
            tap_ok "$link_ifc $1 reaches the other VM at $2"
            return 0
        fi
    done
    tap_fail "$link_ifc $1 reaches the other VM at $2" "$(ip addr show "$link_ifc")"
    return 1
}

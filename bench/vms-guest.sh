# bench/vms-guest.sh — one side of the VM comparisons of bench/vms.py
# (issue 7): perftest between two VMs, on vmmbypass-ib (vmmbib0, joined to
# vmmbibd) and/or on rdma_rxe over the VMs' virtio-net link.
#
#   VMMBIB_ROLE      server or client (vm1 is the server)
#   VMMBIB_IP        this VM's address on the link (a /24)
#   VMMBIB_PEER_IP   the other VM's
#   VMMBIB_BENCH_SYSTEMS  what to measure, in order: "NAME:DEV:LAT:BW:BIG"
#                    items; DEV vmmbib0 or rxe (rxe0 is created on the
#                    link's netdev); LAT, BW, BIG: perftest -n for latency,
#                    8-byte and 64 KiB bandwidth
#
# The client prints one line per figure for the host to parse:
#   VMMBIB-BENCH sys=NAME prog=ib_write_lat size=8 <perftest's result row>
# shellcheck shell=sh

role=${VMMBIB_ROLE:?VMMBIB_ROLE must be server or client}

# ---- the L2 link (as tests/guest/two-vms.sh sets it up) ----------------------
ifc=
for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" = lo ] || { ifc=$n; break; }
done
if [ -z "$ifc" ]; then
    tap_fail "a network interface" "no interface besides lo"
    exit 1
fi
ip addr add "$VMMBIB_IP/24" dev "$ifc" && ip link set "$ifc" up
_up=0
for _i in $(seq 90); do
    if ping -c 1 -W 1 "$VMMBIB_PEER_IP" >/dev/null 2>&1; then
        _up=1
        break
    fi
done
if [ "$_up" = 1 ]; then
    tap_ok "$ifc $VMMBIB_IP reaches the other VM at $VMMBIB_PEER_IP"
else
    tap_fail "$ifc $VMMBIB_IP reaches the other VM at $VMMBIB_PEER_IP"
    exit 1
fi

# ---- rxe on the link -----------------------------------------------------------
rxe_gid=
setup_rxe() {
    [ -n "$rxe_gid" ] && return 0
    modprobe rdma_rxe || return 1
    rdma link add rxe0 type rxe netdev "$ifc" || return 1
    # RoCE v2 GID of our IPv4 address (its index is what perftest's -x takes).
    _hex=$(echo "$VMMBIB_IP" | awk -F. '{printf "%02x%02x:%02x%02x", $1, $2, $3, $4}')
    for _t in $(seq 20); do
        rxe_gid=$(grep -lx "0000:0000:0000:0000:0000:ffff:$_hex" \
            /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null | head -n 1)
        rxe_gid=${rxe_gid##*/}
        [ -n "$rxe_gid" ] && break
        sleep 1
    done
    [ -n "$rxe_gid" ]
}

# ---- one perftest run ----------------------------------------------------------
port=18700
# run SYS PROG SIZE ITERS DEVICE-ARGS...
run() {
    _sys=$1 _prog=$2 _size=$3 _iters=$4
    shift 4
    port=$((port + 1))
    if [ "$role" = server ]; then
        timeout 150 "$_prog" "$@" -s "$_size" -n "$_iters" -F -p "$port" \
            >/tmp/pt.log 2>&1
        _rc=$?
    else
        _rc=1
        for _try in $(seq 60); do
            timeout 150 "$_prog" "$@" -s "$_size" -n "$_iters" -F -p "$port" \
                "$VMMBIB_PEER_IP" >/tmp/pt.log 2>&1
            _rc=$?
            grep -q "Couldn't connect" /tmp/pt.log || break
            sleep 1
        done
    fi
    _row=$(grep -E '^ *[0-9]+ +[0-9]+ +[0-9.]+' /tmp/pt.log | tail -n 1)
    if [ "$_rc" = 0 ] && { [ "$role" = server ] || [ -n "$_row" ]; }; then
        tap_ok "$_sys: $_prog -s $_size -n $_iters, $role"
        [ "$role" = client ] &&
            echo "VMMBIB-BENCH sys=$_sys prog=$_prog size=$_size $_row"
    else
        tap_fail "$_sys: $_prog -s $_size -n $_iters, $role" \
            "command: $_prog $* -s $_size -n $_iters -p $port" "exit status $_rc:" \
            "$(cat /tmp/pt.log)"
    fi
}

for item in ${VMMBIB_BENCH_SYSTEMS:?}; do
    IFS=: read -r sys dev lat_iters bw_iters big_iters <<EOF
$item
EOF
    if [ "$dev" = rxe ]; then
        if setup_rxe; then
            tap_ok "$sys: rxe0 on $ifc, GID index $rxe_gid"
        else
            tap_fail "$sys: rxe0 on $ifc" "$(rdma link 2>&1)"
            continue
        fi
        set -- -d rxe0 -x "$rxe_gid"
    else
        set -- -d "$dev"
    fi
    echo VMMBIB-STATS-BASELINE
    sleep 2
    for prog in ib_write_lat ib_send_lat ib_read_lat; do
        run "$sys" "$prog" 8 "$lat_iters" "$@"
    done
    for prog in ib_write_bw ib_send_bw; do
        run "$sys" "$prog" 8 "$bw_iters" "$@"
        run "$sys" "$prog" 65536 "$big_iters" "$@"
    done
done

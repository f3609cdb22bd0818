# tests/guest/two-vms.sh — one side of verbs traffic between two VMs whose
# vmmbypass-ib devices are ports of one vmmbibd (run by run-two-vms.py).
#
# The pingpongs exchange their addresses over TCP, so the VMs also share an
# L2 link (virtio-net, -netdev dgram); this script gives it a static IP.
#   VMMBIB_ROLE     server or client
#   VMMBIB_IP       this VM's address on the link (a /24)
#   VMMBIB_PEER_IP  the other VM's
#   VMMBIB_TESTS    what to run, in order (default "rc ud"): rc, ud (the
#                   pingpongs with -c), and perftest's send-lat, write-lat,
#                   read-lat, atomic-lat, send-bw, write-bw, read-bw,
#                   atomic-bw (8-byte messages); kill-peer: the client
#                   runs ib_write_bw to the server, has the runner kill the
#                   server's VM (KILL-PEER) and must see its traffic end in
#                   an error completion, never hang, and its device still
#                   work (last: the server's VM is gone after it)
#   VMMBIB_ITERS    iterations of each program (default 20: TCG is slow)
# shellcheck shell=sh

dev=vmmbib0
iters=${VMMBIB_ITERS:-20}
role=${VMMBIB_ROLE:?VMMBIB_ROLE must be server or client}

# ---- the L2 link -------------------------------------------------------------
ifc=
for n in /sys/class/net/*; do
    n=${n##*/}
    [ "$n" = lo ] || { ifc=$n; break; }
done
if [ -z "$ifc" ]; then
    tap_fail "a network interface for the pingpongs' TCP exchange" \
        "no interface besides lo: is virtio_net in the image?"
    exit 1
fi
ip addr add "$VMMBIB_IP/24" dev "$ifc" && ip link set "$ifc" up
# The other VM may still be booting: wait for it.
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
    tap_fail "$ifc $VMMBIB_IP reaches the other VM at $VMMBIB_PEER_IP" \
        "$(ip addr show "$ifc")"
    exit 1
fi
tap_diag "$dev: $(ibv_devinfo -d "$dev" | grep -E 'port_lid|node_guid' | tr -s ' \t' ' ')"

echo VMMBIB-STATS-BASELINE
sleep 2

# ---- the pingpongs -------------------------------------------------------------
# pingpong NAME PORT CHECK CMD...: the server runs CMD; the client runs CMD
# with the server's address, retrying while the server does not listen yet;
# passes if CMD exits 0 and its output matches the grep pattern CHECK.
pingpong() {
    _name=$1 _port=$2 _check=$3
    shift 3
    if [ "$role" = server ]; then
        timeout 150 "$@" -p "$_port" >/tmp/pp.log 2>&1
        _rc=$?
    else
        _rc=1
        for _try in $(seq 60); do
            timeout 150 "$@" -p "$_port" "$VMMBIB_PEER_IP" >/tmp/pp.log 2>&1
            _rc=$?
            grep -q "Couldn't connect" /tmp/pp.log || break
            sleep 1
        done
    fi
    if [ "$_rc" = 0 ] && grep -q "$_check" /tmp/pp.log &&
        ! grep -q "invalid data" /tmp/pp.log; then
        tap_ok "$_name, $role"
        tap_diag "$(grep -E "address|$_check" /tmp/pp.log)"
    else
        tap_fail "$_name, $role" "command: $* -p $_port" "exit status $_rc:" \
            "$(cat /tmp/pp.log)"
        return
    fi
    # Two ports of one subnet: the peer's LID is not ours.
    _local=$(sed -n 's/.*local address: *LID \(0x[0-9a-f]*\).*/\1/p' /tmp/pp.log | head -n 1)
    _remote=$(sed -n 's/.*remote address: *LID \(0x[0-9a-f]*\).*/\1/p' /tmp/pp.log | head -n 1)
    if [ -n "$_local" ] && [ -n "$_remote" ] && [ "$_local" != "$_remote" ]; then
        tap_ok "$_name, $role: local LID $_local, remote LID $_remote"
    else
        tap_fail "$_name, $role: local and remote LIDs differ" \
            "local '$_local', remote '$_remote'"
    fi
}

port=18600
# kill_peer PORT: see kill-peer above.
kill_peer() {
    if [ "$role" = server ]; then
        # Traffic until the runner kills this VM.
        ib_write_bw -d "$dev" -s 8 -F -D 90 -p "$1" >/tmp/kp.log 2>&1
        tap_fail "killed during traffic" "ib_write_bw ended:" "$(cat /tmp/kp.log)"
        return
    fi
    _pid=
    for _try in $(seq 30); do
        ib_write_bw -d "$dev" -s 8 -F -D 90 -p "$1" "$VMMBIB_PEER_IP" \
            >/tmp/kp.log 2>&1 &
        _pid=$!
        # Without a server it gives up at once (its stdout, where it would
        # say more, is buffered): still running means traffic.
        sleep 5
        kill -0 "$_pid" 2>/dev/null && break
        wait "$_pid"
        _pid=
    done
    if [ -z "$_pid" ]; then
        tap_fail "ib_write_bw to the other VM runs" "$(cat /tmp/kp.log)"
        return
    fi
    tap_ok "ib_write_bw to the other VM runs"
    sleep 2
    echo KILL-PEER
    _n=60
    while [ "$_n" -gt 0 ] && kill -0 "$_pid" 2>/dev/null; do
        sleep 1
        _n=$((_n - 1))
    done
    if kill -0 "$_pid" 2>/dev/null; then
        kill "$_pid"
        tap_fail "ib_write_bw ends when the other VM is killed" \
            "still running 60 s after the kill" "$(cat /tmp/kp.log)"
    else
        wait "$_pid"
        _rc=$?
        if [ "$_rc" != 0 ]; then
            tap_ok "ib_write_bw ends in an error when the other VM is killed (status $_rc)"
            tap_diag "$(grep -iE 'error|status|fail' /tmp/kp.log | head -n 5)"
        else
            tap_fail "ib_write_bw ends in an error when the other VM is killed" \
                "it exited 0:" "$(cat /tmp/kp.log)"
        fi
    fi
    # The survivor's device still works (loopback).
    ibv_rc_pingpong -d "$dev" -n "$iters" -c -p $(($1 + 1)) >/tmp/lo-s.log 2>&1 &
    _server=$!
    sleep 2
    if timeout 60 ibv_rc_pingpong -d "$dev" -n "$iters" -c -p $(($1 + 1)) \
        127.0.0.1 >/tmp/lo-c.log 2>&1 && wait "$_server" &&
        grep -q "iters in" /tmp/lo-c.log; then
        tap_ok "then ibv_rc_pingpong on $dev (loopback) works"
    else
        kill "$_server" 2>/dev/null
        tap_fail "then ibv_rc_pingpong on $dev (loopback) works" \
            "$(cat /tmp/lo-c.log /tmp/lo-s.log)"
    fi
}

for t in ${VMMBIB_TESTS:-rc ud}; do
    case $t in
    rc)
        pingpong "ibv_rc_pingpong -c between VMs ($iters iterations)" 18515 \
            "iters in" ibv_rc_pingpong -d "$dev" -n "$iters" -c ;;
    ud)
        pingpong "ibv_ud_pingpong -c between VMs ($iters iterations)" 18516 \
            "iters in" ibv_ud_pingpong -d "$dev" -n "$iters" -s 1024 -c ;;
    send-lat | write-lat | read-lat | atomic-lat | send-bw | write-bw | read-bw | atomic-bw)
        port=$((port + 1))
        _prog=ib_$(echo "$t" | tr - _)
        # The client reports the numbers (the latency servers print none).
        _check='^ *[0-9]'
        [ "$role" = server ] && _check='remote address'
        pingpong "perftest $_prog between VMs ($iters iterations)" "$port" \
            "$_check" "$_prog" -d "$dev" -n "$iters" -s 8 -F ;;
    kill-peer)
        port=$((port + 2))
        kill_peer "$port" ;;
    *)
        tap_fail "unknown test '$t' in VMMBIB_TESTS" ;;
    esac
done

# tests/guest/two-vms.sh — one VM's side of verbs traffic between VMs whose
# vmmbypass-ib devices are ports of one vmmbibd (run by run-two-vms.py, in
# two VMs or up to four).
#
# The programs exchange their addresses over TCP, so the VMs also share an
# L2 link (virtio-net, -netdev dgram); this script gives it a static IP.
#   VMMBIB_ROLE     server (vm1), client (vm2) or peer (vm3, vm4)
#   VMMBIB_IP       this VM's address on the link (a /24)
#   VMMBIB_PEER_IP  the other VM's (of the pair vm1-vm2)
#   VMMBIB_IPS      every VM's address, in order (vm1 first)
#   VMMBIB_RANK     this VM's index in VMMBIB_IPS (vm1: 0)
#   VMMBIB_TESTS    what to run, in order (default "rc ud"): rc, ud (the
#                   pingpongs with -c), and perftest's send-lat, write-lat,
#                   read-lat, atomic-lat, send-bw, write-bw, read-bw,
#                   atomic-bw (8-byte messages); kill-peer: the client
#                   runs ib_write_bw to the server, has the runner kill the
#                   server's VM (KILL-PEER) and must see its traffic end in
#                   an error completion, never hang, and its device still
#                   work (last: the server's VM is gone after it);
#                   with vmmbib-integrity passed in (--file): integrity,
#                   every VM sends checksummed SENDs, RDMA WRITEs and READs
#                   to every other and checks what it got (all to all);
#                   isolation (vm1 and vm2): vm2 tries forged and
#                   insufficient rkeys and out-of-bounds addresses on vm1's
#                   memory, vm1 checks it is unchanged; kill-last: all VMs
#                   run integrity for VMMBIB_KILL_SECONDS, vm1 has the
#                   runner kill the last VM (KILL-VM) during it, and the
#                   others must see error completions for their traffic to
#                   it and complete their traffic with each other; then
#                   survivors: integrity among all but the last VM
#   VMMBIB_ITERS    iterations of each program (default 20: TCG is slow)
#   VMMBIB_SIZES    perftest's message sizes, one run each (default 8)
#   VMMBIB_MESSAGES integrity's messages to each peer (default 300)
#   VMMBIB_KILL_SECONDS  kill-last's traffic (default 40)
# shellcheck shell=sh

dev=vmmbib0
iters=${VMMBIB_ITERS:-20}
role=${VMMBIB_ROLE:?VMMBIB_ROLE must be server or client}

# ---- the L2 link -------------------------------------------------------------
ips=${VMMBIB_IPS:-$VMMBIB_IP $VMMBIB_PEER_IP}
rank=${VMMBIB_RANK:-0}
# shellcheck disable=SC2086 # one address a word
link_up "$VMMBIB_IP" $ips || exit 1
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
        # For make demo's table: the client's numbers, one line.
        [ "$role" = client ] &&
            tap_diag "RESULT $1 $(grep -E "$_check" /tmp/pp.log | tail -n 1)"
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

# integrity NAME PORT IPS ARGS...: vmmbib-integrity between the VMs of IPS
# (space-separated, this one among them), its "ok CHECK" / "not ok CHECK:
# WHY" lines as TAP; rank: this VM's index in IPS.
integrity() {
    _name=$1 _port=$2 _ips=$3
    shift 3
    if ! command -v vmmbib-integrity >/dev/null; then
        tap_fail "$_name" "vmmbib-integrity not passed in (run-two-vms.py --file)"
        return
    fi
    _rank=0
    for _ip in $_ips; do
        [ "$_ip" = "$VMMBIB_IP" ] && break
        _rank=$((_rank + 1))
    done
    timeout 400 vmmbib-integrity -P "$(echo $_ips | tr ' ' ,)" -R "$_rank" \
        -p "$_port" "$@" "$dev" >"/tmp/integrity-$_port.log" 2>&1
    _rc=$?
    tap_relay "$_name" "/tmp/integrity-$_port.log"
    [ "$_rc" = 0 ] || tap_fail "$_name: vmmbib-integrity exit status is 0 (it was $_rc)"
}

last_ip=
last_vm=0
for _ip in $ips; do
    last_ip=$_ip
    last_vm=$((last_vm + 1))
done
survivors=
for _ip in $ips; do
    [ "$_ip" = "$last_ip" ] || survivors="$survivors $_ip"
done
messages=${VMMBIB_MESSAGES:-300}

# kill_last PORT: see kill-last above.
kill_last() {
    if [ "$rank" != 0 ]; then
        integrity "kill-last" "$1" "$ips" -D "${VMMBIB_KILL_SECONDS:-40}" \
            -K $((last_vm - 1)) -m 12
        [ "$VMMBIB_IP" = "$last_ip" ] &&
            tap_fail "kill-last: this VM (the last) was killed" "it still runs"
        return
    fi
    integrity "kill-last" "$1" "$ips" -D "${VMMBIB_KILL_SECONDS:-40}" \
        -K $((last_vm - 1)) -m 12 &
    _pid=$!
    _n=200
    while [ "$_n" -gt 0 ] && ! grep -q "traffic started" "/tmp/integrity-$1.log" 2>/dev/null; do
        sleep 1
        _n=$((_n - 1))
    done
    # Traffic in every VM (they started together, after a barrier).
    sleep 8
    tap_diag "kill-last: asking the runner to kill vm$last_vm ($last_ip)"
    echo "KILL-VM vm$last_vm"
    wait "$_pid"
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
        _prog=ib_$(echo "$t" | tr - _)
        # The client reports the numbers (the latency servers print none).
        _check='^ *[0-9]'
        [ "$role" = server ] && _check='remote address'
        for _size in ${VMMBIB_SIZES:-8}; do
            port=$((port + 1))
            _what="perftest $_prog"
            [ "$_size" = 8 ] || _what="$_what -s $_size"
            pingpong "$_what between VMs ($iters iterations)" "$port" \
                "$_check" "$_prog" -d "$dev" -n "$iters" -s "$_size" -F
        done ;;
    kill-peer)
        port=$((port + 2))
        kill_peer "$port" ;;
    integrity)
        integrity "integrity, all to all" 18701 "$ips" -n "$messages" -m 12 ;;
    isolation)
        # vm2 probes vm1; the others have no part in it.
        if [ "$rank" -le 1 ]; then
            integrity "isolation" 18704 "$(echo $ips | cut -d' ' -f1-2)" -I
        fi ;;
    kill-last)
        kill_last 18702 ;;
    survivors)
        if [ "$VMMBIB_IP" != "$last_ip" ]; then
            integrity "survivors, all to all" 18703 "$survivors" -n "$messages" -m 12
        fi ;;
    *)
        tap_fail "unknown test '$t' in VMMBIB_TESTS" ;;
    esac
done

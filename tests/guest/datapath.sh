# tests/guest/datapath.sh — guest test of the direct data path: unmodified
# verbs programs (rdma-core's pingpongs, perftest) between two processes in
# this one guest, through loopback on vmmbib0 (IB: the client reaches the
# server's LID/QPN, which the programs exchange over TCP on lo); and our own
# programs, passed in with --file: vmmbib-verbs-check (verbs-check.c) for
# what those programs do not exercise, vmmbib-integrity (integrity.c) for
# every byte of many random messages.
#
# Environment (all optional):
#   VMMBIB_DEV      device name (default vmmbib0)
#   VMMBIB_ITERS    iterations per program (default 100; TCG is slow)
#   VMMBIB_TESTS    space-separated subset of: verbs-check integrity rc
#                   rc-events ud srq send-lat send-bw write-lat write-bw
#                   read-lat read-bw atomic-lat atomic-bw (default: all), and
#                   steady (not in the default: VMMBIB_STEADY_WRS RDMA WRITEs
#                   of 8 bytes with ib_write_bw, for the per-WR doorbell count)
#   VMMBIB_STEADY_WRS  work requests of the steady test (default 100000)
#   VMMBIB_MESSAGES messages of vmmbib-integrity (default its own, 20000)
#   VMMBIB_SEED     its seed (default: its own choice, printed)
#   VMMBIB_RX_DEPTH receive queue depth for the ibv_*_pingpong programs
#                   (default: theirs, 500). Below the doorbell ring's 256
#                   entries, a burst of receive posts cannot fill the ring, so
#                   in doorbell=ring mode no doorbell may reach the trapped
#                   DOORBELL register at all (tests/guest/meson.build checks).

dev=${VMMBIB_DEV:-vmmbib0}
iters=${VMMBIB_ITERS:-100}
tests=${VMMBIB_TESTS:-verbs-check integrity rc rc-events ud srq send-lat send-bw write-lat write-bw read-lat read-bw atomic-lat atomic-bw}
port=18600
# "-r N" or nothing; unquoted below on purpose.
rx=${VMMBIB_RX_DEPTH:+-r $VMMBIB_RX_DEPTH}

# The programs exchange addresses over TCP; /init brings lo up, but make sure.
ip link set lo up 2>/dev/null

if ! tap_check "$dev is present" test -d "/sys/class/infiniband/$dev"; then
    tests="" # nothing else can run
fi
tap_check "$dev port 1 is ACTIVE" grep -q ACTIVE "/sys/class/infiniband/$dev/ports/1/state"

# With run-guest-test.py --stats, the host reads the device counters now and
# reports the programs' doorbells, kicks and WQEs as differences from here
# (the boot's kernel MAD QPs excluded). Give it a moment.
echo VMMBIB-STATS-BASELINE
sleep 2

# run_pair NAME CHECK SERVER_CMD...: runs SERVER_CMD in the background and
# the same command with 127.0.0.1 appended as the client; passes when both
# exit 0, the client's output matches the grep pattern CHECK and neither
# reports bad data (the pingpongs' -c check prints "invalid data in page N"
# but still exits 0).
run_pair() {
    _name=$1 _check=$2
    shift 2
    port=$((port + 1))
    "$@" -p "$port" >/tmp/server.log 2>&1 &
    _server=$!
    # Let the server listen first (the client does not retry its connect).
    sleep 2
    timeout 240 "$@" -p "$port" 127.0.0.1 >/tmp/client.log 2>&1
    _crc=$?
    # A failed client leaves the server waiting for a peer; don't hang on it.
    if [ "$_crc" != 0 ]; then
        sleep 1
        kill "$_server" 2>/dev/null
    fi
    wait "$_server"
    _src=$?
    if [ "$_crc" = 0 ] && [ "$_src" = 0 ] && grep -q "$_check" /tmp/client.log &&
        ! grep -q "invalid data" /tmp/client.log /tmp/server.log; then
        tap_ok "$_name"
        tap_diag "$(grep -E "$_check" /tmp/client.log | tail -n 3)"
    else
        tap_fail "$_name" "command: $* [-p $port] [127.0.0.1]" \
            "client exit $_crc:" "$(cat /tmp/client.log)" \
            "server exit $_src:" "$(cat /tmp/server.log)"
    fi
}

# checker NAME ARGS...: runs our program vmmbib-NAME, which prints
# "ok CHECK" / "not ok CHECK: WHY" per check (anything else is a diagnostic).
checker() {
    _prog=vmmbib-$1
    _label=$1
    shift
    if ! command -v "$_prog" >/dev/null; then
        tap_skip "$_prog" "not passed in (run-guest-test.py --file $_prog=...)"
        return
    fi
    timeout 180 "$_prog" "$@" >"/tmp/$_label.log" 2>&1
    _rc=$?
    tap_relay "$_label" "/tmp/$_label.log"
    [ "$_rc" = 0 ] || tap_fail "$_prog exit status is 0 (it was $_rc)"
}

# perftest PROGRAM SIZE...: one client/server run per message size.
perftest() {
    _prog=$1
    shift
    for _size in "$@"; do
        run_pair "perftest $_prog -s $_size ($iters iterations)" "^ *[0-9]" \
            "$_prog" -d "$dev" -n "$iters" -s "$_size" -F
    done
}

# shellcheck disable=SC2086 # $rx is split on purpose
for t in $tests; do
    case $t in
    verbs-check)
        checker verbs-check "$dev" ;;
    integrity)
        checker integrity ${VMMBIB_MESSAGES:+-n "$VMMBIB_MESSAGES"} \
            ${VMMBIB_SEED:+-s "$VMMBIB_SEED"} "$dev" ;;
    # -c: the programs check the received payload.
    rc)
        run_pair "ibv_rc_pingpong -c ($iters iterations)" "iters in" \
            ibv_rc_pingpong -d "$dev" -n "$iters" -c $rx ;;
    rc-events)
        run_pair "ibv_rc_pingpong -c -e, completion events ($iters iterations)" "iters in" \
            ibv_rc_pingpong -d "$dev" -n "$iters" -c -e $rx ;;
    ud)
        run_pair "ibv_ud_pingpong -c ($iters iterations)" "iters in" \
            ibv_ud_pingpong -d "$dev" -n "$iters" -s 1024 -c $rx ;;
    srq)
        run_pair "ibv_srq_pingpong -c, 4 QPs on one SRQ ($iters iterations)" "iters in" \
            ibv_srq_pingpong -d "$dev" -n "$iters" -q 4 -c $rx ;;
    # Small and large (multi-packet) messages; atomics are 8 bytes only.
    send-lat | send-bw | write-lat | write-bw | read-lat | read-bw)
        perftest "ib_$(echo "$t" | tr - _)" 8 65536 ;;
    atomic-lat | atomic-bw)
        perftest "ib_$(echo "$t" | tr - _)" 8 ;;
    steady)
        # Many small WRs back to back: the doorbell protocol's steady state.
        _wrs=${VMMBIB_STEADY_WRS:-100000}
        run_pair "steady state: ib_write_bw, $_wrs RDMA WRITEs of 8 bytes" "^ *[0-9]" \
            ib_write_bw -d "$dev" -n "$_wrs" -s 8 -F ;;
    *)
        tap_fail "unknown test '$t' in VMMBIB_TESTS" ;;
    esac
done

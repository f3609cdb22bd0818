# tests/guest/datapath.sh — guest test of the direct data path: unmodified
# verbs programs (rdma-core's pingpongs, perftest) between two processes in
# this one guest, through loopback on vmmbib0 (IB: the client reaches the
# server's LID/QPN, which the programs exchange over TCP on lo); and
# vmmbib-verbs-check (verbs-check.c, passed in with --file) for what those
# programs do not exercise.
#
# Environment (all optional):
#   VMMBIB_DEV      device name (default vmmbib0)
#   VMMBIB_ITERS    iterations per program (default 100; TCG is slow)
#   VMMBIB_TESTS    space-separated subset of: verbs-check rc rc-events ud
#                   srq write-lat send-bw read-lat atomic-lat (default: all)
#   VMMBIB_RX_DEPTH receive queue depth for the ibv_*_pingpong programs
#                   (default: theirs, 500). Below the doorbell ring's 256
#                   entries, a burst of receive posts cannot fill the ring, so
#                   in doorbell=ring mode no doorbell may reach the trapped
#                   DOORBELL register at all (tests/guest/meson.build checks).

dev=${VMMBIB_DEV:-vmmbib0}
iters=${VMMBIB_ITERS:-100}
tests=${VMMBIB_TESTS:-verbs-check rc rc-events ud srq write-lat send-bw read-lat atomic-lat}
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
# exit 0 and the client's output matches the grep pattern CHECK.
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
    if [ "$_crc" = 0 ] && [ "$_src" = 0 ] && grep -q "$_check" /tmp/client.log; then
        tap_ok "$_name"
        tap_diag "$(grep -E "$_check" /tmp/client.log | tail -n 3)"
    else
        tap_fail "$_name" "command: $* [-p $port] [127.0.0.1]" \
            "client exit $_crc:" "$(cat /tmp/client.log)" \
            "server exit $_src:" "$(cat /tmp/server.log)"
    fi
}

# vmmbib-verbs-check prints "ok NAME" / "not ok NAME: WHY" per check.
verbs_check() {
    if ! command -v vmmbib-verbs-check >/dev/null; then
        tap_skip "vmmbib-verbs-check" "not passed in (run-guest-test.py --file vmmbib-verbs-check=...)"
        return
    fi
    timeout 120 vmmbib-verbs-check "$dev" >/tmp/verbs-check.log 2>&1
    _rc=$?
    while IFS= read -r _line; do
        case $_line in
        "ok "*) tap_ok "verbs-check: ${_line#ok }" ;;
        "not ok "*) tap_fail "verbs-check: ${_line#not ok }" ;;
        *) tap_diag "$_line" ;;
        esac
    done </tmp/verbs-check.log
    [ "$_rc" = 0 ] || tap_fail "vmmbib-verbs-check exit status is 0 (it was $_rc)"
}

# shellcheck disable=SC2086 # $rx is split on purpose
for t in $tests; do
    case $t in
    verbs-check)
        verbs_check ;;
    rc)
        run_pair "ibv_rc_pingpong ($iters iterations)" "iters in" \
            ibv_rc_pingpong -d "$dev" -n "$iters" $rx ;;
    rc-events)
        run_pair "ibv_rc_pingpong -e, completion events ($iters iterations)" "iters in" \
            ibv_rc_pingpong -d "$dev" -n "$iters" -e $rx ;;
    ud)
        run_pair "ibv_ud_pingpong ($iters iterations)" "iters in" \
            ibv_ud_pingpong -d "$dev" -n "$iters" -s 1024 $rx ;;
    srq)
        run_pair "ibv_srq_pingpong, 4 QPs on one SRQ ($iters iterations)" "iters in" \
            ibv_srq_pingpong -d "$dev" -n "$iters" -q 4 $rx ;;
    write-lat)
        run_pair "perftest ib_write_lat ($iters iterations)" "^ *[0-9]" \
            ib_write_lat -d "$dev" -n "$iters" -F ;;
    send-bw)
        run_pair "perftest ib_send_bw ($iters iterations)" "^ *[0-9]" \
            ib_send_bw -d "$dev" -n "$iters" -F ;;
    read-lat)
        run_pair "perftest ib_read_lat ($iters iterations)" "^ *[0-9]" \
            ib_read_lat -d "$dev" -n "$iters" -F ;;
    atomic-lat)
        run_pair "perftest ib_atomic_lat ($iters iterations)" "^ *[0-9]" \
            ib_atomic_lat -d "$dev" -n "$iters" -F ;;
    *)
        tap_fail "unknown test '$t' in VMMBIB_TESTS" ;;
    esac
done

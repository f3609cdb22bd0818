# tests/guest/verbs-backend.sh — host-lib's verbs backend (issue 10,
# docs/design-verbs.md) on a real RDMA device: this VM is the "host", with
# soft-RoCE (rdma_rxe) on a dummy netdev, and test-host-lib-verbs
# (host-lib/tests/test_verbs.c, passed with --file) runs synthetic guests
# whose devices relay to rxe0.  No vmmbypass-ib device (--no-device).
#
# Environment:
#   VMMBIB_VERBS_BENCH  N: after the tests, the relay's round-trip latency
#                       against rxe0 used directly, N round trips

tap_check "modprobe rdma_rxe" modprobe rdma_rxe

# rxe needs an Ethernet netdev; on a dummy one, packets to its own address
# loop back inside rxe, so both ends of every connection live in this VM.
ip link add vmmbib-d0 type dummy && ip addr add 10.11.12.1/24 dev vmmbib-d0 &&
    ip link set vmmbib-d0 up
tap_check "rdma link add rxe0 type rxe netdev vmmbib-d0" \
    rdma link add rxe0 type rxe netdev vmmbib-d0

# The IPv4-mapped GID of 10.11.12.1 (RoCE v2), as smoke.sh takes it.
gid=$(grep -lx "0000:0000:0000:0000:0000:ffff:0a0b:0c01" /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null | head -n1)
export VMMBIB_VERBS_GID_INDEX=${gid##*/}
tap_diag "rxe0 GID index $VMMBIB_VERBS_GID_INDEX"

prog=test-host-lib-verbs
if ! command -v "$prog" >/dev/null; then
    tap_fail "$prog passed in" "run-guest-test.py --file $prog=BUILD/host-lib/tests/$prog"
else
    VMMBIB_VERBS_DEVICE=rxe0 VMMBIB_VERBS_DEBUG=1 timeout 300 "$prog" >/tmp/verbs.log 2>&1
    rc=$?
    while IFS= read -r line; do
        case $line in
        "ok "*) tap_ok "verbs: ${line#ok * - }" ;;
        "not ok "*) tap_fail "verbs: ${line#not ok * - }" ;;
        "1.."*) ;;
        *) tap_diag "$line" ;;
        esac
    done </tmp/verbs.log
    [ "$rc" = 0 ] || tap_fail "$prog exit status is 0 (it was $rc)"
fi
if [ -n "${VMMBIB_VERBS_BENCH:-}" ] && command -v "$prog" >/dev/null; then
    if VMMBIB_VERBS_DEVICE=rxe0 timeout 300 "$prog" --bench "$VMMBIB_VERBS_BENCH" >/tmp/bench.log 2>&1; then
        tap_ok "verbs relay bench ($VMMBIB_VERBS_BENCH round trips)"
    else
        tap_fail "verbs relay bench ($VMMBIB_VERBS_BENCH round trips)"
    fi
    while IFS= read -r line; do
        tap_diag "$line"
    done </tmp/bench.log
fi

rdma link delete rxe0 >/dev/null 2>&1
ip link delete vmmbib-d0 2>/dev/null

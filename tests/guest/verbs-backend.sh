# tests/guest/verbs-backend.sh — host-lib's verbs backend (issue 10,
# docs/design-verbs.md) on a real RDMA device: this VM is the "host", with
# soft-RoCE (rdma_rxe) on a dummy netdev, and test-host-lib-verbs
# (host-lib/tests/test_verbs.c, passed with --file) runs synthetic guests
# whose devices relay to rxe0.  No vmmbypass-ib device (--no-device).
#
# Environment:
#   VMMBIB_VERBS_BENCH  N: after the tests, the relay's round-trip latency
#                       against rxe0 used directly, N round trips

rxe_loopback_up
export VMMBIB_VERBS_GID_INDEX="$RXE_GID_INDEX"

prog=test-host-lib-verbs
if ! command -v "$prog" >/dev/null; then
    tap_fail "$prog passed in" "run-guest-test.py --file $prog=BUILD/host-lib/tests/$prog"
else
    VMMBIB_VERBS_DEVICE=rxe0 VMMBIB_VERBS_DEBUG=1 timeout 300 "$prog" >/tmp/verbs.log 2>&1
    rc=$?
    tap_relay verbs /tmp/verbs.log
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

rxe_loopback_down

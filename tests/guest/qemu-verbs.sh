# tests/guest/qemu-verbs.sh — our QEMU's embedded verbs backend on a real
# RDMA device (issue 10, docs/design-verbs.md): this VM is the "host", with
# soft-RoCE (rdma_rxe) on a dummy netdev, and runs our QEMU under qtest with
# -device vmmbypass-ib,backend=verbs,verbs-device=rxe0 (QEMU and qos-test
# are in this guest's initramfs, /opt/vmmbib-qemu, put there by
# qemu-bundle.sh).  qos-test drives the device as a guest driver would
# (controlq, rings, doorbells) through tests/qtest/vmmbypass-ib-test.c's
# verbs-rc (two RC QPs of the device: RDMA WRITE, SEND/RECV, RDMA READ,
# the data checked) and backend-errors (here with rxe0 listed).
# -accel qtest: a whole inner guest under nested TCG would take too long.

rxe_loopback_up
gid=$RXE_GID_INDEX

q=/opt/vmmbib-qemu
export VMMBIB_QTEST_VERBS=built VMMBIB_QTEST_VERBS_DEVICE=rxe0 VMMBIB_QTEST_VERBS_GID_INDEX="$gid"
if [ ! -x $q/bin/qos-test ]; then
    tap_fail "our QEMU is in the guest ($q)" \
        "boot with --initrd BUILD/tests/guest/qemu-verbs-initrd (tests/guest/qemu-bundle.sh)"
else
    export QTEST_QEMU_BINARY=$q/bin/qemu-system-x86_64
    export LD_LIBRARY_PATH=$q/lib
    if "$QTEST_QEMU_BINARY" -device vmmbypass-ib,help >/tmp/help.log 2>&1 &&
        grep -q "verbs-device=" /tmp/help.log; then
        tap_ok "our QEMU runs here: -device vmmbypass-ib,help lists verbs-device"
    else
        tap_fail "our QEMU runs here: -device vmmbypass-ib,help lists verbs-device" \
            "$(cat /tmp/help.log)"
    fi
    paths=$("$q/bin/qos-test" -l 2>/tmp/qos.err | grep -E '/vmmbypass-ib/(backend-errors|.*verbs-rc)$')
    if [ "$(echo "$paths" | grep -c .)" != 2 ]; then
        tap_fail "qos-test lists backend-errors and verbs-rc" "$paths" "$(cat /tmp/qos.err)"
    else
        args=
        for p in $paths; do args="$args -p $p"; done
        # shellcheck disable=SC2086  # one word per argument
        VMMBIB_VERBS_DEBUG=1 timeout 300 "$q/bin/qos-test" --tap -k $args >/tmp/qos.log 2>&1
        rc=$?
        tap_relay qtest /tmp/qos.log
        [ "$rc" = 0 ] || tap_fail "qos-test exit status is 0 (it was $rc)"
    fi
fi

rxe_loopback_down

# tests/guest/smoke.sh — guest test of the test guest itself, without our
# device: the host's inputs arrive, coldplug autoloads modules by modalias,
# and the trixie rdma-core user space works end to end on soft-RoCE (rxe).
# If this fails, the harness or image is broken, not the device.
#
# Environment: VMMBIB_SMOKE_TOKEN — any value; must arrive unchanged.

tap_check "kernel is the pinned guest kernel ($(uname -r))" \
    test -d "/lib/modules/$(uname -r)/kernel"

if [ -n "${VMMBIB_SMOKE_TOKEN:-}" ] && [ "$VMMBIB_SMOKE_TOKEN" = "$(sed -n 's/^VMMBIB_SMOKE_TOKEN=//p' /run/vmmbib/env | tr -d "'")" ]; then
    tap_ok "environment from the host arrived (fw_cfg opt/vmmbib/env)"
else
    tap_fail "environment from the host arrived (fw_cfg opt/vmmbib/env)" "VMMBIB_SMOKE_TOKEN='${VMMBIB_SMOKE_TOKEN:-}'"
fi

# qemu_fw_cfg has no other way in than its ACPI modalias (QEMU0002).
tap_check "qemu_fw_cfg autoloaded by modalias" test -d /sys/module/qemu_fw_cfg

tap_check "modprobe rdma_rxe" modprobe rdma_rxe

# rxe needs an Ethernet netdev (6.12 refuses lo); on a dummy one, packets to
# its own address are looped back inside rxe, so one guest can run both ends
# of a connection.
ip link add vmmbib-d0 type dummy && ip addr add 10.11.12.1/24 dev vmmbib-d0 &&
    ip link set vmmbib-d0 up
tap_check "rdma link add rxe0 type rxe netdev vmmbib-d0" rdma link add rxe0 type rxe netdev vmmbib-d0

devices=$(ibv_devices 2>&1)
case "$devices" in
*rxe0*) tap_ok "ibv_devices lists rxe0" ;;
*) tap_fail "ibv_devices lists rxe0" "$devices" ;;
esac

tap_check "ibv_devinfo -d rxe0" ibv_devinfo -d rxe0

# RC ping-pong between two processes over rxe0 (RoCE addresses by GID: take
# the IPv4-mapped GID of 10.11.12.1; the out-of-band exchange uses TCP on lo).
# (One grep over the GID table: a process per entry costs seconds under TCG.)
gid=$(grep -lx "0000:0000:0000:0000:0000:ffff:0a0b:0c01" /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null | head -n1)
gid=${gid##*/}
ibv_rc_pingpong -d rxe0 -g "${gid:-1}" -n 100 >/tmp/pp-server.log 2>&1 &
server=$!
sleep 1
if ibv_rc_pingpong -d rxe0 -g "${gid:-1}" -n 100 127.0.0.1 >/tmp/pp-client.log 2>&1 && wait $server; then
    tap_ok "ibv_rc_pingpong over rxe0 (100 iterations)"
    [ "${VMMBIB_VERBOSE:-0}" = 1 ] && tap_diag "$(cat /tmp/pp-client.log)"
else
    kill $server 2>/dev/null
    tap_fail "ibv_rc_pingpong over rxe0 (100 iterations)" \
        "client: $(cat /tmp/pp-client.log)" "server: $(cat /tmp/pp-server.log)" \
        "$(ibv_devinfo -v -d rxe0 2>&1 | grep -i gid)"
fi

rdma link delete rxe0 >/dev/null 2>&1
ip link delete vmmbib-d0 2>/dev/null

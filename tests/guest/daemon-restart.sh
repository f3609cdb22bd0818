# tests/guest/daemon-restart.sh — the guest's view of vmmbibd dying and
# coming back (run by run-two-vms.py --vms 1, which kills and restarts the
# daemon when this script prints VMMBIBD-KILL and VMMBIBD-START).
#
# The daemon's death must reach the guest as a fatal device error, verbs
# must then fail at once (never hang), QEMU must keep running; after the
# daemon is back, a device reset (here: the driver unloaded and loaded
# again) joins it again, as the same port (LID), and traffic works.
#   VMMBIB_ITERS    iterations of each pingpong (default 20)
# shellcheck shell=sh

dev=vmmbib0
iters=${VMMBIB_ITERS:-20}

# pingpong PORT: ibv_rc_pingpong server and client on vmmbib0, through lo;
# returns the client's status (124: it hung).
pingpong() {
    ibv_rc_pingpong -d "$dev" -n "$iters" -c -p "$1" >/tmp/server.log 2>&1 &
    _server=$!
    sleep 2
    timeout 60 ibv_rc_pingpong -d "$dev" -n "$iters" -c -p "$1" 127.0.0.1 \
        >/tmp/client.log 2>&1
    _rc=$?
    if [ "$_rc" != 0 ]; then
        sleep 1
        kill "$_server" 2>/dev/null
    fi
    wait "$_server"
    if [ "$_rc" = 0 ] && ! grep -q "iters in" /tmp/client.log; then
        _rc=1
    fi
    return "$_rc"
}

port_lid() {
    ibv_devinfo -d "$dev" 2>/dev/null | sed -n 's/.*port_lid:[[:space:]]*//p' | head -n 1
}

# wait_for SECONDS CMD...: until CMD succeeds.
wait_for() {
    _n=$1
    shift
    while [ "$_n" -gt 0 ]; do
        "$@" && return 0
        sleep 1
        _n=$((_n - 1))
    done
    return 1
}

port_active() {
    ibv_devinfo -d "$dev" 2>/dev/null | grep -q PORT_ACTIVE
}

if pingpong 18515; then
    tap_ok "ibv_rc_pingpong on $dev, served by vmmbibd"
else
    tap_fail "ibv_rc_pingpong on $dev, served by vmmbibd" \
        "$(cat /tmp/client.log /tmp/server.log)"
fi
lid=$(port_lid)
tap_diag "$dev: LID $lid"

echo VMMBIBD-KILL
if wait_for 30 sh -c 'dmesg | grep -q "device reported a fatal error"'; then
    tap_ok "the daemon's death reaches the guest as a fatal device error"
else
    tap_fail "the daemon's death reaches the guest as a fatal device error" \
        "$(dmesg | tail -n 20)"
fi
pingpong 18516
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then
    tap_ok "without the daemon a verbs program fails at once (status $rc)"
else
    tap_fail "without the daemon a verbs program fails at once" "status $rc" \
        "$(cat /tmp/client.log /tmp/server.log)"
fi

echo VMMBIBD-START
sleep 3
# A device reset: the driver's removal resets the virtio device.
if rmmod vmmbypass_ib && modprobe vmmbypass_ib &&
    wait_for 30 port_active; then
    tap_ok "after the daemon is back, a device reset makes $dev active again"
else
    tap_fail "after the daemon is back, a device reset makes $dev active again" \
        "$(ibv_devinfo -d "$dev" 2>&1)" "$(dmesg | tail -n 20)"
fi
tap_check "the same port: LID $lid again" test "$(port_lid)" = "$lid"
if pingpong 18517; then
    tap_ok "ibv_rc_pingpong on $dev after the daemon's restart"
else
    tap_fail "ibv_rc_pingpong on $dev after the daemon's restart" \
        "$(cat /tmp/client.log /tmp/server.log)"
fi

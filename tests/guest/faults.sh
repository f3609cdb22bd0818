# tests/guest/faults.sh — guest test (busybox sh, run by the guest's /init
# with tests/guest/tap.sh loaded): the driver survives a misbehaving device.
#
# Run with run-guest-test.py --stats: the script switches the device's
# test-only x-inject-faults property through the runner (a line
# "VMMBIB-QOM-SET x-inject-faults=MODE", set over QMP) and, for each mode,
# checks that the kernel logs a clear error, that the verb that met the
# fault fails in user space, and that with the fault off the device works
# again.  The runner fails the test on any oops/BUG/WARNING in the kernel
# log; the script ends with the driver unloaded, so the device must then
# hold no object (meson.build checks the counters).

IBDEV=vmmbib0

# The runner polls the results port every 0.1 s; 2 s leave it time.
set_fault() {
    echo "VMMBIB-QOM-SET x-inject-faults=$1"
    sleep 2
}

# Kernel log lines since the last mark_log.
mark_log() {
    log_mark=$(dmesg | wc -l)
}
new_log() {
    dmesg | tail -n +"$((log_mark + 1))"
}

# log_has NAME PATTERN: a result for an error line the driver must log
# (within 5 s: events arrive when the runner has set their fault).
log_has() {
    for _ in 1 2 3 4 5; do
        if new_log | grep -q -- "$2"; then
            tap_ok "$1: the kernel logs '$2'"
            return
        fi
        sleep 1
    done
    tap_fail "$1: the kernel logs '$2'" "$(new_log | tail -n 20)"
}

# opens_fail NAME: ibv_devinfo (CREATE_UCONTEXT, then queries) must fail.
# A few tries: on a loaded host the runner may set the fault late.
opens_fail() {
    for _ in 1 2 3 4 5; do
        if ! ibv_devinfo -d "$IBDEV" >/tmp/devinfo.out 2>&1; then
            tap_ok "$1: opening $IBDEV fails in user space"
            return
        fi
        sleep 2
    done
    tap_fail "$1: opening $IBDEV fails in user space" "$(cat /tmp/devinfo.out)"
}

# works_again NAME: with the fault off, ibv_devinfo succeeds (a few tries,
# as above).
works_again() {
    for _ in 1 2 3 4 5; do
        if ibv_devinfo -d "$IBDEV" >/tmp/devinfo.out 2>&1; then
            tap_ok "$1: ibv_devinfo works again"
            return
        fi
        sleep 2
    done
    tap_fail "$1: ibv_devinfo works again" "$(cat /tmp/devinfo.out)" "$(dmesg | tail -n 20)"
}

# pingpong NAME: an ibv_rc_pingpong pair passes (data checked with -c).
pingpong() {
    timeout 120 ibv_rc_pingpong -d "$IBDEV" -c -n 20 -p 18801 >/tmp/pp-server.out 2>&1 &
    _srv=$!
    _ok=0
    for _ in $(seq 20); do
        sleep 1
        if timeout 100 ibv_rc_pingpong -d "$IBDEV" -c -n 20 -p 18801 127.0.0.1 \
            >/tmp/pp-client.out 2>&1; then
            _ok=1
            break
        fi
        grep -q "Couldn't connect" /tmp/pp-client.out || break
    done
    [ "$_ok" = 1 ] || kill "$_srv" 2>/dev/null
    wait "$_srv"
    _src=$?
    if [ "$_ok" = 1 ] && [ "$_src" = 0 ]; then
        tap_ok "$1: ibv_rc_pingpong passes"
    else
        tap_fail "$1: ibv_rc_pingpong passes" "client: $(cat /tmp/pp-client.out)" \
            "server (exit $_src): $(cat /tmp/pp-server.out)" "$(dmesg | tail -n 20)"
    fi
}

if ! wait_path /sys/class/infiniband/$IBDEV 20; then
    tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
    exit 1
fi
ip link set lo up 2>/dev/null
tap_check "ibv_devinfo before any fault" ibv_devinfo -d $IBDEV

# ---- controlq replies: every reply spoiled while the fault is set -----------
# VMMBIB_STATUS_MAX + 0x100 = 267: a status no version of the spec defines.
for spec in "reply-short|reply of 4 bytes has no header" \
    "reply-long|reply body of" \
    "bad-status|failed with device status 267"; do
    mode=${spec%%|*}
    mark_log
    set_fault "$mode"
    opens_fail "$mode"
    log_has "$mode" "${spec#*|}"
    set_fault none
    works_again "$mode off"
done

# ---- a used ring entry naming no request: the controlq is broken -----------
# Only a device reset (driver reload) brings it back.  The waiter must fail
# at once (the driver checks the ring about once a second), not after its
# 30-second command timeout.
mark_log
set_fault wrong-id
start=$(cut -d. -f1 /proc/uptime)
opens_fail wrong-id
took=$(($(cut -d. -f1 /proc/uptime) - start))
if [ "$took" -lt 15 ]; then
    tap_ok "wrong-id: the verb fails within 15 s (it took ${took} s)"
else
    tap_fail "wrong-id: the verb fails within 15 s (it took ${took} s)"
fi
log_has wrong-id "out of range"
log_has wrong-id "controlq failed (the device corrupted the ring)"
opens_fail "wrong-id, next verb"
set_fault none
tap_check "wrong-id: rmmod vmmbypass_ib with a broken controlq" timeout 60 rmmod vmmbypass_ib
tap_check "wrong-id: modprobe vmmbypass_ib (device reset)" modprobe vmmbypass_ib
if wait_path /sys/class/infiniband/$IBDEV 20; then
    tap_ok "wrong-id: $IBDEV registered again"
else
    tap_fail "wrong-id: $IBDEV registered again" "$(dmesg | tail -n 40)"
fi
works_again "wrong-id off"

# ---- events: garbage, and events of objects the guest never created --------
mark_log
set_fault event-garbage
log_has event-garbage "unknown event type 0 "
log_has event-garbage "unknown event type 14 "
log_has event-garbage "unknown event type 65535 "
log_has event-garbage "event of 8 bytes ignored"
set_fault none
tap_check "event-garbage: ibv_devinfo still works" ibv_devinfo -d $IBDEV

mark_log
set_fault event-bad-handle
log_has event-bad-handle "event for CQ 0xfedcba of context 0xfedcba, which does not exist"
log_has event-bad-handle "event for QP 0xfedcba of context 0xfedcba, which does not exist"
log_has event-bad-handle "event for SRQ 0xfedcba of context 0xfedcba, which does not exist"
log_has event-bad-handle "for port 9, which does not exist"
set_fault none

# ---- the device works after all of it -----------------------------------------
pingpong "all faults off"

if dmesg | grep -Eq 'WARNING:|BUG:|Oops|INFO: task .* blocked'; then
    tap_fail "no kernel warnings" "$(dmesg | grep -E -A20 'WARNING:|BUG:|Oops|blocked' | head -n 60)"
else
    tap_ok "no kernel warnings"
fi
# The device must hold nothing once the driver is gone (the replies the
# faults spoiled had created objects the guest never learnt of).
tap_check "rmmod vmmbypass_ib at the end" timeout 60 rmmod vmmbypass_ib

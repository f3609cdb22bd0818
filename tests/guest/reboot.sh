# tests/guest/reboot.sh — guest test (busybox sh, run by the guest's /init
# with tests/guest/tap.sh loaded): a guest reboot while user processes hold
# live RDMA objects and run traffic leaves no object behind in the device,
# and the device works after it.
#
# Run with run-guest-test.py --reboots 1: the guest boots twice and runs
# this script each time.
#   boot 1  starts verbs programs that keep every object kind alive (rdma-
#           core's ibv_rc_pingpong and ibv_ud_pingpong pairs with traffic,
#           an ibv_srq_pingpong server waiting for its client), then
#           `reboot -f`. The reboot stops the VM; the host reads the device
#           counters (objects live: before_reset_*), resets the machine,
#           reads them again (nothing left: after_reset_*) and lets the
#           guest boot again (tests/guest/meson.build checks the counters).
#   boot 2  the device is found again and works: ibv_devinfo and two short
#           pingpongs; then the guest powers off and the host reads the
#           final counters (only what the first boot had before its test).
# A boot tells which one it is from a byte of the RTC's CMOS RAM, which a
# machine reset keeps (a new QEMU starts with it zero): the rtc-cmos
# driver's nvmem device, offset 111 (CMOS 0x7d, used by no firmware).
#
# Environment (optional): VMMBIB_REBOOT_ITERS, the traffic programs'
# iterations (default 1000000: they run until the reboot).

IBDEV=vmmbib0
NVRAM=/sys/bus/nvmem/devices/cmos_nvram0/nvmem
MARK_OFFSET=111
iters=${VMMBIB_REBOOT_ITERS:-1000000}

read_mark() {
    od -An -tu1 -j "$MARK_OFFSET" -N 1 "$NVRAM" 2>/dev/null | tr -d ' \n'
}

write_mark() {
    # shellcheck disable=SC2059  # the format is the octal escape of the byte
    printf "\\$(printf %03o "$1")" |
        dd of="$NVRAM" bs=1 seek="$MARK_OFFSET" count=1 conv=notrunc 2>/dev/null &&
        [ "$(read_mark)" = "$1" ]
}

# Waits up to 60 s until process $1 maps a UAR page of the device (it has
# opened it and holds a user context); false if it exits first.
holds_device() {
    for _ in $(seq 60); do
        grep -q uverbs "/proc/$1/maps" 2>/dev/null && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

# pair NAME PORT CMD...: runs CMD as server and, once it listens, as
# client, both in the background; their pids in $server and $client.
pair() {
    _name=$1 _port=$2
    shift 2
    "$@" -p "$_port" >"/tmp/$_name-server.log" 2>&1 &
    server=$!
    sleep 2
    timeout 240 "$@" -p "$_port" 127.0.0.1 >"/tmp/$_name-client.log" 2>&1 &
    client=$!
}

# Each "NAME PID" line of $procs must satisfy CMD PID; names those that don't.
all_procs() {
    _ok=0
    while read -r _pname _pid; do
        if ! "$@" "$_pid"; then
            _ok=1
            echo "$_pname (pid $_pid) fails: $*"
        fi
    done <<EOF
$procs
EOF
    return "$_ok"
}

alive() {
    kill -0 "$1" 2>/dev/null
}

if [ ! -w "$NVRAM" ]; then
    tap_fail "CMOS RAM is writable through $NVRAM" "$(ls -l /sys/bus/nvmem/devices 2>&1)"
    exit 1
fi
boot=$(read_mark)
case $boot in
0)
    # ---- boot 1: live objects, then a reboot -----------------------------
    tap_check "boot 1 marked in CMOS RAM" write_mark 1
    if ! wait_path "/sys/class/infiniband/$IBDEV" 20; then
        tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
        exit 1
    fi
    tap_check "$IBDEV port 1 is ACTIVE" grep -q ACTIVE "/sys/class/infiniband/$IBDEV/ports/1/state"
    # The host's baseline: what the kernel's own objects are.
    echo VMMBIB-STATS-BASELINE
    sleep 2

    # PD, MR, CQ, RC QPs in RTS, completion channels, traffic:
    pair rc 18701 ibv_rc_pingpong -d "$IBDEV" -e -n "$iters"
    procs="rc-server $server
rc-client $client"
    # UD QPs and AHs, traffic:
    pair ud 18702 ibv_ud_pingpong -d "$IBDEV" -e -n "$iters"
    procs="$procs
ud-server $server
ud-client $client"
    # An SRQ and the QPs on it, waiting for a client that never comes:
    ibv_srq_pingpong -d "$IBDEV" -p 18703 >/tmp/srq-server.log 2>&1 &
    procs="$procs
srq-server $!"

    if all_procs holds_device >/tmp/holds.out; then
        tap_ok "5 processes hold user contexts on $IBDEV"
    else
        tap_fail "5 processes hold user contexts on $IBDEV" "$(cat /tmp/holds.out)" \
            "$(tail -n 5 /tmp/*-server.log /tmp/*-client.log)"
    fi
    # Let the traffic run; the pairs must still be at it.
    sleep 5
    if all_procs alive >/tmp/alive.out; then
        tap_ok "traffic still running: rebooting with live objects"
    else
        tap_fail "traffic still running: rebooting with live objects" \
            "$(cat /tmp/alive.out)" "$(tail -n 5 /tmp/*-server.log /tmp/*-client.log)"
    fi
    # The results port must have everything before the reset.
    sleep 2
    reboot -f
    sleep 60
    tap_fail "reboot -f rebooted the guest"
    exit 1
    ;;
1)
    # ---- boot 2: the device works again ----------------------------------
    tap_ok "second boot, after the reboot with live objects"
    write_mark 2 || tap_fail "boot 2 marked in CMOS RAM"
    if ! wait_path "/sys/class/infiniband/$IBDEV" 20; then
        tap_fail "$IBDEV registered after the reboot" "$(dmesg | tail -n 40)"
        exit 1
    fi
    tap_ok "$IBDEV registered after the reboot"
    tap_check "$IBDEV port 1 is ACTIVE after the reboot" \
        grep -q ACTIVE "/sys/class/infiniband/$IBDEV/ports/1/state"
    tap_check "ibv_devinfo after the reboot" ibv_devinfo -d "$IBDEV"
    for t in "rc 18710 ibv_rc_pingpong" "ud 18711 ibv_ud_pingpong"; do
        # shellcheck disable=SC2086  # three words
        set -- $t
        pair "$1" "$2" "$3" -d "$IBDEV" -n 50
        wait "$client"
        crc=$?
        [ "$crc" = 0 ] || kill "$server" 2>/dev/null
        wait "$server"
        src=$?
        if [ "$crc" = 0 ] && [ "$src" = 0 ]; then
            tap_ok "$3 after the reboot"
            tap_diag "$(tail -n 2 "/tmp/$1-client.log")"
        else
            tap_fail "$3 after the reboot" "client exit $crc: $(cat "/tmp/$1-client.log")" \
                "server exit $src: $(cat "/tmp/$1-server.log")"
        fi
    done
    # Nothing of this boot is left when it ends (the host compares the
    # final counters with the first boot's baseline).
    ;;
*)
    tap_fail "at most two boots" "CMOS mark is '$boot': the guest booted a third time"
    exit 1
    ;;
esac

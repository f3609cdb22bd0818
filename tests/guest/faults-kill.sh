# tests/guest/faults-kill.sh — guest test (busybox sh, run by the guest's
# /init with tests/guest/tap.sh loaded): processes killed while they post,
# and the driver unloaded under running traffic.
#
# Run with run-guest-test.py --stats and the file vmmbib-integrity.
#   1. vmmbib-integrity (RC QPs of one process in loopback, posting SENDs,
#      RDMA WRITEs and READs as fast as it can) is killed with SIGKILL at a
#      random moment, VMMBIB_KILLS times; then the counters are read
#      (snapshot after_kills: the objects must be the baseline's again).
#   2. Two of them run; rmmod vmmbypass_ib while they post: ib_uverbs
#      disassociates them (their verbs fail, they exit), rmmod completes,
#      and the device holds no object (the final counters).
# The runner fails the test on any oops/BUG/WARNING in the kernel log.
#
# Environment (optional): VMMBIB_KILLS (default 10).

IBDEV=vmmbib0
INTEGRITY=/run/vmmbib/files/vmmbib-integrity
kills=${VMMBIB_KILLS:-10}

# Waits up to 60 s until process $1 has printed its first check, i.e.
# set up its QPs and started posting; false if it exits first.
posting() {
    for _ in $(seq 120); do
        grep -q "^ok .*RC QPs" "$2" 2>/dev/null && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}

# A random number in [0, $1), from the kernel's generator.
random_below() {
    echo $(($(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % $1))
}

if ! wait_path /sys/class/infiniband/$IBDEV 20; then
    tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
    exit 1
fi
if [ ! -x "$INTEGRITY" ]; then
    tap_fail "vmmbib-integrity given to the guest" "pass --file vmmbib-integrity=PATH"
    exit 1
fi
echo VMMBIB-STATS-BASELINE
sleep 2

# ---- 1. SIGKILL in the middle of posting ---------------------------------------
killed=0
i=0
while [ "$i" -lt "$kills" ]; do
    i=$((i + 1))
    "$INTEGRITY" -n 100000000 -q 4 "$IBDEV" >/tmp/kill.out 2>&1 &
    pid=$!
    if ! posting "$pid" /tmp/kill.out; then
        tap_fail "kill $i: vmmbib-integrity started posting" "$(cat /tmp/kill.out)"
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        continue
    fi
    # 0 to 3 s after its first post, in steps of 10 ms.
    delay=$(random_below 300)
    sleep "$((delay / 100)).$(printf %02d $((delay % 100)))"
    if kill -9 "$pid" 2>/dev/null; then
        killed=$((killed + 1))
    fi
    wait "$pid" 2>/dev/null
    # The last counters it printed: it was still posting.
    grep -q "^not ok" /tmp/kill.out && tap_fail "kill $i: no failed check before the kill" \
        "$(cat /tmp/kill.out)"
done
if [ "$killed" = "$kills" ]; then
    tap_ok "$kills processes killed (SIGKILL) while posting"
else
    tap_fail "$kills processes killed (SIGKILL) while posting" "only $killed were alive to kill"
fi
# Closing the killed processes' files destroyed their objects; nothing of
# theirs may be left (meson.build compares after_kills_* with baseline_*).
sleep 1
echo "VMMBIB-STATS-SNAPSHOT after_kills"
sleep 2
# The device still works.
"$INTEGRITY" -n 2000 -q 2 "$IBDEV" >/tmp/after.out 2>&1
rc=$?
if [ "$rc" = 0 ]; then
    tap_ok "vmmbib-integrity passes after the kills"
else
    tap_fail "vmmbib-integrity passes after the kills" "$(cat /tmp/after.out)"
fi

# ---- 2. rmmod while traffic runs ------------------------------------------------
ip link set lo up 2>/dev/null
"$INTEGRITY" -n 100000000 -q 4 "$IBDEV" >/tmp/un1.out 2>&1 &
p1=$!
"$INTEGRITY" -n 100000000 -q 2 "$IBDEV" >/tmp/un2.out 2>&1 &
p2=$!
if posting "$p1" /tmp/un1.out && posting "$p2" /tmp/un2.out; then
    tap_ok "two processes posting before rmmod"
else
    tap_fail "two processes posting before rmmod" "$(cat /tmp/un1.out /tmp/un2.out)"
fi
sleep 2
tap_check "rmmod vmmbypass_ib while they post" timeout 120 rmmod vmmbypass_ib
# Disassociated: their next verb fails and they stop by themselves (a
# poll that finds nothing for 10 s ends the program too).
ended=1
for p in $p1 $p2; do
    n=0
    while kill -0 "$p" 2>/dev/null && [ "$n" -lt 60 ]; do
        sleep 1
        n=$((n + 1))
    done
    if kill -0 "$p" 2>/dev/null; then
        ended=0
        kill -9 "$p"
    fi
    wait "$p"
    rc=$?
    [ "$rc" != 0 ] || ended=0
done
if [ "$ended" = 1 ]; then
    tap_ok "both processes ended with an error after the rmmod"
else
    tap_fail "both processes ended with an error after the rmmod" \
        "$(tail -n 5 /tmp/un1.out)" "$(tail -n 5 /tmp/un2.out)"
fi
if [ -d /sys/module/vmmbypass_ib ]; then
    tap_fail "vmmbypass_ib is gone" "$(lsmod 2>&1)"
else
    tap_ok "vmmbypass_ib is gone"
fi

# tests/guest/soak.sh — guest test (busybox sh, run by the guest's /init
# with tests/guest/tap.sh loaded): several processes, many QPs, random
# traffic with checksums for a bounded time.
#
# Runs VMMBIB_SOAK_PROCS copies of vmmbib-integrity at once, each with
# VMMBIB_SOAK_PAIRS pairs of RC QPs (SENDs, RDMA WRITEs and READs of random
# sizes, inline or not, every byte checked where it lands, receives in
# send order, every message completed), round after round with new seeds,
# until VMMBIB_SOAK_SECONDS have passed; then it stops by itself.  Any
# lost or corrupted message fails its round; the totals are reported.
#
# Every VMMBIB_SOAK_REPORT seconds (default 60) it reports how far it got
# (a "#" line with the guest's uptime), so a run that dies or hangs still
# shows on the results port where and when it stopped.
#
# Several VMs: run by run-two-vms.py --vms N --script soak.sh (devices on
# one vmmbibd, a virtio-net link for the address exchange; VMMBIB_IP,
# VMMBIB_IPS and VMMBIB_RANK set), every VM also runs one more
# vmmbib-integrity for the same time that sends SENDs, RDMA WRITEs and
# READs to every other VM and checks what it receives (all to all); its
# checks count as the VM's results.  `make soak SOAK_VMS=4`.
#
# Run with run-guest-test.py and the file vmmbib-integrity.  Environment
# (optional): VMMBIB_SOAK_SECONDS (default 60), VMMBIB_SOAK_PROCS (3),
# VMMBIB_SOAK_PAIRS (4: 8 QPs a process), VMMBIB_SOAK_MESSAGES (messages
# per process and round, default 2000), VMMBIB_SOAK_REPORT (60).

IBDEV=vmmbib0
INTEGRITY=/run/vmmbib/files/vmmbib-integrity
seconds=${VMMBIB_SOAK_SECONDS:-60}
procs=${VMMBIB_SOAK_PROCS:-3}
pairs=${VMMBIB_SOAK_PAIRS:-4}
messages=${VMMBIB_SOAK_MESSAGES:-2000}
report=${VMMBIB_SOAK_REPORT:-60}

uptime_s() {
    cut -d. -f1 /proc/uptime
}

n=0
while [ "$n" -lt 20 ] && [ ! -e /sys/class/infiniband/$IBDEV ]; do
    sleep 1
    n=$((n + 1))
done
if [ ! -e /sys/class/infiniband/$IBDEV ]; then
    tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
    exit 1
fi
if [ ! -x "$INTEGRITY" ]; then
    tap_fail "vmmbib-integrity given to the guest" "pass --file vmmbib-integrity=PATH"
    exit 1
fi

# ---- several VMs: traffic between them too --------------------------------
net_pid=
if [ "$(echo "${VMMBIB_IPS:-}" | wc -w)" -gt 1 ]; then
    # shellcheck disable=SC2086 # one address a word
    link_up "$VMMBIB_IP" $VMMBIB_IPS || exit 1
    "$INTEGRITY" -P "$(echo "$VMMBIB_IPS" | tr ' ' ,)" -R "${VMMBIB_RANK:-0}" \
        -p 18710 -D "$seconds" "$IBDEV" >/tmp/soak-net.out 2>&1 &
    net_pid=$!
fi

start=$(uptime_s)
next_report=$((start + report))
rounds=0 runs=0 failed_runs=0 total=0
tap_diag "soak: $procs processes with $((2 * pairs)) RC QPs each, $messages messages a round," \
    "for $seconds s from uptime $start s"
while [ $(($(uptime_s) - start)) -lt "$seconds" ]; do
    rounds=$((rounds + 1))
    pids=""
    p=0
    while [ "$p" -lt "$procs" ]; do
        p=$((p + 1))
        "$INTEGRITY" -n "$messages" -q "$pairs" "$IBDEV" >"/tmp/soak-$p.out" 2>&1 &
        pids="$pids $!"
    done
    p=0
    for pid in $pids; do
        p=$((p + 1))
        wait "$pid"
        rc=$?
        runs=$((runs + 1))
        done_msgs=$(sed -n 's/^\([0-9]*\) messages in .*/\1/p' "/tmp/soak-$p.out")
        total=$((total + ${done_msgs:-0}))
        if [ "$rc" != 0 ] || [ "${done_msgs:-0}" != "$messages" ]; then
            failed_runs=$((failed_runs + 1))
            tap_fail "soak round $rounds, process $p: $messages messages, none lost or corrupted" \
                "exit status $rc" "$(cat "/tmp/soak-$p.out")"
        fi
    done
    now=$(uptime_s)
    if [ "$now" -ge "$next_report" ]; then
        next_report=$((now + report))
        tap_diag "soak at uptime $now s: $rounds rounds, $total messages checked," \
            "$failed_runs of $runs runs failed;" \
            "$(dmesg | grep -c 'without an interrupt') controlq replies without an interrupt"
    fi
done
elapsed=$(($(uptime_s) - start))
if [ -n "$net_pid" ]; then
    wait "$net_pid"
    rc=$?
    tap_relay "between the VMs" /tmp/soak-net.out
    [ "$rc" = 0 ] || tap_fail "between the VMs: vmmbib-integrity exit status is 0 (it was $rc)"
fi
tap_diag "$rounds rounds of $procs processes with $((2 * pairs)) RC QPs each in $elapsed s:" \
    "$total messages checked, $failed_runs of $runs runs failed"
if [ "$failed_runs" = 0 ] && [ "$total" = $((runs * messages)) ] && [ "$runs" -gt 0 ]; then
    tap_ok "soak: $total messages over $elapsed s, none lost or corrupted"
else
    tap_fail "soak: $total messages over $elapsed s, none lost or corrupted" \
        "$failed_runs of $runs runs failed"
fi

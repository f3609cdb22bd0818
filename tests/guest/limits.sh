# tests/guest/limits.sh — guest test (busybox sh, run by the guest's /init
# with tests/guest/tap.sh loaded): a guest that asks for objects without
# bound meets the device's quotas, and QEMU's memory stays bounded.
#
# Run with run-guest-test.py --stats, the file vmmbib-limits and device
# quotas small enough to reach (tests/guest/meson.build): VMMBIB_LIMITS,
# "max_mr max_cq max_qp max_pd max_pinned_mb", the quotas it was given.
#   A  vmmbib-limits registers 1 MiB regions of one buffer until the pinned
#      memory quota (max-pinned-mb) refuses one;
#   B  vmmbib-limits registers one-page regions, then creates CQs, QPs and
#      PDs, each until its count quota refuses one.
# Every refusal must be ENOMEM (the device's NO_RESOURCES), at the quota
# less what the kernel's own objects hold.  While each holds its objects
# the script asks the runner for QEMU's VmRSS (qemu_rss_held_a, _held_b;
# qemu_rss_before first), which meson.build bounds by the quotas.

IBDEV=vmmbib0
LIMITS=/run/vmmbib/files/vmmbib-limits
# Objects of the kernel (MAD QPs and CQs, their PD and MR, ...) count
# against the quotas too: a kind may get this many fewer.
KERNEL_SLACK=8

# hold NAME ARGS...: runs vmmbib-limits ARGS until it holds its objects,
# has the runner read QEMU's VmRSS as qemu_rss_NAME, then kills it.  Its
# output is in /tmp/NAME.out.
hold() {
    _name=$1
    shift
    "$LIMITS" "$@" "$IBDEV" >"/tmp/$_name.out" 2>&1 &
    _pid=$!
    _n=0
    while ! grep -q '^holding' "/tmp/$_name.out" && kill -0 "$_pid" 2>/dev/null &&
        [ "$_n" -lt 600 ]; do
        sleep 1
        _n=$((_n + 1))
    done
    if grep -q '^holding' "/tmp/$_name.out"; then
        tap_ok "$_name: vmmbib-limits holds what it got"
        echo "VMMBIB-QEMU-RSS $_name"
        sleep 2
    else
        tap_fail "$_name: vmmbib-limits holds what it got" "$(cat "/tmp/$_name.out")"
    fi
    kill -9 "$_pid" 2>/dev/null
    wait "$_pid" 2>/dev/null
    tap_diag "$(cat "/tmp/$_name.out")"
}

# expect NAME KIND MIN MAX: vmmbib-limits got MIN..MAX of KIND, then ENOMEM.
expect() {
    _line=$(grep "^$2 " "/tmp/$1.out")
    _count=$(echo "$_line" | cut -d' ' -f2)
    _errno=$(echo "$_line" | cut -d' ' -f4)
    if [ -n "$_count" ] && [ "$_count" -ge "$3" ] && [ "$_count" -le "$4" ] &&
        [ "$_errno" = 12 ]; then
        tap_ok "$1: $2 stop at the quota ($_line)"
    else
        tap_fail "$1: $2 stop at the quota: $3 to $4, then errno 12 (ENOMEM)" \
            "got: ${_line:-nothing}"
    fi
}

if ! wait_path /sys/class/infiniband/$IBDEV 20; then
    tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
    exit 1
fi
if [ ! -x "$LIMITS" ]; then
    tap_fail "vmmbib-limits given to the guest" "pass --file vmmbib-limits=PATH"
    exit 1
fi
echo VMMBIB-STATS-BASELINE
sleep 2
# shellcheck disable=SC2086  # five words
set -- $VMMBIB_LIMITS
max_mr=$1 max_cq=$2 max_qp=$3 max_pd=$4
pinned_mb=$5

# A first run warms QEMU up (code it translates for the guest's programs),
# so that the baseline is not lower than it should be.
hold warmup -x 2
echo "VMMBIB-QEMU-RSS before"
sleep 2

# A: 1 MiB regions until the pinned-memory quota.
hold held_a -b 1024 -x 100000
expect held_a mrs $((pinned_mb - KERNEL_SLACK)) "$pinned_mb"

# B: one-page regions, CQs, QPs, PDs until their count quotas.
hold held_b -b 4 -x 100000
expect held_b mrs $((max_mr - KERNEL_SLACK)) "$max_mr"
expect held_b cqs $((max_cq - KERNEL_SLACK)) "$max_cq"
expect held_b qps $((max_qp - KERNEL_SLACK)) "$max_qp"
expect held_b pds $((max_pd - KERNEL_SLACK)) "$max_pd"

# Everything was given back: the device works and its objects are the
# kernel's again (meson.build compares the final counters with these).
sleep 1
ip link set lo up 2>/dev/null
timeout 60 ibv_rc_pingpong -d $IBDEV -n 10 -c >/tmp/pp-s.out 2>&1 &
srv=$!
ok=0
for _ in $(seq 10); do
    sleep 1
    if timeout 50 ibv_rc_pingpong -d $IBDEV -n 10 -c 127.0.0.1 >/tmp/pp-c.out 2>&1; then
        ok=1
        break
    fi
    grep -q "Couldn't connect" /tmp/pp-c.out || break
done
[ "$ok" = 1 ] || kill "$srv" 2>/dev/null
wait "$srv"
if [ "$ok" = 1 ]; then
    tap_ok "ibv_rc_pingpong after the quotas were reached"
else
    tap_fail "ibv_rc_pingpong after the quotas were reached" "$(cat /tmp/pp-c.out /tmp/pp-s.out)"
fi

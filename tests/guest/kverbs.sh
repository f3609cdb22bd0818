# tests/guest/kverbs.sh — guest test (busybox sh, run by the guest's /init
# with tests/guest/tap.sh loaded): the driver's kernel verbs, and unloading
# and reloading the driver.
#
# Files (from run-guest-test.py --file):
#   vmmbib_ktest.ko  the kernel verbs test module (guest-driver/kernel/test):
#                    on load it runs PD, CQ, two connected RC QPs, a SEND, an
#                    RDMA WRITE and a completion event in loopback, and logs
#                    one "vmmbib_ktest: ok N - NAME" line per check.

IBDEV=vmmbib0
KTEST=/run/vmmbib/files/vmmbib_ktest.ko

if ! wait_path /sys/class/infiniband/$IBDEV 20; then
    tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
    exit 1
fi

# ---- kernel verbs ----------------------------------------------------------
if [ ! -f "$KTEST" ]; then
    tap_fail "vmmbib_ktest.ko given to the guest" "pass --file vmmbib_ktest.ko=PATH"
elif insmod "$KTEST" 2>/tmp/insmod.err; then
    tap_ok "vmmbib_ktest loads"
    # Its checks, in the order it logged them.
    dmesg | sed -n 's/.*vmmbib_ktest: \(ok\|not ok\) [0-9]* - \(.*\)$/\1|\2/p' >/tmp/ktest.res
    while IFS='|' read -r res name; do
        if [ "$res" = ok ]; then
            tap_ok "kverbs: $name"
        else
            tap_fail "kverbs: $name" "$(dmesg | grep -E 'vmmbib|ib_' | tail -n 40)"
        fi
    done </tmp/ktest.res
    dmesg | sed -n 's/.*vmmbib_ktest: \(# .*\)$/\1/p' | while IFS= read -r l; do tap_diag "$l"; done
    p=$(cat /sys/module/vmmbib_ktest/parameters/passed)
    f=$(cat /sys/module/vmmbib_ktest/parameters/failed)
    if [ "$p" -gt 0 ] && [ "$f" -eq 0 ]; then
        tap_ok "kverbs: $p checks passed, none failed"
    else
        tap_fail "kverbs: $p checks passed, $f failed" "$(dmesg | tail -n 40)"
    fi
    tap_check "vmmbib_ktest unloads" rmmod vmmbib_ktest
else
    tap_fail "vmmbib_ktest loads" "$(cat /tmp/insmod.err)" "$(dmesg | tail -n 40)"
fi

# ---- a large user MR ---------------------------------------------------------
# 4 MiB buffers: 1024 pages, a two-level page list (directories of 512).
ip link set lo up 2>/dev/null
big=4194304
timeout 120 ibv_rc_pingpong -d $IBDEV -s $big -n 4 -c >/tmp/big-server.out 2>&1 &
srv=$!
ok=0
for _ in $(seq 20); do
    sleep 1
    if timeout 100 ibv_rc_pingpong -d $IBDEV -s $big -n 4 -c 127.0.0.1 >/tmp/big-client.out 2>&1; then
        ok=1
        break
    fi
    grep -q "Couldn't connect" /tmp/big-client.out || break
done
wait "$srv" 2>/dev/null
srv_rc=$?
if [ "$ok" = 1 ] && [ "$srv_rc" = 0 ]; then
    tap_ok "ibv_rc_pingpong with 4 MiB MRs (two-level page lists, data checked)"
else
    tap_fail "ibv_rc_pingpong with 4 MiB MRs (two-level page lists, data checked)" \
        "client: $(cat /tmp/big-client.out)" "server (rc $srv_rc): $(cat /tmp/big-server.out)"
fi

# ---- unload and reload -----------------------------------------------------
# Nothing may keep the module: every object the test made is gone.
if rmmod vmmbypass_ib 2>/tmp/rmmod.err; then
    tap_ok "rmmod vmmbypass_ib"
else
    tap_fail "rmmod vmmbypass_ib" "$(cat /tmp/rmmod.err)" "$(lsmod 2>&1)"
fi
if wait_path /sys/class/infiniband/$IBDEV 10 "!"; then
    tap_ok "$IBDEV unregistered"
else
    tap_fail "$IBDEV unregistered" "$(ls /sys/class/infiniband)"
fi
tap_check "modprobe vmmbypass_ib again" modprobe vmmbypass_ib
if wait_path /sys/class/infiniband/$IBDEV 20; then
    tap_ok "$IBDEV registered again"
else
    tap_fail "$IBDEV registered again" "$(dmesg | tail -n 40)"
fi
tap_check "ibv_devinfo after the reload" ibv_devinfo -d $IBDEV
tap_check "ibv_devinfo -v after the reload" ibv_devinfo -v -d $IBDEV

# A second load of the test: the reloaded driver still works.
if [ -f "$KTEST" ] && insmod "$KTEST" 2>/tmp/insmod.err; then
    f=$(cat /sys/module/vmmbib_ktest/parameters/failed)
    p=$(cat /sys/module/vmmbib_ktest/parameters/passed)
    if [ "$p" -gt 0 ] && [ "$f" -eq 0 ]; then
        tap_ok "kverbs after the reload: $p checks passed"
    else
        tap_fail "kverbs after the reload: $p passed, $f failed" "$(dmesg | tail -n 40)"
    fi
    rmmod vmmbib_ktest
else
    tap_fail "kverbs after the reload" "$(cat /tmp/insmod.err 2>/dev/null)"
fi
# Removal while a process still holds the device: ib_uverbs disassociates
# its context (mappings of the UAR slot zapped, objects destroyed) instead
# of waiting for the process to exit.
ibv_rc_pingpong -d $IBDEV >/tmp/pingpong.out 2>&1 &
pp=$!
held=0
for _ in $(seq 30); do
    grep -q uverbs "/proc/$pp/maps" 2>/dev/null && held=1 && break
    sleep 1
done
if [ "$held" = 1 ]; then
    tap_ok "a user process maps the UAR slot"
else
    tap_fail "a user process maps the UAR slot" "$(cat /tmp/pingpong.out)" "$(cat /proc/$pp/maps 2>&1 | tail -n 20)"
fi
tap_check "rmmod vmmbypass_ib while the process holds it" timeout 60 rmmod vmmbypass_ib
kill "$pp" 2>/dev/null
wait "$pp" 2>/dev/null
if [ -d /sys/module/vmmbypass_ib ]; then
    tap_fail "vmmbypass_ib is gone" "$(lsmod 2>&1)"
else
    tap_ok "vmmbypass_ib is gone"
fi

# No warnings, oopses or lockdep reports on the way.
if dmesg | grep -Eq 'WARNING:|BUG:|Oops|INFO: task .* blocked'; then
    tap_fail "no kernel warnings" "$(dmesg | grep -E -A20 'WARNING:|BUG:|Oops|blocked' | head -n 60)"
else
    tap_ok "no kernel warnings"
fi

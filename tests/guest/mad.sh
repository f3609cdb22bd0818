# tests/guest/mad.sh — guest test (busybox sh, run by the guest's /init with
# tests/guest/tap.sh loaded): ib_core's own MAD clients accept vmmbib0.
# ib_mad opens the port with a GSI QP (QP1) and no SMI QP, ib_umad offers
# it, the port's SM is its own LID, and rdma_cm connects two processes by
# GID (AF_IB), which takes an SA PathRecord query answered by the engine's
# subnet administrator and a CM exchange (REQ, REP, RTU) between the two
# processes' QP1 MADs on the one port.

IBDEV=vmmbib0
PORT=/sys/class/infiniband/$IBDEV/ports/1

n=0
while [ ! -e $PORT ] && [ "$n" -lt 20 ]; do
    sleep 1
    n=$((n + 1))
done
if [ -e $PORT ]; then
    tap_ok "$IBDEV registered"
else
    tap_fail "$IBDEV registered" "$(dmesg | tail -n 40)"
    exit 1
fi

# ib_mad: "Couldn't create ib_mad QP0/QP1", "Couldn't open port 1", ...
if dmesg | grep -i "couldn't" | grep -Eq "$IBDEV|ib_mad|port 1"; then
    tap_fail "no \"Couldn't\" from ib_mad for $IBDEV" \
        "$(dmesg | grep -i -B2 -A2 "couldn't")"
else
    tap_ok "no \"Couldn't\" from ib_mad for $IBDEV"
fi

# ib_umad made a umad device for the port: ib_mad's port is open.
umad=
for d in /sys/class/infiniband_mad/umad*; do
    [ -e "$d/ibdev" ] || continue
    [ "$(cat "$d/ibdev")" = "$IBDEV" ] && [ "$(cat "$d/port")" = 1 ] && umad=$d
done
if [ -n "$umad" ]; then
    tap_ok "ib_umad offers $IBDEV port 1 (${umad##*/})"
else
    tap_fail "ib_umad offers $IBDEV port 1" \
        "$(ls -l /sys/class/infiniband_mad/ 2>&1)" "$(lsmod | grep ib_ 2>&1)"
fi

lid=$(cat $PORT/lid)
sm_lid=$(cat $PORT/sm_lid)
if [ "$sm_lid" = "$lid" ] && [ "$lid" != 0x0 ]; then
    tap_ok "sm_lid is the port's own LID ($lid)"
else
    tap_fail "sm_lid is the port's own LID" "lid $lid sm_lid $sm_lid"
fi
tap_check "port state is ACTIVE" grep -q ACTIVE $PORT/state

# rdma_cm by GID: ucmatose server and client in the IB port space.
gid=$(cat $PORT/gids/0)
tap_diag "port GID $gid"
timeout 150 ucmatose -f gid -b "$gid" -P ib -C 10 >/tmp/cma-server.out 2>&1 &
srv=$!
sleep 2
if timeout 100 ucmatose -f gid -s "$gid" -P ib -C 10 >/tmp/cma-client.out 2>&1; then
    cli_rc=0
else
    cli_rc=$?
fi
wait "$srv"
srv_rc=$?
if [ "$cli_rc" = 0 ] && [ "$srv_rc" = 0 ]; then
    tap_ok "ucmatose by GID (AF_IB): route from the SA, CM connect, 10 messages"
else
    tap_fail "ucmatose by GID (AF_IB): route from the SA, CM connect, 10 messages" \
        "client (rc $cli_rc): $(cat /tmp/cma-client.out)" \
        "server (rc $srv_rc): $(cat /tmp/cma-server.out)" \
        "$(dmesg | grep -E 'vmmbib|ib_|rdma|cm' | tail -n 30)"
fi

if dmesg | grep -Eq 'WARNING:|BUG:|Oops|INFO: task .* blocked'; then
    tap_fail "no kernel warnings" "$(dmesg | grep -E -A20 'WARNING:|BUG:|Oops|blocked' | head -n 60)"
else
    tap_ok "no kernel warnings"
fi

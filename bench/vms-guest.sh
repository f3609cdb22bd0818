# bench/vms-guest.sh — one side of the VM comparisons of bench/vms.py
# (issue 7): perftest and bench/reg-mr.c between two VMs (or two processes
# of one VM), on vmmbypass-ib (vmmbib0, joined to vmmbibd) and/or on
# rdma_rxe over the VMs' virtio-net link.
#
#   VMMBIB_ROLE      server, client (vm1 of a pair is the server) or solo
#                    (one VM: the server runs in the background, the client
#                    connects to it over lo)
#   VMMBIB_IP        this VM's address on the link (a /24)
#   VMMBIB_PEER_IP   the other VM's
#   VMMBIB_BENCH_TIMEOUT  seconds each program may take (default 120)
#   VMMBIB_BENCH_PLAN  what to run, in order: items SYS:DEV:PROG:SIZE:N:FLAGS
#                    SYS   the system's name in the output (a, b, c, ...)
#                    DEV   vmmbib0, or rxe (rxe0 is made on the link's netdev)
#                    PROG  a perftest program, or regmr (bench/reg-mr.c,
#                          client only, N its -p: the largest page count)
#                    N     perftest -n, or with flag D its -D (seconds)
#                    FLAGS any of: e (perftest -e: wait for completion
#                          events instead of polling), D (see N), g (wait
#                          for the host's GO line on ttyS2 first), - (none)
#
# For the host to parse, the client prints, per figure,
#   VMMBIB-BENCH sys=SYS prog=PROG[_ev] size=SIZE <perftest's result row>
#   VMMBIB-BENCH sys=SYS prog=regmr size=0 <reg-mr's line>
# around each figure VMMBIB-MARK begin/end SYS/PROG/SIZE (the host samples
# its processes' CPU times there), and before its first g item VMMBIB-READY.
# shellcheck shell=sh

role=${VMMBIB_ROLE:?VMMBIB_ROLE must be server, client or solo}
# Seconds a program may take: a hung figure fails and the next one runs.
run_timeout=${VMMBIB_BENCH_TIMEOUT:-120}

if [ "$role" = solo ]; then
    peer=127.0.0.1
    tap_ok "solo: the pair is two processes of this VM, over lo"
    link_up "$VMMBIB_IP" || exit 1
else
    peer=$VMMBIB_PEER_IP
    link_up "$VMMBIB_IP" "$VMMBIB_PEER_IP" || exit 1
fi

# ---- rxe on the link -----------------------------------------------------------
rxe_gid=
setup_rxe() {
    [ -n "$rxe_gid" ] && return 0
    modprobe rdma_rxe || return 1
    # shellcheck disable=SC2154 # link_ifc: set by link_up (tap.sh)
    rdma link add rxe0 type rxe netdev "$link_ifc" || return 1
    # RoCE v2 GID of our IPv4 address (its index is what perftest's -x takes).
    _hex=$(echo "$VMMBIB_IP" | awk -F. '{printf "%02x%02x:%02x%02x", $1, $2, $3, $4}')
    for _t in $(seq 20); do
        rxe_gid=$(grep -lx "0000:0000:0000:0000:0000:ffff:$_hex" \
            /sys/class/infiniband/rxe0/ports/1/gids/* 2>/dev/null | head -n 1)
        rxe_gid=${rxe_gid##*/}
        [ -n "$rxe_gid" ] && break
        sleep 1
    done
    [ -n "$rxe_gid" ]
}

# ---- the host's start signal ---------------------------------------------------
waited_go=0
wait_go() {
    [ "$waited_go" = 1 ] && return 0
    waited_go=1
    stty -F /dev/ttyS2 raw -echo 2>/dev/null
    echo VMMBIB-READY
    if read -r -t 1200 _go </dev/ttyS2; then
        tap_ok "the host's start signal ($(echo "$_go" | tr -dc 'A-Z'))"
    else
        tap_fail "the host's start signal" "nothing on ttyS2 within 1200 s"
    fi
}

# ---- one figure ----------------------------------------------------------------
port=18700
# bounded LOG CMD...: runs CMD for at most run_timeout seconds. A program
# that a signal cannot end (blocked in the kernel) is left behind after 15 s
# more, with its kernel stack in LOG, so that the next figures still run.
bounded() {
    _blog=$1
    shift
    timeout -s KILL "$run_timeout" "$@" >"$_blog" 2>&1 &
    _bpid=$!
    _bt=0
    while kill -0 "$_bpid" 2>/dev/null; do
        if [ "$_bt" -ge $(((run_timeout + 15) * 5)) ]; then
            for _p in $(pgrep -P "$_bpid") "$_bpid"; do
                echo "left behind, pid $_p ($(cat /proc/$_p/comm 2>/dev/null)," \
                    "state $(awk '{print $3}' /proc/$_p/stat 2>/dev/null)," \
                    "wchan $(cat /proc/$_p/wchan 2>/dev/null)):" >>"$_blog"
                cat "/proc/$_p/stack" >>"$_blog" 2>/dev/null
            done
            return 125
        fi
        sleep 0.2
        _bt=$((_bt + 1))
    done
    wait "$_bpid"
}

# client_run LOG PROG ARGS...: the client side, retried while the server
# does not listen yet (up to 30 s).
client_run() {
    _log=$1
    shift
    _rc=1
    for _try in $(seq 30); do
        bounded "$_log" "$@" "$peer"
        _rc=$?
        grep -q "Couldn't connect" "$_log" || break
        sleep 1
    done
    return $_rc
}

# run SYS PROG SIZE N FLAGS DEVICE-ARGS...
run() {
    _sys=$1 _prog=$2 _size=$3 _n=$4 _flags=$5
    shift 5
    port=$((port + 1))
    _name=$_prog
    case $_flags in *D*) set -- "$@" -D "$_n" ;; *) set -- "$@" -n "$_n" ;; esac
    case $_flags in *e*) set -- "$@" -e; _name=${_prog}_ev ;; esac
    set -- "$_prog" "$@" -s "$_size" -F -p "$port"
    _key="$_sys/$_name/$_size"
    case $_flags in *g*) wait_go ;; esac
    case $role in
    server)
        bounded /tmp/pt.log "$@"
        _rc=$?
        ;;
    client)
        echo "VMMBIB-MARK begin $_key"
        client_run /tmp/pt.log "$@"
        _rc=$?
        echo "VMMBIB-MARK end $_key"
        ;;
    solo)
        timeout -s KILL "$run_timeout" "$@" >/tmp/pt-server.log 2>&1 &
        _server=$!
        echo "VMMBIB-MARK begin $_key"
        client_run /tmp/pt.log "$@"
        _rc=$?
        echo "VMMBIB-MARK end $_key"
        wait "$_server" || _rc=$?
        ;;
    esac
    _row=$(grep -E '^ *[0-9]+ +[0-9]+ +[0-9.]+' /tmp/pt.log | tail -n 1)
    # perftest converts cycles to time with the CPU frequency it samples;
    # say when it doubted it (TCG's TSC).
    _warn=$(grep -i -E 'conflict|frequency|warn' /tmp/pt.log | head -n 2)
    [ -n "$_warn" ] && [ "$role" != server ] && tap_diag "$_key: $_warn"
    if [ "$_rc" = 0 ] && { [ "$role" = server ] || [ -n "$_row" ]; }; then
        tap_ok "$_key: $*, $role"
        [ "$role" = server ] ||
            echo "VMMBIB-BENCH sys=$_sys prog=$_name size=$_size $_row"
    else
        tap_fail "$_key: $*, $role" "exit status $_rc:" "$(cat /tmp/pt.log)"
    fi
}

# regmr SYS MAX_PAGES DEVICE [GID_INDEX]
regmr() {
    [ "$role" = server ] && return 0
    _key="$1/regmr/0"
    echo "VMMBIB-MARK begin $_key"
    _saved=$run_timeout
    run_timeout=900
    bounded /tmp/regmr.log vmmbib-reg-mr -p "$2" ${4:+-x "$4"} "$3"
    _rc=$?
    run_timeout=$_saved
    # Its figures count even when a size failed (REGMR_FAIL says which).
    grep -E '^(REGMR|QPRATE)' /tmp/regmr.log | while read -r _line; do
        echo "VMMBIB-BENCH sys=$1 prog=regmr size=0 $_line"
    done
    if [ "$_rc" = 0 ]; then
        tap_ok "$_key: vmmbib-reg-mr -p $2 $3"
    else
        tap_fail "$_key: vmmbib-reg-mr -p $2 $3" "$(cat /tmp/regmr.log)"
    fi
    echo "VMMBIB-MARK end $_key"
}

echo VMMBIB-STATS-BASELINE
sleep 2
for item in ${VMMBIB_BENCH_PLAN:?}; do
    IFS=: read -r sys dev prog size n flags <<EOF2
$item
EOF2
    if [ "$dev" = rxe ]; then
        if ! setup_rxe; then
            tap_fail "$sys: rxe0 on $link_ifc" "$(rdma link 2>&1)"
            continue
        fi
        [ "$prog" = regmr ] && { regmr "$sys" "$n" rxe0 "$rxe_gid"; continue; }
        run "$sys" "$prog" "$size" "$n" "$flags" -d rxe0 -x "$rxe_gid"
    else
        [ "$prog" = regmr ] && { regmr "$sys" "$n" "$dev"; continue; }
        run "$sys" "$prog" "$size" "$n" "$flags" -d "$dev"
    fi
done

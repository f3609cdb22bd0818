#!/usr/bin/env bash
# tests/guest/demo.sh — `make demo`: what vmmbypass-ib does, in two parts.
#  1. One guest, the engine inside QEMU: the device as a guest user sees it
#     (lspci/driver, ibv_devices, ibv_devinfo -v; demo-guest.sh), with
#     host-set limits.
#  2. vmmbibd and two guests whose devices are ports of its subnet:
#     ibv_rc_pingpong and perftest's ib_send_lat, ib_write_lat and
#     ib_write_bw between them (run-two-vms.py with two-vms.sh, the
#     guest-two-vms test's runner), then a table of the client's numbers;
#     the runner stops the VMs and the daemon.
# Kernel messages are left out of the output (they are in the logs kept on
# failure).
#
# Usage: tests/guest/demo.sh [BUILD_DIR]     (default: build)
# Environment:
#   DEMO_DEVICE_ARGS  part 1's device properties (default: max-qp=1000,max-cq=2000,
#                     to show that host-side limits reach the guest)
#   DEMO_ITERS        iterations of each part-2 program (default 1000)
#   DEMO_SIZES        perftest message sizes (default "8 65536")
#   DEMO_TIMEOUT      seconds per guest (default 300)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$here/../../scripts/lib.sh"

build="${1:-build}"
[[ -d "$build" ]] || die "build dir '$build' not found; run 'make build' first"
build="$(cd "$build" && pwd)"
qemu="$build/qemu/qemu-system-x86_64"
vmmbibd="$build/host-lib/daemon/vmmbibd"
[[ -x "$qemu" ]] || die "$qemu not found; run 'make build' first"
[[ -x "$vmmbibd" ]] || die "$vmmbibd not found; run 'make build' first"

# Cheap when nothing changed; picks up a freshly built driver/provider.
"$VMMBIB_ROOT/scripts/build-guest-image.sh" "$build"

device_args="${DEMO_DEVICE_ARGS-max-qp=1000,max-cq=2000}"
python=/usr/bin/python3
[[ -x "$python" ]] || python=python3
guest=(--qemu "$qemu" --kernel "$build/guest/vmlinuz" --initrd "$build/guest/initramfs.cpio.zst"
       --timeout "${DEMO_TIMEOUT:-300}")

log "1/2: booting one guest (TCG, no KVM: about 10-20 s) with -device vmmbypass-ib${device_args:+,$device_args}"
"$python" "$here/run-guest-test.py" --show-output "${guest[@]}" \
    --script "$here/demo-guest.sh" --device-args "$device_args"
log "guest powered off"

iters="${DEMO_ITERS:-1000}"
log "2/2: starting vmmbibd and booting two guests (vm1 server, vm2 client) on it;" \
    "ibv_rc_pingpong, ib_send_lat, ib_write_lat, ib_write_bw between them," \
    "$iters iterations each (about a minute)"
tap="$(mktemp)"
trap 'rm -f "$tap"' EXIT
rc=0
"$python" "$here/run-two-vms.py" "${guest[@]}" --vmmbibd "$vmmbibd" \
    --env "VMMBIB_TESTS=rc send-lat write-lat write-bw" \
    --env "VMMBIB_ITERS=$iters" --env "VMMBIB_SIZES=${DEMO_SIZES:-8 65536}" \
    >"$tap" || rc=$?

# The table: the client's (vm2's) numbers, which two-vms.sh tags RESULT.
"$python" - "$tap" <<'PY'
import re
import sys

lines = open(sys.argv[1]).read().splitlines()
for line in lines:
    m = re.search(r"vmmbibd: (vm\d) joined the daemon .* LID \((\d+)\)", line)
    if m:
        print(f"{m.group(1)}: port LID {m.group(2)} of vmmbibd's subnet")
rows = []
for line in lines:
    m = re.match(r"^# vm2: RESULT (\S+) (.*)$", line)
    if not m:
        continue
    prog, f = m.group(1), m.group(2).split()
    if prog.startswith("ibv_"):
        # "1000 iters in 0.52 seconds = 520.00 usec/iter": one round trip.
        rows.append((prog, "4096", f"{float(f[-2]):.1f} us per round trip ({f[0]} iterations)"))
    elif prog.endswith("_lat"):
        # #bytes #iterations t_min t_max t_typical t_avg ...
        rows.append((prog, f[0], f"{float(f[4]):.2f} us typical, {float(f[5]):.2f} us average "
                     f"(one way, {f[1]} iterations)"))
    else:
        # #bytes #iterations BW_peak BW_average[MB/sec] MsgRate[Mpps]
        rows.append((prog, f[0], f"{float(f[3]):.1f} MiB/s, {float(f[4]):.3f} Mpps "
                     f"({f[1]} iterations)"))
if rows:
    print()
    print(f"{'program':<16} {'bytes':>6}  result (vm2 -> vm1, TCG guests)")
    print(f"{'-' * 16} {'-' * 6}  {'-' * 50}")
    for prog, size, res in rows:
        print(f"{prog:<16} {size:>6}  {res}")
    print()
failed = [l for l in lines if l.startswith("not ok")]
for l in failed:
    print(l)
PY
if [[ "$rc" != 0 ]]; then
    cat "$tap" >&2
    die "the two-VM run failed (its TAP output is above)"
fi
log "both guests powered off, vmmbibd stopped"

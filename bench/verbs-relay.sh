#!/bin/bash
# bench/verbs-relay.sh — what host-lib's verbs backend (issue 10,
# docs/design-verbs.md) adds to a round trip: one TCG guest with rdma_rxe
# runs test-host-lib-verbs --bench N (host-lib/tests/test_verbs.c), which
# times N ping-pongs of a 64-byte RC SEND each way, first between two QPs
# on rxe0 directly, then between two synthetic guests whose vmmbypass-ib
# devices relay to rxe0 (backend=verbs).  Same VM, same device, same
# program: the difference is the relay (ring, doorbell, engine pass, the
# completion thread's wake-up).
#
#   bench/verbs-relay.sh [BUILD_DIR] [ROUND_TRIPS]   (defaults: build, 200)
#
# It boots a guest: on a shared machine, run it under
# `flock /tmp/vmmbib-guest.lock`.  Prints the program's result lines.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$root/build}
n=${2:-200}
prog=$build/host-lib/tests/test-host-lib-verbs
[[ -x $prog ]] || {
    echo "verbs-relay.sh: $prog is missing (host-lib is built without libibverbs?)" >&2
    exit 1
}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
out=$("$root/tests/guest/run-guest-test.py" --qemu "$build/qemu/qemu-system-x86_64" \
    --kernel "$build/guest/vmlinuz" --initrd "$build/guest/initramfs.cpio.zst" \
    --no-device --script "$root/tests/guest/verbs-backend.sh" \
    --file "test-host-lib-verbs=$prog" --env "VMMBIB_VERBS_BENCH=$n" \
    --timeout 600 --log-dir "$log") || {
    echo "$out" >&2
    exit 1
}
echo "machine: $(nproc) CPUs, guest under TCG, 1 vCPU; rxe0 on a dummy netdev"
sed -n 's/^# \(verbs-relay: \|direct \|relayed \|added \)/\1/p' <<<"$out"

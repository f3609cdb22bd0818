#!/usr/bin/env bash
# tests/guest/demo.sh — `make demo`: boot the test guest with a vmmbypass-ib
# device and show what a guest user sees (ibv_devices, ibv_devinfo -v), then
# shut it down. Kernel messages are left out of the output (they are in the
# log kept on failure).
#
# Usage: tests/guest/demo.sh [BUILD_DIR]     (default: build)
# Environment:
#   DEMO_DEVICE_ARGS  properties of the device (default: max-qp=1000,max-cq=2000,
#                     to show that host-side limits reach the guest)
#   DEMO_TIMEOUT      seconds (default 300)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$here/../../scripts/lib.sh"

build="${1:-build}"
[[ -d "$build" ]] || die "build dir '$build' not found; run 'make build' first"
build="$(cd "$build" && pwd)"
qemu="$build/qemu/qemu-system-x86_64"
[[ -x "$qemu" ]] || die "$qemu not found; run 'make build' first"

# Cheap when nothing changed; picks up a freshly built driver/provider.
"$VMMBIB_ROOT/scripts/build-guest-image.sh" "$build"

device_args="${DEMO_DEVICE_ARGS-max-qp=1000,max-cq=2000}"
python=/usr/bin/python3
[[ -x "$python" ]] || python=python3

log "booting the guest (TCG, no KVM: about 10-20 s) with -device vmmbypass-ib${device_args:+,$device_args}"
"$python" "$here/run-guest-test.py" --show-output \
    --qemu "$qemu" --kernel "$build/guest/vmlinuz" --initrd "$build/guest/initramfs.cpio.zst" \
    --script "$here/demo-guest.sh" --device-args "$device_args" \
    --timeout "${DEMO_TIMEOUT:-300}"
log "guest powered off"

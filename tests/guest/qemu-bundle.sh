#!/bin/bash
# tests/guest/qemu-bundle.sh — the test guest's initramfs with our QEMU and
# qos-test added under /opt/vmmbib-qemu (tests/guest/qemu-verbs.sh runs
# them there, on rdma_rxe):
#
#   tests/guest/qemu-bundle.sh BUILD_DIR OUT
#
# OUT is BUILD_DIR/guest/initramfs.cpio.zst followed by a second, gzipped
# cpio archive (the kernel unpacks both): bin/qemu-system-x86_64 (a
# wrapper that adds -L for the firmware below and the libraries),
# bin/qos-test, lib/ with every shared library of the two that the guest
# image (Debian trixie, newer than this bookworm host) does not have, and
# share/ with the firmware files the pc machine loads.  The guest's own
# libc, libibverbs and rxe provider are used: they are newer than the
# host's, and backward compatible.  (Not a -fw_cfg file: the guest reads
# those through sysfs in a time quadratic in their size.)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
# shellcheck source=scripts/guest-vars.sh
source "$VMMBIB_ROOT/scripts/guest-vars.sh"

(($# == 2)) || die "usage: $0 BUILD_DIR OUT"
B=$1
OUT=$2
QEMU="$B/qemu/qemu-system-x86_64"
QOS="$B/qemu/tests/qtest/qos-test"
BASE="$B/guest/initramfs.cpio.zst"
for f in "$QEMU" "$QOS" "$BASE"; do
    [[ -s $f ]] || die "$f is not built (meson compile -C $B)"
done
[[ -d $GUEST_USERSPACE_ROOT/usr/lib ]] ||
    die "$GUEST_USERSPACE_ROOT: no guest user space (scripts/fetch-guest.sh)"
need_cmd strip
need_cmd ldd
need_cmd cpio

top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
stage=$top/opt/vmmbib-qemu
mkdir -p "$stage/bin" "$stage/lib" "$stage/share"
strip -o "$stage/bin/qemu-system-x86_64.real" "$QEMU"
strip -o "$stage/bin/qos-test" "$QOS"
# qos-test finds the arch in QTEST_QEMU_BINARY's name: the wrapper keeps it.
cat >"$stage/bin/qemu-system-x86_64" <<'WRAPPER'
#!/bin/sh
d=$(dirname "$0")
LD_LIBRARY_PATH="$d/../lib" exec "$d/qemu-system-x86_64.real" -L "$d/../share" "$@"
WRAPPER
chmod 755 "$stage/bin/qemu-system-x86_64"

# Libraries: those the guest lacks, from this host.
guest_has() {
    [[ -e "$GUEST_USERSPACE_ROOT/usr/lib/x86_64-linux-gnu/$1" ||
        -e "$GUEST_USERSPACE_ROOT/usr/lib64/$1" ]]
}
while read -r name path; do
    guest_has "$name" || cp -L "$path" "$stage/lib/$name"
done < <(ldd "$QEMU" "$QOS" | sed -n 's/^\s*\(\S*\) => \(\/\S*\) .*/\1 \2/p' | sort -u)

# Firmware of the pc machine (QEMU's own -L dir comes first).
for f in bios-256k.bin vgabios-stdvga.bin kvmvapic.bin linuxboot_dma.bin \
    efi-e1000.rom; do
    for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
        if [[ -e $d/$f ]]; then
            cp -L "$d/$f" "$stage/share/$f"
            break
        fi
    done
done

{
    cat "$BASE"
    (cd "$top" && find opt | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6)
} >"$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
log "qemu-bundle: $OUT ($(du -h "$OUT" | cut -f1))"

#!/usr/bin/env bash
# scripts/build-guest-image.sh — assemble the test guest:
#   BUILD_DIR/guest/vmlinuz             the guest kernel (bookworm-backports 6.12)
#   BUILD_DIR/guest/initramfs.cpio.zst  trixie user space (busybox, kmod, rdma-core,
#                                       perftest, iproute2), the kernel modules the
#                                       tests need, our driver and provider if built,
#                                       and tests/guest/init as /init
# Rebuilds only when an input changed.
#
# Usage: scripts/build-guest-image.sh [--kmod FILE] [--provider FILE] [--stamp FILE] BUILD_DIR
#   --kmod      vmmbypass_ib.ko (default BUILD_DIR/guest-driver/kernel/vmmbypass_ib.ko)
#   --provider  libvmmbib-rdmav34.so (default BUILD_DIR/guest-driver/provider/libvmmbib-rdmav34.so;
#               a vmmbib.driver next to it becomes /etc/libibverbs.d/vmmbib.driver)
#   --stamp     file to touch when the image is ready (for meson)
# The driver and provider are optional: a missing one is left out (with a note).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/guest-vars.sh
source "$VMMBIB_ROOT/scripts/guest-vars.sh"

# Modules of the guest kernel to put in the image (their dependencies come
# along). Devices' own drivers are found by modalias at boot.
GUEST_MODULES=(
    qemu_fw_cfg                                   # -fw_cfg inputs from the host
    ib_core ib_uverbs ib_umad ib_cm iw_cm rdma_cm rdma_ucm  # RDMA core + user access
    rdma_rxe                                      # soft-RoCE, for comparisons
    crc32_generic crc32_pclmul                    # rxe's ICRC ("crc32" shash, requested
                                                  # by name at run time, not a module dep)
    9p 9pnet_virtio                               # optional host directory share
    virtio_net dummy                              # netdevs for rxe tests
)
# Virtio transport pieces the tests need: taken as modules only when the kernel
# config does not build them in.
GUEST_MAYBE_MODULES=(CONFIG_VIRTIO:virtio CONFIG_VIRTIO_PCI:virtio_pci CONFIG_VIRTIO_RING:virtio_ring)

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }

KMOD="" PROVIDER="" STAMP=""
while (($#)); do
    case "$1" in
    --kmod) KMOD=$2; shift 2 ;;
    --provider) PROVIDER=$2; shift 2 ;;
    --stamp) STAMP=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) die "unknown option '$1'" ;;
    *) break ;;
    esac
done
(($# == 1)) || usage
mkdir -p "$1"
BUILD_DIR="$(cd "$1" && pwd)"
OUT="$BUILD_DIR/guest"
: "${KMOD:=$BUILD_DIR/guest-driver/kernel/vmmbypass_ib.ko}"
: "${PROVIDER:=$BUILD_DIR/guest-driver/provider/libvmmbib-rdmav34.so}"
PROVIDER_DRIVER="$(dirname "$PROVIDER")/vmmbib.driver"

need_cmd cpio
need_cmd zstd
need_cmd xz

"$VMMBIB_ROOT/scripts/fetch-guest.sh" >/dev/null

# One assembler per build dir at a time (meson and demo.sh may both ask).
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

KMODDIR="$GUEST_KERNEL_ROOT/lib/modules/$GUEST_KREL"
KCONFIG="$GUEST_KERNEL_ROOT/boot/config-$GUEST_KREL"

# ---- up to date? -----------------------------------------------------------
# Everything the image is made of, by content: a changed script, module list,
# pin, driver or provider rebuilds it; an unchanged tree is a no-op.
inputs_digest() {
    {
        cat "$GUEST_KERNEL_ROOT/.vmmbib-unpacked" "$GUEST_USERSPACE_ROOT/.vmmbib-unpacked"
        sha256sum "$0" "$VMMBIB_ROOT/scripts/guest-vars.sh" \
            "$VMMBIB_ROOT/tests/guest/init" "$VMMBIB_ROOT/tests/guest/tap.sh"
        printf '%s\n' "${GUEST_MODULES[@]}"
        if [[ -f "$KMOD" ]]; then sha256sum "$KMOD"; else echo "no kmod"; fi
        if [[ -f "$PROVIDER" ]]; then sha256sum "$PROVIDER"; else echo "no provider"; fi
        if [[ -f "$PROVIDER_DRIVER" ]]; then sha256sum "$PROVIDER_DRIVER"; fi
    } | sha256sum | cut -d' ' -f1
}
digest="$(inputs_digest)"
if [[ -f "$OUT/.inputs" && "$(cat "$OUT/.inputs")" == "$digest" &&
    -f "$OUT/initramfs.cpio.zst" && -f "$OUT/vmlinuz" ]]; then
    log "guest image up to date: $OUT"
    [[ -z "$STAMP" ]] || touch "$STAMP"
    exit 0
fi

log "assembling the guest image in $OUT"
ROOT="$OUT/rootfs"
rm -rf "$ROOT"
mkdir -p "$ROOT"

# ---- user space ------------------------------------------------------------
# The trixie packages use the merged /usr layout; the top-level links are
# normally made by base-files, which a test guest does without.
cp -a "$GUEST_USERSPACE_ROOT/usr" "$GUEST_USERSPACE_ROOT/etc" "$ROOT/"
rm -f "$ROOT/.vmmbib-unpacked"
# (gconv: iconv charset modules, ~8 MB no test uses)
rm -rf "$ROOT"/usr/share/{doc,man,info,lintian,locale,bug} "$ROOT/usr/include" \
    "$ROOT/usr/lib/x86_64-linux-gnu/gconv"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$ROOT/$d"; done
mkdir -p "$ROOT"/{proc,sys,dev,run,tmp,root,mnt}
chmod 1777 "$ROOT/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
# No ldconfig (libc-bin) and no /etc/ld.so.cache: without a cache, Debian's
# ld.so searches the multiarch directories, which is where every library is.

# busybox applets for everything the packages do not provide (so kmod's
# modprobe, iproute2's ip win over busybox's smaller ones).
while read -r applet; do
    name=${applet##*/}
    case "$applet" in bin/* | usr/bin/*) dir=usr/bin ;; *) dir=usr/sbin ;; esac
    [[ -e "$ROOT/usr/bin/$name" || -e "$ROOT/usr/sbin/$name" || -L "$ROOT/$dir/$name" ]] && continue
    ln -s /usr/bin/busybox "$ROOT/$dir/$name"
done < <(guest_tool /usr/bin/busybox --list-full)

# Every shared library a program or library in the image asks for must be in
# the image: a missing one shows up only as a guest that cannot modprobe.
check_needed() {
    local f lib missing=""
    while IFS= read -r -d '' f; do
        [[ "$(head -c4 "$f")" == $'\x7fELF' ]] || continue
        for lib in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            [[ -e "$ROOT/usr/lib/x86_64-linux-gnu/$lib" || -e "$ROOT/usr/lib64/$lib" ]] ||
                missing+="  ${f#"$ROOT"} needs $lib"$'\n'
        done
    done < <(find "$ROOT/usr/bin" "$ROOT/usr/sbin" "$ROOT/usr/lib/x86_64-linux-gnu" -type f -print0)
    [[ -z "$missing" ]] || die "libraries missing from the guest image:
$missing  Add their packages to GUEST_SEED_PACKAGES in scripts/fetch-guest.sh, then run
  scripts/fetch-guest.sh --update-pins"
}
need_cmd readelf "install binutils"

install -m 755 "$VMMBIB_ROOT/tests/guest/init" "$ROOT/init"
install -D -m 644 "$VMMBIB_ROOT/tests/guest/tap.sh" "$ROOT/usr/share/vmmbib/tap.sh"

# ---- kernel modules --------------------------------------------------------
# Debian ships them xz-compressed; busybox's cpio-unpacked root has no reason to
# decompress at every load, so they go in as plain .ko.
declare -A modpath=()
while IFS= read -r f; do
    n=${f##*/}
    n=${n%.ko.xz}
    modpath[${n//-/_}]=$f
done < <(find "$KMODDIR/kernel" -name '*.ko.xz')

want=("${GUEST_MODULES[@]}")
for entry in "${GUEST_MAYBE_MODULES[@]}"; do
    grep -qx "${entry%%:*}=m" "$KCONFIG" && want+=("${entry#*:}")
done

modinfo_field() { GUEST_TOOL_ARGV0=modinfo guest_tool /usr/bin/kmod -F "$1" "$2"; }

declare -A added=()
while ((${#want[@]})); do
    m=${want[0]//-/_}
    want=("${want[@]:1}")
    [[ -n "${added[$m]:-}" ]] && continue
    src=${modpath[$m]:-}
    if [[ -z "$src" ]]; then
        grep -q "/${m}.ko\$" "$KMODDIR/modules.builtin" ||
            grep -q "/${m//_/-}.ko\$" "$KMODDIR/modules.builtin" ||
            die "module $m is neither in $KMODDIR/kernel nor built in"
        added[$m]=builtin
        continue
    fi
    rel=${src#"$KMODDIR/"}
    dst="$ROOT/usr/lib/modules/$GUEST_KREL/${rel%.xz}"
    mkdir -p "${dst%/*}"
    xz -dc "$src" >"$dst"
    added[$m]=1
    deps="$(modinfo_field depends "$dst")"
    [[ -n "$deps" ]] && IFS=, read -ra more <<<"$deps" && want+=("${more[@]}")
    # softdep "pre: a b post: c" — these are loaded by modprobe as well
    for s in $(modinfo_field softdep "$dst"); do
        [[ "$s" == *: ]] || want+=("$s")
    done
done
cp "$KMODDIR"/modules.{builtin,builtin.modinfo,order} "$ROOT/usr/lib/modules/$GUEST_KREL/"

note_kmod="not built"
if [[ -f "$KMOD" ]]; then
    install -D -m 644 "$KMOD" "$ROOT/usr/lib/modules/$GUEST_KREL/updates/vmmbypass_ib.ko"
    note_kmod="$KMOD"
fi
# modules.dep, modules.alias, ... with the guest's own depmod (trixie kmod).
GUEST_TOOL_ARGV0=depmod guest_tool /usr/bin/kmod -b "$ROOT" "$GUEST_KREL" ||
    die "depmod for the guest image failed"
if [[ -f "$KMOD" ]]; then
    grep -q '^updates/vmmbypass_ib.ko:' "$ROOT/usr/lib/modules/$GUEST_KREL/modules.dep" ||
        die "depmod did not index vmmbypass_ib.ko"
    grep -q 'vmmbypass_ib$' "$ROOT/usr/lib/modules/$GUEST_KREL/modules.alias" ||
        warn "vmmbypass_ib.ko declares no modalias (MODULE_DEVICE_TABLE): it will not be autoloaded"
fi

# ---- rdma-core provider ----------------------------------------------------
note_provider="not built"
if [[ -f "$PROVIDER" ]]; then
    # libibverbs reads /etc/libibverbs.d/*.driver and, for "driver <name>",
    # loads <provider dir>/lib<name>-rdmav<private ABI>.so (or <path>-rdmav..
    # for an absolute path, which scripts/build-provider.sh writes).
    install -m 644 "$PROVIDER" "$ROOT/usr/lib/x86_64-linux-gnu/libibverbs/libvmmbib-rdmav34.so"
    if [[ -f "$PROVIDER_DRIVER" ]]; then
        install -m 644 "$PROVIDER_DRIVER" "$ROOT/etc/libibverbs.d/vmmbib.driver"
    else
        printf 'driver vmmbib\n' >"$ROOT/etc/libibverbs.d/vmmbib.driver"
    fi
    note_provider="$PROVIDER"
fi

check_needed

# ---- archive ---------------------------------------------------------------
# newc as the kernel wants it, owned by root, in a stable order; zstd because
# the kernel decompresses it fastest (CONFIG_RD_ZSTD), which counts under TCG.
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc --owner=0:0 --reproducible) |
    zstd -q -T0 -12 -o "$OUT/initramfs.cpio.zst.new" -f
mv -f "$OUT/initramfs.cpio.zst.new" "$OUT/initramfs.cpio.zst"
cp "$GUEST_KERNEL_ROOT/boot/vmlinuz-$GUEST_KREL" "$OUT/vmlinuz"
rm -rf "$ROOT"
printf '%s\n' "$digest" >"$OUT/.inputs"
log "guest image: $OUT/vmlinuz + $OUT/initramfs.cpio.zst ($(du -h "$OUT/initramfs.cpio.zst" | cut -f1))"
log "  vmmbypass_ib.ko: $note_kmod; provider: $note_provider"
[[ -z "$STAMP" ]] || touch "$STAMP"

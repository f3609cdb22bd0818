# shellcheck shell=bash disable=SC2034  # variables for the scripts that source this
# scripts/guest-vars.sh — sourced after scripts/lib.sh. Names and paths of the
# guest kernel and guest user space, shared by fetch-guest.sh,
# build-guest-image.sh and whoever builds the guest kernel module.
#
#   GUEST_KERNEL_VERSION  Debian package version of the guest kernel (the pin)
#   GUEST_KERNEL_ABI      Debian ABI name, e.g. 6.12.95+deb12
#   GUEST_KREL            uname -r in the guest, e.g. 6.12.95+deb12-amd64
#   GUEST_KERNEL_ROOT     the kernel .debs unpacked (boot/, lib/modules/, usr/src/)
#   GUEST_KDIR            kernel build dir for `make -C "$GUEST_KDIR" M=...`
#   GUEST_PKG_LIST        pinned trixie packages of the guest user space
#   GUEST_USERSPACE_ROOT  those packages unpacked (a staging root, never installed)
#   GUEST_DEB_DIR         where the downloaded .debs are kept

# The one pin of the guest kernel: bookworm-backports' 6.12 (built with gcc-12,
# the compiler of this host, so out-of-tree modules build with it). If the
# archive has moved on, pick the new version with
#   APT_CONFIG=$(scripts/lib.sh's apt_conf host) apt-cache policy 'linux-image-6.12*-amd64-unsigned'
# and change only this line.
GUEST_KERNEL_VERSION="6.12.95-1~bpo12+1"

# The archive keeps only recent kernel builds. When it has dropped the pin,
# scripts/fetch-guest.sh writes the newest 6.12 build it serves into this
# file (with a warning), and every script takes that version instead until
# the pin above is cached again.
GUEST_KERNEL_FALLBACK_FILE="$VMMBIB_CACHE/guest-kernel/fallback-version"
if [[ ! -d "$VMMBIB_CACHE/guest-kernel/${GUEST_KERNEL_VERSION%%-*}+deb12-amd64" &&
    -s "$GUEST_KERNEL_FALLBACK_FILE" ]]; then
    GUEST_KERNEL_VERSION="$(<"$GUEST_KERNEL_FALLBACK_FILE")"
fi

GUEST_KERNEL_ABI="${GUEST_KERNEL_VERSION%%-*}+deb12"
GUEST_KREL="$GUEST_KERNEL_ABI-amd64"
GUEST_KERNEL_ROOT="$VMMBIB_CACHE/guest-kernel/$GUEST_KREL"
GUEST_KDIR="$GUEST_KERNEL_ROOT/usr/src/linux-headers-$GUEST_KREL"
GUEST_PKG_LIST="$VMMBIB_ROOT/tests/guest/packages.txt"
GUEST_USERSPACE_ROOT="$VMMBIB_CACHE/guest-userspace/root"
GUEST_DEB_DIR="$VMMBIB_CACHE/downloads/guest-debs"

# Runs a program of the unpacked trixie user space on this (bookworm) host
# through trixie's own dynamic loader, so a newer glibc is no problem:
#   guest_tool /usr/bin/kmod depmod -b DIR VERSION
# The loader's --argv0 lets multi-call binaries (kmod) see the name they expect.
guest_tool() {
    local prog=$1 name
    shift
    name=${GUEST_TOOL_ARGV0:-$(basename "$prog")}
    "$GUEST_USERSPACE_ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
        --library-path "$GUEST_USERSPACE_ROOT/usr/lib/x86_64-linux-gnu" \
        --argv0 "$name" "$GUEST_USERSPACE_ROOT$prog" "$@"
}

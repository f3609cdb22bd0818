#!/usr/bin/env bash
# scripts/kmod-build.sh — builds the guest kernel module vmmbypass_ib.ko out of
# tree, in a copy of guest-driver/kernel/ so the source tree stays clean.
#
# Usage: scripts/kmod-build.sh [--werror] KDIR OUT.ko
#   KDIR      a kernel build dir (headers + kbuild), or one of the names
#               guest  the guest's 6.12 headers (scripts/fetch-guest.sh)
#               host   bookworm's linux-headers-amd64 (scripts/setup-host.sh)
#   OUT.ko    where the module goes; the kbuild copy is OUT.ko.d/ next to it, and
#             the kernel verbs test module vmmbib_ktest.ko (test/) goes next to it too
#   --werror  fail on any compiler or modpost warning (the tests use this)
#
# Builds with W=1 and holds the heavy-build lock while compiling. The copy
# keeps file dates, so kbuild recompiles only what changed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

werror=0
if [[ "${1:-}" == --werror ]]; then
    werror=1
    shift
fi
(($# == 2)) || die "usage: $0 [--werror] KDIR|guest|host OUT.ko"
kdir=$1
out=$2

# The kernel whose headers bookworm's linux-headers-amd64 points at (the
# host runs some other kernel here, so /lib/modules/$(uname -r) is no help).
host_kdir() {
    local dep
    dep="$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null)" ||
        die "linux-headers-amd64 is not installed; run scripts/setup-host.sh (as root)"
    dep="${dep%%[ ,]*}"
    printf '/usr/src/%s\n' "$dep"
}

case "$kdir" in
guest)
    # shellcheck source=scripts/guest-vars.sh
    source "$VMMBIB_ROOT/scripts/guest-vars.sh"
    kdir="$GUEST_KDIR"
    hint="run scripts/fetch-guest.sh"
    ;;
host)
    kdir="${VMMBIB_HOST_KDIR:-$(host_kdir)}"
    hint="run scripts/setup-host.sh (as root), or set VMMBIB_HOST_KDIR"
    ;;
*) hint="pass a kernel build dir (one with a Makefile and include/generated)" ;;
esac
[[ -f "$kdir/Makefile" && -d "$kdir/include" ]] ||
    die "no kernel build dir at '$kdir': $hint"

src="$VMMBIB_ROOT/guest-driver/kernel"
abi_include="$VMMBIB_ROOT/include"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
work="$out.d"
mkdir -p "$work"

# Copy only what differs, keeping dates: kbuild then sees real changes only.
# Files gone from the source go from the copy too.
# test/ holds the kernel verbs test module (vmmbib_ktest.ko).
mkdir -p "$work/test"
for f in "$work"/*.c "$work"/*.h "$work"/test/*.c; do
    if [[ -e "$f" && ! -e "$src/${f#"$work"/}" ]]; then
        rm -f "$f"
    fi
done
for f in "$src"/*.c "$src"/*.h "$src/Kbuild" "$src"/test/*.c; do
    rel=${f#"$src"/}
    if ! cmp -s "$f" "$work/$rel"; then
        cp -p "$f" "$work/$rel"
    fi
done

log="$out.log"
make_args=(-C "$kdir" M="$work" VMMBIB_ABI_INCLUDE="$abi_include" W=1 modules)
((werror)) && make_args+=(KCFLAGS=-Werror)
log "building $(basename "$out") against $kdir"
status=0
heavy make -j"$(nproc)" "${make_args[@]}" >"$log" 2>&1 || status=$?
cat "$log"
((status == 0)) || die "kernel module build failed (log: $log)"

# -Werror covers the compiler; modpost's warnings need a look at the log.
if ((werror)) && grep -Eq '(warning|WARNING):' "$log"; then
    die "the module build printed warnings (log: $log)"
fi
# A fresh date, so that ninja sees the output newer than its inputs.
cp -f "$work/vmmbypass_ib.ko" "$out"
# The test module goes next to it (tests/guest/kverbs.sh loads it).
cp -f "$work/test/vmmbib_ktest.ko" "$(dirname "$out")/vmmbib_ktest.ko"

#!/bin/bash
# Builds the vmmbypass-ib rdma-core provider (guest-driver/provider) inside a
# copy of rdma-core's source tree, as rdma-core's providers are built: its
# driver.h and private ABI are not shipped by libibverbs-dev.
#
# Usage: scripts/build-provider.sh BUILD_DIR
#
# Writes, in BUILD_DIR:
#   rdma-core-src/                  copy of the pristine cache tree (made once),
#                                   providers/vmmbib -> guest-driver/provider
#   rdma-core-build/                its cmake/ninja build dir
#   guest-driver/provider/libvmmbib-rdmav34.so   the provider module
#   guest-driver/provider/vmmbib.driver          /etc/libibverbs.d entry for the guest
#   guest-driver/provider/vmmbib-verbs-check     tests/guest/verbs-check.c,
#   guest-driver/provider/vmmbib-integrity       tests/guest/integrity.c and
#   guest-driver/provider/vmmbib-limits          tests/guest/limits.c, guest test
#                                                programs linked against this tree's libibverbs
# Incremental: a second run lets ninja rebuild only what changed; outputs are
# replaced only when their content changed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/guest-vars.sh
source "$VMMBIB_ROOT/scripts/guest-vars.sh"

# Where Debian's libibverbs1 (trixie) looks for providers in the guest: its
# VERBS_PROVIDER_DIR is /usr/lib/<multiarch>/libibverbs, and a .driver line
# with an absolute path loads PATH-rdmav<PABI>.so.
GUEST_MULTIARCH=x86_64-linux-gnu
GUEST_PROVIDER_DIR="/usr/lib/$GUEST_MULTIARCH/libibverbs"

(($# == 1)) || die "usage: $0 BUILD_DIR"
mkdir -p "$1"
build="$(cd "$1" && pwd)"
tree="$build/rdma-core-src"
obj="$build/rdma-core-build"
out="$build/guest-driver/provider"

for c in cmake ninja ccache objdump cc; do need_cmd "$c"; done

src="$("$VMMBIB_ROOT/scripts/fetch-rdma-core.sh")"

# --- the private source tree ------------------------------------------------

# Copied once; the cache copy stays pristine. A different source (its stamp
# holds version + tarball checksum) replaces the copy and its build dir.
if ! cmp -s "$src/.vmmbib-unpacked" "$tree/.vmmbib-unpacked" 2>/dev/null; then
    log "copying rdma-core source into $tree"
    rm -rf "$tree" "$tree.new" "$obj"
    cp -a "$src" "$tree.new"
    mv "$tree.new" "$tree"
fi

# The provider stays in the project: rdma-core sees it through a symlink.
link="$tree/providers/vmmbib"
if [[ "$(readlink "$link" 2>/dev/null)" != "$VMMBIB_ROOT/guest-driver/provider" ]]; then
    rm -rf "$link"
    ln -s "$VMMBIB_ROOT/guest-driver/provider" "$link"
fi

# Hook it into the top CMakeLists.txt next to the other DMA-ring providers
# (inside rdma-core's HAVE_COHERENT_DMA block: our rings live in guest memory).
top="$tree/CMakeLists.txt"
if ! grep -qx 'add_subdirectory(providers/vmmbib)' "$top"; then
    grep -qx 'add_subdirectory(providers/vmw_pvrdma)' "$top" ||
        die "$top has no 'add_subdirectory(providers/vmw_pvrdma)' line to add ours after;
  rdma-core's layout changed: update scripts/build-provider.sh"
    sed -i '/^add_subdirectory(providers\/vmw_pvrdma)$/a add_subdirectory(providers/vmmbib)' "$top"
fi

pabi="$(sed -n 's/^set(IBVERBS_PABI_VERSION "\([0-9]*\)")$/\1/p' "$top")"
[[ -n "$pabi" ]] || die "IBVERBS_PABI_VERSION not found in $top"
target="vmmbib-rdmav$pabi"

# --- configure and build ----------------------------------------------------

# NO_PYVERBS / NO_MAN_PAGES: no cython or pandoc needed, and neither is used.
# The system python, not whatever a user's PATH offers first (rdma-core runs it
# to generate its kernel ABI structs). No build RPATH: the module goes into the
# guest, where this build dir does not exist.
cmake_args=(
    -GNinja
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
    -DCMAKE_C_COMPILER_LAUNCHER=ccache
    -DCMAKE_SKIP_BUILD_RPATH=ON
    -DPYTHON_EXECUTABLE=/usr/bin/python3
    -DNO_PYVERBS=1 -DNO_MAN_PAGES=1
    -DVMMBIB_ABI_INCLUDE_DIR="$VMMBIB_ROOT/include"
)
# Configured once (and again when these arguments change); otherwise ninja
# re-runs cmake by itself when a CMakeLists.txt changes.
args_stamp="$obj/.vmmbib-cmake-args"
if [[ ! -f "$obj/build.ninja" ]] ||
    [[ "$(cat "$args_stamp" 2>/dev/null)" != "${cmake_args[*]}" ]]; then
    log "configuring rdma-core in $obj"
    mkdir -p "$obj"
    rm -f "$args_stamp"
    heavy cmake -S "$tree" -B "$obj" "${cmake_args[@]}" >&2 || {
        rm -f "$obj/build.ninja"
        die "configuring rdma-core failed (see cmake output above; $obj/CMakeFiles/CMakeError.log).
  Missing libraries? Run scripts/setup-host.sh (as root)."
    }
    printf '%s\n' "${cmake_args[*]}" >"$args_stamp"
fi

log "building $target (rdma-core $(basename "$src"))"
# Only our target and what it links against (libibverbs, ccan, util).
heavy ninja -C "$obj" "$target" >&2 ||
    die "building $target failed (see the compiler output above)"

so="$obj/lib/lib$target.so"
[[ -f "$so" ]] || die "ninja built $target but $so is missing"

# --- private ABI check ------------------------------------------------------

# The provider is linked against this tree's libibverbs but runs with trixie's
# libibverbs1 in the guest: every versioned libibverbs symbol it imports
# (verbs_register_driver_<PABI>, ibv_cmd_* in IBVERBS_PRIVATE_<PABI>) must be
# defined there with the same version.
imports() { # VERSION SYMBOL of the undefined IBVERBS_* symbols
    objdump -T "$1" | awk '/\*UND\*/ { v = $(NF-1); gsub(/[()]/, "", v)
        if (v ~ /^IBVERBS_/) print v, $NF }' | sort -u
}
exports() { # VERSION SYMBOL of the defined symbols
    objdump -T "$1" | awk '!/\*UND\*/ && NF >= 7 { v = $(NF-1); gsub(/[()]/, "", v)
        print v, $NF }' | sort -u
}

guest_libibverbs() { # prints the path of the guest's libibverbs.so.1
    local name=libibverbs1 version arch deb
    local lib="$GUEST_USERSPACE_ROOT/usr/lib/$GUEST_MULTIARCH/libibverbs.so.1"
    if [[ -e "$lib" ]]; then
        printf '%s\n' "$lib"
        return
    fi
    # Not unpacked yet: take the pinned .deb (the file fetch-guest.sh would download).
    read -r version arch < <(awk -v n="$name" '$1 == n { print $2, $3 }' "$GUEST_PKG_LIST") ||
        die "$name is not pinned in $GUEST_PKG_LIST"
    deb="$GUEST_DEB_DIR/${name}_${version//:/%3a}_$arch.deb"
    if [[ ! -s "$deb" ]]; then
        apt_update_if_stale guest
        mkdir -p "$GUEST_DEB_DIR"
        (cd "$GUEST_DEB_DIR" && apt_guest -q download "$name=$version" >&2) ||
            die "could not download $name=$version (pinned in $GUEST_PKG_LIST)"
    fi
    local dir="$build/rdma-core-build/guest-$name"
    rm -rf "$dir"
    dpkg-deb -x "$deb" "$dir"
    printf '%s\n' "$dir/usr/lib/$GUEST_MULTIARCH/libibverbs.so.1"
}

glib="$(guest_libibverbs)"
[[ -e "$glib" ]] || die "guest libibverbs not found at $glib"
needed="$(imports "$so")"
grep -q "^IBVERBS_PRIVATE_$pabi verbs_register_driver_$pabi\$" <<<"$needed" ||
    die "$so does not import verbs_register_driver_$pabi@IBVERBS_PRIVATE_$pabi; not a provider?"
missing="$(comm -23 <(printf '%s\n' "$needed") <(exports "$glib"))"
[[ -z "$missing" ]] ||
    die "the guest's libibverbs ($glib) lacks symbols the provider needs:
$missing
  The provider was built against another rdma-core ABI than the guest runs:
  align RDMA_CORE_DEB_VERSION (scripts/fetch-rdma-core.sh) with libibverbs1 in $GUEST_PKG_LIST."
log "private ABI IBVERBS_PRIVATE_$pabi: all $(wc -l <<<"$needed") imports present in the guest's libibverbs"

# --- outputs ----------------------------------------------------------------

# Replaced only when changed, so whatever depends on them (the guest image)
# is not rebuilt for nothing.
install_if_changed() { # SRC DEST
    if ! cmp -s "$1" "$2"; then
        cp -f "$1" "$2.tmp.$$"
        mv -f "$2.tmp.$$" "$2"
    fi
}

# The guest test programs: plain libibverbs API (IBVERBS_1.x symbols), so the
# guest's libibverbs runs them. Small: each built whenever it is older than
# its source or the header both include.
mkdir -p "$out"
check_common="$VMMBIB_ROOT/tests/guest/verbs-common.h"
for prog in verbs-check integrity limits; do
    check_src="$VMMBIB_ROOT/tests/guest/$prog.c"
    check_bin="$obj/vmmbib-$prog"
    if [[ ! "$check_bin" -nt "$check_src" || ! "$check_bin" -nt "$check_common" ]]; then
        log "building vmmbib-$prog"
        ccache cc -std=gnu11 -O2 -g -Wall -Wextra -Wno-missing-field-initializers -Werror \
            -I"$obj/include" -o "$check_bin" "$check_src" -L"$obj/lib" -libverbs >&2 ||
            die "building $check_src failed (see the compiler output above)"
    fi
    install_if_changed "$check_bin" "$out/vmmbib-$prog"
done

install_if_changed "$so" "$out/lib$target.so"
drv="$obj/vmmbib.driver.guest"
printf 'driver %s/libvmmbib\n' "$GUEST_PROVIDER_DIR" >"$drv"
install_if_changed "$drv" "$out/vmmbib.driver"
log "provider ready: $out/lib$target.so (guest: $GUEST_PROVIDER_DIR/lib$target.so),
  $out/vmmbib.driver (guest: /etc/libibverbs.d/vmmbib.driver)"

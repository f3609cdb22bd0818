#!/bin/bash
# Builds our QEMU: Debian's QEMU 10.0 source + our device and qtests overlaid.
#
#   scripts/build-qemu.sh [--sanitizers] BUILD_DIR [STAMP]
#
# BUILD_DIR is the top-level meson build dir (it must already contain
# meson-uninstalled/vmmbib-uninstalled.pc, i.e. `meson setup` has run).
# Produces:
#   BUILD_DIR/qemu-src/                   patched copy of the pristine cache source
#                                         (our files are symlinks into the repo)
#   BUILD_DIR/qemu/qemu-system-x86_64     the emulator
#   BUILD_DIR/qemu/tests/qtest/qos-test   the qos test driver with our test in it
# STAMP (optional) is touched on success (meson custom_target output).
#
# --sanitizers builds the same tree a second time, with clang, ASan, UBSan
# and QEMU's libFuzzer support, into BUILD_DIR/qemu-sanitizers/ (the same
# two programs plus qemu-fuzz-x86_64), linking a libvmmbib compiled here
# with the same sanitizers into BUILD_DIR/qemu-sanitizers/vmmbib/.
#
# Incremental: the tree is re-copied only when glue.patch or the pinned QEMU
# version changed, configure re-runs only when its options changed, and ccache
# (in $VMMBIB_CACHE/ccache) makes even a fresh build dir cheap.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SANITIZERS=
if [[ ${1:-} == --sanitizers ]]; then
    SANITIZERS=1
    shift
fi
[[ $# -ge 1 ]] || die "usage: $0 [--sanitizers] BUILD_DIR [STAMP]"
mkdir -p "$1"
B="$(cd "$1" && pwd)"
STAMP="${2:-}"
TREE="$B/qemu-src"
QBUILD="$B/qemu${SANITIZERS:+-sanitizers}"
GLUE="$VMMBIB_ROOT/qemu-device/glue.patch"
PY=/usr/bin/python3     # Debian's python (has meson >= 1.5); never a pyenv shim

need_cmd ccache
need_cmd ninja
need_cmd patch
[[ -z $SANITIZERS ]] || need_cmd clang
[[ -x $PY ]] || die "$PY missing; run scripts/setup-host.sh"

# Our host library, seen by QEMU's dependency('vmmbib') through pkg-config;
# pkg-config prefers vmmbib-uninstalled.pc, which points into our build dir.
# host-lib/ holds vmmbib-verbs.pc when meson found libibverbs: QEMU then
# links the verbs backend too (dependency('vmmbib-verbs', required: false)).
export PKG_CONFIG_PATH="$B/meson-uninstalled:$B/host-lib${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
[[ -e "$B/meson-uninstalled/vmmbib-uninstalled.pc" ]] ||
    die "$B/meson-uninstalled/vmmbib-uninstalled.pc not found.
  Run 'meson setup $B' first (host-lib/meson.build must pkg.generate() the 'vmmbib' library)."

# Both builds share the tree: let only one of them copy or overlay at a time.
exec 8>>"$B/.qemu-src.lock"
flock 8

# --- 1. pristine source -> private, patched tree -------------------------

PRISTINE="$("$VMMBIB_ROOT/scripts/fetch-qemu.sh")"
[[ -d "$PRISTINE" ]] || die "fetch-qemu.sh did not produce a source dir"
tree_id="$QEMU_DEB_VERSION $(sha256sum <"$GLUE" | cut -d' ' -f1)"

if [[ "$(cat "$TREE/.vmmbib-tree" 2>/dev/null || true)" != "$tree_id" ]]; then
    log "qemu: copying pristine source into $TREE and applying glue.patch"
    rm -rf "$TREE" "$TREE.tmp"
    # A real copy, not hardlinks: patch and meson's subproject handling write
    # into the tree and must never alter the pristine copy in the cache.
    cp -a "$PRISTINE" "$TREE.tmp"
    patch -d "$TREE.tmp" -p1 --batch --forward --quiet <"$GLUE" ||
        die "qemu-device/glue.patch does not apply to $PRISTINE.
  Regenerate it with diff -u against that tree (see the header of glue.patch)."
    printf '%s\n' "$tree_id" >"$TREE.tmp/.vmmbib-tree"
    mv "$TREE.tmp" "$TREE"
fi

# --- 2. overlay our files as symlinks (every run: picks up new files) -----

overlay() {   # overlay SRC_DIR DEST_DIR [find args to exclude]
    local src=$1 dst=$2 f rel target
    shift 2
    [[ -d "$src" ]] || return 0
    while IFS= read -r -d '' f; do
        rel="${f#"$src"/}"
        target="$dst/$rel"
        if [[ -L "$target" ]]; then
            [[ "$(readlink "$target")" == "$f" ]] && continue
        elif [[ -e "$target" ]]; then
            die "overlay: $target is a file of QEMU itself; rename $f (we never shadow QEMU files)"
        fi
        mkdir -p "$(dirname "$target")"
        ln -sfn "$f" "$target"
    done < <(find "$src" -type f ! -name '*~' ! -name '.*' "$@" -print0)
}
overlay "$VMMBIB_ROOT/qemu-device" "$TREE" ! -name glue.patch
overlay "$VMMBIB_ROOT/tests/qtest" "$TREE/tests/qtest"
# The ABI header, so the device and the qtests can #include "vmmbypass_ib_abi.h".
overlay "$VMMBIB_ROOT/include" "$TREE/include" -name '*.h'
# Drop links to files that were removed or renamed in the repo.
find "$TREE" -type l -lname "$VMMBIB_ROOT/*" ! -exec test -e {} \; -delete
exec 8>&-

# --- 3. configure (only when not yet done or the options changed) --------

# Debian's firmware (seabios, qemu-system-data, ipxe-qemu from setup-host.sh):
# the source package carries no blobs, and we install none.
FIRMWARE_DIRS=(/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu)

# Neither the tests nor the demo need a UI, audio, USB passthrough, network
# backends or the tools: start from no optional feature at all and enable
# what we use, so the result doesn't depend on which -dev packages happen
# to be installed. -Werror keeps our files warning-free (QEMU itself is
# clean with gcc 12).
CONFIGURE_ARGS=(
    --target-list=x86_64-softmmu
    --python="$PY"
    --cc="ccache gcc" --cxx="ccache g++" --host-cc=gcc
    --without-default-features
    --enable-tcg --enable-kvm --enable-pixman --enable-fdt=system
    --enable-vhost-user --enable-vhost-kernel
    --enable-trace-backends=log
    --disable-docs --disable-tools --disable-guest-agent --disable-user
    --disable-install-blobs --disable-download
    --enable-werror
    --firmwarepath="$(IFS=:; echo "${FIRMWARE_DIRS[*]}")"
)
TARGETS=(qemu-system-x86_64 tests/qtest/qos-test)

if [[ -n $SANITIZERS ]]; then
    # clang: QEMU's fuzzing support needs its libFuzzer. No -Werror here:
    # the gcc build is the warning gate, and Debian 12's clang 14 is older
    # than what QEMU's own CI builds with.
    CONFIGURE_ARGS=("${CONFIGURE_ARGS[@]/--enable-werror/--disable-werror}")
    CONFIGURE_ARGS=("${CONFIGURE_ARGS[@]/#--cc=*/--cc=ccache clang}")
    CONFIGURE_ARGS=("${CONFIGURE_ARGS[@]/#--cxx=*/--cxx=ccache clang++}")
    CONFIGURE_ARGS=("${CONFIGURE_ARGS[@]/#--host-cc=*/--host-cc=clang}")
    CONFIGURE_ARGS+=(--enable-asan --enable-ubsan --enable-fuzzing)
    TARGETS+=(qemu-fuzz-x86_64)

    # libvmmbib with the same sanitizers, plus libFuzzer's coverage
    # instrumentation (fuzzer-no-link) so that generic-fuzz also sees which
    # engine paths a controlq request reached.  Its pkg-config file replaces
    # the uninstalled one of the gcc build.
    VMMBIB_SAN="$QBUILD/vmmbib"
    build_sanitized_vmmbib() {
        local src=$VMMBIB_ROOT/host-lib f objs=()
        mkdir -p "$VMMBIB_SAN/obj"
        for f in "$src"/*.c; do
            objs+=("$VMMBIB_SAN/obj/$(basename "$f" .c).o")
            ccache clang -c -g -O1 -std=gnu11 -D_GNU_SOURCE -pthread \
                -fsanitize=address,undefined,fuzzer-no-link \
                -fno-omit-frame-pointer \
                -I"$VMMBIB_ROOT/include" -I"$src/include" -I"$src" \
                "$f" -o "${objs[-1]}" || return 1
        done
        rm -f "$VMMBIB_SAN/libvmmbib.a.tmp"
        ar rcs "$VMMBIB_SAN/libvmmbib.a.tmp" "${objs[@]}" &&
            mv -f "$VMMBIB_SAN/libvmmbib.a.tmp" "$VMMBIB_SAN/libvmmbib.a"
    }
    if [[ ! -e $VMMBIB_SAN/libvmmbib.a ]] ||
        [[ -n $(find "$VMMBIB_ROOT/host-lib" "$VMMBIB_ROOT/include" -maxdepth 2 \
                -name '*.[ch]' -newer "$VMMBIB_SAN/libvmmbib.a" | head -1) ]]; then
        log "qemu-sanitizers: building libvmmbib with clang, ASan and UBSan"
        heavy build_sanitized_vmmbib || die "building the sanitized libvmmbib failed (see above)"
    fi
    cat >"$VMMBIB_SAN/vmmbib.pc" <<EOF
Name: vmmbib
Description: vmmbypass-ib host backend, ASan + UBSan build
Version: 0.1
Libs: -L$VMMBIB_SAN -lvmmbib -pthread
Cflags: -I$VMMBIB_ROOT/include -I$VMMBIB_ROOT/host-lib/include -I$VMMBIB_ROOT/host-lib -pthread
EOF
    # Not the gcc build's vmmbib-uninstalled.pc: pkg-config would prefer it.
    export PKG_CONFIG_PATH="$VMMBIB_SAN"
fi
config_id="$tree_id ${CONFIGURE_ARGS[*]}"

# ccache: keep hits across build dirs (e.g. a fresh CI clone elsewhere) by
# hashing paths relative to the build dir. Debug info of a cache hit may then
# name another build dir's paths; gdb's `set substitute-path` fixes that.
export CCACHE_BASEDIR="$B" CCACHE_NOHASHDIR=1
mkdir -p "$CCACHE_DIR"

if [[ ! -f "$QBUILD/build.ninja" || "$(cat "$QBUILD/.vmmbib-config" 2>/dev/null || true)" != "$config_id" ]]; then
    conf_log="$QBUILD-configure.log"
    log "qemu: configure (output: $conf_log)"
    # Keep the sanitized libvmmbib (built above) across a reconfigure.
    find "$QBUILD" -mindepth 1 -maxdepth 1 ! -name vmmbib -exec rm -rf {} + 2>/dev/null || true
    mkdir -p "$QBUILD"
    (cd "$QBUILD" && heavy "$TREE/configure" "${CONFIGURE_ARGS[@]}") >"$conf_log" 2>&1 || {
        tail -n 40 "$conf_log" >&2
        die "QEMU configure failed; full output in $conf_log"
    }
    printf '%s\n' "$config_id" >"$QBUILD/.vmmbib-config"
    printf '%s\n' "$PKG_CONFIG_PATH" >"$QBUILD/.vmmbib-pkg-config-path"
fi

# meson takes PKG_CONFIG_PATH from the environment of the first configure
# only: a build dir configured with another path (before host-lib/ and its
# vmmbib-verbs.pc joined it) is told the new one, which costs a meson
# regeneration, not a rebuild.
if [[ "$(cat "$QBUILD/.vmmbib-pkg-config-path" 2>/dev/null || true)" != "$PKG_CONFIG_PATH" ]]; then
    log "qemu: pkg-config path $PKG_CONFIG_PATH"
    "$QBUILD/pyvenv/bin/meson" configure "$QBUILD" \
        -Dpkg_config_path="${PKG_CONFIG_PATH//:/,}" >/dev/null ||
        die "meson configure -Dpkg_config_path failed in $QBUILD"
    printf '%s\n' "$PKG_CONFIG_PATH" >"$QBUILD/.vmmbib-pkg-config-path"
fi

# Run from its build dir, QEMU resolves every firmware dir under
# qemu-bundle/ (its uninstalled image of the install tree): link Debian's
# dirs there so `build/qemu/qemu-system-x86_64` finds bios-256k.bin & co.
for d in "${FIRMWARE_DIRS[@]}"; do
    link="$QBUILD/qemu-bundle$d"
    if [[ "$(readlink "$link" 2>/dev/null)" != "$d" ]]; then
        mkdir -p "$(dirname "$link")"
        ln -sfn "$d" "$link"
    fi
done

# --- 4. build -------------------------------------------------------------

log "qemu: building ${TARGETS[*]} in $QBUILD (ninja, $(nproc) jobs)"
# -k 0: a broken qtest must not keep the emulator from being (re)built.
heavy ninja -C "$QBUILD" -j"$(nproc)" -k 0 "${TARGETS[@]}" ||
    die "QEMU build failed (see the compiler output above)"

log "qemu: ready: $QBUILD/qemu-system-x86_64"
[[ -z "$STAMP" ]] || touch "$STAMP"

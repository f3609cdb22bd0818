#!/bin/bash
# Builds the libFuzzer targets of host-lib with clang (ASan + UBSan) and
# runs them, or runs QEMU's generic-fuzz target on our device.
#
#   scripts/fuzz.sh BUILD_DIR TARGET SECONDS     build, then fuzz for SECONDS
#   scripts/fuzz.sh BUILD_DIR TARGET build       build only
#
# TARGET is cmd or wqe (host-lib/fuzz/fuzz_TARGET.c), or qemu: QEMU's
# generic-fuzz (tests/qtest/fuzz/generic_fuzz.c in the QEMU tree) driving a
# vmmbypass-ib device through its BARs, PCI config space and the guest RAM
# its virtqueues read, in BUILD_DIR/qemu-sanitizers/qemu-fuzz-x86_64
# (scripts/build-qemu.sh --sanitizers).  The corpus grows in
# $VMMBIB_CACHE/fuzz-corpus/TARGET, so later runs start where earlier ones
# ended; crashes are written to BUILD_DIR/fuzz/ and fail the run.
# Extra arguments after SECONDS go to libFuzzer (e.g. -jobs=2).
# VMMBIB_FUZZ_QEMU_CHECK=N (make check's run of the qemu target): N inputs
# from a fixed random seed, starting from the generated seeds alone in a
# scratch corpus, so the run does not depend on what earlier runs found (the
# long runs reached inputs that take minutes; docs/security.md).
# docs/security.md says how to run them for hours.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage="usage: $0 BUILD_DIR cmd|wqe|qemu SECONDS|build [libFuzzer args...]"
build=${1:?$usage}
target=${2:?$usage}
what=${3:?$usage}
shift 3
need_cmd clang

src=$VMMBIB_ROOT/host-lib
out=$(cd "$build" && pwd)/fuzz
bin=$out/fuzz_$target
mkdir -p "$out"
corpus=$VMMBIB_CACHE/fuzz-corpus/$target

if [[ $target == qemu ]]; then
    bin=$(cd "$build" && pwd)/qemu-sanitizers/qemu-fuzz-x86_64
    if [[ $what == build ]]; then
        exec "$VMMBIB_ROOT/scripts/build-qemu.sh" --sanitizers "$build"
    fi
    [[ -x $bin ]] || die "$bin is not built.
  Run: scripts/fuzz.sh $build qemu build   (or meson compile -C $build)"
    # The device alone on a PC: doorbells trapped (doorbell=mmio) so that the
    # fuzzer's MMIO writes reach them (RAM-backed doorbell pages are not
    # fuzzable regions); two UAR slots keep BAR 2 small, and small object
    # limits make the fuzzer meet them.  Matching both type names puts BAR 4
    # (virtio common, notify, ISR and device config), BAR 2 (the UAR window:
    # kick pages) and the PCI config space in play; the virtqueue rings,
    # controlq requests and page lists are guest RAM, which generic-fuzz
    # fills from its DMA patterns whenever the device reads it.
    # x-restart-handles: generic-fuzz resets the machine between inputs,
    # and a seed can name its objects only if their handles start over.
    export QEMU_FUZZ_ARGS="-M pc -nodefaults -device vmmbypass-ib,doorbell=mmio,uar-slots=2,max-pd=4,max-mr=4,max-cq=4,max-qp=4,max-srq=2,max-ah=4,max-cqe=64,max-qp-wr=64,max-srq-wr=64,max-mr-pages=16,max-pinned-mb=8,x-restart-handles=on"
    export QEMU_FUZZ_OBJECTS="vmmbypass-ib vmmbypass-ib-device"
    # Every sanitizer report ends the run (libFuzzer keeps its input).
    export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    cd "$out"
    if [[ -n ${VMMBIB_FUZZ_QEMU_CHECK:-} ]]; then
        corpus=$(mktemp -d "$out/qemu-check-corpus.XXXXXX")
        trap 'rm -rf "$corpus"' EXIT
        set -- -runs="$VMMBIB_FUZZ_QEMU_CHECK" -seed=1 "$@"
    fi
    # Seeds that set the controlq up and send requests (rewritten each run,
    # so a change of the script reaches an old corpus).
    /usr/bin/python3 "$VMMBIB_ROOT/scripts/fuzz-qemu-seeds.py" "$corpus"
    log "fuzz: QEMU generic-fuzz on vmmbypass-ib for ${what}s (corpus $corpus)"
    # A unit that runs 120 s (libFuzzer's default: 1200) or a process past
    # 2 GiB (30-minute runs stay under 800 MB, docs/security.md) is a
    # finding: the run (or -jobs worker) stops with the stalled unit's
    # stack or the heap profile of the largest live allocations, and keeps
    # the input as qemu-timeout-* or qemu-oom-*.
    "$bin" --fuzz-target=generic-fuzz -max_total_time="$what" \
        -rss_limit_mb=2048 -timeout=120 -artifact_prefix="$out/qemu-" \
        -print_final_stats=1 "$@" "$corpus"
    exit
fi

# Rebuild when any source is newer than the binary (a few seconds).
if [[ ! -x $bin ]] || [[ -n $(find "$src" "$VMMBIB_ROOT/include" -name '*.[ch]' -newer "$bin" | head -1) ]]; then
    log "fuzz: building $bin"
    clang -g -O1 -std=gnu11 -D_GNU_SOURCE \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I"$VMMBIB_ROOT/include" -I"$src/include" -I"$src" \
        "$src"/*.c "$src/tests/guest.c" "$src/fuzz/fuzz_$target.c" \
        -lpthread -o "$bin"
fi
[[ $what == build ]] && exit 0

mkdir -p "$corpus"
log "fuzz: $target for ${what}s (corpus $corpus)"
cd "$out"
# -fork=0, one process: the engine thread lives inside it.
"$bin" -max_total_time="$what" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$@" "$corpus"

#!/bin/bash
# Builds the libFuzzer targets of host-lib with clang (ASan + UBSan) and
# runs them.
#
#   scripts/fuzz.sh BUILD_DIR TARGET SECONDS     build, then fuzz for SECONDS
#   scripts/fuzz.sh BUILD_DIR TARGET build       build only
#
# TARGET is cmd or wqe (host-lib/fuzz/fuzz_TARGET.c).  The corpus grows in
# $VMMBIB_CACHE/fuzz-corpus/TARGET, so later runs start where earlier ones
# ended; crashes are written to BUILD_DIR/fuzz/ and fail the run.
# docs/security.md says how to run them for hours.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=${1:?usage: $0 BUILD_DIR cmd|wqe SECONDS|build}
target=${2:?usage: $0 BUILD_DIR cmd|wqe SECONDS|build}
what=${3:?usage: $0 BUILD_DIR cmd|wqe SECONDS|build}
need_cmd clang

src=$VMMBIB_ROOT/host-lib
out=$(cd "$build" && pwd)/fuzz
bin=$out/fuzz_$target
mkdir -p "$out"

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

corpus=$VMMBIB_CACHE/fuzz-corpus/$target
mkdir -p "$corpus"
log "fuzz: $target for ${what}s (corpus $corpus)"
cd "$out"
# -fork=0, one process: the engine thread lives inside it.
"$bin" -max_total_time="$what" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$corpus"

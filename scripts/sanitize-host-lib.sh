#!/bin/bash
# Builds one host-lib test program with clang, ASan and UBSan, and runs it
# (its TAP goes to stdout).  Any sanitizer report fails the run.
#
#   scripts/sanitize-host-lib.sh BUILD_DIR TEST_SOURCE...
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=${1:?usage: $0 BUILD_DIR TEST_SOURCE...}
shift
need_cmd clang
src=$VMMBIB_ROOT/host-lib
out=$(cd "$build" && pwd)/sanitize
name=$(basename "$1" .c)
bin=$out/$name
mkdir -p "$out"
if [[ ! -x $bin ]] || [[ -n $(find "$src" "$VMMBIB_ROOT/include" -name '*.[ch]' -newer "$bin" | head -1) ]]; then
    clang -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall \
        -fsanitize=address,undefined -fno-sanitize-recover=all \
        -fno-omit-frame-pointer \
        -I"$VMMBIB_ROOT/include" -I"$src/include" -I"$src" \
        "$src"/*.c "$@" -lpthread -o "$bin" >&2
fi
# Leaks are errors too; halt_on_error makes a report fail the test.
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    exec "$bin"

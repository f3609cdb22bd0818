#!/bin/bash
# Builds one host-lib test program with clang's ThreadSanitizer and runs it
# with THREADS engine threads (VMMBIB_TEST_ENGINE_THREADS; its TAP goes to
# stdout).  Any ThreadSanitizer report fails the run.
#
#   scripts/tsan-host-lib.sh BUILD_DIR THREADS TEST_SOURCE...
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=${1:?usage: $0 BUILD_DIR THREADS TEST_SOURCE...}
threads=${2:?usage: $0 BUILD_DIR THREADS TEST_SOURCE...}
shift 2
need_cmd clang
src=$VMMBIB_ROOT/host-lib
out=$(cd "$build" && pwd)/sanitize
name=$(basename "$1" .c)-tsan
bin=$out/$name
mkdir -p "$out"
if [[ ! -x $bin ]] || [[ -n $(find "$src" "$VMMBIB_ROOT/include" -name '*.[ch]' -newer "$bin" | head -1) ]]; then
    clang -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -fsanitize=thread \
        -fno-omit-frame-pointer \
        -I"$VMMBIB_ROOT/include" -I"$src/include" -I"$src" \
        "$src"/*.c "$@" -lpthread -o "$bin" >&2
fi
# halt_on_error: the first report ends the run with a failure.
VMMBIB_TEST_ENGINE_THREADS=$threads \
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    exec "$bin"

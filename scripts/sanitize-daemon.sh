#!/bin/bash
# Builds vmmbibd and its test (host-lib/tests/test_daemon.c) with clang,
# ASan and UBSan, and runs the test against that daemon (TAP on stdout).
# A sanitizer report in the test fails it; one in the daemon makes it exit
# non-zero on SIGTERM, which the test checks, and its log is in the TAP.
#
#   scripts/sanitize-daemon.sh BUILD_DIR
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=${1:?usage: $0 BUILD_DIR}
need_cmd clang
src=$VMMBIB_ROOT/host-lib
out=$(cd "$build" && pwd)/sanitize
mkdir -p "$out"
flags=(-g -O1 -std=gnu11 -D_GNU_SOURCE -Wall
       -fsanitize=address,undefined -fno-sanitize-recover=all
       -fno-omit-frame-pointer
       -I"$VMMBIB_ROOT/include" -I"$src/include" -I"$src")
# The guest driver's device calls go to the client (see test_daemon.c).
wraps=-Wl,--wrap=vmmbib_dev_execute,--wrap=vmmbib_dev_db_pages,--wrap=vmmbib_dev_kick,--wrap=vmmbib_dev_doorbell

stale() {
    [[ ! -x $1 ]] || [[ -n $(find "$src" "$VMMBIB_ROOT/include" -name '*.[ch]' -newer "$1" | head -1) ]]
}
if stale "$out/vmmbibd"; then
    clang "${flags[@]}" "$src"/*.c "$src/daemon/vmmbibd.c" -lpthread \
        -o "$out/vmmbibd" >&2
fi
if stale "$out/test_daemon"; then
    clang "${flags[@]}" "$src"/*.c "$src/tests/test_daemon.c" \
        "$src/tests/guest.c" "$wraps" -lpthread -o "$out/test_daemon" >&2
fi
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    exec "$out/test_daemon" "$out/vmmbibd"

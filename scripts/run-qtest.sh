#!/bin/bash
# Runs, in TAP, every qos-test path that goes through a vmmbypass-ib node.
#
#   QTEST_QEMU_BINARY=build/qemu/qemu-system-x86_64 \
#       scripts/run-qtest.sh build/qemu/tests/qtest/qos-test [g_test args...]
#
# VMMBIB_QTEST_FILTER (an extended regexp, default: our node names) narrows
# the paths, e.g. VMMBIB_QTEST_FILTER=pci-ids. Extra args go to qos-test
# (e.g. --verbose).
set -euo pipefail

qos=${1:?usage: $0 QOS_TEST_BINARY [g_test args...]}
shift
filter=${VMMBIB_QTEST_FILTER:-/vmmbypass-ib}

# TAP readers show "Bail out!" lines as the reason of the failure.
[[ -x "$qos" ]] || { echo "Bail out! $qos is not built (run: meson compile -C build)"; exit 1; }
[[ -x "${QTEST_QEMU_BINARY:-}" ]] ||
    { echo "Bail out! QTEST_QEMU_BINARY (${QTEST_QEMU_BINARY:-unset}) is not an executable"; exit 1; }

# qos-test -l walks the graph for this QEMU binary and prints every path.
list="$("$qos" -l 2>&1)" || { printf '%s\n' "$list" | sed 's/^/# /'; echo "Bail out! qos-test -l failed"; exit 1; }
mapfile -t paths < <(printf '%s\n' "$list" | grep -E "$filter" | grep '^/' || true)
if ((${#paths[@]} == 0)); then
    echo "Bail out! no qos-test path matches '$filter'; is the device built in (-device help) and its libqos node registered?"
    exit 1
fi

args=()
for p in "${paths[@]}"; do args+=(-p "$p"); done
# GLib prints a running "1..N" plan after each -p path; a TAP stream may have
# only one, so drop those and print the plan once at the end. The test
# numbers are already consecutive. pipefail keeps qos-test's exit status.
set -o pipefail
"$qos" --tap -k "${args[@]}" "$@" | awk '
    /^1\.\.[0-9]+$/ { next }
    /^(not )?ok / { n++ }
    /^Bail out!/ { bailed = 1 }
    { print; fflush() }
    END { if (!bailed) print "1.." n }'

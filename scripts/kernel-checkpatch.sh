#!/usr/bin/env bash
# scripts/kernel-checkpatch.sh — runs the Linux kernel's checkpatch.pl --strict
# on the guest kernel driver, or on the files given.
#
# Usage: scripts/kernel-checkpatch.sh [FILE...]
#
# checkpatch.pl comes from Debian's linux-source package, through
# scripts/fetch-checkpatch.sh (a download of ~150 MB the first time).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_cmd perl
dir="$("$VMMBIB_ROOT/scripts/fetch-checkpatch.sh")"

if (($# == 0)); then
    set -- "$VMMBIB_ROOT"/guest-driver/kernel/*.[ch] "$VMMBIB_ROOT"/guest-driver/kernel/test/*.c
fi

# Ignored, with reason:
#   LINUX_VERSION_CODE   this out-of-tree module builds for the guest's 6.12
#                        and bookworm's 6.1; version conditionals mark the few
#                        places where the kernel API differs
#   CONSTANT_COMPARISON  checkpatch takes LINUX_VERSION_CODE for a variable
#                        in `#if LINUX_VERSION_CODE >= KERNEL_VERSION(...)`
# --no-tree: we are not inside a kernel tree; spelling.txt and
# const_structs.checkpatch are found next to checkpatch.pl.
perl "$dir/checkpatch.pl" --no-tree --strict --quiet --no-summary \
    --show-types --ignore LINUX_VERSION_CODE,CONSTANT_COMPARISON \
    -f "$@" || die "checkpatch.pl --strict found problems (above)"
log "checkpatch.pl --strict: no problems in $# files"

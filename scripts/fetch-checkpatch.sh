#!/usr/bin/env bash
# scripts/fetch-checkpatch.sh — puts the Linux kernel's checkpatch.pl (and the
# two data files it reads next to it) into the cache; prints that dir.
#
# Debian ships checkpatch.pl in no headers or tools package, only inside the
# kernel source tarball of linux-source-X.Y. The first run downloads that
# package from Debian's archive (about 150 MB; the version of the guest
# kernel, pinned in scripts/guest-vars.sh), keeps the three files and deletes
# the package. Later runs download nothing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/guest-vars.sh
source "$VMMBIB_ROOT/scripts/guest-vars.sh"

# linux-source-6.12 for a 6.12.x guest kernel, same package version.
series="${GUEST_KERNEL_ABI%.*}"
series="${series%%+*}"
pkg="linux-source-$series"
dir="$VMMBIB_CACHE/checkpatch/$pkg-$GUEST_KERNEL_VERSION"
files=(checkpatch.pl spelling.txt const_structs.checkpatch)

if [[ ! -f "$dir/.complete" ]]; then
    need_cmd dpkg-deb
    need_cmd apt-get
    dl="$VMMBIB_CACHE/downloads/checkpatch"
    deb="$dl/${pkg}_${GUEST_KERNEL_VERSION//:/%3a}_all.deb"
    if [[ ! -s "$deb" ]]; then
        apt_update_if_stale host
        mkdir -p "$dl"
        log "downloading $pkg=$GUEST_KERNEL_VERSION for checkpatch.pl (~150 MB, once)"
        # apt-get download checks the file against the signed index.
        (cd "$dl" && apt_host -q download "$pkg=$GUEST_KERNEL_VERSION" >&2) ||
            die "could not download $pkg=$GUEST_KERNEL_VERSION. If the archive dropped it,
  update GUEST_KERNEL_VERSION in scripts/guest-vars.sh (the guest kernel moves with it)."
    fi
    log "extracting checkpatch.pl from $(basename "$deb")"
    members=()
    for f in "${files[@]}"; do members+=("$pkg/scripts/$f"); done
    rm -rf "$dir.new"
    mkdir -p "$dir.new"
    # Decompressing the whole tarball takes ~10 s of CPU: a heavy step.
    # shellcheck disable=SC2016 # expanded by the inner bash
    heavy bash -c 'set -euo pipefail
        dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" |
            tar -xJ -C "$3" --strip-components=2 "${@:4}"' \
        _ "$deb" "./usr/src/$pkg.tar.xz" "$dir.new" "${members[@]}" ||
        die "$deb does not hold ${members[*]}"
    touch "$dir.new/.complete"
    rm -rf "$dir"
    mv "$dir.new" "$dir"
    # Only these three files were needed from the package.
    rm -f "$deb"
fi
printf '%s\n' "$dir"

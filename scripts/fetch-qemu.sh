#!/bin/bash
# Fetches Debian's QEMU source package (version pinned in lib.sh: QEMU_DEB_VERSION)
# through the private "guest" apt config (trixie deb-src) and unpacks it with
# Debian's patches applied into $VMMBIB_CACHE/src/. Nothing is done when it is
# already there. Prints the source dir on stdout.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dest="$(qemu_src_dir)"
stamp="$dest/.vmmbib-unpacked"
if [[ -e "$stamp" ]]; then
    printf '%s\n' "$dest"
    exit 0
fi

need_cmd dpkg-source
src="$VMMBIB_CACHE/src"
dl="$src/qemu-debsrc"          # .dsc + tarballs, kept so a re-unpack needs no download
mkdir -p "$dl"
v=${QEMU_DEB_VERSION#*:}
dsc="$dl/qemu_${v}.dsc"

if [[ ! -e "$dsc.ok" ]]; then
    apt_update_if_stale guest
    if ! apt_cache_guest showsrc qemu 2>/dev/null | grep -qx "Version: $QEMU_DEB_VERSION"; then
        # Stable updates replace the previous point release's source: take
        # the newest 10.0 one (glue.patch is written against 10.0).
        avail="$(apt_cache_guest showsrc qemu 2>/dev/null | sed -n 's/^Version: //p' | sort -u)"
        newest="$(grep '^1:10\.0\.' <<<"$avail" | sort -V | tail -n 1 || true)"
        [[ -n "$newest" ]] ||
            die "Debian source package qemu=$QEMU_DEB_VERSION is no longer in trixie, nor any other 10.0
  (available: $(tr '\n' ' ' <<<"${avail:-none}")). Pick one in scripts/lib.sh (QEMU_DEB_VERSION),
  then check that qemu-device/glue.patch still applies (make check)."
        warn "Debian source package qemu=$QEMU_DEB_VERSION is no longer in trixie; using $newest" \
            "(set QEMU_DEB_VERSION in scripts/lib.sh to make it the pin)"
        export QEMU_DEB_VERSION=$newest
        exec "${BASH_SOURCE[0]}" "$@"
    fi
    log "downloading Debian source qemu=$QEMU_DEB_VERSION (~40 MB)"
    # --download-only: we unpack ourselves into a temp dir so an interrupted run
    # never leaves a half-unpacked tree that looks complete.
    (cd "$dl" && apt_guest source -q --download-only "qemu=$QEMU_DEB_VERSION") ||
        die "apt-get source qemu=$QEMU_DEB_VERSION failed (see above); retry or check network access to deb.debian.org"
    [[ -e "$dsc" ]] || die "expected $dsc after download, not found"
    touch "$dsc.ok"
fi

log "unpacking qemu $v with Debian patches (dpkg-source -x)"
tmp="$src/.unpack-qemu.$$"
rm -rf "$tmp" "$dest"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
# dpkg-source verifies the tarballs' checksums against the .dsc.
dpkg-source --no-copy -x "$dsc" "$tmp/q" >&2 ||
    die "dpkg-source -x $dsc failed; delete $dl and run again to re-download"
mv "$tmp/q" "$dest"
touch "$stamp"
log "qemu source ready: $dest"
printf '%s\n' "$dest"

#!/bin/bash
# Fetches the upstream rdma-core source our provider builds in: the
# rdma-core_VERSION.orig.tar.gz of trixie's source package (the same upstream
# release as the guest's libibverbs1), through the private "guest" apt config.
# The tarball is checked against the SHA256 in trixie's Sources index and
# unpacked into $VMMBIB_CACHE/src/rdma-core-VERSION (kept pristine: builds copy
# it). Nothing is downloaded or unpacked when it is already there.
# Prints the source dir on stdout.
#
# Debian's own patches (debian.tar.xz) are not applied: in 56.1-1 they touch only
# providers/mana, nothing our provider or libibverbs' ABI depends on.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The pin: trixie's rdma-core, whose libibverbs1 runs in the guest. Change it
# together with tests/guest/packages.txt (libibverbs1), then rebuild the provider:
# scripts/build-provider.sh checks the private ABI against the guest's library.
RDMA_CORE_DEB_VERSION="${RDMA_CORE_DEB_VERSION:-56.1-1}"
upstream=${RDMA_CORE_DEB_VERSION%-*}
tarball="rdma-core_${upstream}.orig.tar.gz"

src="$VMMBIB_CACHE/src"
dest="$src/rdma-core-$upstream"
stamp="$dest/.vmmbib-unpacked"
if [[ -e "$stamp" ]]; then
    printf '%s\n' "$dest"
    exit 0
fi

dl="$src/rdma-core-debsrc"     # the verified tarball, kept so a re-unpack needs no download
mkdir -p "$dl"

# Prints "SHA256 DIRECTORY" of $tarball from the Sources record of our version.
index_entry() {
    apt_cache_guest showsrc rdma-core 2>/dev/null | awk -v ver="$RDMA_CORE_DEB_VERSION" -v f="$tarball" '
        BEGIN { RS = ""; FS = "\n" }         # one paragraph per source record
        {
            v = ""; dir = ""; sum = ""; in_sha = 0
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^ /) {            # continuation line of a multi-line field
                    if (in_sha) { split($i, w, " "); if (w[3] == f) sum = w[1] }
                    continue
                }
                in_sha = ($i ~ /^Checksums-Sha256:/)
                if ($i ~ /^Version: /) v = substr($i, 10)
                if ($i ~ /^Directory: /) dir = substr($i, 12)
            }
            if (v == ver && sum != "" && dir != "") { print sum, dir; exit }
        }'
}

apt_update_if_stale guest
read -r want_sha directory < <(index_entry) || true
if [[ -z "${want_sha:-}" ]]; then
    avail="$(apt_cache_guest showsrc rdma-core 2>/dev/null | sed -n 's/^Version: //p' | sort -u | tr '\n' ' ')"
    die "trixie's Sources index has no rdma-core $RDMA_CORE_DEB_VERSION with $tarball (available: ${avail:-none}).
  Pick one of those in scripts/fetch-rdma-core.sh (RDMA_CORE_DEB_VERSION), matching
  libibverbs1 in tests/guest/packages.txt."
fi

have_sha() { [[ -f "$dl/$tarball" ]] && [[ "$(sha256sum "$dl/$tarball" | cut -d' ' -f1)" == "$want_sha" ]]; }

if ! have_sha; then
    rm -f "$dl/$tarball"
    log "downloading rdma-core $RDMA_CORE_DEB_VERSION source (~2 MB)"
    # The archive serves the orig tarball but not always the .dsc, so apt-get
    # source may fail after fetching the tarball: its status says nothing; the
    # checksum below decides.
    (cd "$dl" && apt_guest source -q --download-only "rdma-core=$RDMA_CORE_DEB_VERSION" >&2) ||
        warn "apt-get source rdma-core failed (expected when the .dsc is missing); checking the tarball"
    if [[ ! -f "$dl/$tarball" ]]; then
        # Fallback: the file's pool address, from the index's Directory field.
        url="$DEBIAN_MIRROR/$directory/$tarball"
        log "fetching $url"
        APT_CONFIG="$(apt_conf guest)" /usr/lib/apt/apt-helper -q download-file \
            "$url" "$dl/$tarball" "SHA256:$want_sha" >&2 ||
            die "could not download $url; check access to deb.debian.org and retry"
    fi
    # apt-get source also fetched Debian's packaging; we do not use it.
    rm -f "$dl"/rdma-core_*.debian.tar.* "$dl"/rdma-core_*.dsc
    if ! have_sha; then
        got="$(sha256sum "$dl/$tarball" | cut -d' ' -f1)"
        mv -f "$dl/$tarball" "$dl/$tarball.bad"
        die "$tarball: SHA256 $got does not match trixie's Sources index ($want_sha).
  The download is corrupt or not the archive's file (kept as $dl/$tarball.bad).
  Run again to retry; if it persists, refresh the index: VMMBIB_APT_REFRESH=1 $0"
    fi
fi

log "unpacking $tarball"
tmp="$src/.unpack-rdma-core.$$"
rm -rf "$tmp" "$dest"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
tar -xzf "$dl/$tarball" -C "$tmp" ||
    die "unpacking $dl/$tarball failed; delete it and run again to re-download"
[[ -f "$tmp/rdma-core-$upstream/CMakeLists.txt" ]] ||
    die "$tarball has no rdma-core-$upstream/CMakeLists.txt: unexpected layout"
printf '%s %s\n' "$RDMA_CORE_DEB_VERSION" "$want_sha" >"$tmp/rdma-core-$upstream/.vmmbib-unpacked"
mv "$tmp/rdma-core-$upstream" "$dest"
log "rdma-core source ready: $dest"
printf '%s\n' "$dest"

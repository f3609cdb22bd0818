#!/usr/bin/env bash
# scripts/fetch-guest.sh — download and unpack what the test guest is made of,
# into the cache (never installed on this host):
#   * the guest kernel: bookworm-backports' linux-image (+ its headers and kbuild,
#     so the guest kernel module can be built against it), pinned in
#     scripts/guest-vars.sh;
#   * the guest user space: trixie .debs (busybox, rdma-core, perftest, kmod, ...)
#     at the versions pinned in tests/guest/packages.txt.
# A second run downloads and unpacks nothing it already has.
#
# Usage: scripts/fetch-guest.sh              fetch + unpack (what the build runs);
#                                  prints the kernel build dir (KDIR) on stdout
#        scripts/fetch-guest.sh --update-pins  recompute the package closure from
#                                  the archive's current trixie, rewrite
#                                  tests/guest/packages.txt, then fetch
#        scripts/fetch-guest.sh --print-kdir  print the kernel build dir and exit
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/guest-vars.sh
source "$VMMBIB_ROOT/scripts/guest-vars.sh"

# What the guest needs; --update-pins adds the libraries they depend on.
# busybox, not busybox-static: the static build runs its own applets in
# preference to PATH (FEATURE_SH_STANDALONE), so scripts would get busybox's
# modprobe/ip instead of kmod's/iproute2's.
# kmod: real modprobe/depmod (module autoload by modalias, as udev does it);
# iproute2: `rdma link add ... type rxe` for the soft-RoCE comparison guests.
GUEST_SEED_PACKAGES=(
    busybox kmod libc6 libgcc-s1
    libibverbs1 ibverbs-utils ibverbs-providers librdmacm1t64 rdmacm-utils
    libibumad3 perftest libpci3 libnl-3-200 libnl-route-3-200 iproute2
)
# Libraries that only serve logins, PAM or debconf: not wanted in a test guest.
GUEST_SKIP_RE='^(libpam|libaudit|libsemanage|libdebconfclient|libdebian-installer|libnewt|libslang|libtextwrap)'

KERNEL_PACKAGES=(
    "linux-image-$GUEST_KREL-unsigned"
    "linux-headers-$GUEST_KREL"
    "linux-headers-$GUEST_KERNEL_ABI-common"
    "linux-kbuild-$GUEST_KERNEL_ABI"
)

# apt-get download names files NAME_VERSION_ARCH.deb with ':' (epoch) as %3a.
deb_file() { printf '%s/%s_%s_%s.deb' "$GUEST_DEB_DIR" "$1" "${2//:/%3a}" "$3"; }

# Downloads, through apt flavour FLAVOUR, each "NAME VERSION ARCH" argument whose
# .deb is not in GUEST_DEB_DIR yet — in one apt-get call (apt's start-up, not the
# network, is what costs time here).
download_debs() {
    local flavour=$1 spec name version arch
    shift
    local -a want=()
    for spec in "$@"; do
        read -r name version arch <<<"$spec"
        [[ -s "$(deb_file "$name" "$version" "$arch")" ]] || want+=("$name=$version")
    done
    ((${#want[@]})) || return 0
    log "downloading ${#want[@]} packages from $flavour's archive"
    mkdir -p "$GUEST_DEB_DIR"
    # apt-get verifies each file against the signed index; `download` always
    # writes to the current directory.
    (cd "$GUEST_DEB_DIR" && "apt_$flavour" -q download "${want[@]}" >&2) || die \
        "could not download from $flavour's archive: ${want[*]}
  The archive may have dropped a pinned version. For the kernel, update GUEST_KERNEL_VERSION
  in scripts/guest-vars.sh; for user space run: scripts/fetch-guest.sh --update-pins"
    for spec in "$@"; do
        read -r name version arch <<<"$spec"
        [[ -s "$(deb_file "$name" "$version" "$arch")" ]] ||
            die "apt-get download of $name=$version did not produce $(deb_file "$name" "$version" "$arch")"
    done
}

# ---- the pinned package list ---------------------------------------------

# Prints "name" for SEEDS and the library closure of their Depends/Pre-Depends
# in trixie. For an alternative (a | b) or a virtual package, the first real
# package apt lists is taken — the same choice apt would make on an empty system.
compute_closure() {
    local -A seen=()
    local -a queue=("$@")
    local p dep
    for p in "$@"; do seen[$p]=1; done
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        while read -r dep; do
            [[ -n "$dep" && -z "${seen[$dep]:-}" ]] || continue
            seen[$dep]=1
            if is_library "$dep" && ! [[ "$dep" =~ $GUEST_SKIP_RE ]]; then
                queue+=("$dep")
            fi
        done < <(apt_cache_guest depends --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances "$p" | pick_first_alternatives)
        printf '%s\n' "$p"
    done | sort -u
}

# A library package: Debian's "libs" section (zlib1g is one, without the lib
# prefix), or a lib* name.
is_library() {
    [[ "$1" =~ ^lib ]] ||
        apt_cache_guest show --no-all-versions "$1" 2>/dev/null | grep -qx 'Section: libs'
}

# Reads `apt-cache depends PKG` and prints one chosen package per dependency.
pick_first_alternatives() {
    awk '
        # "  Depends: x" / " |Depends: x" (| = more alternatives follow)
        /^ *\|?(Pre)?Depends: / {
            name = $2
            if (!in_group) { chosen = "" }
            in_group = ($1 ~ /^\|/)
            if (chosen == "" && name !~ /^</) { chosen = name }
            want_provider = (chosen == "" && name ~ /^</)
            if (!in_group && chosen != "") { print chosen; chosen = "" }
            next
        }
        # deeper-indented lines list the providers of a virtual package
        /^    [^ ]/ {
            if (want_provider && chosen == "") {
                chosen = $1; want_provider = 0
                if (!in_group) { print chosen; chosen = "" }
            }
            next
        }
        { want_provider = 0 }
    '
}

update_pins() {
    apt_update_if_stale guest
    log "computing the trixie library closure of: ${GUEST_SEED_PACKAGES[*]}"
    local -a names
    mapfile -t names < <(compute_closure "${GUEST_SEED_PACKAGES[@]}")
    local tmp="$GUEST_PKG_LIST.tmp.$$"
    {
        printf '# Guest user space: Debian trixie binary packages, unpacked into the\n'
        printf '# test initramfs (never installed on the host). Generated by\n'
        printf '#   scripts/fetch-guest.sh --update-pins   (%s)\n' "$(date -u +%Y-%m-%d)"
        printf '# from its seed list plus their library dependencies.\n'
        printf '# package version architecture\n'
        apt_cache_guest show --no-all-versions "${names[@]}" |
            awk '/^Package: /{p=$2} /^Version: /{v=$2} /^Architecture: /{a=$2}
                 /^$/ { if (p != "") print p, v, a; p = "" }
                 END { if (p != "") print p, v, a }' | sort -u
    } >"$tmp"
    mv -f "$tmp" "$GUEST_PKG_LIST"
    log "wrote $GUEST_PKG_LIST ($(grep -vc '^#' "$GUEST_PKG_LIST") packages)"
}

# ---- fetching and unpacking ----------------------------------------------

# Unpacks the .debs given as arguments into DEST, atomically: a half-finished
# unpack is never mistaken for a finished one. STAMP content identifies the set.
unpack_debs() {
    local dest=$1 stamp=$2 deb
    shift 2
    if [[ -f "$dest/.vmmbib-unpacked" ]] && [[ "$(cat "$dest/.vmmbib-unpacked")" == "$stamp" ]]; then
        return 0
    fi
    log "unpacking ${#@} packages into $dest"
    rm -rf "$dest.new"
    mkdir -p "$dest.new"
    for deb in "$@"; do
        dpkg-deb -x "$deb" "$dest.new"
    done
    printf '%s\n' "$stamp" >"$dest.new/.vmmbib-unpacked"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
}

# The pinned kernel's .debs are not cached: when the archive no longer serves
# that version, record the newest 6.12 build it does serve as the fallback
# (see guest-vars.sh) and run this script again with it.
kernel_in_archive_or_fallback() {
    local image="linux-image-$GUEST_KREL-unsigned" newest version
    apt_cache_host madison "$image" 2>/dev/null |
        grep -q "| $GUEST_KERNEL_VERSION |" && return 0
    newest="$(apt_cache_host search --names-only \
        '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' 2>/dev/null |
        cut -d' ' -f1 | sort -V | tail -n 1)"
    version="$(apt_cache_host madison "$newest" 2>/dev/null | head -n 1 |
        cut -d'|' -f2 | tr -d ' ')"
    [[ -n "$version" && "$version" != "$GUEST_KERNEL_VERSION" ]] ||
        die "the archive serves no guest kernel: neither $image=$GUEST_KERNEL_VERSION nor any
  other 6.12 build for bookworm. Check the host's apt sources, then pick a version with
    APT_CONFIG=\$(source scripts/lib.sh; apt_conf host) apt-cache policy 'linux-image-6.12*-amd64-unsigned'
  and set GUEST_KERNEL_VERSION in scripts/guest-vars.sh."
    warn "guest kernel $GUEST_KERNEL_VERSION is no longer in the archive; using $version" \
        "(set GUEST_KERNEL_VERSION=\"$version\" in scripts/guest-vars.sh to make it the pin)"
    mkdir -p "$(dirname "$GUEST_KERNEL_FALLBACK_FILE")"
    printf '%s\n' "$version" >"$GUEST_KERNEL_FALLBACK_FILE"
    exec 9>&-
    exec "${BASH_SOURCE[0]}" "$@"
}

fetch_kernel() {
    local -a specs=() debs=()
    local name arch
    for name in "${KERNEL_PACKAGES[@]}"; do
        case "$name" in *-common) arch=all ;; *) arch=amd64 ;; esac
        specs+=("$name $GUEST_KERNEL_VERSION $arch")
        debs+=("$(deb_file "$name" "$GUEST_KERNEL_VERSION" "$arch")")
    done
    download_debs host "${specs[@]}"
    # The stamp names the unpack steps too (v2: Makefile rewrite); bump it when they change.
    unpack_debs "$GUEST_KERNEL_ROOT" "kernel $GUEST_KERNEL_VERSION v2" "${debs[@]}" || return 1
    fix_kdir
}

# The headers package's Makefile is one line: `include /usr/src/linux-headers-
# ABI-common/Makefile`, an absolute path that only exists once the package is
# installed. Everything else in the tree uses relative symlinks (scripts/ and
# tools/ point into ../../lib/linux-kbuild-ABI), so replacing that one line
# with an include relative to this Makefile makes the unpacked tree usable
# where it is, without writing to /usr/src.
fix_kdir() {
    local mk="$GUEST_KDIR/Makefile"
    local content="# Rewritten by scripts/fetch-guest.sh: include the -common tree next to this
# directory (the package names it by its absolute /usr/src path).
include \$(dir \$(realpath \$(lastword \$(MAKEFILE_LIST))))../linux-headers-$GUEST_KERNEL_ABI-common/Makefile"
    [[ -f "$mk" ]] || die "$mk missing: the linux-headers package layout changed?"
    if [[ "$(cat "$mk")" != "$content" ]]; then
        grep -q "^include /usr/src/linux-headers-$GUEST_KERNEL_ABI-common/Makefile" "$mk" ||
            die "unexpected content in $mk; expected the Debian one-line include"
        printf '%s\n' "$content" >"$mk"
    fi
    [[ -d "$GUEST_KDIR/scripts/" ]] || die "$GUEST_KDIR/scripts does not resolve (linux-kbuild not unpacked?)"
}

# Reads "name version arch" lines and prints them again, each with the version
# trixie serves today where the archive has dropped the pinned one: a stable
# release's point updates replace the binaries of the previous point release,
# so a pin of a library like libc6 goes stale within months. Pins the archive
# still has, and every pin whose .deb is already in the cache, stay as they are.
resolve_pins() {
    local -a specs=() stale=()
    local -A served=() newest=()
    local name version arch v rest spec
    while read -r name version arch; do
        [[ -z "$name" || "$name" == \#* ]] && continue
        specs+=("$name $version $arch")
        [[ -s "$(deb_file "$name" "$version" "$arch")" ]] || stale+=("$name")
    done
    if ((${#stale[@]})); then
        # "  name | version | URL suite/main amd64 Packages", newest first
        while IFS='|' read -r name v rest; do
            [[ "$rest" == *" Packages" ]] || continue
            name=${name// /} v=${v// /}
            served["$name $v"]=1
            [[ -n "${newest[$name]:-}" ]] || newest[$name]=$v
        done < <(apt_cache_guest madison "${stale[@]}" 2>/dev/null)
    fi
    for spec in "${specs[@]}"; do
        read -r name version arch <<<"$spec"
        if [[ -s "$(deb_file "$name" "$version" "$arch")" || -n "${served["$name $version"]:-}" ||
            -z "${newest[$name]:-}" ]]; then
            printf '%s %s %s\n' "$name" "$version" "$arch"
        else
            warn "$name $version is no longer in trixie; using ${newest[$name]} (refresh tests/guest/packages.txt with scripts/fetch-guest.sh --update-pins)"
            printf '%s %s %s\n' "$name" "${newest[$name]}" "$arch"
        fi
    done
}

fetch_userspace() {
    [[ -f "$GUEST_PKG_LIST" ]] || die "$GUEST_PKG_LIST missing; create it with: scripts/fetch-guest.sh --update-pins"
    local -a specs=() debs=()
    local name version arch
    while read -r name version arch; do
        specs+=("$name $version $arch")
        debs+=("$(deb_file "$name" "$version" "$arch")")
    done < <(resolve_pins <"$GUEST_PKG_LIST")
    download_debs guest "${specs[@]}"
    ((${#debs[@]})) || die "$GUEST_PKG_LIST lists no packages"
    unpack_debs "$GUEST_USERSPACE_ROOT" "$(printf '%s\n' "${specs[@]}" | sha256sum | cut -d' ' -f1)" "${debs[@]}"
}

main() {
    case "${1:-}" in
    --print-kdir) printf '%s\n' "$GUEST_KDIR"; return 0 ;;
    --update-pins) update_pins ;;
    "") ;;
    *) die "unknown argument '$1' (use --update-pins or --print-kdir)" ;;
    esac
    need_cmd dpkg-deb
    need_cmd apt-get
    # Concurrent builds share the cache: one fetch/unpack at a time.
    mkdir -p "$VMMBIB_CACHE"
    exec 9>"$VMMBIB_CACHE/.fetch-guest.lock"
    flock 9
    # Only ask the archive when something is missing (offline re-runs work).
    local missing=0 name version arch n
    for n in "${KERNEL_PACKAGES[@]}"; do
        compgen -G "$GUEST_DEB_DIR/${n}_${GUEST_KERNEL_VERSION//:/%3a}_*.deb" >/dev/null || missing=1
    done
    if [[ -f "$GUEST_PKG_LIST" ]]; then
        while read -r name version arch; do
            [[ -z "$name" || "$name" == \#* ]] && continue
            [[ -s "$(deb_file "$name" "$version" "$arch")" ]] || missing=1
        done <"$GUEST_PKG_LIST"
    fi
    if ((missing)); then
        apt_update_if_stale host
        apt_update_if_stale guest
        kernel_in_archive_or_fallback "$@"
    fi
    fetch_kernel
    fetch_userspace
    log "guest kernel $GUEST_KREL: $GUEST_KERNEL_ROOT (KDIR=$GUEST_KDIR)"
    log "guest user space: $GUEST_USERSPACE_ROOT"
    printf '%s\n' "$GUEST_KDIR"
}

main "$@"

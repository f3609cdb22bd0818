#!/bin/bash
# Installs what building and testing vmmbypass-ib needs on a Debian 12 host.
# Idempotent; a fast no-op (dpkg-query only) when everything is present.
#   bookworm packages   -> through the private "host" apt config (bookworm + updates +
#                          security), so unreachable extra repos in /etc/apt never break us
#   meson, pycotap      -> from bookworm-backports (QEMU 10 needs meson >= 1.5)
# Never edits /etc/apt. Needs root only when something is missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# From bookworm. Add here what new parts of the project need.
HOST_PKGS=(
    # toolchain + build systems
    build-essential ccache ninja-build pkg-config cmake
    # clang with its ASan/UBSan runtimes and libFuzzer (libclang-rt-14-dev):
    # the sanitized host-lib tests, the fuzzers and the second QEMU build
    # (scripts/build-qemu.sh --sanitizers); llvm's llvm-symbolizer puts file
    # and line into sanitizer reports
    clang libclang-rt-14-dev llvm
    flex bison patch dpkg-dev python3 python3-venv gdb
    # QEMU build deps (system libs we link against)
    libglib2.0-dev libfdt-dev libpixman-1-dev zlib1g-dev
    # firmware our QEMU loads at run time (--firmwarepath points at these)
    seabios qemu-system-data ipxe-qemu
    # guest image / kernel module work
    cpio xz-utils zstd kmod dwarves linux-headers-amd64
    # rdma-core provider build
    libnl-3-dev libnl-route-3-dev libudev-dev
    # host-lib's verbs backend (host-lib/verbs, docs/design-verbs.md)
    libibverbs-dev ibverbs-providers
    # memcheck of the host-lib tests, callgrind profile of make bench
    valgrind
    # make bench (bench/vms.py): perf profiles of the VM figures, PNG plots
    linux-perf gnuplot-nox
    # suite libvirt (tests/libvirt, docs/libvirt.md): a private libvirtd with
    # its QEMU driver, virsh and virt-xml-validate. --no-install-recommends
    # keeps Debian's qemu-system-x86 out: the domains run our QEMU.
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
)
# From bookworm-backports, with the minimum version we need.
declare -A BPO_MIN=([meson]=1.5 [python3-pycotap]=0)

missing=()
for p in "${HOST_PKGS[@]}"; do
    [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" == "ii "* ]] || missing+=("$p")
done
bpo_missing=()
for p in "${!BPO_MIN[@]}"; do
    v="$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$p" 2>/dev/null || true)"
    if [[ "$v" != "ii "* ]] || ! dpkg --compare-versions "${v#ii  }" ge "${BPO_MIN[$p]}"; then
        bpo_missing+=("$p")
    fi
done

if ((${#missing[@]} == 0 && ${#bpo_missing[@]} == 0)); then
    log "host packages: all present"
    exit 0
fi

[[ $(id -u) -eq 0 ]] ||
    die "missing host packages: ${missing[*]} ${bpo_missing[*]}. Run: sudo $0"

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)

apt_update_if_stale host

if ((${#missing[@]})); then
    log "installing from bookworm: ${missing[*]}"
    # Backports are pinned at 100 by their Release file, so bookworm wins here.
    apt_host install "${APT_OPTS[@]}" "${missing[@]}" ||
        die "installing ${missing[*]} failed (see apt output above)"
fi

if ((${#bpo_missing[@]})); then
    targets=()
    for p in "${bpo_missing[@]}"; do targets+=("$p/bookworm-backports"); done
    # Dry run first: only the packages we asked for may come from backports, and
    # nothing may be removed; otherwise stop instead of changing the host unexpectedly.
    sim="$(apt_host install -s "${APT_OPTS[@]}" "${targets[@]}")" ||
        die "apt cannot resolve ${targets[*]}: $sim"
    unexpected="$(awk -v want=" ${bpo_missing[*]} " '
        /^Remv / { print; next }
        /^Inst / && /bpo[0-9]|backports/ { if (index(want, " " $2 " ") == 0) print }' <<<"$sim")"
    [[ -z "$unexpected" ]] ||
        die "installing ${targets[*]} would also change:
$unexpected
Refusing to pull more from bookworm-backports than asked. Install meson >= ${BPO_MIN[meson]} by hand."
    log "installing from bookworm-backports: ${bpo_missing[*]}"
    apt_host install "${APT_OPTS[@]}" "${targets[@]}" ||
        die "installing ${targets[*]} failed (see apt output above)"
fi

# Verify the result rather than trusting apt's exit status alone.
mv="$(dpkg-query -W -f='${Version}' meson)"
dpkg --compare-versions "$mv" ge "${BPO_MIN[meson]}" ||
    die "meson $mv installed, but >= ${BPO_MIN[meson]} is needed"
log "host packages: done (meson $mv)"

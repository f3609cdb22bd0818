# shellcheck shell=bash
# scripts/lib.sh — sourced (never executed) by the project's scripts.
#
# Provides, with stable names other scripts rely on:
#   VMMBIB_ROOT        top of the source tree
#   VMMBIB_CACHE       download/unpack/ccache dir outside build/ (survives `rm -rf build`)
#   CCACHE_DIR         exported, inside VMMBIB_CACHE
#   log MSG...         progress message on stderr
#   warn MSG...        warning on stderr
#   die MSG...         error on stderr, exit 1
#   need_cmd CMD [HINT]  die unless CMD is on PATH
#   heavy CMD...       run CMD (a program or shell function) holding /tmp/vmmbib-heavy.lock
#                      (one heavy job at a time on this 2-core machine); re-entrant:
#                      children see VMMBIB_HEAVY_LOCKED=1 and don't wait again
#   apt_host ARGS...   apt-get with the private "host" config
#                      (bookworm + updates + security + backports binaries, system dpkg status)
#   apt_guest ARGS...  apt-get with the private "guest" config
#                      (trixie binaries + deb-src, empty dpkg status: download/source only!)
#   apt_cache_host / apt_cache_guest ARGS...  apt-cache with the same configs
#   apt_update_if_stale host|guest   `apt-get update` through that config only when its
#                      lists are missing or older than a day (VMMBIB_APT_REFRESH=1 forces)
#   apt_conf host|guest  prints the path of that config file (for APT_CONFIG=...)
#   QEMU_DEB_VERSION   pinned Debian qemu source version; qemu_src_dir prints its
#                      unpacked, pristine dir in the cache (scripts/fetch-qemu.sh fills it)
#
# Neither config touches /etc/apt: each has its own sources.list, lists and cache,
# and SourceParts/Preferences point at empty dirs so the system's extra repositories
# (some of them unreachable here) and pins never interfere.

if [[ -n "${VMMBIB_LIB_SOURCED:-}" ]]; then
    return 0
fi
VMMBIB_LIB_SOURCED=1

VMMBIB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VMMBIB_ROOT

: "${VMMBIB_CACHE:=${XDG_CACHE_HOME:-${HOME:?HOME is not set; set VMMBIB_CACHE}/.cache}/vmmbypass-ib}"
export VMMBIB_CACHE
: "${CCACHE_DIR:=$VMMBIB_CACHE/ccache}"
export CCACHE_DIR

VMMBIB_HEAVY_LOCK=/tmp/vmmbib-heavy.lock
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Bold prefix only on a terminal, so logs and CI output stay plain text.
if [[ -t 2 ]]; then _VMMBIB_B=$'\033[1m' _VMMBIB_N=$'\033[0m'; else _VMMBIB_B='' _VMMBIB_N=''; fi
log()  { printf '%s[vmmbib %(%H:%M:%S)T]%s %s\n' "$_VMMBIB_B" -1 "$_VMMBIB_N" "$*" >&2; }
warn() { printf '[vmmbib] WARNING: %s\n' "$*" >&2; }
die()  { printf '[vmmbib] ERROR: %s\n' "$*" >&2; exit 1; }

need_cmd() {
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' not found. ${2:-Run scripts/setup-host.sh (as root) first.}"
}

# Serialise CPU-heavy steps between concurrent builds on this machine. A nested
# call from a child that already holds the lock must not wait for itself.
# CMD may be a shell function. The lock lives on fd 9 of a subshell; CMD runs
# with fd 9 closed so that nothing it leaves running keeps the lock.
heavy() {
    if [[ -n "${VMMBIB_HEAVY_LOCKED:-}" ]]; then
        "$@"
        return
    fi
    (
        exec 9>>"$VMMBIB_HEAVY_LOCK"
        if ! flock -n 9; then
            log "waiting for $VMMBIB_HEAVY_LOCK (another heavy build is running)"
            flock 9
        fi
        VMMBIB_HEAVY_LOCKED=1 "$@" 9>&-
    )
}

# --- private apt configurations -------------------------------------------

_apt_dir() { printf '%s/apt/%s' "$VMMBIB_CACHE" "$1"; }

apt_conf() {
    local name=$1 dir
    dir="$(_apt_dir "$name")"
    _apt_write_conf "$name" "$dir"
    printf '%s/apt.conf\n' "$dir"
}

# Writes (or refreshes, if its content changed) the config of one flavour.
_apt_write_conf() {
    local name=$1 dir=$2 sources status_line
    case "$name" in
    host)
        # bookworm + its updates/security so that dependencies of -dev packages match
        # what is already installed; backports only for packages asked for explicitly.
        sources="deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bookworm main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bookworm-updates main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_SECURITY_MIRROR bookworm-security main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bookworm-backports main"
        # Installing goes through the real dpkg database.
        status_line=""
        ;;
    guest)
        sources="deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR trixie main
deb-src [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR trixie main"
        # Empty status: this config only downloads; it must never see/alter host packages.
        status_line="Dir::State::status \"$dir/status\";"
        ;;
    *) die "apt config '$name' unknown (use host or guest)" ;;
    esac
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/empty"
    [[ -e "$dir/status" ]] || : >"$dir/status"
    local conf="// generated by scripts/lib.sh — private apt config '$name'
Dir::Etc::SourceList \"$dir/sources.list\";
Dir::Etc::SourceParts \"$dir/empty\";
Dir::Etc::Preferences \"$dir/empty/none\";
Dir::Etc::PreferencesParts \"$dir/empty\";
Dir::State::Lists \"$dir/lists\";
Dir::Cache \"$dir/cache\";
Dir::Cache::pkgcache \"\";
Dir::Cache::srcpkgcache \"\";
$status_line
Acquire::Languages \"none\";
// our dirs live under \$HOME, which the _apt sandbox user cannot write
APT::Sandbox::User \"root\";
APT::Get::Show-Versions \"true\";
"
    _write_if_changed "$dir/sources.list" "$sources"
    _write_if_changed "$dir/apt.conf" "$conf"
}

_write_if_changed() {
    local f=$1 content=$2
    # (both sides through $(...), which drops trailing newlines alike)
    if [[ ! -f "$f" ]] || [[ "$(cat "$f")" != "$(printf '%s' "$content")" ]]; then
        printf '%s\n' "$content" >"$f.tmp.$$" && mv -f "$f.tmp.$$" "$f"
    fi
}

# apt-get/apt-cache through one flavour; a per-flavour lock keeps concurrent
# helpers from updating lists under each other's feet.
_apt_run() {
    local name=$1 tool=$2 conf
    shift 2
    conf="$(apt_conf "$name")"
    APT_CONFIG="$conf" flock "$(_apt_dir "$name")/lock.flock" "$tool" "$@"
}

apt_update_if_stale() {
    local name=$1 dir
    dir="$(_apt_dir "$name")"
    apt_conf "$name" >/dev/null
    # Our own stamp (apt stamps list files with the server's dates, not ours);
    # a changed sources.list also forces an update.
    local stamp="$dir/lists/.updated"
    if [[ -z "${VMMBIB_APT_REFRESH:-}" && -e "$stamp" ]] &&
        [[ -n "$(find "$stamp" -mmin -1440 -print 2>/dev/null)" ]] &&
        [[ -z "$(find "$dir/sources.list" -newer "$stamp" -print 2>/dev/null)" ]]; then
        return 0
    fi
    log "apt ($name): updating package lists from $DEBIAN_MIRROR"
    # -o APT::Update::Error-Mode=any: a failed index is an error, not a warning
    # (older apt ignores the option; we then still check the result below).
    _apt_run "$name" apt-get -q -o APT::Update::Error-Mode=any update >&2 ||
        die "apt-get update through the private '$name' config ($dir/apt.conf) failed.
  Is deb.debian.org reachable? Retry, or inspect with: APT_CONFIG=$dir/apt.conf apt-get update"
    touch "$stamp"
}

apt_host()        { _apt_run host apt-get "$@"; }
apt_guest()       { _apt_run guest apt-get "$@"; }
apt_cache_host()  { _apt_run host apt-cache "$@"; }
apt_cache_guest() { _apt_run guest apt-cache "$@"; }

# --- pinned sources ---------------------------------------------------------

# Debian's QEMU source package we build on (change here, nowhere else).
QEMU_DEB_VERSION="${QEMU_DEB_VERSION:-1:10.0.13+ds-0+deb13u1}"

# Unpacked, Debian-patched QEMU source in the cache (pristine; never modify).
qemu_src_dir() {
    local v=${QEMU_DEB_VERSION#*:}
    printf '%s/src/qemu-%s\n' "$VMMBIB_CACHE" "${v%-*}"
}

#!/usr/bin/env python3
"""The device under libvirt: a private libvirtd boots the docs/examples domains.

Prints TAP (meson suite `libvirt`). Steps, one or more results each:
  1. virt-xml-validate every docs/examples/*.xml;
  2. start a libvirtd of our own: qemu:///session of an unprivileged user
     (as root: nobody, through setpriv), with HOME and every XDG_* directory in
     a fresh temporary directory, so its configuration, state, sockets, logs
     and capability cache all live there (a root libvirtd is always the
     system instance, with fixed paths under /etc, /run and /var);
  3. one domain, the device's own engine in QEMU: `virsh define` the example
     vmmbib-tcg.xml with its placeholder paths replaced (our QEMU, guest
     kernel and initramfs; this checkout; the temporary directory), `virsh
     start` it; read a device property through libvirt's QMP passthrough
     (`virsh qemu-monitor-command`); the guest's own results from its
     results port (a file-backed serial port): tests/guest/devinfo.sh sees
     vmmbib0 and `ibv_devinfo` works; `virsh destroy`, `virsh undefine`;
  4. two domains on the host daemon (with --vmmbibd): a vmmbibd of our own
     as the same user as libvirt's QEMU, its socket in the temporary
     directory; `virsh define` and `virsh start` vmmbib-daemon-vm1.xml and
     vmmbib-daemon-vm2.xml (guest RAM a shared memfd, the device joined to
     the daemon by a socket chardev, a UDP tunnel between the two for the
     TCP address exchange); tests/guest/two-vms.sh runs ibv_rc_pingpong -c
     between them (vm1 the server); the daemon's per-VM counters, read with
     `virsh qemu-monitor-command`, show the traffic; the daemon logged both
     VMs joining with different LIDs and leaving at `virsh destroy`, and
     stops cleanly on SIGTERM;
  5. stop libvirtd, check that no process of it (or of vmmbibd) is left,
     remove the temporary directory.
On a failure it prints the daemons' logs, the domains' QEMU logs and the
guest consoles. Needs the packages libvirt-daemon, libvirt-daemon-driver-qemu
and libvirt-clients (scripts/setup-host.sh).

  tests/libvirt/run-libvirt-test.py --qemu build/qemu/qemu-system-x86_64 \\
      --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.zst \\
      --vmmbibd build/host-lib/daemon/vmmbibd
"""

import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The guest runners' helpers (their free UDP ports), not copied.
_spec = importlib.util.spec_from_file_location(
    "run_two_vms", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "guest", "run-two-vms.py"))
two_vms = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(two_vms)

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
URI = "qemu:///session"
# The examples booted (docs/examples/NAME.xml): one domain with the device's
# own engine, and two whose devices join one vmmbibd.
SINGLE = ("vmmbib-tcg",)
PAIR = ("vmmbib-daemon-vm1", "vmmbib-daemon-vm2")
# Placeholders of the example files.
CHECKOUT = "/srv/vmmbypass-ib"
VMDIR = "/srv/vmmbib-vm"
DAEMON_SOCKET = "/run/vmmbibd/vmmbibd.sock"
UDP_PORT = re.compile(r"port='(4000[12])'")
KERNEL_TROUBLE = re.compile(
    r"(?:^|\] )(?:BUG:|WARNING:|Oops|Kernel panic|general protection fault|"
    r"UBSAN:|KASAN:|Call Trace:|kernel BUG at)"
)
GUEST_TAP = re.compile(r"^VMMBIB-TAP: (ok|not ok)\b\s*\d*\s*(?:-\s*)?(.*)$")
# two-vms.sh prints this right before its traffic (then sleeps 2 s): the
# counters read then are the baseline of those read at the end.
STATS_BASELINE = "VMMBIB-OUT: VMMBIB-STATS-BASELINE"
STATS = ("wqes", "cqes", "error-completions")


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = False

    def result(self, ok, name, diag=""):
        self.n += 1
        self.failed |= not ok
        print(f"{'ok' if ok else 'not ok'} {self.n} - {name}", flush=True)
        if diag and not ok:
            self.diag(diag)
        return ok

    def skip(self, name, why):
        self.n += 1
        print(f"ok {self.n} - {name} # SKIP {why}", flush=True)

    @staticmethod
    def diag(text):
        for line in str(text).rstrip().splitlines():
            print(f"# {line}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qemu", required=True, help="our qemu-system-x86_64")
    p.add_argument("--kernel", required=True, help="guest kernel (build/guest/vmlinuz)")
    p.add_argument("--initrd", required=True, help="guest initramfs (build/guest/initramfs.cpio.zst)")
    p.add_argument("--vmmbibd", help="the daemon (build/host-lib/daemon/vmmbibd); without it "
                   "the two domains on the daemon are skipped")
    p.add_argument("--examples", default=os.path.join(SRC, "docs", "examples"),
                   help="directory of the example domain XML files (default: docs/examples)")
    p.add_argument("--only", choices=("single", "daemon"),
                   help="boot only the one domain (single) or only the two on vmmbibd (daemon)")
    p.add_argument("--user", default="nobody",
                   help="when run as root: the unprivileged user libvirtd, QEMU and vmmbibd "
                   "run as (default nobody)")
    p.add_argument("--timeout", type=float, default=150,
                   help="seconds the guests may take from `virsh start` to their results "
                   "(default 150)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory (and print its path)")
    args = p.parse_args(argv)
    for path in (args.qemu, args.kernel, args.initrd, args.vmmbibd):
        if path is not None and not os.path.isfile(path):
            p.error(f"{path}: no such file (build first: make build)")
    if args.only == "daemon" and not args.vmmbibd:
        p.error("--only daemon needs --vmmbibd")
    return args


class Libvirt:
    """A libvirtd of our own and virsh talking to it, all under one directory."""

    def __init__(self, top, user):
        self.top = top
        self.proc = None
        self.prefix = []
        self.user = str(os.geteuid())
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam(user)
            self.prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                           "--clear-groups", "--"]
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            self.user = user
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LC_ALL": "C",
            "HOME": f"{top}/home",
            "XDG_CONFIG_HOME": f"{top}/config",
            "XDG_RUNTIME_DIR": f"{top}/run",
            "XDG_CACHE_HOME": f"{top}/cache",
            "XDG_DATA_HOME": f"{top}/data",
            # virsh must never spawn a session daemon of its own
            "LIBVIRT_AUTOSTART": "0",
        }
        self.socket = f"{top}/run/libvirt/libvirt-sock"
        self.log = f"{top}/libvirtd.log"
        self.vmdir = f"{top}/vm"
        self.staged = {}
        self.domains = []       # defined and not undefined yet
        self.booted = []        # every domain defined: its files for the logs
        self.vmmbibd = None

    def qemu_log(self, name):
        return f"{self.top}/cache/libvirt/qemu/log/{name}.log"

    def prepare(self):
        for d in ("home", "config/libvirt", "run", "cache", "data", "vm", "vm/files"):
            os.makedirs(f"{self.top}/{d}", exist_ok=True)
        with open(f"{self.top}/config/libvirt/libvirtd.conf", "w") as f:
            f.write(f'log_outputs = "3:file:{self.log}"\n')
        with open(f"{self.top}/config/libvirt/qemu.conf", "w") as f:
            # QEMU's stdout/stderr straight to the domain log: no virtlogd
            f.write('stdio_handler = "file"\n')
        os.chmod(f"{self.top}/run", 0o700)
        for root, dirs, files in os.walk(self.top):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid)
        os.chown(self.top, self.uid, self.gid)

    def stage(self, path):
        """A copy of the file in our private directory, which the daemon's
        user reads: the checkout may sit below a directory it cannot enter (a
        CI clone in a 0700 temp dir, /root). QEMU finds its firmware by
        absolute paths, so a copy of the binary runs as the original does.
        Each file is copied once (a running QEMU's binary cannot be
        rewritten)."""
        if path not in self.staged:
            copy = f"{self.vmdir}/files/{len(self.staged)}-{os.path.basename(path)}"
            shutil.copy(path, copy)
            self.staged[path] = copy
        return self.staged[path]

    def usable(self, paths):
        """The paths the daemon's user cannot read (programs: execute)."""
        bad = []
        for path in paths:
            mode = "-x" if os.access(path, os.X_OK) else "-r"
            if subprocess.call(self.prefix + ["test", mode, path], env=self.env) != 0:
                bad.append(path)
        return bad

    def start(self, timeout=30):
        with open(f"{self.top}/libvirtd.out", "wb") as out:
            self.proc = subprocess.Popen(self.prefix + ["libvirtd"], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"libvirtd exited with status {self.proc.returncode}"
            if os.path.exists(self.socket):
                rc, out = self.virsh("uri")
                if rc == 0:
                    return None
            time.sleep(0.2)
        return f"libvirtd did not answer on {self.socket} within {timeout:.0f} s"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def virsh(self, *args, timeout=60):
        try:
            p = subprocess.run(self.prefix + ["virsh", "-q", "-c", URI, *args], env=self.env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, f"virsh {' '.join(args)}: no answer within {timeout} s"
        return p.returncode, (p.stdout + p.stderr).strip()

    def domstate(self, name):
        rc, out = self.virsh("domstate", name)
        return out if rc == 0 else None

    def qom_get(self, name, prop):
        """A property of the domain's vmmbypass-ib (id vmmbib0), or None."""
        rc, out = self.virsh("qemu-monitor-command", name, json.dumps(
            {"execute": "qom-get",
             "arguments": {"path": "/machine/peripheral/vmmbib0", "property": prop}}))
        try:
            return json.loads(out)["return"] if rc == 0 else None
        except (ValueError, KeyError):
            return None

    def stop(self, timeout=15):
        """Stops the daemon; returns an error text or None."""
        if not self.alive():
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return None
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f"libvirtd did not stop within {timeout} s of SIGTERM (killed)"

    def leftovers(self):
        """Processes whose environment names our directory: ours, still alive."""
        pids = []
        needle = f"={self.top}/".encode()
        for env_path in glob.glob("/proc/[0-9]*/environ"):
            pid = int(env_path.split("/")[2])
            if pid == os.getpid():
                continue
            try:
                with open(env_path, "rb") as f:
                    if needle in f.read():
                        pids.append(pid)
            except OSError:
                pass
        return pids


class Vmmbibd:
    """vmmbibd as libvirt's QEMU user (the socket admits only its own user),
    its socket where that user's libvirt keeps its runtime files."""

    def __init__(self, lv, binary):
        self.lv = lv
        self.binary = binary
        self.socket = f"{lv.top}/run/vmmbibd/vmmbibd.sock"
        self.log = f"{lv.top}/vmmbibd.log"
        self.proc = None

    def start(self, timeout=10):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.lv.prefix + [self.lv.stage(self.binary), f"--socket={self.socket}"],
                env=self.lv.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "listening on" not in read_text(self.log):
            if self.proc.poll() is not None:
                return f"vmmbibd exited with status {self.proc.returncode}"
            if time.monotonic() > deadline:
                return f"vmmbibd did not listen within {timeout} s"
            time.sleep(0.05)
        return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM; returns its exit status (None: it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def instantiate(lv, example, args, replace, edit=None):
    """The example with its placeholders replaced and the files it names
    staged, as a domain: {name, xml (path), files, console, results, vm_id};
    or an error text."""
    with open(example) as f:
        xml = f.read()
    for old, new in ((f"{CHECKOUT}/build/qemu/qemu-system-x86_64", os.path.abspath(args.qemu)),
                     (f"{CHECKOUT}/build/guest/vmlinuz", os.path.abspath(args.kernel)),
                     (f"{CHECKOUT}/build/guest/initramfs.cpio.zst", os.path.abspath(args.initrd)),
                     (CHECKOUT, SRC),
                     (VMDIR, lv.vmdir),
                     *replace.get("paths", {}).items()):
        xml = xml.replace(old, new)
    ports = replace.get("ports", {})
    xml = UDP_PORT.sub(lambda m: f"port='{ports.get(m.group(1), m.group(1))}'", xml)
    # The test guest's /init starts a shell after its script instead of
    # powering off: the domain keeps running for `virsh destroy` (and for
    # reading its counters).
    xml, n = re.subn(r"<cmdline>([^<]*)</cmdline>", r"<cmdline>\1 vmmbib.shell=1</cmdline>", xml)
    if n != 1:
        return f"{example}: expected one <cmdline>"
    if edit:
        xml = edit(xml)
    if "/srv/" in xml or f"={DAEMON_SOCKET}" in xml:
        return f"{example}: a placeholder path was not replaced"
    files = domain_files(xml)
    for path in files:
        try:
            copy = lv.stage(path)
        except OSError as e:
            return f"cannot copy {path} for the domain: {e}"
        xml = xml.replace(f">{path}<", f">{copy}<").replace(f"'{path}'", f"'{copy}'")
    serial = dict(re.findall(r"<source path='([^']+)'/>\s*<target type='isa-serial' "
                             r"port='(\d)'/>", xml))
    serial = {port: path for path, port in serial.items()}
    name = re.search(r"<name>([^<]+)</name>", xml)
    vm_id = re.search(r"vm-id=([^,']+)", xml)
    if not name or set(serial) != {"0", "1"}:
        return f"{example}: expected a <name> and file-backed serial ports 0 and 1"
    dom = {"name": name.group(1), "xml": f"{lv.vmdir}/{name.group(1)}.xml",
           "files": domain_files(xml), "console": serial["0"], "results": serial["1"],
           "vm_id": vm_id.group(1) if vm_id else None}
    with open(dom["xml"], "w") as f:
        f.write(xml)
    os.chown(dom["xml"], lv.uid, lv.gid)
    return dom


def domain_files(xml):
    """Every file the domain names: emulator, kernel, initrd, fw_cfg files."""
    files = re.findall(r"<(?:emulator|kernel|initrd)>([^<]+)<", xml)
    return files + re.findall(r"<entry name='[^']*' file='([^']+)'", xml)


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\r", "")
    except OSError:
        return ""


def define(tap, lv, args, examples, replace, edit=None):
    """Instantiates (edit(xml) changes the XML further) and defines the
    examples; their domains or None."""
    doms = []
    for example in examples:
        dom = instantiate(lv, os.path.join(args.examples, example + ".xml"), args, replace,
                          edit)
        if isinstance(dom, str):
            tap.result(False, f"instantiate {example}.xml", dom)
            return None
        doms.append(dom)
    bad = lv.usable(sorted({path for dom in doms for path in dom["files"]}))
    if not tap.result(not bad, f"the daemon's user ({lv.user}) can read the guests' files "
                      "and run our QEMU",
                      "not readable (or executable) for it: " + " ".join(bad)):
        return None
    for example, dom in zip(examples, doms):
        rc, out = lv.virsh("define", dom["xml"])
        if not tap.result(rc == 0, f"virsh define {example}.xml as {dom['name']} "
                          "(placeholders replaced)", out):
            return None
        lv.domains.append(dom["name"])
        lv.booted.append(dom)
    return doms


def start(tap, lv, doms):
    """virsh start each domain; True if all started."""
    for dom in doms:
        begin = time.monotonic()
        rc, out = lv.virsh("start", dom["name"], timeout=120)
        if not tap.result(rc == 0, f"virsh start {dom['name']}", out):
            return False
        dom["started"] = time.monotonic()
        tap.diag(f"{dom['name']} started in {dom['started'] - begin:.1f} s")
    return True


def start_refused(tap, lv, dom, why, want):
    """virsh start fails at once, with QEMU's error containing each of want."""
    rc, out = lv.virsh("start", dom["name"], timeout=120)
    missing = [w for w in want if w not in out]
    tap.result(rc != 0 and not missing and lv.domstate(dom["name"]) == "shut off",
               f"virsh start {dom['name']} fails {why}, saying: {' ... '.join(want)}",
               f"exit status {rc}: {out}")


def follow_guests(tap, lv, doms, timeout, on_line=None):
    """Follows the guests' results ports until each printed VMMBIB-DONE: TAP
    per guest result, named after its domain; on_line(dom, line) sees every
    line. True if every guest script finished with status 0."""
    deadline = time.monotonic() + timeout
    state = {dom["name"]: {"pos": 0, "partial": "", "done": None, "boot": False}
             for dom in doms}
    while True:
        for dom in doms:
            st = state[dom["name"]]
            if st["done"] is not None:
                continue
            text = read_text(dom["results"])
            st["partial"] += text[st["pos"]:]
            st["pos"] = len(text)
            *lines, st["partial"] = st["partial"].split("\n")
            for line in lines:
                m = GUEST_TAP.match(line)
                if on_line:
                    on_line(dom, line)
                if line.startswith("VMMBIB-BOOT"):
                    st["boot"] = True
                elif line.startswith("VMMBIB-TAP: #"):
                    tap.diag(f"{dom['name']}: " + line[len("VMMBIB-TAP: #"):].strip())
                elif m:
                    tap.result(m.group(1) == "ok", f"{dom['name']}: {m.group(2)}")
                elif line.startswith("VMMBIB-DONE rc="):
                    st["done"] = line.split("=", 1)[1].strip()
                    tap.result(st["done"] == "0", f"{dom['name']}: guest script finished "
                               f"with status 0 (rc={st['done']})")
                    tap.diag(f"{dom['name']}: done {time.monotonic() - dom['started']:.1f} s "
                             "after virsh start")
        running = [dom for dom in doms if state[dom["name"]]["done"] is None]
        if not running:
            return all(st["done"] == "0" for st in state.values())
        if time.monotonic() > deadline:
            for dom in running:
                how = "it started" if state[dom["name"]]["boot"] else "/init never started"
                tap.result(False, f"{dom['name']}: guest script finished within "
                           f"{timeout:.0f} s ({how})")
            return False
        for dom in running:
            st = lv.domstate(dom["name"])
            if st != "running":
                tap.result(False, f"{dom['name']}: guest script finished (the domain is '{st}')")
                return False
        time.sleep(0.5)


def check_console(tap, dom):
    console = read_text(dom["console"])
    trouble = [line for line in console.splitlines() if KERNEL_TROUBLE.search(line)]
    tap.result(bool(console) and not trouble,
               f"{dom['name']}: guest kernel log has no oops/BUG/WARNING",
               "\n".join(trouble[:20]) or "no console output")


def remove_domains(tap, lv):
    """virsh destroy and undefine every domain still defined."""
    while lv.domains:
        name = lv.domains.pop(0)
        if lv.domstate(name) == "running":
            rc, out = lv.virsh("destroy", name)
            tap.result(rc == 0 and lv.domstate(name) == "shut off", f"virsh destroy {name}", out)
        rc, out = lv.virsh("undefine", name)
        tap.result(rc == 0, f"virsh undefine {name}", out)
    rc, out = lv.virsh("list", "--all", "--name")
    tap.result(rc == 0 and out == "", "no domain left", out)


def run_single(tap, lv, args):
    """One domain, the device's own engine: vmmbib-tcg.xml."""
    doms = define(tap, lv, args, SINGLE, {})
    if doms and start(tap, lv, doms):
        dom = doms[0]
        # The guest needs several seconds to boot: the domain surely runs now.
        rc, out = lv.virsh("qemu-monitor-command", dom["name"], "--pretty",
                           '{"execute":"qom-get","arguments":{"path":"/machine/peripheral/'
                           'vmmbib0","property":"max-qp"}}')
        tap.result(rc == 0 and re.search(r'"return":\s*77\b', out) is not None,
                   "virsh qemu-monitor-command: qom-get of vmmbib0's max-qp is 77", out)
        follow_guests(tap, lv, doms, args.timeout)
        check_console(tap, dom)
    remove_domains(tap, lv)


def read_stats(lv, dom):
    return {name: lv.qom_get(dom["name"], "stats-" + name) for name in STATS}


def env_value(dom, key, default):
    """A variable of the env file the domain hands its guest."""
    for path in dom["files"]:
        if path.endswith(".env"):
            m = re.search(rf"^{key}=['\"]?([^'\"\n]*)", read_text(path), re.M)
            if m:
                return m.group(1)
    return default


def run_daemon_pair(tap, lv, args):
    """Two domains on one vmmbibd: ibv_rc_pingpong between them."""
    daemon = lv.vmmbibd = Vmmbibd(lv, args.vmmbibd)
    p1, p2 = two_vms.free_udp_ports(2)
    replace = {"paths": {DAEMON_SOCKET: daemon.socket}, "ports": {"40001": p1, "40002": p2}}
    doms = define(tap, lv, args, PAIR, replace)
    if doms:
        # No daemon yet: QEMU cannot connect the chardev and exits.
        start_refused(tap, lv, doms[0], "while no vmmbibd listens",
                      [daemon.socket])
    err = daemon.start()
    if not tap.result(err is None, f"a private vmmbibd (user {lv.user}) listens on "
                      f"{daemon.socket}", err):
        doms = None
    if doms:
        # Guest RAM that the daemon cannot map: the device refuses to join.
        private = define(tap, lv, args, PAIR[:1], replace, lambda xml: re.sub(
            r"\s*<memoryBacking>.*?</memoryBacking>", "", xml, flags=re.S).replace(
                "vmmbib-vm1", "vmmbib-private-ram"))
        if private:
            start_refused(tap, lv, private[0], "without <memoryBacking> memfd and shared",
                          ["guest RAM must be a shared memfd", "memory-backend-memfd"])
            lv.domains.remove(private[0]["name"])
            rc, out = lv.virsh("undefine", private[0]["name"])
            tap.result(rc == 0, f"virsh undefine {private[0]['name']}", out)
    started = bool(doms) and start(tap, lv, doms)
    if started:
        # QEMU joined the daemon while it started (the device's realize).
        log = read_text(daemon.log)
        lids = {}
        for dom in doms:
            m = re.search(rf"^vmmbibd: VM {re.escape(dom['vm_id'] or '?')}: connected, "
                          r"LID (\d+)", log, re.M)
            if tap.result(m is not None, f"vmmbibd: {dom['name']} joined as VM "
                          f"{dom['vm_id']}{', LID ' + m.group(1) if m else ''}", log):
                lids[dom["name"]] = m.group(1)
        tap.result(len(set(lids.values())) == len(doms),
                   f"vmmbibd: the domains are different ports (LIDs {', '.join(lids.values())})")

        baseline = {}

        def on_line(dom, line):
            if line.strip() == STATS_BASELINE:
                baseline[dom["name"]] = read_stats(lv, dom)

        follow_guests(tap, lv, doms, args.timeout, on_line)
        # The counters are the daemon's for the VM (STATS through the
        # socket): the traffic went through vmmbibd.
        for dom in doms:
            iters = int(env_value(dom, "VMMBIB_ITERS", "20"))
            base = baseline.get(dom["name"])
            now = read_stats(lv, dom)
            if not tap.result(base is not None and None not in base.values()
                              and None not in now.values(),
                              f"{dom['name']}: vmmbib0's counters read through virsh "
                              "qemu-monitor-command", f"baseline {base}, end {now}"):
                continue
            diff = {name: now[name] - base[name] for name in STATS}
            tap.diag(f"{dom['name']}: counters during the traffic: "
                     + ", ".join(f"{k} {v}" for k, v in diff.items()))
            # Each side sends `iters` messages and receives as many, every
            # one of them completing (rc_pingpong signals each send).
            tap.result(diff["wqes"] >= 2 * iters and diff["cqes"] >= 2 * iters
                       and diff["error-completions"] == 0,
                       f"{dom['name']}: the daemon's counters for it show the traffic "
                       f"(wqes >= {2 * iters}, cqes >= {2 * iters}, no error completions)",
                       f"{diff}")
        for dom in doms:
            check_console(tap, dom)
    remove_domains(tap, lv)
    # The QEMUs are gone: the daemon saw both connections close.
    log = read_text(daemon.log)
    for dom in doms if started else []:
        tap.result(re.search(rf"^vmmbibd: VM {re.escape(dom['vm_id'] or '?')}: .*disconnected",
                             log, re.M) is not None,
                   f"vmmbibd: VM {dom['vm_id']} left at virsh destroy", log)
    rc = daemon.stop()
    tap.result(rc == 0 and not os.path.exists(daemon.socket),
               f"vmmbibd stopped on SIGTERM with status 0 ({rc}) and removed its socket",
               read_text(daemon.log))


def run(args, tap, top):
    lv = Libvirt(top, args.user)
    lv.prepare()

    examples = sorted(glob.glob(os.path.join(args.examples, "*.xml")))
    tap.result(bool(examples), f"example domain XML files in {args.examples}")
    for ex in examples:
        p = subprocess.run(["virt-xml-validate", ex, "domain"], capture_output=True, text=True)
        tap.result(p.returncode == 0, f"virt-xml-validate {os.path.relpath(ex, SRC)}",
                   p.stdout + p.stderr)

    err = lv.start()
    if not tap.result(err is None, f"a private libvirtd answers on {URI} "
                      f"(user {lv.user}, files in {top})", err):
        return lv
    p = subprocess.run(["libvirtd", "--version"], env=lv.env, capture_output=True, text=True)
    tap.diag(p.stdout.strip())

    if args.only in (None, "single"):
        run_single(tap, lv, args)
    if args.only in (None, "daemon"):
        if args.vmmbibd:
            run_daemon_pair(tap, lv, args)
        else:
            tap.skip("two domains on vmmbibd", "no --vmmbibd")
    return lv


def cleanup(tap, lv):
    """destroy, undefine, stop the daemons, nothing left running."""
    if lv.alive() and os.path.exists(lv.socket) and lv.domains:
        remove_domains(tap, lv)
    if lv.vmmbibd and lv.vmmbibd.alive():
        rc = lv.vmmbibd.stop()
        tap.result(rc == 0, f"vmmbibd stopped (status {rc})")
    if lv.proc is not None:
        err = lv.stop()
        tap.result(err is None, "libvirtd stopped", err)
    # Our QEMU and any helper the daemons started carry our directory in
    # their environment; nothing of them may survive.
    left = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = lv.leftovers()
        if not left:
            break
        time.sleep(0.2)
    desc = []
    for pid in left:
        desc.append(f"{pid}: " + read_text(f"/proc/{pid}/cmdline").replace("\0", " ")[:200])
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    tap.result(not left, "no process of the daemons is left", "killed: " + "\n".join(desc))


def main(argv):
    args = parse_args(argv)
    missing = [c for c in ("libvirtd", "virsh", "virt-xml-validate", "setpriv")
               if shutil.which(c, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    if missing:
        print(f"not ok 1 - {' '.join(missing)} installed (scripts/setup-host.sh installs "
              "libvirt-daemon, libvirt-daemon-driver-qemu and libvirt-clients)\n1..1")
        return 1
    tap = Tap()
    t0 = time.monotonic()
    # Short path: UNIX socket names must stay under 108 bytes.
    top = tempfile.mkdtemp(prefix="vmmbib-lv-", dir="/tmp")
    lv = None
    try:
        lv = run(args, tap, top)
    except Exception as e:  # report, still clean up
        tap.result(False, f"test runner: {type(e).__name__}: {e}")
    finally:
        if lv is not None:
            try:
                cleanup(tap, lv)
            except Exception as e:
                tap.result(False, f"cleanup: {type(e).__name__}: {e}")
        if tap.failed and lv is not None:
            logs = [("libvirtd log", lv.log), ("libvirtd output", f"{top}/libvirtd.out")]
            if lv.vmmbibd:
                logs.append(("vmmbibd log", lv.vmmbibd.log))
            for dom in lv.booted:
                logs += [(f"QEMU log of {dom['name']}", lv.qemu_log(dom["name"])),
                         (f"guest console of {dom['name']}", dom["console"]),
                         (f"guest results port of {dom['name']}", dom["results"])]
            for title, path in logs:
                tap.diag(f"---- {title} ({path}):")
                tap.diag(read_text(path) or "(empty)")
            tap.diag("---- end of logs")
        if args.keep:
            tap.diag(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
            tap.result(not os.path.exists(top), f"temporary directory {top} removed")
    tap.diag(f"{time.monotonic() - t0:.1f} s wall time in all")
    print(f"1..{tap.n}", flush=True)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

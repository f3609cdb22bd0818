#!/usr/bin/env python3
"""The device under libvirt: a private libvirtd boots docs/examples/vmmbib-tcg.xml.

Prints TAP (meson suite `libvirt`). Steps, one result each:
  1. virt-xml-validate every docs/examples/*.xml;
  2. start a libvirtd of our own: qemu:///session of an unprivileged user
     (as root: nobody, through setpriv), with HOME and every XDG_* directory in
     a fresh temporary directory, so its configuration, state, sockets, logs
     and capability cache all live there (a root libvirtd is always the
     system instance, with fixed paths under /etc, /run and /var);
  3. `virsh define` the example with its placeholder paths replaced (our
     QEMU, guest kernel and initramfs; this checkout; the temporary
     directory), `virsh start` it;
  4. read a device property through libvirt's QMP passthrough
     (`virsh qemu-monitor-command`);
  5. the guest's own results from its results port (a file-backed serial
     port): tests/guest/devinfo.sh sees vmmbib0 and `ibv_devinfo` works;
  6. `virsh destroy`, `virsh undefine`, stop the daemon, check that no
     process of it is left, remove the temporary directory.
On a failure it prints the daemon's log, the domain's QEMU log and the guest
console. Needs the packages libvirt-daemon, libvirt-daemon-driver-qemu and
libvirt-clients (scripts/setup-host.sh).

  tests/libvirt/run-libvirt-test.py --qemu build/qemu/qemu-system-x86_64 \\
      --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.zst
"""

import argparse
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = "vmmbib-tcg"
DOMAIN = "vmmbib-tcg"
URI = "qemu:///session"
# Placeholders of the example files (docs/examples/*.xml).
CHECKOUT = "/srv/vmmbypass-ib"
VMDIR = "/srv/vmmbib-vm"
KERNEL_TROUBLE = re.compile(
    r"(?:^|\] )(?:BUG:|WARNING:|Oops|Kernel panic|general protection fault|"
    r"UBSAN:|KASAN:|Call Trace:|kernel BUG at)"
)
GUEST_TAP = re.compile(r"^VMMBIB-TAP: (ok|not ok)\b\s*\d*\s*(?:-\s*)?(.*)$")


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
    p.add_argument("--examples", default=os.path.join(SRC, "docs", "examples"),
                   help="directory of the example domain XML files (default: docs/examples)")
    p.add_argument("--user", default="nobody",
                   help="when run as root: the unprivileged user libvirtd and QEMU run as "
                   "(default nobody)")
    p.add_argument("--timeout", type=float, default=150,
                   help="seconds the guest may take from `virsh start` to its results (default 150)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory (and print its path)")
    args = p.parse_args(argv)
    for path in (args.qemu, args.kernel, args.initrd):
        if not os.path.isfile(path):
            p.error(f"{path}: no such file (build first: make build)")
    return args


class Libvirt:
    """A libvirtd of our own and virsh talking to it, all under one directory."""

    def __init__(self, top, user):
        self.top = top
        self.proc = None
        self.prefix = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam(user)
            self.prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                           "--clear-groups", "--"]
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
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
        self.qemu_log = f"{top}/cache/libvirt/qemu/log/{DOMAIN}.log"

    def prepare(self):
        for d in ("home", "config/libvirt", "run", "cache", "data", "vm"):
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

    def readable(self, paths):
        """The paths (and the emulator's x bit) the daemon's user cannot use."""
        bad = []
        for path in paths:
            mode = "-x" if path.endswith("qemu-system-x86_64") else "-r"
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

    def virsh(self, *args, timeout=60):
        try:
            p = subprocess.run(self.prefix + ["virsh", "-q", "-c", URI, *args], env=self.env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, f"virsh {' '.join(args)}: no answer within {timeout} s"
        return p.returncode, (p.stdout + p.stderr).strip()

    def domstate(self):
        rc, out = self.virsh("domstate", DOMAIN)
        return out if rc == 0 else None

    def stop(self, timeout=15):
        """Stops the daemon; returns an error text or None."""
        if not self.proc or self.proc.poll() is not None:
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


def instantiate(example, dest, args, vmdir):
    """The example with its placeholders replaced; returns an error or None."""
    with open(example) as f:
        xml = f.read()
    for old, new in ((f"{CHECKOUT}/build/qemu/qemu-system-x86_64", os.path.abspath(args.qemu)),
                     (f"{CHECKOUT}/build/guest/vmlinuz", os.path.abspath(args.kernel)),
                     (f"{CHECKOUT}/build/guest/initramfs.cpio.zst", os.path.abspath(args.initrd)),
                     (CHECKOUT, SRC),
                     (VMDIR, vmdir)):
        xml = xml.replace(old, new)
    # The test guest's /init starts a shell after its script instead of
    # powering off: the domain keeps running for `virsh destroy`.
    xml, n = re.subn(r"<cmdline>([^<]*)</cmdline>", r"<cmdline>\1 vmmbib.shell=1</cmdline>", xml)
    if n != 1:
        return f"{example}: expected one <cmdline>"
    if "/srv/" in xml:
        return f"{example}: a placeholder path was not replaced"
    # The daemon's user reads copies in our private directory: the checkout
    # may sit below a directory it cannot enter (a CI clone in a 0700 temp
    # dir, /root).  QEMU finds its firmware by absolute paths, so a copy of
    # the binary runs as the original does.
    stage = f"{vmdir}/files"
    os.makedirs(stage, exist_ok=True)
    for i, path in enumerate(domain_files(xml)):
        copy = f"{stage}/{i}-{os.path.basename(path)}"
        try:
            shutil.copy(path, copy)
        except OSError as e:
            return f"cannot copy {path} for the domain: {e}"
        xml = xml.replace(f">{path}<", f">{copy}<").replace(f"'{path}'", f"'{copy}'")
    with open(dest, "w") as f:
        f.write(xml)
    return None


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


def wait_for_guest(tap, lv, results_log, timeout):
    """Follows the guest's results port until VMMBIB-DONE; TAP per guest result."""
    deadline = time.monotonic() + timeout
    pos, partial, done, boot = 0, "", None, False
    while True:
        text = read_text(results_log)
        partial += text[pos:]
        pos = len(text)
        *lines, partial = partial.split("\n")
        for line in lines:
            m = GUEST_TAP.match(line)
            if line.startswith("VMMBIB-BOOT"):
                boot = True
            elif line.startswith("VMMBIB-TAP: #"):
                tap.diag(line[len("VMMBIB-TAP: #"):].strip())
            elif m:
                tap.result(m.group(1) == "ok", "guest: " + m.group(2))
            elif line.startswith("VMMBIB-DONE rc="):
                done = line.split("=", 1)[1].strip()
        if done is not None:
            return tap.result(done == "0", f"guest script finished with status 0 (rc={done})")
        if time.monotonic() > deadline:
            return tap.result(False, f"guest script finished within {timeout:.0f} s"
                              f" ({'it started' if boot else '/init never started'})")
        state = lv.domstate()
        if state != "running":
            return tap.result(False, f"guest script finished (the domain is '{state}')")
        time.sleep(0.5)


def run(args, tap, top):
    lv = Libvirt(top, args.user)
    lv.prepare()
    vmdir = f"{top}/vm"

    examples = sorted(glob.glob(os.path.join(args.examples, "*.xml")))
    tap.result(bool(examples), f"example domain XML files in {args.examples}")
    for ex in examples:
        p = subprocess.run(["virt-xml-validate", ex, "domain"], capture_output=True, text=True)
        tap.result(p.returncode == 0, f"virt-xml-validate {os.path.relpath(ex, SRC)}",
                   p.stdout + p.stderr)

    example = os.path.join(args.examples, EXAMPLE + ".xml")
    dom_xml = f"{vmdir}/{DOMAIN}.xml"
    err = instantiate(example, dom_xml, args, vmdir)
    if err:
        tap.result(False, "instantiate the example", err)
        return lv
    os.chown(dom_xml, lv.uid, lv.gid)
    with open(dom_xml) as f:
        bad = lv.readable(domain_files(f.read()))
    if not tap.result(not bad, f"the daemon's user ({args.user if lv.prefix else 'this user'}) "
                      "can read the guest's files and run our QEMU",
                      "not readable (or executable) for it: " + " ".join(bad)):
        return lv

    err = lv.start()
    if not tap.result(err is None, f"a private libvirtd answers on {URI} "
                      f"(user {args.user if lv.prefix else os.geteuid()}, files in {top})", err):
        return lv
    p = subprocess.run(["libvirtd", "--version"], env=lv.env, capture_output=True, text=True)
    tap.diag(p.stdout.strip())

    rc, out = lv.virsh("define", dom_xml)
    if not tap.result(rc == 0, f"virsh define {EXAMPLE}.xml (placeholders replaced)", out):
        return lv
    start = time.monotonic()
    rc, out = lv.virsh("start", DOMAIN, timeout=120)
    if not tap.result(rc == 0, f"virsh start {DOMAIN}", out):
        return lv
    tap.diag(f"started in {time.monotonic() - start:.1f} s")

    # The guest needs several seconds to boot: the domain surely runs now.
    rc, out = lv.virsh("qemu-monitor-command", DOMAIN, "--pretty",
                       '{"execute":"qom-get","arguments":{"path":"/machine/peripheral/vmmbib0",'
                       '"property":"max-qp"}}')
    tap.result(rc == 0 and re.search(r'"return":\s*77\b', out) is not None,
               "virsh qemu-monitor-command: qom-get of vmmbib0's max-qp is 77", out)

    wait_for_guest(tap, lv, f"{vmdir}/results.log", args.timeout)
    tap.diag(f"guest done {time.monotonic() - start:.1f} s after virsh start")
    console = read_text(f"{vmdir}/console.log")
    trouble = [line for line in console.splitlines() if KERNEL_TROUBLE.search(line)]
    tap.result(bool(console) and not trouble, "guest kernel log has no oops/BUG/WARNING",
               "\n".join(trouble[:20]) or "no console output")
    return lv


def cleanup(tap, lv):
    """destroy, undefine, stop the daemon, nothing left running."""
    if lv.proc is None:
        return
    if lv.proc.poll() is None and os.path.exists(lv.socket):
        state = lv.domstate()
        if state is not None:
            if state == "running":
                rc, out = lv.virsh("destroy", DOMAIN)
                tap.result(rc == 0 and lv.domstate() == "shut off", f"virsh destroy {DOMAIN}", out)
            rc, out = lv.virsh("undefine", DOMAIN)
            tap.result(rc == 0, f"virsh undefine {DOMAIN}", out)
            rc, out = lv.virsh("list", "--all", "--name")
            tap.result(rc == 0 and out == "", "no domain left", out)
    err = lv.stop()
    tap.result(err is None, "libvirtd stopped", err)
    # Our QEMU and any helper the daemon started carry our directory in
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
    tap.result(not left, "no process of the daemon is left", "killed: " + "\n".join(desc))


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
            for title, path in (("libvirtd log", lv.log),
                                ("libvirtd output", f"{top}/libvirtd.out"),
                                (f"QEMU log of {DOMAIN}", lv.qemu_log),
                                ("guest console", f"{top}/vm/console.log"),
                                ("guest results port", f"{top}/vm/results.log")):
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

#!/usr/bin/env python3
"""Boot the test guest under our QEMU, run one guest script, report TAP.

The guest (scripts/build-guest-image.sh) runs the script given with --script
and writes its results to a second serial port (see tests/guest/init):
    VMMBIB-BOOT uptime=SECONDS      /init started
    VMMBIB-TAP: ok N - NAME         a result (also "not ok", "# diagnostic")
    VMMBIB-OUT: TEXT                any other output line of the script
    VMMBIB-DONE rc=N                the script finished with exit status N
This program turns that into TAP on stdout (meson's `protocol: 'tap'`), adds a
check that the guest kernel logged no oops/BUG/WARNING, enforces a timeout,
and on any failure prints the whole guest console log as TAP comments.

Examples:
  run-guest-test.py --qemu build/qemu/qemu-system-x86_64 \\
      --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.zst \\
      --script tests/guest/devinfo.sh --device-args max-qp=77 \\
      --env VMMBIB_EXPECT="max_qp=77"
  ... --shell            interactive: console on this terminal, shell after the
                         script (or instead of it); Ctrl-A X quits QEMU
  ... --show-output      print the script's output instead of TAP (for demos)
  ... --stats --expect-stat 'doorbell_writes <= 0.01 * wqes'
                         after the script, read the device's stats-* counters
                         over QMP (qom-get), print them and check expressions
  ... --reboots 1 --expect-stat 'after_reset_qps == 0'
                         the guest reboots once (the script runs again); the
                         counters are read where the reboot stopped the VM
                         (before_reset_*) and right after the reset
                         (after_reset_*), before the guest runs again
A guest script with --stats may also print VMMBIB-QOM-SET NAME=VALUE (the
runner sets the first device's property, e.g. x-inject-faults=bad-status) and
VMMBIB-QEMU-RSS NAME (QEMU's VmRSS in KiB, qemu_rss_NAME in --expect-stat) and
VMMBIB-STATS-SNAPSHOT NAME (the counters then, NAME_COUNTER in --expect-stat).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DEVICE = "vmmbypass-ib"
# Kernel messages that mean the guest kernel hit a bug, whatever the script said.
KERNEL_TROUBLE = re.compile(
    r"(?:^|\] )(?:BUG:|WARNING:|Oops|Kernel panic|general protection fault|"
    r"UBSAN:|KASAN:|Call Trace:|kernel BUG at|INFO: task .* blocked)"
)
# A guest script prints this line to have the device counters read at that
# point too (it should then sleep a second or two): with --stats, the values
# printed and checked are the differences from this baseline, so what the
# boot did (the kernel's MAD QPs, say) does not count.
STATS_BASELINE = "VMMBIB-STATS-BASELINE"
# "VMMBIB-QOM-SET NAME=VALUE" (with --stats) sets property NAME of the first
# device over QMP, e.g. x-inject-faults; the guest sleeps a second or two
# after it. "VMMBIB-QEMU-RSS NAME" records QEMU's resident memory (VmRSS of
# /proc/PID/status, in KiB) as qemu_rss_NAME for --expect-stat.
QOM_SET = "VMMBIB-QOM-SET "
QEMU_RSS = "VMMBIB-QEMU-RSS "
# "VMMBIB-STATS-SNAPSHOT NAME" reads the counters then too, as NAME_COUNTER.
STATS_SNAPSHOT = "VMMBIB-STATS-SNAPSHOT "
TAP_LINE = re.compile(r"^(ok|not ok)\b\s*(\d+)?\s*(?:-\s*)?(.*)$")


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--qemu", required=True, help="qemu-system-x86_64 to run")
    p.add_argument("--kernel", required=True, help="guest kernel (build/guest/vmlinuz)")
    p.add_argument("--initrd", required=True, help="guest initramfs (build/guest/initramfs.cpio.zst)")
    p.add_argument("--script", help="guest test script (busybox sh) to run in the guest")
    p.add_argument(
        "--device-args", action="append", metavar="PROPS",
        help=f"properties of one -device {DEVICE} (e.g. max-qp=77,max-cq=9); "
        "repeat for more devices; default: one device without properties",
    )
    p.add_argument("--no-device", action="store_true", help=f"boot without any {DEVICE}")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="variable exported to the guest script (repeatable)")
    p.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                   help="host file copied into the guest as /run/vmmbib/files/NAME, "
                   "which is on the script's PATH (repeatable)")
    p.add_argument("--share", metavar="DIR",
                   help="host directory mounted in the guest at /mnt/host (virtio-9p)")
    p.add_argument("--timeout", type=float, default=300, help="seconds (default 300)")
    p.add_argument("--machine", default="q35", help="QEMU machine type (default q35)")
    p.add_argument("--memory", default="1G", help="guest RAM (default 1G)")
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--qemu-arg", action="append", default=[], metavar="ARG",
                   help="extra QEMU argument, e.g. --qemu-arg=-trace --qemu-arg='vmmbib_*'")
    p.add_argument("--log-dir", help="keep the console/results/QEMU logs here "
                   "(default: a temporary directory, kept only on failure)")
    p.add_argument("--allow-kernel-warnings", action="store_true",
                   help="do not fail on oops/BUG/WARNING in the guest kernel log")
    p.add_argument("--show-output", action="store_true",
                   help="print the script's output (live) instead of TAP")
    p.add_argument("--shell", action="store_true",
                   help="interactive: guest console on this terminal, then a shell")
    p.add_argument("--stats", action="store_true",
                   help=f"when the script is done, read every stats-* property of each {DEVICE} "
                   "over QMP and print them (QEMU then runs with -no-shutdown and a QMP socket)")
    p.add_argument("--expect-stat", action="append", default=[], metavar="EXPR",
                   help="with --stats: a Python expression over the first device's counters "
                   "(stats-doorbell-writes is doorbell_writes) that must hold, e.g. "
                   "'doorbell_writes <= 0.01 * wqes'; one TAP result each (repeatable)")
    p.add_argument("--reboots", type=int, default=0, metavar="N",
                   help="the guest reboots N times before its script finishes (implies --stats): "
                   "each reboot stops the VM (-no-reboot -no-shutdown); the counters are read "
                   "(before_reset_NAME in --expect-stat), the machine is reset as QEMU resets it "
                   "on a reboot, the counters are read again (after_reset_NAME) and the guest "
                   "boots again, running the script again; the counters the script's baseline "
                   "read are baseline_NAME")
    args = p.parse_args(argv)
    if args.expect_stat or args.reboots:
        args.stats = True
    if args.stats and (args.no_device or args.shell):
        p.error("--stats needs a device and a non-interactive run")
    for path, what in ((args.qemu, "--qemu"), (args.kernel, "--kernel"), (args.initrd, "--initrd")):
        if not os.path.isfile(path):
            hint = "build QEMU first (make)" if what == "--qemu" else \
                "build the guest image: scripts/build-guest-image.sh build"
            p.error(f"{what} {path}: no such file; {hint}")
    if args.script and not os.path.isfile(args.script):
        p.error(f"--script {args.script}: no such file")
    if not args.script and not args.shell:
        p.error("--script is required (or --shell for an interactive guest)")
    for item in args.env + args.file:
        if "=" not in item or item.startswith("="):
            p.error(f"'{item}': expected NAME=VALUE")
    return args


def device_ids(args):
    """QOM ids of our devices: the id= given in --device-args, else vmmbibN."""
    ids = []
    for n, props in enumerate(args.device_args or [""]):
        given = [kv[3:] for kv in props.split(",") if kv.startswith("id=")]
        ids.append(given[0] if given else f"vmmbib{n}")
    return ids


def tcg_accel():
    """-accel for our one-vCPU guests: single-threaded TCG by default, as
    the tests were measured; VMMBIB_TCG_THREAD=multi runs them on MTTCG.
    (The hang this was first chosen against was a QEMU TCG bug that the
    device triggered, not MTTCG: docs/security.md, "Soak".)
    """
    mode = os.environ.get("VMMBIB_TCG_THREAD", "single")
    if mode not in ("single", "multi"):
        sys.exit(f"VMMBIB_TCG_THREAD={mode}: use single or multi")
    return f"tcg,thread={mode}"


def qemu_command(args, logdir, interactive):
    """The QEMU command line: a small, deterministic TCG machine."""
    cmdline = "console=ttyS0,115200 panic=-1 oops=panic " + args.append
    cmd = [
        args.qemu, "-nodefaults", "-no-user-config", "-nographic",
        "-machine", args.machine, "-accel", tcg_accel(), "-cpu", "max",
        "-smp", "1",
        "-m", args.memory, "-nic", "none", "-no-reboot",
        "-kernel", args.kernel, "-initrd", args.initrd, "-append", cmdline.strip(),
    ]
    if interactive:
        cmd += ["-serial", "mon:stdio"]
    else:
        cmd += [
            "-monitor", "none",
            "-chardev", f"file,id=console,path={logdir}/console.log",
            "-serial", "chardev:console",
            "-chardev", f"file,id=results,path={logdir}/results.log",
            "-serial", "chardev:results",
        ]
    if not args.no_device:
        for props, dev_id in zip(args.device_args or [""], device_ids(args)):
            # QMP names the device by its id: give it ours unless one was set.
            if args.stats and not any(kv.startswith("id=") for kv in props.split(",")):
                props = f"id={dev_id}" + ("," + props if props else "")
            cmd += ["-device", DEVICE + ("," + props if props else "")]
    if args.stats:
        # The guest powers off when its script is done; -no-shutdown keeps
        # QEMU (and the counters) there until we have read them and quit.
        cmd += ["-no-shutdown", "-qmp", f"unix:{logdir}/qmp.sock,server=on,wait=off"]

    env_lines = []
    for item in args.env:
        key, value = item.split("=", 1)
        env_lines.append(f"{key}={shlex.quote(value)}\n")
    if interactive:
        env_lines.append("VMMBIB_SHELL=1\n")
    if env_lines:
        with open(os.path.join(logdir, "env"), "w") as f:
            f.writelines(env_lines)
        cmd += ["-fw_cfg", f"name=opt/vmmbib/env,file={logdir}/env"]
    if args.script:
        cmd += ["-fw_cfg", f"name=opt/vmmbib/script,file={os.path.abspath(args.script)}"]
    for item in args.file:
        name, path = item.split("=", 1)
        cmd += ["-fw_cfg", f"name=opt/vmmbib/files/{name},file={os.path.abspath(path)}"]
    if args.share:
        cmd += ["-virtfs", f"local,path={os.path.abspath(args.share)},"
                "mount_tag=vmmbib,security_model=none,readonly=on"]
    return cmd + args.qemu_arg


class Results:
    """What the guest wrote to its results port, parsed line by line."""

    def __init__(self, show_output):
        self.show_output = show_output
        self.events = []       # ("tap", ok: bool, name) or ("diag", text), in order
        self.boot_uptime = None
        self.rc = None
        self.stats = None          # {device id: {stats-name: value}} with --stats
        self.stats_error = None
        self.baseline = None       # the same, when the script asked for a baseline
        self.baseline_wanted = False
        self.boots = 0
        self.resets = []           # (counters before, counters after) per guest reboot
        self.host_requests = []    # ("qom-set", NAME, VALUE) or ("rss", NAME), not yet done
        self.qemu_rss = {}         # NAME: QEMU's VmRSS in KiB when the guest asked
        self.snapshots = {}        # NAME: counters read when the guest asked
        self.hang = None           # lines: the CPU and counters when the run timed out
        self._partial = ""

    def feed(self, text):
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def _line(self, line):
        if line.startswith("VMMBIB-TAP:"):
            body = line[len("VMMBIB-TAP:"):].strip()
            if body.startswith("#"):
                self.events.append(("diag", body[1:].strip()))
                return
            m = TAP_LINE.match(body)
            if m:
                self.events.append(("tap", m.group(1) == "ok", m.group(3)))
        elif line == "VMMBIB-OUT: " + STATS_BASELINE:
            self.baseline_wanted = True
        elif line.startswith("VMMBIB-OUT: " + QOM_SET) and "=" in line:
            name, value = line[len("VMMBIB-OUT: " + QOM_SET):].strip().split("=", 1)
            self.host_requests.append(("qom-set", name, value))
        elif line.startswith("VMMBIB-OUT: " + QEMU_RSS):
            self.host_requests.append(("rss", line[len("VMMBIB-OUT: " + QEMU_RSS):].strip()))
        elif line.startswith("VMMBIB-OUT: " + STATS_SNAPSHOT):
            self.host_requests.append(
                ("snapshot", line[len("VMMBIB-OUT: " + STATS_SNAPSHOT):].strip()))
        elif line.startswith("VMMBIB-OUT: ") or line == "VMMBIB-OUT:":
            if self.show_output:
                print(line[len("VMMBIB-OUT: "):], flush=True)
        elif line.startswith("VMMBIB-BOOT uptime="):
            self.boot_uptime = line.split("=", 1)[1]
            self.boots += 1
        elif line.startswith("VMMBIB-DONE rc="):
            try:
                self.rc = int(line.split("=", 1)[1])
            except ValueError:
                self.rc = 255

    def tap(self):
        return [(e[1], e[2]) for e in self.events if e[0] == "tap"]


class Qmp:
    """A minimal QMP client: one command at a time over QEMU's UNIX socket."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self._read()                      # the greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if "event" not in msg:
                    return msg
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("QMP connection closed")
            self.buf += data

    def cmd(self, name, **arguments):
        req = {"execute": name}
        if arguments:
            req["arguments"] = arguments
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def close(self):
        self.sock.close()


def qmp_stats(qmp, ids):
    """{device id: {stats-name: value}} read over an open QMP connection."""
    stats = {}
    for dev_id in ids:
        path = f"/machine/peripheral/{dev_id}"
        names = [p["name"] for p in qmp.cmd("qom-list", path=path)
                 if p["name"].startswith("stats-")]
        stats[dev_id] = {n: qmp.cmd("qom-get", path=path, property=n) for n in sorted(names)}
    return stats


def guest_stopped(logdir):
    """True if the VM stands in the 'shutdown' run state, where a guest reboot or
    power-off leaves it under -no-reboot -no-shutdown; False also while QEMU
    does not listen yet."""
    try:
        qmp = Qmp(os.path.join(logdir, "qmp.sock"), timeout=5)
    except OSError:
        return False
    try:
        return qmp.cmd("query-status").get("status") == "shutdown"
    finally:
        qmp.close()


def reset_machine(logdir, ids):
    """Where a guest reboot stopped the VM: reads the counters, resets the
    machine (as QEMU does on a reboot without -no-reboot), reads them again
    before any guest code runs, and lets the guest boot. Returns both reads.

    Reboots reset the machine from then on (SeaBIOS resets it once more on
    its way): set_reboot_action(logdir, "shutdown") once the guest is up."""
    qmp = Qmp(os.path.join(logdir, "qmp.sock"))
    try:
        before = qmp_stats(qmp, ids)
        # Under -no-reboot a reset request is a shutdown: allow resets.
        qmp.cmd("set-action", reboot="reset")
        qmp.cmd("system_reset")
        # QEMU's main loop resets the machine after the command returned; the
        # run state then leaves 'shutdown' for 'prelaunch'.
        deadline = time.monotonic() + 10
        while qmp.cmd("query-status").get("status") == "shutdown":
            if time.monotonic() > deadline:
                raise RuntimeError("system_reset did not reset the machine within 10 s")
            time.sleep(0.05)
        after = qmp_stats(qmp, ids)
        qmp.cmd("cont")
        return before, after
    finally:
        qmp.close()


def set_reboot_action(logdir, action):
    """What a guest reboot does: "reset" the machine or "shutdown" (stop it)."""
    qmp = Qmp(os.path.join(logdir, "qmp.sock"))
    try:
        qmp.cmd("set-action", reboot=action)
    finally:
        qmp.close()


def read_stats(logdir, ids, quit_after=True):
    """{device id: {stats-name: value}} read over QMP, then tells QEMU to quit."""
    qmp = Qmp(os.path.join(logdir, "qmp.sock"))
    try:
        stats = qmp_stats(qmp, ids)
        if quit_after:
            try:
                qmp.cmd("quit")
            except (ConnectionError, OSError):
                pass
        return stats
    finally:
        qmp.close()


def hang_state(logdir, ids):
    """When a run times out (with --stats): QEMU's run state, the vCPU's
    registers and local APIC (a halted CPU with a vector stuck in service
    explains a guest that stopped without a word), and the device counters.
    Also written to LOGDIR/hang.txt."""
    qmp = Qmp(os.path.join(logdir, "qmp.sock"))
    try:
        lines = [f"QEMU run state: {qmp.cmd('query-status').get('status')}"]
        for hmp in ("info registers", "info lapic"):
            text = qmp.cmd("human-monitor-command", **{"command-line": hmp})
            lines.append(f"{hmp}:")
            # The vector and FPU registers say nothing about a hang.
            lines += [l for l in text.replace("\r", "").splitlines()
                      if l.strip() and not re.match(r"(YMM|XMM|FPR|ZMM|Opmask)", l)]
        for dev_id, values in qmp_stats(qmp, ids).items():
            lines.append(f"{dev_id} counters at the timeout: " +
                         " ".join(f"{k[len('stats-'):]}={v}" for k, v in values.items()))
    finally:
        qmp.close()
    with open(os.path.join(logdir, "hang.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def qemu_rss_kib(pid):
    """QEMU's resident memory (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


def host_request(logdir, ids, pid, results, request):
    """Does what a VMMBIB-QOM-SET or VMMBIB-QEMU-RSS line of the guest asked."""
    if request[0] == "rss":
        results.qemu_rss[request[1]] = qemu_rss_kib(pid)
        return
    if not ids:
        raise RuntimeError("this needs --stats (QEMU's QMP socket)")
    if request[0] == "snapshot":
        results.snapshots[request[1]] = read_stats(logdir, ids, quit_after=False)
        return
    qmp = Qmp(os.path.join(logdir, "qmp.sock"))
    try:
        qmp.cmd("qom-set", path=f"/machine/peripheral/{ids[0]}",
                property=request[1], value=request[2])
    finally:
        qmp.close()


def run_guest(cmd, logdir, results, timeout, stats_ids=None, reboots=0, stop=None):
    """Runs QEMU, following results.log; returns (qemu exit code or None, why, seconds).

    With stats_ids, reads the devices' counters once the script is done
    (results.stats, or results.stats_error) and then makes QEMU quit; with
    reboots, lets the guest reboot that many times (results.resets); with
    stop (a threading.Event), ends QEMU when it is set."""
    start = time.monotonic()
    next_status = start
    rearm_at_boot = None       # the boot from which a reboot stops the VM again
    with open(os.path.join(logdir, "qemu.log"), "wb") as qlog:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog,
                                stderr=subprocess.STDOUT, start_new_session=True)
    res_path = os.path.join(logdir, "results.log")
    pos, done_at, why = 0, None, None
    try:
        while True:
            exited = proc.poll() is not None
            # Asked before results.log is read: a guest that powered off
            # after its script has written VMMBIB-DONE by then.
            stopped = False
            if reboots and results.rc is None and not exited and \
                    time.monotonic() >= next_status:
                next_status = time.monotonic() + 0.5
                stopped = guest_stopped(logdir)
            if os.path.exists(res_path):
                with open(res_path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                    pos += len(data)
                results.feed(data.decode("utf-8", "replace"))
            if exited:
                break
            if stop is not None and stop.is_set():
                why = "stopped by the runner"
                break
            if rearm_at_boot is not None and results.boots >= rearm_at_boot:
                try:
                    set_reboot_action(logdir, "shutdown")
                except (OSError, ValueError, RuntimeError, ConnectionError) as e:
                    why = f"setting the reboot action over QMP failed: {e}"
                    break
                rearm_at_boot = None
            if stopped and results.rc is None:
                if len(results.resets) >= reboots:
                    why = f"the guest rebooted more than {reboots} time(s) (or powered " \
                        "off before its script finished)"
                    break
                try:
                    results.resets.append(reset_machine(logdir, stats_ids))
                except (OSError, ValueError, RuntimeError, ConnectionError) as e:
                    why = f"resetting the machine over QMP after the guest's reboot failed: {e}"
                    break
                results.feed("\n")    # a line the reboot cut short
                rearm_at_boot = results.boots + 1
            while results.host_requests:
                request = results.host_requests.pop(0)
                try:
                    host_request(logdir, stats_ids, proc.pid, results, request)
                except (OSError, ValueError, RuntimeError, ConnectionError, TypeError) as e:
                    why = f"{' '.join(request)} for the guest failed: {e}"
                    break
            if why:
                break
            now = time.monotonic()
            if stats_ids and results.baseline_wanted and results.baseline is None \
                    and results.rc is None:
                try:
                    results.baseline = read_stats(logdir, stats_ids, quit_after=False)
                except (OSError, ValueError, RuntimeError, ConnectionError) as e:
                    results.stats_error = f"reading the baseline counters over QMP failed: {e}"
                    why = results.stats_error
                    break
            if results.rc is not None and done_at is None:
                done_at = now
                if stats_ids:
                    try:
                        results.stats = read_stats(logdir, stats_ids)
                    except (OSError, ValueError, RuntimeError, ConnectionError) as e:
                        results.stats_error = f"reading the device counters over QMP failed: {e}"
                        why = results.stats_error
                        break
            if done_at is not None and now - done_at > 15:
                why = "the guest did not power off after it finished"
                break
            if now - start > timeout:
                why = f"timed out after {timeout:.0f} s"
                if stats_ids and results.rc is None:
                    try:
                        results.hang = hang_state(logdir, stats_ids)
                    except (OSError, ValueError, RuntimeError, ConnectionError) as e:
                        results.hang = [f"reading the guest's state over QMP failed: {e}"]
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    results.feed("\n")
    return proc.returncode, why, time.monotonic() - start


def exit_on_sigterm():
    """SIGTERM (meson's timeout, kill) raises SystemExit, so the finally
    clauses stop QEMU and the daemon instead of leaving them running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\r", "")
    except FileNotFoundError:
        return ""


def stats_since_baseline(results):
    """The final counters, minus the baseline the script asked for (if any).
    Gauges (objects, pinned pages) are not differenced: they are shown as is."""
    gauges = {"stats-ucontexts", "stats-pds", "stats-mrs", "stats-cqs", "stats-qps",
              "stats-srqs", "stats-ahs", "stats-pinned-pages"}
    if not results.baseline:
        return results.stats
    out = {}
    for dev_id, values in results.stats.items():
        base = results.baseline.get(dev_id, {})
        out[dev_id] = {k: v if k in gauges or not isinstance(v, int) else v - base.get(k, 0)
                       for k, v in values.items()}
    return out


def report_tap(results, qemu_rc, why, elapsed, logdir, args, cmd):
    """Prints TAP; returns True when everything passed."""
    console = read_text(os.path.join(logdir, "console.log"))
    out, n, failed = [], 0, False

    def result(ok, name):
        nonlocal n, failed
        n += 1
        failed |= not ok
        out.append(f"{'ok' if ok else 'not ok'} {n} - {name}")

    # The guest's own numbering is replaced by ours (a guest that lost count
    # must not produce invalid TAP).
    for event in results.events:
        if event[0] == "tap":
            result(event[1], event[2])
        else:
            out.append(f"# {event[1]}")

    if why:
        result(False, f"guest run ({why})")
    elif results.rc is None:
        result(False, f"guest run (QEMU exited with status {qemu_rc} before the script finished)")
    elif not results.tap():
        result(False, f"guest script reported results (it reported none; rc={results.rc})")
    elif results.rc != 0 and not failed:
        # (a failed result already explains a non-zero status)
        result(False, f"guest script exit status is 0 (it was {results.rc})")
    if args.stats and results.stats is not None:
        stats = stats_since_baseline(results)
        since = " since the script's baseline" if results.baseline else ""
        for dev_id, values in stats.items():
            out.append(f"# {dev_id} counters{since}: " +
                       " ".join(f"{k[len('stats-'):]}={v}" for k, v in values.items()))
        first = next(iter(stats.values()), {})
        names = {k[len("stats-"):].replace("-", "_"): v for k, v in first.items()}
        # The first device's counters at other points, as raw values.
        points = [("baseline_", results.baseline)]
        points += [(name + "_", snap) for name, snap in results.snapshots.items()]
        if results.resets:
            points += [("before_reset_", results.resets[0][0]),
                       ("after_reset_", results.resets[0][1])]
        for prefix, point in points:
            if not point:
                continue
            for dev_id, values in point.items():
                out.append(f"# {dev_id} counters {prefix[:-1].replace('_', ' ')}: " +
                           " ".join(f"{k[len('stats-'):]}={v}" for k, v in values.items()))
            values = next(iter(point.values()), {})
            names.update({prefix + k[len("stats-"):].replace("-", "_"): v
                          for k, v in values.items()})
        names.update({"qemu_rss_" + k: v for k, v in results.qemu_rss.items()})
        for k, v in results.qemu_rss.items():
            out.append(f"# QEMU's VmRSS at {k}: {v} KiB")
        if names.get("wqes"):
            # What the doorbell protocol costs per work request, for the log.
            out.append("# per WQE: " + " ".join(
                f"{k}={names[k] / names['wqes']:.4f}"
                for k in ("doorbell_writes", "kicks", "doorbells") if k in names))
        for expr in args.expect_stat:
            try:
                ok = bool(eval(expr, {"__builtins__": {}}, dict(names)))  # noqa: S307
                result(ok, f"device counters: {expr}")
            except Exception as e:  # a typo in EXPR must fail, not crash
                result(False, f"device counters: {expr} ({type(e).__name__}: {e})")
    elif args.expect_stat:
        for expr in args.expect_stat:
            result(False, f"device counters: {expr} (no counters were read)")
    if args.reboots:
        result(len(results.resets) == args.reboots,
               f"the guest rebooted {args.reboots} time(s) (it did {len(results.resets)}; "
               f"{results.boots} boot(s) seen)")
    trouble = [l for l in console.splitlines() if KERNEL_TROUBLE.search(l)]
    if console and not args.allow_kernel_warnings:
        result(not trouble, "guest kernel log has no oops/BUG/WARNING")
        if trouble:
            out.extend(f"# {l}" for l in trouble[:20])

    if results.hang:
        out.append("# ---- state at the timeout (also in hang.txt):")
        out.extend(f"# {l}" for l in results.hang)
    boot = f"init started at {results.boot_uptime} s guest uptime, " if results.boot_uptime else ""
    out.append(f"# {boot}{elapsed:.1f} s wall time in all")
    if failed:
        out.append(f"# ---- QEMU command: {shlex.join(cmd)}")
        qemu_log = read_text(os.path.join(logdir, "qemu.log")).strip()
        if qemu_log:
            out.append("# ---- QEMU output:")
            out.extend(f"# {l}" for l in qemu_log.splitlines())
        out.append("# ---- guest console log:")
        out.extend(f"# {l}" for l in console.splitlines())
        out.append("# ---- end of guest console log")
    out.append(f"1..{n}")
    print("\n".join(out), flush=True)
    return not failed


def main(argv):
    args = parse_args(argv)
    exit_on_sigterm()
    if args.shell:
        logdir = args.log_dir or tempfile.mkdtemp(prefix="vmmbib-guest-")
        os.makedirs(logdir, exist_ok=True)
        cmd = qemu_command(args, logdir, True)
        print("# " + shlex.join(cmd), file=sys.stderr)
        return subprocess.call(cmd)

    if args.log_dir:
        logdir = args.log_dir
        shutil.rmtree(logdir, ignore_errors=True)
        os.makedirs(logdir)
    else:
        logdir = tempfile.mkdtemp(prefix="vmmbib-guest-")
    cmd = qemu_command(args, logdir, False)
    results = Results(args.show_output)
    qemu_rc, why, elapsed = run_guest(cmd, logdir, results, args.timeout,
                                      device_ids(args) if args.stats else None,
                                      args.reboots)

    if args.show_output:
        # Demo mode: the output was printed live; summarise, and on failure show
        # the whole console so the user sees why.
        ok = why is None and results.rc == 0 and all(ok for ok, _ in results.tap())
        for dev_id, values in (stats_since_baseline(results) if results.stats else {}).items():
            print(f"{dev_id} counters: " +
                  " ".join(f"{k[len('stats-'):]}={v}" for k, v in values.items()), flush=True)
        if not ok:
            print(f"guest run failed: {why or f'script status {results.rc}, QEMU status {qemu_rc}'}",
                  file=sys.stderr)
            print(read_text(os.path.join(logdir, "qemu.log")), file=sys.stderr)
            print(read_text(os.path.join(logdir, "console.log")), file=sys.stderr)
    else:
        ok = report_tap(results, qemu_rc, why, elapsed, logdir, args, cmd)

    if ok and not args.log_dir:
        shutil.rmtree(logdir, ignore_errors=True)
    elif not ok:
        print(f"# logs kept in {logdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

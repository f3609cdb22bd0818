#!/usr/bin/env python3
"""Guests on one vmmbibd: verbs traffic between VMs, reported as TAP.

Starts vmmbibd on a socket in a temporary directory, boots two guests (or
--vms 1 to 4; one vCPU each, guest RAM in a shared memfd, their vmmbypass-ib
devices joined to the daemon with -chardev socket and named vm1 to vm4),
links them with virtio-net on one L2 segment (-netdev dgram on a multicast
group of 127.0.0.1: a UDP tunnel joins two QEMUs only) for the programs'
TCP address exchange, and runs the guest script (two-vms.sh) in each:
VMMBIB_ROLE=server in vm1, client in vm2, peer in vm3 and vm4. Each guest
is run as run-guest-test.py runs one (imported, not duplicated); their TAP
results are merged, prefixed vm1:, vm2:, ..., with the device counters
(which, with the daemon, are the daemon's for that VM) and the daemon's log
checked: the VMs joined with different LIDs (each always with the same
one), the daemon stopped cleanly at the end.

Every guest gets VMMBIB_VM (vm1..), VMMBIB_RANK (0..), VMMBIB_IP (10.77.0.N),
VMMBIB_IPS (all VMs' addresses, in order) and VMMBIB_PEER_IP (vm2's for vm1,
vm1's for the others).
First, QEMU must refuse, with the sentence that says what to add, a device
joining the daemon while guest RAM is no shared memfd, and vm-id without
chardev.

With --vms 1 only vm1 boots (VMMBIB_ROLE=solo). A guest script may print
the line VMMBIBD-KILL (the runner SIGKILLs the daemon) or VMMBIBD-START (it
starts it again on the same socket): daemon-restart.sh does, to test what a
guest sees when the daemon dies, and that a device reset joins it again.
A line KILL-PEER has the runner SIGKILL the other VM's QEMU (two-vms.sh's
kill-peer test), KILL-VM vmN that VM's (four-vms.sh); that VM's results
then count only as "killed".

  run-two-vms.py --qemu build/qemu/qemu-system-x86_64 \\
      --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.zst \\
      --vmmbibd build/host-lib/daemon/vmmbibd --env VMMBIB_TESTS='rc ud' \\
      --expect-stat 'wqes > 0'
"""

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_guest_test",
                                               os.path.join(HERE, "run-guest-test.py"))
rgt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rgt)

# (name, role, IP) of the first two VMs; bench/vms.py boots these two.
VMS = (("vm1", "server", "10.77.0.1"), ("vm2", "client", "10.77.0.2"))
ALL_VMS = VMS + (("vm3", "peer", "10.77.0.3"), ("vm4", "peer", "10.77.0.4"))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qemu", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--vmmbibd", required=True, help="the daemon binary")
    p.add_argument("--script", default=os.path.join(HERE, "two-vms.sh"),
                   help="guest script run in every VM (default two-vms.sh)")
    p.add_argument("--vms", type=int, choices=range(1, len(ALL_VMS) + 1), default=2,
                   help="guests to boot (default 2; 1: vm1 alone, VMMBIB_ROLE=solo)")
    p.add_argument("--expect-qemu-log", action="append", default=[], metavar="REGEX",
                   help="a line each QEMU must have printed (repeatable)")
    p.add_argument("--expect-daemon-log", action="append", default=[], metavar="REGEX",
                   help="a line the daemon must have logged (repeatable)")
    p.add_argument("--memory", help="RAM of each guest (default 512M, with more "
                   "than two VMs 384M: four TCG guests on a small host)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="variable for the script in every guest (repeatable)")
    p.add_argument("--file", action="append", default=[], metavar="NAME=PATH",
                   help="as run-guest-test.py's: a host program for every guest")
    p.add_argument("--expect-stat", action="append", default=[], metavar="EXPR",
                   help="as run-guest-test.py's, checked on each VM's counters")
    p.add_argument("--timeout", type=float, default=240, help="seconds per guest")
    p.add_argument("--log-dir", help="keep the logs here (default: a temporary "
                   "directory, kept only on failure)")
    args = p.parse_args(argv)
    if args.memory is None:
        args.memory = "512M" if args.vms <= 2 else "384M"
    return args


def free_udp_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_daemon(binary, sock, log_path):
    """Starts vmmbibd (appending to its log) and waits until it listens."""
    if os.path.exists(sock):
        os.unlink(sock)         # a killed daemon's; it would replace it too
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([binary, f"--socket={sock}"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"vmmbibd did not start:\n{rgt.read_text(log_path)}")
        time.sleep(0.05)
    return proc


def free_mcast_group():
    """A multicast group and port on 127.0.0.1 for the guests' L2 segment:
    a random group of 239.0.0.0/8 (organisation-local) and a port nothing
    uses, so that concurrent runs do not hear each other."""
    import random
    return f"239.77.{random.randrange(256)}.{random.randrange(1, 255)}", free_udp_ports(1)[0]


def kill_vm(vm):
    """SIGKILLs a VM's QEMU, as a crash would end it."""
    try:
        with open(os.path.join(vm["logdir"], "qemu.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)
        vm["killed"] = True
    except (OSError, ValueError):
        pass


def control_daemon(state, vms, stop):
    """Follows the guests' results ports: VMMBIBD-KILL and VMMBIBD-START lines
    kill and restart the daemon."""
    pos = {vm["name"]: 0 for vm in vms}
    while not stop.is_set():
        for vm in vms:
            path = os.path.join(vm["logdir"], "results.log")
            try:
                with open(path, "rb") as f:
                    f.seek(pos[vm["name"]])
                    data = f.read()
            except FileNotFoundError:
                continue
            # Whole lines only.
            data = data[:data.rfind(b"\n") + 1]
            pos[vm["name"]] += len(data)
            for line in data.decode("utf-8", "replace").splitlines():
                line = line.strip()
                if line == "VMMBIB-OUT: VMMBIBD-KILL" and state["proc"].poll() is None:
                    state["proc"].kill()
                    state["proc"].wait()
                    state["events"].append("vmmbibd killed")
                elif line == "VMMBIB-OUT: VMMBIBD-START" and state["proc"].poll() is not None:
                    state["proc"] = start_daemon(*state["start"])
                    state["events"].append("vmmbibd started")
                elif line == "VMMBIB-OUT: KILL-PEER" or line.startswith("VMMBIB-OUT: KILL-VM "):
                    victim = line.split()[-1] if "KILL-VM" in line else None
                    for peer in vms:
                        if peer is not vm and not peer.get("killed") and \
                                victim in (None, peer["name"]):
                            kill_vm(peer)
                            peer["killed_by"] = vm["name"]
                            state["events"].append(f"{peer['name']} killed")
        time.sleep(0.1)


def vm_args(args, name, role, ip, peer_ip, sock, ports, logdir, mcast=None, ips=None):
    """run-guest-test.py's options for one VM (its argument parser checks them).
    The link: a UDP tunnel between ports (own, peer), or with mcast
    (group, port) a multicast segment for any number of VMs; ips: every VM's
    address, in order (VMMBIB_IPS)."""
    mac = "52:54:00:77:00:0" + name[-1]
    if mcast:
        # local.host: the interface the group is joined on and sent from
        # (local.port is required by the parser and unused).
        netdev = f"dgram,id=net0,remote.type=inet,remote.host={mcast[0]}," \
            f"remote.port={mcast[1]},local.type=inet,local.host=127.0.0.1,local.port=0"
    else:
        own, peer = ports
        netdev = f"dgram,id=net0,local.type=inet,local.host=127.0.0.1," \
            f"local.port={own},remote.type=inet,remote.host=127.0.0.1,remote.port={peer}"
    ips = ips or [ip, peer_ip]
    qemu_args = [
        "-name", name,
        "-object", f"memory-backend-memfd,id=mem,share=on,size={args.memory}",
        "-chardev", f"socket,id=ib0,path={sock}",
        "-netdev", netdev,
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        "-pidfile", os.path.join(logdir, "qemu.pid"),
    ]
    argv = ["--qemu", args.qemu, "--kernel", args.kernel, "--initrd", args.initrd,
            "--script", args.script, "--memory", args.memory,
            "--machine", "q35,memory-backend=mem", "--timeout", str(args.timeout),
            "--device-args", "id=vmmbib0,chardev=ib0", "--stats", "--log-dir", logdir,
            "--env", f"VMMBIB_ROLE={role}", "--env", f"VMMBIB_IP={ip}",
            "--env", f"VMMBIB_PEER_IP={peer_ip}", "--env", f"VMMBIB_VM={name}",
            "--env", f"VMMBIB_RANK={int(name[2:]) - 1}",
            "--env", f"VMMBIB_IPS={' '.join(ips)}"]
    for item in args.env:
        argv += ["--env", item]
    for item in getattr(args, "file", []):
        argv += ["--file", item]
    for expr in args.expect_stat:
        argv += ["--expect-stat", expr]
    argv += [f"--qemu-arg={a}" for a in qemu_args]
    return rgt.parse_args(argv)


def misconfigurations(args, sock):
    """(name, extra QEMU arguments, what its error must say): setups the
    device must refuse at realize, with a sentence saying what to change."""
    return [
        ("guest RAM not in a shared memfd", ["-m", args.memory, "-chardev",
         f"socket,id=ib0,path={sock}", "-device", "vmmbypass-ib,chardev=ib0"],
         f"add -object memory-backend-memfd,id=mem,share=on,size={args.memory} "
         "-machine memory-backend=mem"),
        ("vm-id without chardev", ["-device", "vmmbypass-ib,vm-id=vm9"],
         "it needs chardev= too"),
    ]


def check_refusals(args, sock, result, note):
    """QEMU exits at once with the device's error for each misconfiguration."""
    for name, extra, want in misconfigurations(args, sock):
        cmd = [args.qemu, "-nodefaults", "-display", "none", "-machine", "q35",
               "-accel", "tcg"] + extra
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=30)
            ok = p.returncode != 0 and want in p.stderr
            err = p.stderr.strip()
        except subprocess.TimeoutExpired:
            ok, err = False, "QEMU started instead of refusing"
        result(ok, f"QEMU refuses {name}, saying: {want}")
        if not ok:
            note(f"# {shlex.join(cmd)}: {err}")


def run_vm(vm, stop=None):
    vm["results"] = rgt.Results(False)
    vm["rc"], vm["why"], vm["elapsed"] = rgt.run_guest(
        vm["cmd"], vm["logdir"], vm["results"], vm["args"].timeout,
        rgt.device_ids(vm["args"]), 0, stop)


def fresh_log_dir(log_dir, prefix):
    """LOG_DIR emptied, or a new temporary directory; private to us."""
    if log_dir:
        shutil.rmtree(log_dir, ignore_errors=True)
        os.makedirs(log_dir)
        top = log_dir
    else:
        top = tempfile.mkdtemp(prefix=prefix)
    os.chmod(top, 0o700)
    return top


def main(argv):
    args = parse_args(argv)
    top = fresh_log_dir(args.log_dir, "vmmbib-two-vms-")
    sock = os.path.join(top, "vmmbibd.sock")
    daemon_log = os.path.join(top, "vmmbibd.log")
    out, n, failed = [], 0, False

    def result(ok, name):
        nonlocal n, failed
        n += 1
        failed |= not ok
        out.append(f"{'ok' if ok else 'not ok'} {n} - {name}")

    rgt.exit_on_sigterm()
    daemon = {"start": (args.vmmbibd, sock, daemon_log), "events": []}
    daemon["proc"] = start_daemon(*daemon["start"])
    vms, threads = [], []
    stop = threading.Event()
    stop_vms = threading.Event()
    finished = False
    try:
        # Inside: a QEMU that cannot run must not leave the daemon behind.
        check_refusals(args, sock, result, out.append)
        mcast = free_mcast_group()
        chosen = ALL_VMS[:args.vms]
        ips = [ip for _, _, ip in chosen]
        for name, role, ip in chosen:
            if args.vms == 1:
                role = "solo"
            # vm1's peer is vm2, everybody else's vm1.
            peer_ip = ALL_VMS[1 if name == "vm1" else 0][2]
            logdir = os.path.join(top, name)
            os.makedirs(logdir)
            vargs = vm_args(args, name, role, ip, peer_ip, sock, None, logdir,
                            mcast=mcast, ips=ips)
            vms.append({"name": name, "args": vargs, "logdir": logdir,
                        "cmd": rgt.qemu_command(vargs, logdir, False)})
        threads = [threading.Thread(target=run_vm, args=(vm, stop_vms)) for vm in vms]
        threads.append(threading.Thread(target=control_daemon, args=(daemon, vms, stop)))
        for t in threads:
            t.start()
        for t in threads[:-1]:
            t.join()
        finished = True
    finally:
        if not finished:
            # Interrupted (SIGTERM, an error): each VM's thread ends its
            # QEMU (run_guest's finally) when told to.
            stop_vms.set()
            for t in threads[:-1]:
                t.join(10)
        stop.set()
        for t in threads[-1:]:
            t.join()
        proc = daemon["proc"]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            daemon_rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            daemon_rc = proc.wait()

    # Each VM's TAP, as run-guest-test.py reports it, renumbered and prefixed.
    for vm in vms:
        if vm.get("killed"):
            # What it reported before it died counts (two-vms.sh's isolation
            # memory check, an integrity round); the rest of its run does not.
            for event in vm["results"].events:
                if event[0] == "tap":
                    result(event[1], f"{vm['name']}: {event[2]}")
                else:
                    out.append(f"# {vm['name']}: {event[1]}")
            result(True, f"{vm['name']}: killed (SIGKILL) at {vm['killed_by']}'s request")
            continue
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rgt.report_tap(vm["results"], vm["rc"], vm["why"], vm["elapsed"],
                           vm["logdir"], vm["args"], vm["cmd"])
        for line in buf.getvalue().splitlines():
            m = rgt.TAP_LINE.match(line)
            if m:
                result(m.group(1) == "ok", f"{vm['name']}: {m.group(3)}")
            elif line.startswith("#"):
                out.append(f"# {vm['name']}: {line[1:].strip()}")

    for vm in vms:
        qemu_log = rgt.read_text(os.path.join(vm["logdir"], "qemu.log"))
        for regex in args.expect_qemu_log:
            result(re.search(regex, qemu_log, re.M) is not None,
                   f"{vm['name']}: QEMU printed /{regex}/")
    for regex in args.expect_daemon_log:
        result(re.search(regex, rgt.read_text(daemon_log), re.M) is not None,
               f"vmmbibd logged /{regex}/")
    if daemon["events"]:
        out.append(f"# at the guests' request: {', then '.join(daemon['events'])}")
    log = rgt.read_text(daemon_log)
    lids = {}
    for vm in vms:
        seen = re.findall(rf"^vmmbibd: VM {vm['name']}: connected, LID (\d+)", log, re.M)
        result(len(set(seen)) == 1,
               f"vmmbibd: {vm['name']} joined the daemon {len(seen)} time(s), "
               f"always with the same LID ({', '.join(seen)})")
        if seen:
            lids[vm["name"]] = seen[0]
    if len(vms) > 1:
        result(len(set(lids.values())) == len(vms),
               f"vmmbibd: the VMs are different ports (LIDs {', '.join(lids.values())})")
    result(daemon_rc == 0, f"vmmbibd stopped cleanly on SIGTERM (exit status {daemon_rc})")
    if failed:
        out.append("# ---- vmmbibd log:")
        out.extend(f"# {l}" for l in log.splitlines())
    out.append(f"1..{n}")
    print("\n".join(out), flush=True)
    if not failed and not args.log_dir:
        shutil.rmtree(top, ignore_errors=True)
    elif failed:
        print(f"# logs kept in {top}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

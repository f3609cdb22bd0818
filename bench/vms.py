#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The comparisons of issue 7 between VMs: three systems, every figure.

    vms.py --qemu QEMU --kernel VMLINUZ --initrd INITRD --vmmbibd VMMBIBD
           --reg-mr GUEST-PROGRAM --doc docs/performance.md
           [--plots DIR] [--json OUT.json] [--engine-json E.json]
           [--quick] [--rounds N] [--scale 1,2,4,8] [--log-dir DIR]
    vms.py --from-json OUT.json --doc docs/performance.md [--plots DIR] ...

Boots guests (one vCPU each, TCG) as tests/guest/run-two-vms.py boots them
(its pieces are imported, not copied): vmmbibd on a socket in a temporary
directory, the devices joined to it, each pair of VMs linked by virtio-net
over a UDP tunnel. Every VM runs bench/vms-guest.sh; in a pair the first
runs the servers, the second the clients, whose figures are kept:

  per round, boot 1 (doorbell=ring): (a) vmmbypass-ib, then (c) rdma_rxe on
           the virtio-net link (vmmbib0 idle meanwhile);
  per round, boot 2 (doorbell=mmio): (b) vmmbypass-ib;
  then one boot per VM count of --scale: (a) with 1 VM (a pair of processes
           over lo), 2, 4, 8 VMs in pairs, all pairs started together by a
           line the host writes to each VM's third serial port.

While the guests run, the host samples the CPU time of every QEMU and of
vmmbibd at the clients' marks around each figure (CPU seconds per million
messages), their RSS and PSS (memory per VM), and records a perf profile
of chosen figures (if perf is installed). Then it replaces the text between
<!-- BEGIN vms --> and <!-- END vms --> of the doc (appending the section if
missing; everything else is kept), writes PNG plots with gnuplot (if
installed) and gives each figure as a ratio to (c) and to (d): the engine
benchmark (bench/report.py --json, same `make bench`) and memcpy.
VMMBIB_BENCH_ONLY="a:vmmbib0:ib_write_lat c:rxe:regmr ..." keeps only the
plan items that start with one of these prefixes (to rerun a few figures).
Python 3 standard library only.
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
_spec = importlib.util.spec_from_file_location(
    "run_two_vms", os.path.join(ROOT, "tests", "guest", "run-two-vms.py"))
r2v = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(r2v)
rgt = r2v.rgt
sys.path.insert(0, HERE)
import report  # noqa: E402  (the machine and commit lines are its own)

BEGIN = "<!-- BEGIN vms: written by bench/vms.py (make bench); " \
        "edits inside are overwritten -->"
END = "<!-- END vms -->"
BEGIN_RE = re.compile(r"<!-- BEGIN vms\b.*?-->")

SYSTEMS = {
    "a": "vmmbypass-ib, vmmbibd, doorbell=ring",
    "b": "vmmbypass-ib, vmmbibd, doorbell=mmio",
    "c": "rdma_rxe over virtio-net",
}
LAT = ["ib_write_lat", "ib_send_lat", "ib_read_lat"]
BW = ["ib_write_bw", "ib_send_bw"]
LAT_SIZES = [2, 8, 64, 512, 4096]
BW_SIZES = [2, 64, 1024, 8192, 65536, 1048576]
QUICK_LAT_SIZES = [8]
QUICK_BW_SIZES = [8, 65536]
REGMR_PAGES = 262144
SCALE_SECS = 10
# perftest -n: each run lasts about a second under TCG (rxe is 100 to 1000
# times slower than vmmbypass-ib, mmio some 10 to 40 times).
LAT_ITERS = {"a": 1000, "b": 500, "c": 100}


def bw_iters(system, size):
    if system == "a":
        return int(max(2000, min(100000, 2e9 / size)))
    if system == "b":
        return int(max(500, min(10000, 1e9 / size)))
    return int(max(16, min(2000, 4e6 / size)))


# The device's cap on pinned guest memory (MRs and rings together) is by
# default 1024 MiB, what the largest MR (262144 pages) needs alone: raised
# so that the 1 GiB registration can be measured (rxe has no such cap).
PINNED = "max-pinned-mb=2048"
# Figures profiled with perf (host-wide: QEMUs, vmmbibd, the rest).
PROFILE = ["a/ib_write_lat/8", "a/ib_write_bw/65536", "a/regmr/0", "c/regmr/0"]
BENCH_LINE = re.compile(r"^VMMBIB-OUT: VMMBIB-BENCH sys=(\w+) prog=(\w+) "
                        r"size=(\d+)\s+(.*)$")
MARK_LINE = re.compile(r"^VMMBIB-OUT: VMMBIB-MARK (begin|end) (\S+)$")
MIB = 1048576 / 1e6   # perftest's MB/sec is MiB/s
VM_NAME = re.compile(r"^vm\d+$")


def log(msg):
    print("# vms: " + msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qemu")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--vmmbibd")
    p.add_argument("--reg-mr", help="bench/reg-mr.c built for the guest")
    p.add_argument("--doc", required=True)
    p.add_argument("--plots", help="write the PNG plots here (default: "
                   "perf/ next to the doc)")
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--from-json", help="only rewrite the doc from this JSON")
    p.add_argument("--engine-json", help="bench/report.py's JSON: (d)")
    p.add_argument("--quick", action="store_true",
                   help="few sizes, a tenth of the iterations, scaling 1 and 2 VMs")
    p.add_argument("--rounds", type=int, default=2,
                   help="boots of (a)+(c) and of (b); figures are the median (default 2)")
    p.add_argument("--scale", default=None,
                   help="VM counts of the scaling figures (default 1,2,4,8; quick 1,2)")
    p.add_argument("--no-compare", action="store_true", help="scaling only")
    p.add_argument("--log-dir", help="keep the VMs' logs here")
    a = p.parse_args(argv)
    if not a.from_json and not all((a.qemu, a.kernel, a.initrd, a.vmmbibd, a.reg_mr)):
        p.error("--qemu, --kernel, --initrd, --vmmbibd and --reg-mr are needed to run")
    if a.scale is None:
        a.scale = "1,2" if a.quick else "1,2,4,8"
    a.scale = [int(x) for x in a.scale.split(",") if x]
    if any(n != 1 and (n % 2 or n > 8) for n in a.scale):
        p.error("--scale: 1 or an even number of VMs up to 8")
    if a.plots is None:
        a.plots = os.path.join(os.path.dirname(os.path.abspath(a.doc)), "perf")
    return a


# ---- the machine and its processes ----

def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]          # total, idle + iowait


def proc_cpu_secs(pid):
    """utime + stime of a process (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_mem_kib(pid):
    """(RSS, PSS) of a process in KiB, from smaps_rollup."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError):
        return None
    return out.get("Rss"), out.get("Pss")


def machine():
    m = report.machine()
    m["load_start"] = m.pop("load")
    return m


def qemu_pid(vm):
    try:
        with open(os.path.join(vm["logdir"], "qemu.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Watcher:
    """Follows the guests' results ports while they run: CPU snapshots at
    the clients' marks, the start signal once every VM is ready, memory
    samples, perf profiles of the PROFILE figures."""

    def __init__(self, vms, daemon, bootdir, profile):
        self.vms, self.daemon, self.bootdir = vms, daemon, bootdir
        self.profile = profile if shutil.which("perf") else []
        self.pos = {vm["name"]: 0 for vm in vms}
        self.ready, self.go_sent = set(), None
        self.open_marks, self.figures_cpu = {}, {}
        self.mem = {}
        self.perf = None
        self.profiles = {}
        self.window = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop)

    def pids(self):
        out = {vm["name"]: qemu_pid(vm) for vm in self.vms}
        out["vmmbibd"] = self.daemon.pid
        return {k: v for k, v in out.items() if v}

    def snapshot(self):
        return {"t": time.monotonic(),
                "cpu": {k: proc_cpu_secs(p) for k, p in self.pids().items()}}

    def sample_mem(self):
        for k, p in self.pids().items():
            m = proc_mem_kib(p)
            if m and m[0]:
                old = self.mem.get(k, (0, 0))
                self.mem[k] = (max(old[0], m[0]), max(old[1], m[1] or 0))

    def send_go(self):
        for vm in self.vms:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(os.path.join(vm["logdir"], "go.sock"))
                    s.sendall(b"GO\n")
                    time.sleep(0.05)
            except OSError as e:
                log(f"{vm['name']}: could not send the start signal: {e}")
        self.go_sent = self.snapshot()

    def perf_start(self, key):
        pids = ",".join(str(p) for p in self.pids().values())
        out = os.path.join(self.bootdir, "perf-" + key.replace("/", "_") + ".data")
        self.perf = (key, out, subprocess.Popen(
            ["perf", "record", "-q", "-F", "499", "-p", pids, "-o", out],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))

    def perf_stop(self):
        key, out, proc = self.perf
        self.perf = None
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.profiles[key] = perf_top(out)

    def line(self, vm, line):
        line = line.strip()
        m = MARK_LINE.match(line)
        if m:
            what, key = m.groups()
            if what == "begin":
                self.open_marks[(vm["name"], key)] = self.snapshot()
                if key in self.profile and not self.perf:
                    self.perf_start(key)
            else:
                start = self.open_marks.pop((vm["name"], key), None)
                if start:
                    end = self.snapshot()
                    self.figures_cpu[key] = cpu_delta(start, end)
                if self.perf and self.perf[0] == key:
                    self.perf_stop()
                if self.go_sent and not self.open_marks and not self.window:
                    self.window = cpu_delta(self.go_sent, self.snapshot())
                    if self.perf and self.perf[0] == "go":
                        self.perf_stop()
        elif line == "VMMBIB-OUT: VMMBIB-READY":
            self.ready.add(vm["name"])
            if len(self.ready) == len(self.vms) and not self.go_sent:
                if "go" in self.profile:
                    self.perf_start("go")
                self.send_go()

    def loop(self):
        last_mem = 0
        while not self.stop.is_set():
            for vm in self.vms:
                path = os.path.join(vm["logdir"], "results.log")
                try:
                    with open(path, "rb") as f:
                        f.seek(self.pos[vm["name"]])
                        data = f.read()
                except FileNotFoundError:
                    continue
                data = data[:data.rfind(b"\n") + 1]
                self.pos[vm["name"]] += len(data)
                for line in data.decode("utf-8", "replace").splitlines():
                    self.line(vm, line)
            if time.monotonic() - last_mem > 2:
                self.sample_mem()
                last_mem = time.monotonic()
            time.sleep(0.05)
        if self.perf:
            self.perf_stop()


def cpu_delta(a, b):
    out = {"secs": b["t"] - a["t"]}
    for k, v in b["cpu"].items():
        if v is not None and a["cpu"].get(k) is not None:
            out[k] = v - a["cpu"][k]
    return out


def perf_top(path, n=400):
    """[(percent, command, shared object, symbol)] of a perf.data file."""
    try:
        p = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children",
                            "--sort", "comm,dso,sym", "--percent-limit", "0.05"],
                           capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = []
    # Columns are separated by two spaces or more; a thread's name ("CPU
    # 0/TCG") or an object ("[JIT] tid 7") may hold single spaces.
    for line in p.stdout.splitlines():
        f = re.split(r"\s{2,}", line.strip())
        if len(f) >= 4 and f[0].endswith("%") and f[3][:4] in ("[.] ", "[k] "):
            rows.append((float(f[0][:-1]), f[1], f[2], f[3][4:].strip()))
    # By process and object: TCG's translated guest code is spread over
    # countless addresses of no object ([unknown], perf-PID.map).
    objs = []
    try:
        p = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children",
                            "--sort", "comm,dso"], capture_output=True, text=True,
                           timeout=300)
        for line in p.stdout.splitlines():
            f = re.split(r"\s{2,}", line.strip())
            if len(f) == 3 and f[0].endswith("%") and not line.startswith("#"):
                objs.append((float(f[0][:-1]), f[1], f[2]))
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        os.unlink(path)
    except OSError:
        pass
    return {"sym": rows[:n], "dso": objs[:12]}


# ---- one boot ----

def parse_row(prog, row):
    """A perftest result row, or a reg-mr line, as a figure."""
    if prog == "regmr":
        kv = dict(x.split("=", 1) for x in row.split()[1:] if "=" in x)
        return {row.split()[0]: {k: float(v) for k, v in kv.items()}}
    row = row.split()
    if "_lat" in prog:
        # bytes iters t_min t_max t_typical t_avg t_stdev p99 p99.9
        return {"median_us": float(row[4]), "avg_us": float(row[5]),
                "p99_us": float(row[7]), "p999_us": float(row[8]),
                "iters": int(row[1])}
    # bytes iters BW_peak BW_average MsgRate (MiB/s with 2 decimals, Mpps
    # with 6): each figure from whichever of the two has more digits.
    size, bw, mpps = int(row[0]), float(row[3]) * MIB, float(row[4])
    if bw <= 0 and mpps <= 0:
        # Seen under TCG: perftest's sampled CPU frequency was unusable.
        raise ValueError("perftest reported no bandwidth")
    if bw < 10:
        bw = mpps * size
    if mpps < 0.01:
        mpps = bw / size
    return {"MBps": bw, "Mpps": mpps, "iters": int(row[1])}


def run_boot(args, nvms, plan, device_args, memory, top, n, profile):
    """Boots nvms VMs (pairs; 1: solo) on a fresh vmmbibd, each running
    vms-guest.sh with the plan. Returns (figures, failures, info)."""
    bootdir = os.path.join(top, f"boot{n}")
    os.makedirs(bootdir)
    sock = os.path.join(bootdir, "vmmbibd.sock")
    daemon_log = os.path.join(bootdir, "vmmbibd.log")
    targs = r2v.parse_args(
        ["--qemu", args.qemu, "--kernel", args.kernel, "--initrd", args.initrd,
         "--vmmbibd", args.vmmbibd, "--script", os.path.join(HERE, "vms-guest.sh"),
         "--memory", memory, "--timeout", "1500",
         "--env", "VMMBIB_BENCH_PLAN=" + " ".join(plan)])
    daemon = r2v.start_daemon(args.vmmbibd, sock, daemon_log)
    vms, threads, watcher = [], [], None
    t0, cpu0 = time.monotonic(), cpu_times()
    try:
        for pair in range(max(1, nvms // 2)):
            ports = r2v.free_udp_ports(2)
            ips = (f"10.77.{pair}.1", f"10.77.{pair}.2")
            for k in range(min(2, nvms)):
                name = f"vm{2 * pair + k + 1}"
                role = "solo" if nvms == 1 else ("server", "client")[k]
                logdir = os.path.join(bootdir, name)
                os.makedirs(logdir)
                vargs = r2v.vm_args(targs, name, role, ips[k], ips[1 - k], sock,
                                    (ports[k], ports[1 - k]), logdir)
                vargs.device_args = [device_args]
                vargs.file = [f"vmmbib-reg-mr={args.reg_mr}"]
                vargs.qemu_arg += [
                    "-chardev", f"socket,id=go,path={logdir}/go.sock,server=on,wait=off",
                    "-serial", "chardev:go"]
                vms.append({"name": name, "role": role, "args": vargs, "logdir": logdir,
                            "cmd": rgt.qemu_command(vargs, logdir, False)})
        watcher = Watcher(vms, daemon, bootdir, profile)
        threads = [threading.Thread(target=r2v.run_vm, args=(vm,)) for vm in vms]
        for t in threads:
            t.start()
        watcher.thread.start()
        for t in threads:
            t.join()
    finally:
        if watcher and watcher.thread.is_alive():
            watcher.stop.set()
            watcher.thread.join()
        daemon_cpu = proc_cpu_secs(daemon.pid)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    cpu1 = cpu_times()
    info = {"vms": nvms, "device": device_args, "memory": memory,
            "secs": time.monotonic() - t0, "daemon_cpu_secs": daemon_cpu,
            "host_busy_cpus": ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) /
            max(1, cpu1[0] - cpu0[0]) * os.cpu_count(),
            "figures_cpu": watcher.figures_cpu if watcher else {},
            "mem_kib": watcher.mem if watcher else {},
            "profiles": watcher.profiles if watcher else {},
            "go": bool(watcher and watcher.go_sent),
            "window_cpu": watcher.window if watcher else None}
    failures = []
    figures = {}
    for vm in vms:
        res = vm["results"]
        for ok, name in res.tap():
            if not ok:
                failures.append(f"boot {n}, {vm['name']}: {name}")
        if vm["why"]:
            failures.append(f"boot {n}, {vm['name']}: {vm['why']}")
        elif res.rc is None:
            failures.append(f"boot {n}, {vm['name']}: the script did not finish")
        if res.stats:
            st = rgt.stats_since_baseline(res)
            info[vm["name"] + "_stats"] = next(iter(st.values()), {})
        if vm["role"] == "server":
            continue
        text = rgt.read_text(os.path.join(vm["logdir"], "results.log"))
        for line in text.splitlines():
            m = BENCH_LINE.match(line.strip())
            if not m:
                continue
            sys_, prog, size, row = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            try:
                fig = parse_row(prog, row)
            except (IndexError, ValueError):
                failures.append(f"unparsed row: {line.strip()}")
                continue
            key = f"{sys_}/{prog}/{size}"
            if nvms > 2:
                key += "/" + vm["name"]
            if prog == "regmr":
                figures.setdefault(key, {}).setdefault("rows", []).append(fig)
            else:
                figures[key] = fig
    if failures:
        log(f"boot {n}: logs kept in {bootdir}")
    return figures, failures, info


def compare_plans(quick):
    lat_sizes = QUICK_LAT_SIZES if quick else LAT_SIZES
    bw_sizes = QUICK_BW_SIZES if quick else BW_SIZES
    div = 10 if quick else 1
    plans = {}
    for s, dev in (("a", "vmmbib0"), ("b", "vmmbib0"), ("c", "rxe")):
        p = []
        li = max(20, LAT_ITERS[s] // div)
        for prog in LAT:
            for size in lat_sizes:
                p.append(f"{s}:{dev}:{prog}:{size}:{li}:-")
        p.append(f"{s}:{dev}:ib_send_lat:8:{li}:e")
        for prog in BW:
            for size in bw_sizes:
                p.append(f"{s}:{dev}:{prog}:{size}:{max(16, bw_iters(s, size) // div)}:-")
        if s != "b":
            p.append(f"{s}:{dev}:regmr:0:{4096 if quick else REGMR_PAGES}:-")
        plans[s] = p
    return plans


def measure(args):
    top = r2v.fresh_log_dir(args.log_dir, "vmmbib-bench-vms-")
    plans = compare_plans(args.quick)
    if os.environ.get("VMMBIB_BENCH_ONLY"):
        only = os.environ["VMMBIB_BENCH_ONLY"].split()
        plans = {s: [x for x in p if any(x.startswith(o) for o in only)]
                 for s, p in plans.items()}
    d = {"machine": machine(), "commit": report.git_commit(ROOT),
         "quick": args.quick, "plans": plans, "rounds": [], "failures": [],
         "boots": [], "scale": {}, "scale_secs": 3 if args.quick else SCALE_SECS}
    start = time.monotonic()
    n = 0
    boots = [(plans["a"] + plans["c"], "id=vmmbib0,chardev=ib0,doorbell=ring," + PINNED, PROFILE),
             (plans["b"], "id=vmmbib0,chardev=ib0,doorbell=mmio," + PINNED, [])]
    for r in range(0 if args.no_compare else args.rounds):
        figures = {}
        for plan, dev, prof in boots:
            n += 1
            log(f"round {r + 1}, boot {n}: {len(plan)} figures ({dev})")
            figs, fails, info = run_boot(args, 2, plan, dev, "512M", top, n,
                                         prof if r == 0 else [])
            log(f"boot {n}: {len(figs)} figures in {info['secs']:.0f} s"
                + (f"; failures: {fails}" if fails else ""))
            figures.update(figs)
            d["failures"] += fails
            d["boots"].append(info)
        d["rounds"].append(figures)
    for nvms in args.scale:
        n += 1
        plan = [f"s{nvms}:vmmbib0:ib_write_bw:8:{d['scale_secs']}:Dg"]
        log(f"scaling, boot {n}: {nvms} VMs")
        figs, fails, info = run_boot(args, nvms, plan, "id=vmmbib0,chardev=ib0,doorbell=ring",
                                     "256M", top, n, ["go"] if nvms == max(args.scale) else [])
        log(f"boot {n}: {len(figs)} figures in {info['secs']:.0f} s"
            + (f"; failures: {fails}" if fails else ""))
        d["failures"] += fails
        d["boots"].append(info)
        d["scale"][str(nvms)] = {"figures": figs, "boot": len(d["boots"]) - 1}
    d["secs"] = time.monotonic() - start
    with open("/proc/loadavg") as f:
        d["machine"]["load_end"] = f.read().split()[0]
    if not d["failures"] and not args.log_dir:
        shutil.rmtree(top, ignore_errors=True)
    return d


# ---- combining ----

def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def combine(d):
    """The median over the rounds of each value of each figure, with the
    rounds' values as FIELD_all; reg-mr's rows by their page count."""
    out = {}
    for key in sorted({k for r in d["rounds"] for k in r}):
        vals = [r[key] for r in d["rounds"] if key in r]
        if "/regmr/" in key:
            reg, qp, failed = {}, [], set()
            for v in vals:
                for row in v["rows"]:
                    if "REGMR_FAIL" in row:
                        failed.add((int(row["REGMR_FAIL"]["pages"]),
                                    os.strerror(int(row["REGMR_FAIL"]["errno"]))))
                    if "REGMR" in row:
                        reg.setdefault(int(row["REGMR"]["pages"]), []).append(row["REGMR"])
                    if "QPRATE" in row:
                        qp.append(row["QPRATE"]["per_sec"])
            out[key] = {"reg": {p: {f: median([r[f] for r in rs])
                                    for f in ("reg_us", "dereg_us")}
                                for p, rs in sorted(reg.items())},
                        "qp_per_sec": median(qp) if qp else None,
                        "failed": sorted(failed)}
            continue
        fig = {}
        for field in vals[0]:
            xs = [v[field] for v in vals]
            fig[field] = median(xs)
            fig[field + "_all"] = xs
        out[key] = fig
    return out


def engine_figures(path):
    """(d): the engine benchmark's JSON of the same make bench, if any."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            e = json.load(f)
    except (OSError, ValueError):
        return None
    b = e.get("bench", e)
    if not isinstance(b, dict) or "memcpy64k_MBps" not in b:
        return None
    b = dict(b)
    b["when"] = (e.get("machine") or {}).get("date", "?")
    b["commit"] = e.get("commit", "?")
    return b


def jain(xs):
    xs = [x for x in xs if x is not None]
    if not xs or not sum(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def scale_rows(d):
    """Per VM count: pair rates (M/s), their sum, Jain's index, CPU."""
    rows = []
    for nvms, s in sorted(d["scale"].items(), key=lambda x: int(x[0])):
        nvms = int(nvms)
        rates = [f["Mpps"] for k, f in sorted(s["figures"].items())
                 if "/ib_write_bw/" in k]
        boot = d["boots"][s["boot"]]
        win = boot.get("window_cpu") or {}
        msgs = sum(rates) * 1e6 * d["scale_secs"]
        cpu = sum(v for k, v in win.items() if k != "secs")
        rows.append({"vms": nvms, "pairs": max(1, nvms // 2), "rates": rates,
                     "total": sum(rates) if rates else None, "jain": jain(rates),
                     "cpu_per_M": cpu / msgs * 1e6 if msgs and win else None,
                     "window": win.get("secs"), "busy": boot["host_busy_cpus"],
                     "mem": boot.get("mem_kib", {}), "profile": boot.get("profiles", {})})
    return rows


# ---- formatting ----

def fmt_us(v):
    if v is None:
        return "—"
    return "%.2f µs" % v if v < 10 else "%.1f µs" % v if v < 100 else "%.0f µs" % v


def fmt_mbps(v):
    return "%.2f" % v if v < 10 else "%.0f" % v


def fmt_rate(mpps):
    v = mpps * 1e6
    if v >= 1e6:
        return "%.2f M/s" % mpps
    return "%.1f k/s" % (v / 1e3) if v >= 1e3 else "%.0f /s" % v


def fmt_ratio(v):
    if v is None:
        return "—"
    return "%.2f×" % v if v < 1 else "%.1f×" % v if v < 10 else "%.0f×" % v


def fmt_size(n):
    if n >= 1048576:
        return "%d MiB" % (n // 1048576)
    return "%d KiB" % (n // 1024) if n >= 1024 else "%d B" % n


def status(ok):
    return "—" if ok is None else "**met**" if ok else "**missed**"


def figure_cost(d, key):
    """(CPU seconds per million messages, QEMUs' part, vmmbibd's part) of a
    bandwidth figure, from the CPU snapshots at its marks."""
    for r, b in zip(d["rounds"] and d["rounds"][:1] or [], d["boots"]):
        pass
    for b in d["boots"]:
        c = (b.get("figures_cpu") or {}).get(key)
        if not c:
            continue
        fig = None
        for r in d["rounds"]:
            if key in r:
                fig = r[key]
                break
        if not fig or not fig.get("iters"):
            return None
        msgs = fig["iters"]
        q = sum(v for k, v in c.items() if VM_NAME.match(k))
        dm = c.get("vmmbibd", 0.0)
        return ((q + dm) / msgs * 1e6, q / msgs * 1e6, dm / msgs * 1e6, c["secs"])
    return None


def profile_lines(prof, what):
    if not prof:
        return []
    rows = prof["sym"] if isinstance(prof, dict) else prof
    objs = prof.get("dso", []) if isinstance(prof, dict) else []
    by_comm = {}
    for pct, comm, *_ in objs or rows:
        # QEMU's threads all keep its name (no -name debug-threads=on).
        who = "vmmbibd" if comm.startswith("vmmbib") else \
            "QEMU" if comm.startswith(("qemu", "CPU ")) else comm
        by_comm[who] = by_comm.get(who, 0) + pct
    out = ["Profile of %s (perf record -F 499 of every QEMU and vmmbibd, "
           "software clock; share of all samples, own cost). By process: %s%s."
           % (what, ", ".join("%s %.0f %%" % kv for kv in
                              sorted(by_comm.items(), key=lambda kv: -kv[1])),
              "; the other %.0f %%: TCG's translated guest code, not parsed "
              "by the version of vms.py that recorded this profile"
              % (100 - sum(by_comm.values())) if sum(by_comm.values()) < 90 else ""), ""]
    if objs:
        out.append("By process and object: " + ", ".join(
            "%s %s %.1f %%" % (c, "translated guest code" if o.startswith(("[unknown]", "[JIT]", "perf-"))
                               else os.path.basename(o), pct)
            for pct, c, o in objs[:8]) + ".")
        out.append("")
    out.append("| % | process | object | symbol |")
    out.append("|---|---|---|---|")
    shown = rows[:8] + [r for r in rows[8:] if r[1].startswith("vmmbib")][:4]
    for pct, comm, dso, sym in shown:
        out.append("| %.1f | %s | %s | `%s` |" % (pct, comm, os.path.basename(dso),
                                                 sym.replace("|", "\\|")[:70]))
    out.append("")
    return out


# ---- plots (gnuplot) ----

def plot(plots_dir, name, title, xlabel, ylabel, series, logx=True, logy=True,
         extra=""):
    """series: [(label, [(x, y)])]. Returns the PNG's path or None."""
    if not shutil.which("gnuplot") or not any(pts for _, pts in series):
        return None
    os.makedirs(plots_dir, exist_ok=True)
    png = os.path.join(plots_dir, name + ".png")
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        for i, (label, pts) in enumerate(series):
            if not pts:
                continue
            dat = os.path.join(tmp, f"{i}.dat")
            with open(dat, "w") as f:
                for x, y in pts:
                    f.write(f"{x} {y}\n")
            plots.append(f"'{dat}' using 1:2 with linespoints title '{label}'")
        script = "\n".join([
            "set terminal png size 640,400 font ',9' noenhanced",
            f"set output '{png}'",
            f"set title '{title}'",
            f"set xlabel '{xlabel}'", f"set ylabel '{ylabel}'",
            "set logscale x 2" if logx else "", "set logscale y" if logy else "",
            # 1, 64, 1K, 64K, 1M: binary prefixes for sizes and page counts
            "set format x '%.0b%B'" if logx else "",
            "set key left top", "set grid", extra,
            "plot " + ", ".join(plots)])
        p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
        if p.returncode:
            log(f"gnuplot failed for {name}: {p.stderr.strip()}")
            return None
    return png


# ---- the section ----

def section(d, eng, plots_dir, doc_path):
    F = combine(d)
    m = d["machine"]
    mem = eng["memcpy64k_MBps"] if eng else None
    L = []
    a = L.append
    rel = os.path.relpath(plots_dir, os.path.dirname(os.path.abspath(doc_path)))
    pngs = {}

    def img(name, path, alt):
        if path:
            pngs[name] = path
            a("![%s](%s/%s)" % (alt, rel, os.path.basename(path)))
            a("")

    a(BEGIN)
    a("## Between VMs (issue 7): vmmbypass-ib against rdma_rxe and the engine")
    a("")
    bz = [b["host_busy_cpus"] for b in d["boots"]]
    a("Measured %s on %s CPUs (%s), Linux %s, commit %s; load average %s at "
      "the start, %s at the end; %.0f s in all%s. `make bench` runs "
      "`bench/report.py` (the engine, (d)) and then `bench/vms.py`, which boots "
      "the guests as `tests/guest/run-two-vms.py` does (its code, imported) and "
      "runs `bench/vms-guest.sh` in each; in a pair, the first VM runs the "
      "servers and the second the clients, whose figures are shown."
      % (m["date"], m["nproc"], m["model"], m["kernel"], d["commit"],
         m["load_start"], m.get("load_end", "?"), d["secs"],
         " (a quick run: few sizes and iterations)" if d.get("quick") else ""))
    a("")
    a("**Caveats.** The guests are TCG (no KVM here): one vCPU each, emulated, "
      "with the QEMUs and vmmbibd's engine thread on %s host CPUs. The machine "
      "was shared: other jobs (builds, other guests) ran during the run, and "
      "the host's CPUs were busy %s CPUs on average over the boots. Absolute "
      "figures therefore say little; the ratios between systems measured in "
      "this same run are what to compare. Every figure that involves guest "
      "code (posting, polling, the rxe and TCP/IP stacks, interrupts) is many "
      "times slower than under KVM: the ratios say how much guest work each "
      "system needs per message, not what the systems would do on hardware "
      "virtualization."
      % (m["nproc"], "%.1f – %.1f" % (min(bz), max(bz)) if bz else "?"))
    a("")
    a("Systems: **(a)** %s; **(b)** %s (a trapped register write per "
      "doorbell, the pvrdma style); **(c)** %s: `rdma link add rxe0 type rxe "
      "netdev eth0` in both guests, RoCE v2 over the VMs' L2 link (virtio-net, "
      "`-netdev dgram` UDP tunnel between the two QEMUs, MTU 1500); **(d)** "
      "the ceiling: the engine benchmark above (host-lib engine, synthetic "
      "guests, no VM) and memcpy, %s. (a) and (c) share a boot (vmmbib0 "
      "idles while rxe runs), (b) has its own; both with `%s` (see the "
      "control path); %d round(s), figures are the "
      "median over the rounds. perftest RC, `-n` iterations chosen so that "
      "each run lasts about a second: latency %s for (a)/(b)/(c); bandwidth "
      "see the table. perftest's `MB/sec` (MiB/s) is converted to MB/s (10⁶)."
      % (SYSTEMS["a"], SYSTEMS["b"], SYSTEMS["c"],
         "measured %s in the same `make bench`" % eng["when"] if eng
         else "**not available in this run**", PINNED, len(d["rounds"]),
         "/".join(str(max(20, LAT_ITERS[s] // (10 if d.get("quick") else 1)))
                  for s in "abc")))
    a("")
    if d["failures"]:
        a("**This run had failures** (their figures are missing, shown —):")
        a("")
        for f in d["failures"][:20]:
            a("- " + f.replace("|", "\\|")[:300])
        a("")

    # ---- goals ----
    goals = []
    a("### Goals (issue 7)")
    a("")
    a("| goal | measured | status |")
    a("|---|---|---|")
    wa, wc = F.get("a/ib_write_lat/8"), F.get("c/ib_write_lat/8")
    if wa and wc:
        r = wc["median_us"] / wa["median_us"]
        miss = "" if r >= 10 else "; missed by a factor %.1f" % (10 / r)
        a("| 8-byte ib_write_lat: (a) ≥ 10× lower than (c) | median %s vs %s: "
          "%s lower (p99 %s vs %s: %s)%s | %s |"
          % (fmt_us(wa["median_us"]), fmt_us(wc["median_us"]), fmt_ratio(r),
             fmt_us(wa["p99_us"]), fmt_us(wc["p99_us"]),
             fmt_ratio(wc["p99_us"] / wa["p99_us"]), miss, status(r >= 10)))
        goals.append(("lat", r >= 10))
    else:
        a("| 8-byte ib_write_lat: (a) ≥ 10× lower than (c) | not measured | — |")
    ba = F.get("a/ib_write_bw/65536")
    if ba and mem:
        r = ba["MBps"] / mem
        miss = "" if r >= 0.5 else "; missed by %.0f points (%.1f× short)" % (
            100 * (0.5 - r), 0.5 / r)
        a("| 64 KiB ib_write_bw: (a) ≥ 50 %% of memcpy | %.0f MB/s vs memcpy %.0f "
          "MB/s (d): %.1f %%%s | %s |"
          % (ba["MBps"], mem, 100 * r, miss, status(r >= 0.5)))
        goals.append(("bw", r >= 0.5))
    else:
        a("| 64 KiB ib_write_bw: (a) ≥ 50 % of memcpy | not measured | — |")
    ra, rc = F.get("a/regmr/0"), F.get("c/regmr/0")
    if ra and rc and ra["reg"] and rc["reg"]:
        both = [p for p in ra["reg"] if p in rc["reg"]]
        worst = max(both, key=lambda p: ra["reg"][p]["reg_us"] / rc["reg"][p]["reg_us"])
        wr = ra["reg"][worst]["reg_us"] / rc["reg"][worst]["reg_us"]
        wdr = max(ra["reg"][p]["dereg_us"] / rc["reg"][p]["dereg_us"] for p in both)
        # Below ~1024 pages the fixed cost of a command round trip (~1 ms
        # under TCG) hides the per-page cost.
        big = [p for p in ra["reg"] if p >= 1024]
        per_page = [ra["reg"][p]["reg_us"] / p for p in big]
        flat = max(per_page) / min(per_page) if per_page else None
        ok_speed = wr <= 1.0
        ok_flat = flat is not None and flat <= 2.0
        a("| Registration: (a) no slower than (c) at any size | reg_mr (a)/(c) at "
          "worst %.2f (at %d pages; 1 page: %.2f, %d pages: %.2f); dereg_mr at "
          "worst %.2f%s | %s |"
          % (wr, worst, ra["reg"][both[0]]["reg_us"] / rc["reg"][both[0]]["reg_us"],
             both[-1], ra["reg"][both[-1]]["reg_us"] / rc["reg"][both[-1]]["reg_us"],
             wdr, "" if ok_speed else "; missed: %.0f %% slower at %d pages" % (
                 100 * (wr - 1), worst), status(ok_speed)))
        a("| Registration: per-page cost flat as pages grow | (a) reg_mr per page "
          "from 1024 to %d pages: %s µs (max / min %.2f; flat = within 2×) | %s |"
          % (big[-1], " – ".join("%.3f" % x for x in (min(per_page), max(per_page))),
             flat, status(ok_flat)))
        fa = [f for f in ra.get("failed", []) if f[0] in rc["reg"]]
        if fa:
            ok_speed = False
            L[-2] = L[-2].replace(" | **met** |", " | **missed** |")
            L[-2] = L[-2][:L[-2].rindex(" | **")] + "; and (a) fails where (c) " \
                "does not: %s | **missed** |" % ", ".join(
                    "%d pages (%s)" % f for f in fa)
        goals.append(("reg", ok_speed))
        goals.append(("flat", ok_flat))
    else:
        a("| Registration: (a) no slower than (c), per-page cost flat | not measured | — |")
    srows = scale_rows(d)
    multi = [r for r in srows if r["pairs"] > 1 and r["jain"] is not None]
    if multi:
        worst = min(multi, key=lambda r: r["jain"])
        ok = worst["jain"] >= 0.95
        a("| Fairness between pairs ≥ 0.95 (Jain's index) | %s%s | %s |"
          % (", ".join("%d pairs %.3f" % (r["pairs"], r["jain"]) for r in multi),
             "" if ok else "; missed by %.3f at %d pairs" % (0.95 - worst["jain"],
                                                             worst["pairs"]),
             status(ok)))
        goals.append(("fair", ok))
    else:
        a("| Fairness between pairs ≥ 0.95 (Jain's index) | not measured | — |")
    a("")
    a("Why a goal is missed, where one is: see the profiles at the end of this "
      "section and the hand-written notes after it.")
    a("")

    # ---- latency ----
    sizes = sorted({int(k.split("/")[2]) for k in F if "_lat/" in k and "_ev" not in k})
    a("### Latency (perftest; median = t_typical, and p99)")
    a("")
    if eng:
        a("(d) the engine alone: an 8-byte SEND ping-pong between synthetic "
          "guests on two host CPUs, median %s one way (round trip / 2, as "
          "perftest reports), p99 %s."
          % (fmt_us(eng["lat_send8_rtt_median_us"] / 2),
             fmt_us(eng["lat_send8_rtt_p99_us"] / 2)))
        a("")
    a("| program, size | (c) rxe median / p99 | (a) ring median / p99 | (b) mmio "
      "median / p99 | (c) / (a), median / p99 | (c) / (b), median / p99 | (a) / (d), median |")
    a("|---|---|---|---|---|---|---|")
    for prog in LAT:
        for size in sizes:
            cells, ratios = [], []
            c = F.get(f"c/{prog}/{size}")
            for s in "cab":
                f = F.get(f"{s}/{prog}/{size}")
                cells.append("%s / %s" % (fmt_us(f["median_us"]), fmt_us(f["p99_us"]))
                             if f else "—")
                if s != "c":
                    ratios.append("%s / %s" % (
                        fmt_ratio(c["median_us"] / f["median_us"]),
                        fmt_ratio(c["p99_us"] / f["p99_us"])) if f and c else "—")
            fa = F.get(f"a/{prog}/{size}")
            dd = fmt_ratio(fa["median_us"] / (eng["lat_send8_rtt_median_us"] / 2)) \
                if eng and fa and prog == "ib_send_lat" and size == 8 else ""
            a("| %s, %s | %s | %s |" % (prog, fmt_size(size), " | ".join(cells + ratios), dd))
    a("")
    img("latency", plot(plots_dir, "latency", "perftest latency, median (TCG guests)",
                        "message size (bytes)", "µs",
                        [(f"({s}) {p}", [(z, F[f"{s}/{p}/{z}"]["median_us"])
                                         for z in sizes if f"{s}/{p}/{z}" in F])
                         for s in "acb" for p in ("ib_write_lat", "ib_read_lat")]),
        "latency against message size")

    # ---- events ----
    a("### Completion events against polling (ib_send_lat -e, 8 B)")
    a("")
    a("| system | polling median / p99 | events (-e) median / p99 | events / polling, median |")
    a("|---|---|---|---|")
    for s in "abc":
        p_, e_ = F.get(f"{s}/ib_send_lat/8"), F.get(f"{s}/ib_send_lat_ev/8")
        a("| (%s) %s | %s | %s | %s |" % (
            s, SYSTEMS[s],
            "%s / %s" % (fmt_us(p_["median_us"]), fmt_us(p_["p99_us"])) if p_ else "—",
            "%s / %s" % (fmt_us(e_["median_us"]), fmt_us(e_["p99_us"])) if e_ else "—",
            fmt_ratio(e_["median_us"] / p_["median_us"]) if p_ and e_ else "—"))
    a("")

    # ---- bandwidth ----
    bsizes = sorted({int(k.split("/")[2]) for k in F if "_bw/" in k})
    a("### Bandwidth and message rate")
    a("")
    a("| program, size | (c) rxe MB/s, messages/s | (a) ring MB/s, messages/s | "
      "(b) mmio MB/s, messages/s | (a) / (c) | (b) / (c) | (a) / memcpy (d) | -n (a)/(b)/(c) |")
    a("|---|---|---|---|---|---|---|---|")
    for prog in BW:
        for size in bsizes:
            cells, ratios = [], []
            c = F.get(f"c/{prog}/{size}")
            for s in "cab":
                f = F.get(f"{s}/{prog}/{size}")
                cells.append("%s, %s" % (fmt_mbps(f["MBps"]), fmt_rate(f["Mpps"]))
                             if f else "—")
                if s != "c":
                    ratios.append(fmt_ratio(f["MBps"] / c["MBps"])
                                  if f and c and c["MBps"] > 0 else "—")
            fa = F.get(f"a/{prog}/{size}")
            ratios.append("%.1f %%" % (100 * fa["MBps"] / mem) if fa and mem else "—")
            ratios.append("/".join(str(int(F[f"{s}/{prog}/{size}"]["iters"]))
                                   if f"{s}/{prog}/{size}" in F else "—" for s in "abc"))
            a("| %s, %s | %s |" % (prog, fmt_size(size), " | ".join(cells + ratios)))
    a("")
    if eng:
        small = min(bsizes or [8])
        a("(d) the engine alone (same `make bench`): 8-byte RDMA WRITE %s "
          "capacity, %s pipelined with a doorbell per WQE; 8-byte SEND %s "
          "pipelined; 64 KiB RDMA WRITE %.0f MB/s pipelined; memcpy of 64 KiB "
          "%.0f MB/s. (a)'s %s ib_write_bw is %s of the engine's 8-byte pipelined rate."
          % (fmt_rate(eng["write8_burst"] / 1e6), fmt_rate(eng["write8_pipe"] / 1e6),
             fmt_rate(eng["send8_pipe"] / 1e6), eng["write64k_pipe_MBps"], mem,
             fmt_size(small), "%.1f %%" % (100 * F[f"a/ib_write_bw/{small}"]["Mpps"] * 1e6
                                           / eng["write8_pipe"])
             if f"a/ib_write_bw/{small}" in F else "—"))
        a("")
    series = [(f"({s}) {p}", [(z, F[f"{s}/{p}/{z}"]["MBps"]) for z in bsizes
                              if f"{s}/{p}/{z}" in F]) for s in "acb" for p in BW]
    if mem:
        series.append(("(d) memcpy 64 KiB", [(min(bsizes or [2]), mem),
                                             (max(bsizes or [2]), mem)]))
    img("bandwidth", plot(plots_dir, "bandwidth", "perftest bandwidth (TCG guests)",
                          "message size (bytes)", "MB/s", series),
        "bandwidth against message size")

    # ---- control path ----
    a("### Control path: ibv_reg_mr / ibv_dereg_mr and QP set-up (bench/reg-mr.c)")
    a("")
    a("Before f586d37 the device's default cap on pinned guest memory "
      "(`max-pinned-mb=1024`, all MRs and rings of a device) was exactly what "
      "the largest MR (262,144 pages) needs on its own, so that registration "
      "failed with ENOMEM once any ring was pinned; the default is 2048 now, "
      "and the boots here set it explicitly (`%s`). rxe has no such cap."
      % PINNED)
    a("")
    a("A buffer of N pages (a 16 MiB memfd mapped over and over, so that "
      "1 GiB fits the guests' RAM: real pinned pages, the same 4096 recurring) "
      "is registered and deregistered 3 to 15 times; median times. QPs: an RC "
      "QP created, taken to RTS (connected to itself) and destroyed, repeated "
      "for a second.")
    a("")
    if ra or rc:
        pages = sorted(set((ra or {}).get("reg", {})) | set((rc or {}).get("reg", {})))
        a("| pages | (c) rxe reg / dereg | (a) reg / dereg | (a) / (c) reg, dereg | "
          "(a) reg per page |")
        a("|---|---|---|---|---|")
        for p in pages:
            xa = (ra or {}).get("reg", {}).get(p)
            xc = (rc or {}).get("reg", {}).get(p)
            a("| %d | %s | %s | %s | %s |" % (
                p, "%s / %s" % (fmt_us(xc["reg_us"]), fmt_us(xc["dereg_us"])) if xc else "—",
                "%s / %s" % (fmt_us(xa["reg_us"]), fmt_us(xa["dereg_us"])) if xa else "—",
                "%.2f, %.2f" % (xa["reg_us"] / xc["reg_us"], xa["dereg_us"] / xc["dereg_us"])
                if xa and xc else "—",
                "%.3f µs" % (xa["reg_us"] / p) if xa else "—"))
        a("")
        for s_, x in (("a", ra), ("c", rc)):
            for pages_, why in (x or {}).get("failed", []):
                a("(%s): ibv_reg_mr of %d pages failed: %s (larger sizes not tried)."
                  % (s_, pages_, why))
                a("")
        qa, qc = (ra or {}).get("qp_per_sec"), (rc or {}).get("qp_per_sec")
        a("QP create + INIT/RTR/RTS + destroy: (a) %s, (c) %s; (a) / (c) %s."
          % ("%.0f /s" % qa if qa else "—", "%.0f /s" % qc if qc else "—",
             fmt_ratio(qa / qc) if qa and qc else "—"))
        a("")
        img("registration", plot(
            plots_dir, "registration", "ibv_reg_mr / ibv_dereg_mr (TCG guests)",
            "pages (4 KiB)", "µs",
            [(f"({s}) {w}", [(p, x[f"{w}_us"]) for p, x in sorted(F[f"{s}/regmr/0"]["reg"].items())])
             for s in "ac" if f"{s}/regmr/0" in F for w in ("reg", "dereg")]),
            "registration time against pages")
    else:
        a("Not measured in this run.")
        a("")

    # ---- scaling ----
    a("### Scaling: VMs in pairs on one vmmbibd (a)")
    a("")
    a("Every pair runs ib_write_bw, 8 B, `-D %d` (seconds); the host starts "
      "all pairs at once (a line on each VM's third serial port once every "
      "VM is ready). 1 VM: the pair is two processes in one guest. Guest RAM "
      "256 MiB, one vCPU each. CPU is that of every QEMU and vmmbibd from the "
      "start signal to the last pair's end (set-up included)."
      % d.get("scale_secs", SCALE_SECS))
    a("")
    if srows:
        a("| VMs | pairs | total messages/s | per pair | Jain's index | host CPU s "
          "per million messages | host busy CPUs |")
        a("|---|---|---|---|---|---|---|")
        for r in srows:
            a("| %d | %d | %s | %s | %s | %s | %.1f |" % (
                r["vms"], r["pairs"], fmt_rate(r["total"]) if r["total"] else "—",
                ", ".join(fmt_rate(x) for x in r["rates"]) or "—",
                "%.3f" % r["jain"] if r["jain"] is not None else "—",
                "%.1f" % r["cpu_per_M"] if r["cpu_per_M"] else "—", r["busy"]))
        a("")
        img("scaling", plot(plots_dir, "scaling", "8-byte ib_write_bw, all pairs (TCG)",
                            "VMs", "messages/s, all pairs",
                            [("(a) total", [(r["vms"], r["total"] * 1e6) for r in srows
                                            if r["total"]])], logy=False),
            "total message rate against VMs")
    else:
        a("Not measured in this run.")
        a("")

    # ---- cost ----
    a("### Cost on the host")
    a("")
    a("CPU seconds (user + system, from /proc/PID/stat) of both QEMUs and "
      "vmmbibd between the client's marks around a figure, per million "
      "messages; the window includes the programs' set-up and the TCP "
      "exchange, so small -n inflate it.")
    a("")
    a("| figure | (c) rxe | (a) ring | (b) mmio | (a): QEMUs + vmmbibd |")
    a("|---|---|---|---|---|")
    for prog, size in (("ib_write_bw", 2), ("ib_write_bw", 8), ("ib_write_bw", 65536),
                       ("ib_send_bw", 2), ("ib_send_bw", 8), ("ib_send_bw", 65536)):
        cs = {s: figure_cost(d, f"{s}/{prog}/{size}") for s in "abc"}
        if not any(cs.values()):
            continue
        a("| %s, %s | %s | %s | %s | %s |" % (
            prog, fmt_size(size),
            *("%.1f" % cs[s][0] if cs[s] else "—" for s in "cab"),
            "%.1f + %.1f" % (cs["a"][1], cs["a"][2]) if cs["a"] else "—"))
    a("")
    a("Host memory per VM, peak over each boot: QEMU's RSS and PSS "
      "(guest RAM is a shared memfd that vmmbibd maps too, so PSS splits it "
      "between them) plus vmmbibd's PSS divided by the VMs.")
    a("")
    a("| boot | guest RAM | VMs | QEMU RSS (MiB, mean) | QEMU PSS | vmmbibd PSS / VMs | per VM (QEMU PSS + share) |")
    a("|---|---|---|---|---|---|---|")
    for i, b in enumerate(d["boots"]):
        mk = b.get("mem_kib") or {}
        q = [v for k, v in mk.items() if VM_NAME.match(k)]
        if not q:
            continue
        dm = mk.get("vmmbibd", (0, 0))[1] / 1024 / max(1, len(q))
        rss = sum(x[0] for x in q) / len(q) / 1024
        pss = sum(x[1] for x in q) / len(q) / 1024
        a("| %d (%s) | %s | %d | %.0f | %.0f | %.1f | %.0f MiB |" % (
            i + 1, [x for x in b["device"].split(",") if x.startswith("doorbell=")][0]
            + (", scaling" if b.get("go") else ""),
            b.get("memory", "?"), len(q), rss, pss, dm, pss + dm))
    a("")

    # ---- counters ----
    rows = []
    for mode in ("ring", "mmio"):
        tot = {}
        for b in d["boots"]:
            if "doorbell=" + mode not in b["device"].split(",") or b.get("go"):
                continue
            for k, v in (b.get("vm2_stats") or {}).items():
                if isinstance(v, int):
                    tot[k] = tot.get(k, 0) + v
        w = tot.get("stats-wqes")
        if w:
            rows.append("doorbell=%s: %d WQEs, %d trapped doorbell writes "
                        "(%.3f per WQE), %d kicks (%.3f per WQE)"
                        % (mode, w, tot.get("stats-doorbell-writes", 0),
                           tot.get("stats-doorbell-writes", 0) / w,
                           tot.get("stats-kicks", 0), tot.get("stats-kicks", 0) / w))
    if rows:
        a("Device counters of the client VM (vm2) over its vmmbypass-ib "
          "figures, as the daemon counts them: " + "; ".join(rows) + ".")
        a("")

    # ---- profiles ----
    profs = {}
    for b in d["boots"]:
        for k, v in (b.get("profiles") or {}).items():
            if v and k not in profs:
                profs[k] = v
    if profs:
        a("### Profiles")
        a("")
        names = {"a/ib_write_lat/8": "(a) 8-byte ib_write_lat",
                 "a/ib_write_bw/65536": "(a) 64 KiB ib_write_bw",
                 "a/regmr/0": "(a) bench/reg-mr.c",
                 "c/regmr/0": "(c) bench/reg-mr.c",
                 "go": "the largest scaling run"}
        for k, v in profs.items():
            L.extend(profile_lines(v, names.get(k, k)))
    a(END)
    return "\n".join(L) + "\n", pngs


def write_doc(path, text):
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = "# Performance\n\n"
    m = BEGIN_RE.search(doc)
    if m and END in doc[m.end():]:
        e = doc.index(END, m.end()) + len(END)
        if doc[e:e + 1] == "\n":
            e += 1
        doc = doc[:m.start()] + text + doc[e:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(doc)
    os.replace(tmp, path)


def main(argv):
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            d = json.load(f)
    else:
        d = measure(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(d, f, indent=1)
    eng = engine_figures(args.engine_json)
    text, _ = section(d, eng, args.plots, args.doc)
    write_doc(args.doc, text)
    print(text)
    if not any(d["rounds"]) and not d["scale"]:
        log("no figures at all: see the failures above")
        return 1
    return 1 if d["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

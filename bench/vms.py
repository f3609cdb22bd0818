#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""VM comparisons of issue 7: perftest between two VMs, three systems.

    vms.py --qemu QEMU --kernel VMLINUZ --initrd INITRD --vmmbibd VMMBIBD
           --doc docs/performance.md [--json OUT.json] [--engine-json E.json]
           [--quick] [--log-dir DIR]
    vms.py --from-json OUT.json --doc docs/performance.md [--engine-json ...]

Boots two guests (one vCPU each, TCG) twice, as tests/guest/run-two-vms.py
boots them (its pieces are imported, not copied): vmmbibd on a socket in a
temporary directory, the devices joined to it, the VMs linked by virtio-net
over a UDP tunnel. Both run bench/vms-guest.sh, vm1 the perftest servers,
vm2 the clients:

  1st boot, device doorbell=ring: (a) vmmbypass-ib, then (c) rdma_rxe on the
           virtio-net link (rxe0 in both guests; vmmbib0 idle meanwhile);
  2nd boot, device doorbell=mmio: (b) vmmbypass-ib.

Then it replaces the text between <!-- BEGIN vms --> and <!-- END vms --> of
the doc (appending the section if missing; everything else is kept), with
each figure as a ratio to (c), the goals of issue 7, the machine and the
commit. memcpy bandwidth for the 64 KiB goal comes from the engine
benchmark's JSON (bench/report.py --json), else from the engine section of
the doc. Python 3 standard library only.
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
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
# The engine benchmark's report: the machine and commit lines are its own.
sys.path.insert(0, HERE)
import report  # noqa: E402

BEGIN = "<!-- BEGIN vms: written by bench/vms.py (make bench); " \
        "edits inside are overwritten -->"
END = "<!-- END vms -->"
BEGIN_RE = re.compile(r"<!-- BEGIN vms\b.*?-->")

SYSTEMS = {
    "a": "vmmbypass-ib, vmmbibd, doorbell=ring",
    "b": "vmmbypass-ib, vmmbibd, doorbell=mmio",
    "c": "rdma_rxe over virtio-net",
}
# (systems in the guests' order, device properties) per boot.
BOOTS = [((("a", "vmmbib0"), ("c", "rxe")), "id=vmmbib0,chardev=ib0,doorbell=ring"),
         ((("b", "vmmbib0"),), "id=vmmbib0,chardev=ib0,doorbell=mmio")]
LAT = ["ib_write_lat", "ib_send_lat", "ib_read_lat"]
BW = [("ib_write_bw", 8), ("ib_write_bw", 65536),
      ("ib_send_bw", 8), ("ib_send_bw", 65536)]
# perftest -n per device (latency, 8-byte and 64 KiB bandwidth): each run
# lasts about 0.1 to 5 s under TCG; rxe is 100 to 1000 times slower.
ITERS = {"vmmbib0": {"lat": 5000, "bw": 100000, "big": 20000},
         "rxe": {"lat": 1000, "bw": 5000, "big": 500}}
QUICK_ITERS = {dev: {k: v // 10 for k, v in it.items()} for dev, it in ITERS.items()}
BENCH_LINE = re.compile(r"^VMMBIB-OUT: VMMBIB-BENCH sys=(\w+) prog=(\w+) "
                        r"size=(\d+)\s+(.*)$")
MIB = 1048576 / 1e6   # perftest's MB/sec is MiB/s


def log(msg):
    print("# vms: " + msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qemu")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--vmmbibd")
    p.add_argument("--doc", required=True)
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--from-json", help="only rewrite the doc from this JSON")
    p.add_argument("--engine-json", help="bench/report.py's JSON (memcpy figure)")
    p.add_argument("--quick", action="store_true", help="a tenth of the iterations")
    p.add_argument("--rounds", type=int, default=3,
                   help="boots of each system; figures are the median (default 3)")
    p.add_argument("--log-dir", help="keep the VMs' logs here")
    a = p.parse_args(argv)
    if not a.from_json and not all((a.qemu, a.kernel, a.initrd, a.vmmbibd)):
        p.error("--qemu, --kernel, --initrd and --vmmbibd are needed to run")
    return a


# ---- the machine ----

def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]          # total, idle + iowait


def proc_cpu_secs(pid):
    """utime + stime of a process and its waited-for children, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine():
    m = report.machine()
    m["load_start"] = m.pop("load")
    return m


def git_commit():
    return report.git_commit(ROOT)


# ---- one boot of two VMs ----

def run_boot(args, systems, device_args, iters, top, n):
    """Boots vm1 and vm2 on a fresh vmmbibd and runs vms-guest.sh in both.
    Returns (figures, failures, info)."""
    bootdir = os.path.join(top, f"boot{n}")
    os.makedirs(bootdir)
    sock = os.path.join(bootdir, "vmmbibd.sock")
    daemon_log = os.path.join(bootdir, "vmmbibd.log")
    env = ["VMMBIB_BENCH_SYSTEMS=" + " ".join(
        f"{name}:{dev}:{iters[dev]['lat']}:{iters[dev]['bw']}:{iters[dev]['big']}"
        for name, dev in systems)]
    targs = r2v.parse_args(
        ["--qemu", args.qemu, "--kernel", args.kernel, "--initrd", args.initrd,
         "--vmmbibd", args.vmmbibd, "--script", os.path.join(HERE, "vms-guest.sh"),
         "--timeout", "900"] + [x for e in env for x in ("--env", e)])
    daemon = r2v.start_daemon(args.vmmbibd, sock, daemon_log)
    vms, threads = [], []
    t0, cpu0 = time.monotonic(), cpu_times()
    try:
        ports = r2v.free_udp_ports(2)
        for (name, role, ip), (_, _, peer_ip), pp in zip(
                r2v.VMS, reversed(r2v.VMS), (ports, ports[::-1])):
            logdir = os.path.join(bootdir, name)
            os.makedirs(logdir)
            vargs = r2v.vm_args(targs, name, role, ip, peer_ip, sock, pp, logdir)
            vargs.device_args = [device_args]
            vms.append({"name": name, "args": vargs, "logdir": logdir,
                        "cmd": rgt.qemu_command(vargs, logdir, False)})
        threads = [threading.Thread(target=r2v.run_vm, args=(vm,)) for vm in vms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        daemon_cpu = proc_cpu_secs(daemon.pid)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    cpu1 = cpu_times()
    info = {"systems": [x[0] for x in systems], "device": device_args,
            "secs": time.monotonic() - t0, "daemon_cpu_secs": daemon_cpu,
            "host_busy_cpus": ((cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1])) /
            max(1, cpu1[0] - cpu0[0]) * os.cpu_count()}
    failures = []
    for vm in vms:
        res = vm["results"]
        for ok, name in res.tap():
            if not ok:
                failures.append(f"{vm['name']}: {name}")
        if vm["why"]:
            failures.append(f"{vm['name']}: {vm['why']}")
        elif res.rc is None:
            failures.append(f"{vm['name']}: the script did not finish")
        if res.stats:
            st = rgt.stats_since_baseline(res)
            info[vm["name"] + "_stats"] = next(iter(st.values()), {})
    figures = {}
    client = rgt.read_text(os.path.join(vms[1]["logdir"], "results.log"))
    for line in client.splitlines():
        m = BENCH_LINE.match(line.strip())
        if not m:
            continue
        sys_, prog, size, row = m.group(1), m.group(2), int(m.group(3)), m.group(4).split()
        try:
            if prog.endswith("_lat"):
                # bytes iters t_min t_max t_typical t_avg t_stdev p99 p99.9
                fig = {"median_us": float(row[4]), "avg_us": float(row[5]),
                       "p99_us": float(row[7]), "p999_us": float(row[8])}
            else:
                # bytes iters BW_peak BW_average MsgRate (MiB/s, Mpps)
                fig = {"MBps": float(row[3]) * MIB, "Mpps": float(row[4])}
        except (IndexError, ValueError):
            failures.append(f"unparsed perftest row: {line.strip()}")
            continue
        figures[f"{sys_}/{prog}/{size}"] = fig
    if failures:
        log(f"boot {n}: logs kept in {bootdir}")
    return figures, failures, info


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def measure(args):
    iters = QUICK_ITERS if args.quick else ITERS
    if args.log_dir:
        top = args.log_dir
        shutil.rmtree(top, ignore_errors=True)
        os.makedirs(top)
    else:
        top = tempfile.mkdtemp(prefix="vmmbib-bench-vms-")
    os.chmod(top, 0o700)
    d = {"machine": machine(), "commit": git_commit(), "iters": iters,
         "rounds": [], "failures": [], "boots": []}
    start = time.monotonic()
    n = 0
    for r in range(args.rounds):
        figures = {}
        for systems, dev in BOOTS:
            n += 1
            log(f"round {r + 1}, boot {n}: "
                f"{' '.join(':'.join(x) for x in systems)} ({dev})")
            figs, fails, info = run_boot(args, systems, dev, iters, top, n)
            log(f"boot {n}: {len(figs)} figures in {info['secs']:.0f} s"
                + (f"; failures: {fails}" if fails else ""))
            figures.update(figs)
            d["failures"] += fails
            d["boots"].append(info)
        d["rounds"].append(figures)
    d["secs"] = time.monotonic() - start
    with open("/proc/loadavg") as f:
        d["machine"]["load_end"] = f.read().split()[0]
    if not d["failures"] and not args.log_dir:
        shutil.rmtree(top, ignore_errors=True)
    return d


def combine(d):
    """The median over the rounds of each value of each figure, and the
    rounds' values of each as FIELD_all."""
    out = {}
    for key in sorted({k for r in d["rounds"] for k in r}):
        vals = [r[key] for r in d["rounds"] if key in r]
        fig = {}
        for field in vals[0]:
            xs = [v[field] for v in vals]
            fig[field] = median(xs)
            fig[field + "_all"] = xs
        out[key] = fig
    return out


# ---- memcpy ----

def memcpy_MBps(args, doc_text):
    if args.engine_json and os.path.exists(args.engine_json):
        try:
            with open(args.engine_json) as f:
                e = json.load(f)
            when = (e.get("machine") or {}).get("date", "?")
            e = e.get("bench", e)
            if "memcpy64k_MBps" in e:
                return e["memcpy64k_MBps"], f"the engine benchmark of {when}"
        except (OSError, ValueError, AttributeError):
            pass
    m = re.search(r"^\| memcpy of 64 KiB, one call[^|]*\|[^|]*\|[^|]*\| (\d+) \|",
                  doc_text, re.M)
    if m:
        return float(m.group(1)), "the engine section below (an earlier run)"
    return None, None


# ---- the section ----

def fmt_us(v):
    return "%.1f µs" % v if v < 100 else "%.0f µs" % v


def fmt_mbps(v):
    return "%.2f" % v if v < 10 else "%.0f" % v


def fmt_rate(mpps):
    v = mpps * 1e6
    if v >= 1e6:
        return "%.2f M/s" % mpps
    return "%.1f k/s" % (v / 1e3) if v >= 1e3 else "%.0f /s" % v


def fmt_ratio(v):
    return "%.1f×" % v if v < 10 else "%.0f×" % v


def status(ok):
    return "**met**" if ok else "**missed**"


def spread(fig, field, f):
    xs = fig[field + "_all"]
    return "" if len(xs) < 2 else " (%s – %s)" % (f(min(xs)), f(max(xs)))


def section(d, mem, mem_src):
    F = combine(d)
    m = d["machine"]
    L = []
    a = L.append
    a(BEGIN)
    a("## Between two VMs (issue 7): vmmbypass-ib against rdma_rxe")
    a("")
    bz = [b["host_busy_cpus"] for b in d["boots"]]
    busy = "%.1f – %.1f" % (min(bz), max(bz))
    dc = [b["daemon_cpu_secs"] for b in d["boots"]
          if b.get("daemon_cpu_secs") is not None]
    dcpu = "%.1f s of CPU in all" % sum(dc) if dc else "?"
    a("Measured %s on %s CPUs (%s), Linux %s, commit %s; load average %s at "
      "the start, %s at the end; %.0f s in all. `make bench` runs "
      "`bench/vms.py`, which boots two guests twice as "
      "`tests/guest/run-two-vms.py` does (its code, imported) and runs "
      "`bench/vms-guest.sh` in both: vm1 runs perftest's servers, vm2 the "
      "clients, whose figures are shown."
      % (m["date"], m["nproc"], m["model"], m["kernel"], d["commit"],
         m["load_start"], m.get("load_end", "?"), d["secs"]))
    a("")
    a("**The guests are TCG** (no KVM here): one vCPU each, emulated, two "
      "QEMUs and vmmbibd's engine thread on %s host CPUs (the host's CPUs "
      "were busy %s CPUs on average over each boot; vmmbibd used %s"
      "). Every figure that involves guest code (posting, polling, "
      "the rxe and TCP/IP stacks, interrupts) is therefore many times "
      "slower than under KVM, and the ratios below compare emulated "
      "guests: they say how much guest work each system needs per message, "
      "not what the systems would do on hardware virtualization."
      % (m["nproc"], busy, dcpu or "?"))
    a("")
    a("Systems: **(a)** %s; **(b)** %s (a trapped register write per "
      "doorbell, the pvrdma style); **(c)** %s: `rdma link add rxe0 type "
      "rxe netdev eth0` in both guests, RoCE v2 over the VMs' L2 link "
      "(virtio-net, `-netdev dgram` UDP tunnel between the two QEMUs, MTU "
      "1500). (a) and (c) share the first boot (vmmbib0 idles while rxe "
      "runs), (b) is the second. perftest 8-byte and 64 KiB messages, RC, "
      "`-n` (latency / 8-byte / 64 KiB bandwidth) %s for (a) and (b) and %s "
      "for (c), so that each run lasts a second or so; perftest's `MB/sec` "
      "(MiB/s) converted to MB/s (10⁶)."
      % (SYSTEMS["a"], SYSTEMS["b"], SYSTEMS["c"],
         "/".join(str(d["iters"]["vmmbib0"][k]) for k in ("lat", "bw", "big")),
         "/".join(str(d["iters"]["rxe"][k]) for k in ("lat", "bw", "big"))))
    a("")
    a("Each figure is the median over %d rounds; a round boots the two VMs "
      "twice, (a)+(c) then (b), so the systems alternate in time. The goal "
      "figures show the rounds' range too." % len(d["rounds"]))
    a("")
    if d["failures"]:
        a("**This run had failures** (their figures are missing, shown —):")
        a("")
        for f in d["failures"][:20]:
            a("- " + f.replace("|", "\\|"))
        a("")

    # Goals.
    a("### Goals (issue 7)")
    a("")
    a("| goal | measured | status |")
    a("|---|---|---|")
    wa, wc = F.get("a/ib_write_lat/8"), F.get("c/ib_write_lat/8")
    if wa and wc:
        r = wc["median_us"] / wa["median_us"]
        miss = "" if r >= 10 else "; missed by a factor %.1f" % (10 / r)
        rs = [c / a_ for a_, c in zip(wa["median_us_all"], wc["median_us_all"])]
        a("| 8-byte ib_write_lat: (a) ≥ 10× lower than (c) | median %s%s vs "
          "%s%s: %s lower (per round %s; p99 %s vs %s)%s | %s |"
          % (fmt_us(wa["median_us"]), spread(wa, "median_us", fmt_us),
             fmt_us(wc["median_us"]), spread(wc, "median_us", fmt_us),
             fmt_ratio(r), ", ".join(fmt_ratio(x) for x in rs),
             fmt_us(wa["p99_us"]), fmt_us(wc["p99_us"]), miss, status(r >= 10)))
    else:
        a("| 8-byte ib_write_lat: (a) ≥ 10× lower than (c) | not measured | — |")
    ba = F.get("a/ib_write_bw/65536")
    if ba and mem:
        r = ba["MBps"] / mem
        miss = "" if r >= 0.5 else "; missed by %.0f points (%.1f× short)" % (
            100 * (0.5 - r), 0.5 / r)
        a("| 64 KiB ib_write_bw: (a) ≥ 50 %% of memcpy | %.0f MB/s%s vs memcpy "
          "%.0f MB/s (%s): %.1f %%%s | %s |"
          % (ba["MBps"], spread(ba, "MBps", lambda v: "%.0f" % v), mem, mem_src,
             100 * r, miss, status(r >= 0.5)))
    else:
        a("| 64 KiB ib_write_bw: (a) ≥ 50 % of memcpy | not measured | — |")
    a("")

    # Latency.
    a("### Latency, 8 bytes (perftest: median = t_typical, p99)")
    a("")
    a("| program | (c) rxe median / p99 | (a) ring median / p99 | (b) mmio "
      "median / p99 | (a): times lower than (c), median / p99 | (b): times "
      "lower than (c), median / p99 |")
    a("|---|---|---|---|---|---|")
    for prog in LAT:
        cells, ratios = [], []
        c = F.get(f"c/{prog}/8")
        for s in ("c", "a", "b"):
            f = F.get(f"{s}/{prog}/8")
            cells.append("%s / %s" % (fmt_us(f["median_us"]), fmt_us(f["p99_us"]))
                         if f else "—")
            if s != "c":
                ratios.append("%s / %s" % (
                    fmt_ratio(c["median_us"] / f["median_us"]),
                    fmt_ratio(c["p99_us"] / f["p99_us"])) if f and c else "—")
        a("| %s | %s |" % (prog, " | ".join(cells + ratios)))
    a("")

    # Bandwidth.
    a("### Bandwidth and message rate")
    a("")
    a("| program, size | (c) rxe MB/s, messages/s | (a) ring MB/s, messages/s | "
      "(b) mmio MB/s, messages/s | (a) / (c) | (b) / (c) |")
    a("|---|---|---|---|---|---|")
    for prog, size in BW:
        cells, ratios = [], []
        c = F.get(f"c/{prog}/{size}")
        for s in ("c", "a", "b"):
            f = F.get(f"{s}/{prog}/{size}")
            cells.append("%s, %s" % (fmt_mbps(f["MBps"]), fmt_rate(f["Mpps"]))
                         if f else "—")
            if s != "c":
                ratios.append(fmt_ratio(f["MBps"] / c["MBps"])
                              if f and c and c["MBps"] > 0 else "—")
        a("| %s, %s | %s |" % (prog, "64 KiB" if size == 65536 else "%d B" % size,
                               " | ".join(cells + ratios)))
    a("")

    # Doorbells: that (a) and (b) really differ.
    rows = []
    for mode in ("ring", "mmio"):
        tot = {}
        for b in d["boots"]:
            if not b["device"].endswith("doorbell=" + mode):
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
    a("Not measured yet (issue 7): sizes other than 8 B and 64 KiB; "
      "blocking (event) latency; ibv_reg_mr/dereg_mr against pages and the "
      "QP create rate; 2–8 VMs in pairs and fairness; host CPU seconds per "
      "million messages and host memory per VM; plots; a profile of the "
      "missed goals.")
    a("")
    a(END)
    return "\n".join(L) + "\n"


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
    try:
        with open(args.doc) as f:
            doc_text = f.read()
    except FileNotFoundError:
        doc_text = ""
    mem, src = memcpy_MBps(args, doc_text)
    text = section(d, mem, src)
    write_doc(args.doc, text)
    print(text)
    if not any(d["rounds"]):
        log("no figures at all: see the failures above")
        return 1
    return 1 if d["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Run the engine benchmark and rewrite its section of docs/performance.md.

    report.py --bench BUILD/bench/bench-engine --doc docs/performance.md
              [--json OUT.json] [--quick] [--no-profile]
    report.py --from-json OUT.json --doc docs/performance.md

Runs bench-engine (its progress goes to stderr as it runs), then, if valgrind
is installed, a callgrind profile of short runs of it (instructions per WQE
in the engine thread and its top functions; set VMMBIB_BENCH_PROFILE=0 or
pass --no-profile to skip), and replaces the text between the markers
<!-- BEGIN engine --> and <!-- END engine --> of the doc (creating the file
with an introduction, or appending the section, if needed).  Everything
outside the markers is kept.  Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

BEGIN = "<!-- BEGIN engine: written by bench/report.py (make bench); " \
        "edits inside are overwritten -->"
END = "<!-- END engine -->"
BEGIN_RE = re.compile(r"<!-- BEGIN engine\b.*?-->")

INTRO = """# Performance

Each section of this file is written by a script from a benchmark run
(`make bench` runs them all) and says when, on which machine and from which
commit it was measured. A section lies between `<!-- BEGIN name -->` and
`<!-- END name -->` comments; a script rewrites only its own section, so
hand-written text outside the markers stays.

The development machines are small shared VMs: 2 vCPUs, other jobs (builds,
TCG guests) running at the same time, and a host that moves the vCPUs
between cores. Absolute figures therefore move from run to run. Every
figure is printed next to what other processes used during it and next to a
core-to-core cache-line round trip measured at the same time, so that a
reader can tell a slow machine from a slow engine; instruction counts from
callgrind do not depend on either.

"""

# (key, label, message size in bytes)
RATE_ROWS = [
    ("write8_burst", "RDMA WRITE 8 B, engine capacity (burst)", 8),
    ("write8_pipe", "RDMA WRITE 8 B, pipelined, doorbell per WQE", 8),
    ("write8_pipe_batched", "RDMA WRITE 8 B, pipelined, doorbell per 32",
     8),
    ("send8_burst", "SEND 8 B, engine capacity (burst)", 8),
    ("send8_pipe", "SEND 8 B, pipelined, doorbell per WQE", 8),
    ("write64k_burst", "RDMA WRITE 64 KiB, engine capacity (burst)", 65536),
    ("write64k_pipe", "RDMA WRITE 64 KiB, pipelined", 65536),
]

# What the callgrind profile runs: (name, --count, what one unit is).
PROFILES = [
    ("write", 100000, "8-byte RDMA WRITE"),
    ("write1024", 100000, "8-byte RDMA WRITE, 1024 QPs per side"),
    ("send", 50000, "8-byte SEND (its receive included)"),
    ("write64k", 2000, "64 KiB RDMA WRITE"),
]


def log(msg):
    print("# report: " + msg, file=sys.stderr, flush=True)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
    except OSError:
        load = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "model": model,
        "kernel": os.uname().release,
        "load": load,
    }


def git_commit(where):
    try:
        sha = subprocess.run(["git", "-C", where, "rev-parse", "--short",
                              "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True,
                               check=True).stdout.strip()
        return sha + (" with local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def last_json(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON summary in the benchmark's output")


def run_bench(bench, quick):
    cmd = [bench] + (["--quick"] if quick else [])
    log("running " + " ".join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("report: %s failed (exit %d); docs not changed"
                 % (bench, p.returncode))
    return last_json(p.stdout)


# ---- callgrind ----

LINE_RE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+?)\s*$")


def annotate(path, inclusive):
    """{function: Ir} and the total from callgrind_annotate."""
    cmd = ["callgrind_annotate", "--threshold=100", "--auto=no"]
    if inclusive:
        cmd.append("--inclusive=yes")
    out = subprocess.run(cmd + [path], capture_output=True, text=True,
                         check=True).stdout
    funcs, total = {}, 0
    listing = False
    for line in out.splitlines():
        if "file:function" in line:
            listing = True      # the per-function list starts here
            continue
        m = LINE_RE.match(line)
        if not m or (not listing and "PROGRAM TOTALS" not in line):
            continue
        ir = int(m.group(1).replace(",", ""))
        what = m.group(2)
        if what == "PROGRAM TOTALS":
            total = ir
            continue
        what = re.sub(r"\s+\[[^\]]*\]$", "", what)
        fn = what.rsplit(":", 1)[-1]
        # Inlined code is listed again under the file it came from: own
        # costs of those lines add up, inclusive ones repeat the total.
        if inclusive:
            funcs[fn] = max(funcs.get(fn, 0), ir)
        else:
            funcs[fn] = funcs.get(fn, 0) + ir
    return funcs, total


def profile_one(bench, name, count, tmp):
    out = os.path.join(tmp, "cg-%s.out" % name)
    cmd = ["valgrind", "--tool=callgrind", "--fair-sched=yes",
           "--separate-threads=yes", "--callgrind-out-file=" + out,
           bench, "--profile", name, "--count", str(count)]
    log("profiling: " + " ".join(cmd[-4:]))
    p = subprocess.run(cmd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        log("callgrind run failed:\n" + p.stderr[-2000:])
        return None
    wqes = last_json(p.stdout)["wqes"]
    engine = guest = None
    for f in sorted(os.listdir(tmp)):
        if not f.startswith("cg-%s.out-" % name):
            continue
        path = os.path.join(tmp, f)
        incl, total = annotate(path, True)
        if "engine_thread" in incl:
            engine = (path, incl, total)
        elif "main" in incl:
            guest = (path, incl, total)
    if not engine:
        log("no engine thread in the callgrind output")
        return None
    self_ir, _ = annotate(engine[0], False)
    res = {
        "wqes": wqes,
        "engine_total": engine[2] / wqes,
        "run_sq": engine[1].get("vmmbib_qp_run_sq", 0) / wqes,
        "doorbells": engine[1].get("vmmbib_doorbell_execute", 0) / wqes,
        "top": sorted(((ir / wqes, fn) for fn, ir in self_ir.items()),
                      reverse=True)[:10],
    }
    if guest:
        res["guest_post"] = guest[1].get("stream_post", 0) / wqes
    return res


def run_profiles(bench):
    if os.environ.get("VMMBIB_BENCH_PROFILE", "1") == "0":
        log("profile skipped (VMMBIB_BENCH_PROFILE=0)")
        return None
    if not (shutil.which("valgrind") and shutil.which("callgrind_annotate")):
        log("valgrind not installed: no instruction profile")
        return None
    results = {}
    with tempfile.TemporaryDirectory(prefix="vmmbib-cg-") as tmp:
        for name, count, _ in PROFILES:
            r = profile_one(bench, name, count, tmp)
            if r:
                results[name] = r
    return results


# ---- the section ----

def fmt_rate(v):
    if v >= 1e6:
        return "%.2f M/s" % (v / 1e6)
    return "%.0f k/s" % (v / 1e3)


def fmt_bw(v):
    return "%.1f GB/s" % (v / 1e9)


def rng(vals, f):
    return "%s – %s" % (f(min(vals)), f(max(vals)))


def status(ok):
    return "**met**" if ok else "**missed**"


BUSY_CPUS = 0.5


def busy_note(d, *keys):
    """A warning when other processes used the CPUs during these figures."""
    worst = max([max(d.get(k + "_others_cpus", [0])) for k in keys] + [0])
    if worst <= BUSY_CPUS:
        return ""
    return " (machine busy: other processes used up to %.1f CPUs during " \
           "these figures; rerun before believing a miss)" % worst


def status2(ok_main, main, ok_other, other):
    """The status by the main figure, and the other if it disagrees."""
    if ok_main == ok_other:
        return status(ok_main)
    return "%s (%s); %s (%s)" % (status(ok_main), main, status(ok_other),
                                 other)


def section(d, prof, m, commit, args):
    L = []
    a = L.append
    a(BEGIN)
    a("## Engine (host-lib, synthetic guests)")
    a("")
    a("Measured %s on %s CPUs (%s), Linux %s, commit %s; load average %s "
      "at the start. `make bench` runs `bench/report.py`, which runs "
      "`bench/engine.c`%s." % (m["date"],
                               m["nproc"], m["model"], m["kernel"], commit,
                               m["load"], " with `--quick`" if args.quick
                               else ""))
    a("")
    a("Setup: two synthetic guests (`host-lib/tests/guest.c`: a device "
      "each, guest RAM in host memory, a driver that follows "
      "docs/spec.md) on **one engine thread**, driven by one guest thread; "
      "RC QPs, SGE (not inline) payloads, 128-byte send WQEs. Guest "
      "thread pinned to CPU 0, engine thread to CPU 1: %s. Each figure is "
      "the median of %d runs of %.1f s (range shown). *Burst* = the guest "
      "writes %d WQEs (64 KiB: %d), rings one doorbell and waits: the time "
      "from the first to the last completion is the engine's alone "
      "(**engine capacity**). *Pipelined* = the guest keeps %d WQEs "
      "outstanding (64 KiB: 16) and posts while the engine runs, a "
      "signaled WQE every %d: guest and engine in parallel on two cores. "
      "Every run checks the data the engine delivered (last lap of WRITEs, "
      "every SEND payload, every completion status, the WQE count)."
      % ("yes" if d.get("pinned") else "no (pinning failed)", d["reps"],
         d["rep_secs"], d["small_burst"], d["big_burst"], d["pipe_depth"],
         d["sig_every"]))
    a("")
    others = [max(d.get(k + "_others_cpus", [0])) for k, _, _ in RATE_ROWS
              if k in d] + [d.get("lat_others_cpus", 0)]
    c2c = [x for k, _, _ in RATE_ROWS if k in d
           for x in d.get(k + "_c2c_ns", []) if x > 0]
    a("During the run other processes used up to %.2f CPUs (the machine "
      "has %s; the benchmark waited up to %.0f s in all for quiet moments). "
      "Core-to-core cache-line round trip between the two CPUs: %s ns "
      "(it changes when the host moves the vCPUs; the 8-byte rates follow "
      "it)." % (max(others), m["nproc"], d.get("quiet_waited_secs", 0),
                "%.0f – %.0f" % (min(c2c), max(c2c)) if c2c else "n/a"))
    a("")

    # Goals.
    a("### Goals (issue 3)")
    a("")
    a("The message-rate and QP-count goals are judged on engine capacity "
      "(burst), since they are per engine thread; the bandwidth goal on "
      "streaming (pipelined), as ib_write_bw measures it. The other mode "
      "is next to each, and the status names both when they disagree.")
    a("")
    a("| goal | measured | status |")
    a("|---|---|---|")
    if "write8_burst" in d:
        a("| ≥ 5 M 8-byte RDMA WRITEs/s per engine thread | %s capacity; "
          "pipelined %s (doorbell per WQE), %s (per 32) | %s |"
          % (fmt_rate(d["write8_burst"]), fmt_rate(d["write8_pipe"]),
             fmt_rate(d["write8_pipe_batched"]),
             status2(d["write8_burst"] >= 5e6, "capacity",
                     d["write8_pipe"] >= 5e6, "pipelined") +
             busy_note(d, "write8_burst", "write8_pipe",
                       "write8_pipe_batched")))
    if "write64k_burst_vs_memcpy" in d:
        a("| 64 KiB WRITE bandwidth ≥ 70 %% of memcpy | %.0f %% pipelined "
          "(%s vs memcpy %s); %.0f %% capacity (burst) | %s |"
          % (100 * d["write64k_pipe_vs_memcpy"],
             fmt_bw(d["write64k_pipe_MBps"] * 1e6),
             fmt_bw(d["memcpy64k_MBps"] * 1e6),
             100 * d["write64k_burst_vs_memcpy"],
             status2(d["write64k_pipe_vs_memcpy"] >= 0.7, "pipelined",
                     d["write64k_burst_vs_memcpy"] >= 0.7, "burst") +
             busy_note(d, "write64k_pipe", "write64k_burst")))
    if "write8_1024qp_vs_1qp" in d:
        r = d["write8_1024qp_vs_1qp"]
        ins = ""
        if prof and "write" in prof and "write1024" in prof:
            ins = "; instructions executing a WQE %.0f vs %.0f" % (
                prof["write1024"]["run_sq"], prof["write"]["run_sq"])
        a("| 8-byte WRITE rate with 1024 QPs within 10 %% of 1 QP | %.3f "
          "(median ratio of interleaved bursts)%s | %s |"
          % (r, ins, status(0.9 <= r)))
    a("")

    # Rates.
    a("### Message rates and bandwidth")
    a("")
    a("| figure | median | range | MB/s | core-to-core ns | doorbells per "
      "message | engine CPU | guest CPU | others (CPUs) |")
    a("|---|---|---|---|---|---|---|---|---|")
    for key, label, size in RATE_ROWS:
        if key not in d:
            continue
        reps = d[key + "_reps"]
        a("| %s | %s | %s | %.0f | %s | %.3f | %.0f %% | %.0f %% | %.2f |"
          % (label, fmt_rate(d[key]), rng(reps, fmt_rate),
             d[key] * size / 1e6,
             "%.0f – %.0f" % (min(d[key + "_c2c_ns"]),
                               max(d[key + "_c2c_ns"])),
             max(d[key + "_db_per_msg"]),
             100 * sum(d[key + "_engine_cpu"]) / len(reps),
             100 * sum(d[key + "_guest_cpu"]) / len(reps),
             max(d[key + "_others_cpus"])))
    for key, label in (("memcpy64k", "memcpy of 64 KiB, one call, on the "
                                     "engine's CPU"),
                       ("memcpy64k_4k", "memcpy of 64 KiB in 4 KiB pieces, "
                                        "same CPU")):
        if key in d:
            reps = d[key + "_reps"]
            a("| %s | %s copies | %s | %.0f | | | | 100 %% | |"
              % (label, fmt_rate(d[key]), rng(reps, fmt_rate),
                 d[key + "_MBps"]))
    a("")
    a("Engine CPU is the engine thread's share of one CPU over the "
      "interval; for bursts it includes the time it sleeps while the guest "
      "posts, for pipelined runs the time it polls without work. The guest "
      "thread spins while it waits (it yields after ~20 µs without "
      "progress).")
    a("")

    if "lat_send8_rtt_median_us" in d:
        a("### Latency")
        a("")
        a("| SEND 8 B ping-pong, one QP pair | median | p99 | p99.9 |")
        a("|---|---|---|---|")
        a("| round trip | %.2f µs | %.2f µs | %.2f µs |"
          % (d["lat_send8_rtt_median_us"], d["lat_send8_rtt_p99_us"],
             d["lat_send8_rtt_p999_us"]))
        a("| one way (round trip / 2, as perftest reports) | %.2f µs | "
          "%.2f µs | %.2f µs |"
          % (d["lat_send8_rtt_median_us"] / 2,
             d["lat_send8_rtt_p99_us"] / 2, d["lat_send8_rtt_p999_us"] / 2))
        a("")
        a("%d round trips; core-to-core round trip %.0f ns, others used "
          "%.2f CPUs. A round trip is two SENDs, each a doorbell, one engine "
          "pass and a receive completion, all crossing between the two "
          "cores."
          % (d["lat_send8_round_trips"], d["lat_c2c_ns"],
             d["lat_others_cpus"]))
        a("")

    if "write8_1024qp_pairs" in d:
        a("### 1 QP vs 1024 QPs (8-byte WRITE, engine capacity)")
        a("")
        a("Two more VMs on the same engine hold %d connected RC QPs per side, "
          "1023 idle in RTS and a busy pair created last; bursts alternate "
          "between the busy QP of the first two VMs (1 QP per device) and "
          "that of the other two (1024 per device), about a millisecond "
          "apart, for %.1f s: %d burst pairs, core-to-core %.0f ns. The "
          "engine only walks contexts and its list of QPs with work, never "
          "the idle QPs, so what sharing one engine hides (both device "
          "pairs are attached throughout) is nothing the engine looks at; "
          "the callgrind counts below confirm it instruction for "
          "instruction."
          % (d["qps_per_side"], d["write8_1024qp_interleaved_secs"],
             d["write8_1024qp_pairs"], d["write8_1024qp_c2c_ns"]))
        a("")
        a("| | 1 QP | 1024 QPs | 1024 / 1 |")
        a("|---|---|---|---|")
        a("| median burst rate | %s | %s | %.3f |"
          % (fmt_rate(d["write8_1qp"]), fmt_rate(d["write8_1024qp"]),
             d["write8_1024qp_ratio_of_medians"]))
        a("| ratio of the two bursts of a pair: median (middle half) | | | "
          "**%.3f** (%.3f – %.3f) |"
          % (d["write8_1024qp_vs_1qp"], d["write8_1024qp_paired_q1"],
             d["write8_1024qp_paired_q3"]))
        a("")
        a("The burst rates on this VM are bimodal (the host changes state "
          "every so often), so the two medians can come from different "
          "modes; the paired ratio is the figure the goal is judged on.")
        a("")
    if "write8_rounds_ratio" in d:
        a("Literally, the same busy pair with the 1023 idle pairs created "
          "in its own devices and destroyed again between the two halves of "
          "%d short rounds (%.3f s a half): ratios %s, median %.3f. These "
          "spread far more because the halves are a few tenths of a second "
          "apart, long enough for the host to change state (core-to-core %s ns)."
          % (len(d["write8_rounds_ratio"]), d["write8_rounds_secs"],
             ", ".join("%.2f" % x for x in d["write8_rounds_ratio"]),
             d["write8_rounds_vs_1qp"],
             ", ".join("%.0f/%.0f" % (x, y) for x, y in
                       zip(d["write8_rounds_1qp_c2c_ns"],
                           d["write8_rounds_1024qp_c2c_ns"]))))
        a("")

    if "mem_qp_bytes" in d:
        a("### Host memory per object")
        a("")
        a("Measured with mallinfo2() deltas around creating many objects "
          "(allocator overhead included); struct sizes from "
          "host-lib/internal.h for comparison. Guest-memory rings and "
          "buffers are not host memory and not counted.")
        a("")
        a("| object | host bytes | struct | notes |")
        a("|---|---|---|---|")
        a("| QP | %.0f | %d | 16-entry SQ and RQ, one page each: the page "
          "arrays are part of it |" % (d["mem_qp_bytes"], d["mem_qp_struct"]))
        a("| CQ | %.0f | %d | 16 entries, one page |"
          % (d["mem_cq_bytes"], d["mem_cq_struct"]))
        a("| MR | %.0f + %.1f per page | %d | a host pointer per 4 KiB page; "
          "rings cost the same per page |"
          % (d["mem_mr_bytes"], d["mem_mr_page_bytes"], d["mem_mr_struct"]))
        a("| ucontext | %.0f | %d | plus its slot's %d-byte doorbell page, "
          "allocated with the device |"
          % (d["mem_ucontext_bytes"], d["mem_ucontext_struct"],
             d["mem_db_page_bytes"]))
        a("| device, default limits | %.0f | | handle tables sized by the "
          "limits, %d doorbell pages |"
          % (d["mem_device_bytes"], d["mem_device_uar_slots"]))
        a("")

    a("### Instruction profile (callgrind)")
    a("")
    if not prof:
        a("Not run (valgrind missing or profiling disabled).")
    else:
        a("`valgrind --tool=callgrind --fair-sched=yes --separate-threads=yes "
          "bench-engine --profile NAME --count N` runs bursts only; the "
          "engine thread's instructions divided by the WQEs it executed. "
          "Executing WQEs (`vmmbib_qp_run_sq` and what it calls) is "
          "deterministic; the engine thread's total also holds its polling "
          "between bursts, which varies a little with valgrind's "
          "scheduling. Independent of load and core placement.")
        a("")
        a("| per message | engine thread, all | executing WQEs "
          "(`vmmbib_qp_run_sq`) | doorbells | guest: posting a WQE |")
        a("|---|---|---|---|---|")
        for name, _, what in PROFILES:
            p = prof.get(name)
            if not p:
                continue
            a("| %s | %.0f | %.0f | %.1f | %s |"
              % (what, p["engine_total"], p["run_sq"], p["doorbells"],
                 "%.0f" % p["guest_post"] if "guest_post" in p else ""))
        a("")
        for name, _, what in PROFILES:
            p = prof.get(name)
            if not p:
                continue
            a("Top functions of the engine thread, %s (instructions per "
              "message, own cost): %s." % (what, ", ".join(
                  "`%s` %.0f" % (fn, ir) for ir, fn in p["top"][:8])))
            a("")
    a(END)
    return "\n".join(L) + "\n"


def write_doc(path, text):
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = None
    if old is None:
        new = INTRO + text
    else:
        m = BEGIN_RE.search(old)
        e = old.find(END, m.end()) if m else -1
        if m and e >= 0:
            new = old[:m.start()] + text.rstrip("\n") + \
                old[e + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + text
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", help="the bench-engine binary")
    ap.add_argument("--doc", required=True, help="docs/performance.md")
    ap.add_argument("--json", help="also write the raw summary here")
    ap.add_argument("--quick", action="store_true",
                    help="shorter runs (figures less stable)")
    ap.add_argument("--no-profile", action="store_true",
                    help="skip the callgrind profile")
    ap.add_argument("--from-json", metavar="FILE",
                    help="no run: rewrite the section from a --json file "
                    "of an earlier run (to change the text, not the data)")
    args = ap.parse_args()

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        data, prof, m = saved["bench"], saved["profile"], saved["machine"]
        commit = saved.get("commit", "unknown")
        if "date" not in m:
            m["date"] = datetime.datetime.fromtimestamp(
                os.path.getmtime(args.from_json),
                datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    else:
        if not args.bench:
            ap.error("--bench is required unless --from-json is given")
        m = machine()
        data = run_bench(args.bench, args.quick)
        prof = None if args.no_profile else run_profiles(args.bench)
        commit = git_commit(os.path.dirname(os.path.abspath(args.doc)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"bench": data, "profile": prof, "machine": m,
                           "commit": commit}, f, indent=1)
    write_doc(args.doc, section(data, prof, m, commit, args))
    log("wrote the Engine section of " + args.doc)


if __name__ == "__main__":
    main()

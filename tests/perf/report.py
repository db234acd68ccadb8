#!/usr/bin/env python3
"""Turns tests/perf/run.sh's raw JSON lines into the markdown report.

usage: report.py RESULTS.jsonl > RESULTS.md

Every figure is the median over the run's repetitions; "per-run" columns
list the individual values so the spread is visible.
"""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in rows:
    by[r["bench"]].append(r)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def spread(xs, nd=0):
    return " ".join(fmt(x, nd) for x in sorted(xs))


def verdict(ok):
    return "**met**" if ok else "**missed**"


out = []
p = out.append
m = by["machine"][0] if by["machine"] else {}
p(f"# vmstor performance run ({m.get('commit', '?')})\n")
p(f"- machine: {m.get('nproc')} vCPU, {m.get('cpu')}, {m.get('mem')} RAM; kernel {m.get('kernel')}")
p(f"- filesystem: {m.get('fs')}")
p(f"- {m.get('reps')} repetitions of every measurement, {m.get('secs')} s per timed run; "
  f"medians shown. hostio executors for virtio-blk: `{m.get('executor')}`")
p("")
targets = []

# ---- 1 ----
crit = defaultdict(list)
for r in by["criterion"]:
    crit[r["name"]].append(r["median_ns"])
if crit:
    p("## 1. Model overhead per 4 KiB read (null backend, inline executor)\n")
    p("| benchmark | ns per request (median) | per-run | target |")
    p("|---|---|---|---|")
    goal = {"model/virtio-blk-in-4k": 300, "model/virtio-scsi-read10-4k": 500,
            "model/ide-read-dma-ext-4k": 1000}
    for name in sorted(crit, key=lambda n: ({"engine": 0, "model": 1, "driver": 2}[n.split("/")[0]], n)):
        v = med(crit[name])
        t = goal.get(name)
        tt = f"≤ {t} ns: {verdict(v <= t)}" if t else ""
        if t:
            targets.append((f"{name} ≤ {t} ns", f"{v:.0f} ns", v <= t))
        p(f"| `{name}` | {v:.0f} | {spread(crit[name])} | {tt} |")
    p("")

# ---- 2 ----
if by["io"] or by["fio"]:
    p("## 2. 4 KiB random I/O through virtio-blk vs fio (1 GiB file, O_DIRECT)\n")
    p("| rw | QD | vmstor executor | vmstor IOPS | fio IOPS | IOPS ratio | vmstor mean / p50 µs | fio mean / p50 µs | added mean latency µs | vmstor per-run IOPS | fio per-run IOPS |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    fio = defaultdict(list)
    for r in by["fio"]:
        fio[(r["rw"], r["qd"])].append(r)
    io = defaultdict(list)
    for r in by["io"]:
        if r["bs"] == 4096 and r["pattern"] == "rand":
            io[(r["rw"], r["qd"], r["executor"])].append(r)
    for (rw, qd, ex), rs in sorted(io.items()):
        f = fio.get((rw, qd), [])
        vi, fi = med([r["iops"] for r in rs]), med([r["iops"] for r in f])
        vm, vp = med([r["mean_us"] for r in rs]), med([r["p50_us"] for r in rs])
        fm, fp = med([r["mean_us"] for r in f]), med([r["p50_us"] for r in f])
        ratio = vi / fi if fi else None
        added = vm - fm if fm is not None else None
        p(f"| {rw} | {qd} | {ex} | {fmt(vi)} | {fmt(fi)} | {fmt(ratio and ratio * 100)}% | "
          f"{fmt(vm)} / {fmt(vp)} | {fmt(fm)} / {fmt(fp)} | {fmt(added)} | "
          f"{spread([r['iops'] for r in rs])} | {spread([r['iops'] for r in f])} |")
        if qd == 32 and ratio is not None:
            targets.append((f"rand{rw} QD32 ({ex}) ≥ 90% of fio IOPS", f"{ratio * 100:.0f}%", ratio >= 0.9))
        if qd == 1 and added is not None:
            targets.append((f"rand{rw} QD1 ({ex}) ≤ 5 µs added latency", f"{added:+.1f} µs", added <= 5))
    p("")

# ---- 3 ----
if by["flushstorm"]:
    p("## 3. Flush storm: 32 streams of 4 KiB write + flush (cache=none)\n")
    p("| mode | durable writes/s | fdatasyncs per flush | per-run writes/s |")
    p("|---|---|---|---|")
    fs = defaultdict(list)
    for r in by["flushstorm"]:
        n = r.get("max_syncs", 0)
        fs[r["mode"] if r["mode"] == "naive" or not n else f"engine:{n}"].append(r)
    label = {"engine": "engine group commit (32 threads on one Disk)",
             "engine:2": "engine, up to 2 fdatasyncs in flight",
             "engine:4": "engine, up to 4 fdatasyncs in flight",
             "naive": "naive: 32 threads pwrite + fdatasync"}
    for mode in ["engine", "engine:2", "engine:4", "naive"]:
        rs = fs.get(mode, [])
        if rs:
            p(f"| {label[mode]} | {fmt(med([r['durable_writes_per_s'] for r in rs]))} | "
              f"{med([r['fdatasyncs_per_flush'] for r in rs]):.3f} | "
              f"{spread([r['durable_writes_per_s'] for r in rs])} |")
    if fs.get("engine") and fs.get("naive"):
        e = med([r["durable_writes_per_s"] for r in fs["engine"]])
        n = med([r["durable_writes_per_s"] for r in fs["naive"]])
        per = med([r["fdatasyncs_per_flush"] for r in fs["engine"]])
        p(f"\nengine / naive throughput: **{e / n:.2f}×**\n")
        targets.append(("flush storm ≥ 3× naive throughput", f"{e / n:.2f}×", e / n >= 3))
        targets.append(("flush storm ≤ 1 fdatasync per 8 flushes", f"1 per {1 / per:.1f}" if per else "0", per <= 1 / 8))
    p("")

# ---- 4 ----
if by["fua"]:
    p("## 4. FUA: RWF_DSYNC vs write + fdatasync (4 KiB, 4 MiB unrelated dirty data before each batch of 8)\n")
    p("| cache | method | durable writes/s | mean / p50 / p99 µs | fdatasyncs | per-run writes/s |")
    p("|---|---|---|---|---|---|")
    fu = defaultdict(list)
    for r in by["fua"]:
        fu[(r["cache"], r["method"])].append(r)
    name = {"dsync": "FUA write → pwritev2(RWF_DSYNC)", "fdatasync": "write + FLUSH → fdatasync"}
    for (cache, method), rs in sorted(fu.items()):
        p(f"| {cache} | {name[method]} | {fmt(med([r['durable_writes_per_s'] for r in rs]))} | "
          f"{fmt(med([r['mean_us'] for r in rs]))} / {fmt(med([r['p50_us'] for r in rs]))} / {fmt(med([r['p99_us'] for r in rs]))} | "
          f"{med([r['fdatasyncs'] for r in rs]):.0f} | {spread([r['durable_writes_per_s'] for r in rs])} |")
    p("")

# ---- 5 ----
seq = [r for r in by["io"] if r["pattern"] == "seq"]
if seq:
    p("## 5. Stable writes: 64 KiB sequential writes, cache=none\n")
    p("| QD | stable_writes | MiB/s | mean / p50 µs | bytes bounced | per-run MiB/s |")
    p("|---|---|---|---|---|---|")
    sw = defaultdict(list)
    for r in seq:
        sw[(r["qd"], r["stable_writes"])].append(r)
    for (qd, s), rs in sorted(sw.items()):
        p(f"| {qd} | {s} | {fmt(med([r['mib_s'] for r in rs]))} | {fmt(med([r['mean_us'] for r in rs]))} / "
          f"{fmt(med([r['p50_us'] for r in rs]))} | {med([r['bytes_bounced'] for r in rs]):,.0f} | "
          f"{spread([r['mib_s'] for r in rs])} |")
    for qd in sorted({k[0] for k in sw}):
        b, t = sw.get((qd, "bounce")), sw.get((qd, "trust"))
        if b and t:
            ratio = med([r["mib_s"] for r in b]) / med([r["mib_s"] for r in t])
            p(f"\nQD{qd}: bounce / trust = **{ratio * 100:.0f}%**")
            targets.append((f"bounce ≥ 90% of trust throughput (QD{qd})", f"{ratio * 100:.0f}%", ratio >= 0.9))
    p("")

if targets:
    p("## Targets\n")
    p("| target | measured | |")
    p("|---|---|---|")
    for t, v, ok in targets:
        p(f"| {t} | {v} | {verdict(ok)} |")
print("\n".join(out))

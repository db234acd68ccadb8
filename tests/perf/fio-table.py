#!/usr/bin/env python3
"""fio-table.py - results of tests/perf/vublk-fio.sh.

  fio-table.py row FIO_DIR REP BACKEND LOAD0 LOAD1
      one TSV line per fio JSON file FIO_DIR/REP-BACKEND-RW-qdQD.json (the columns of
      results.tsv); exits 1 if there is none
  fio-table.py table RESULTS_TSV BACKEND,BACKEND,...
      Markdown tables: per job and backend the median IOPS, mean latency and p99 completion
      latency over the repetitions, every repetition's IOPS in run order, and each vmstor
      backend's median IOPS relative to its qemu-storage-daemon counterpart (vmstor -> qsd,
      vmstor-wb -> qsd-wb) when that ran too
"""
import glob
import json
import os
import re
import statistics
import sys


def row(fio_dir, rep, backend, load0, load1):
    pat = re.compile(r"^%s-%s-(\w+)-qd(\d+)\.json$" % (re.escape(rep), re.escape(backend)))
    found = []
    for path in glob.glob(os.path.join(fio_dir, "%s-%s-*.json" % (rep, backend))):
        m = pat.match(os.path.basename(path))
        if not m:
            continue
        rw, qd = m.group(1), int(m.group(2))
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            print("fio-table: %s: %s" % (path, e), file=sys.stderr)
            continue
        job = doc["jobs"][0]
        side = job["read"] if rw.endswith("read") else job["write"]
        pct = side["clat_ns"].get("percentile", {})
        found.append((rw, qd, side["iops"], side["lat_ns"]["mean"] / 1000.0,
                      pct.get("50.000000", 0) / 1000.0, pct.get("99.000000", 0) / 1000.0))
    for rw, qd, iops, lat, p50, p99 in sorted(found):
        print("\t".join([rep, backend, rw, str(qd), "%.1f" % iops, "%.1f" % lat,
                         "%.1f" % p50, "%.1f" % p99, load0, load1]))
    return 0 if found else 1


def table(results, backends):
    rows = []
    with open(results) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    jobs = sorted({(r["rw"], int(r["qd"])) for r in rows})

    def runs(be, rw, qd, col):
        return [float(r[col]) for r in rows
                if r["backend"] == be and r["rw"] == rw and int(r["qd"]) == qd]

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    print("| job | backend | IOPS (median) | mean latency µs (median) | p99 clat µs (median) "
          "| IOPS / qsd's | IOPS, every run |")
    print("|---|---|---:|---:|---:|---:|---|")
    for rw, qd in jobs:
        for be in backends:
            iops = runs(be, rw, qd, "iops")
            if not iops:
                continue
            ref = be.replace("vmstor", "qsd", 1)
            ref_iops = runs(ref, rw, qd, "iops") if ref != be else []
            rel = "%.2f" % (med(iops) / med(ref_iops)) if ref_iops and med(ref_iops) > 0 else ""
            print("| %s QD%d | %s | %.0f | %.0f | %.0f | %s | %s |" % (
                rw, qd, be, med(iops), med(runs(be, rw, qd, "lat_mean_us")),
                med(runs(be, rw, qd, "clat_p99_us")), rel,
                " ".join("%.0f" % x for x in iops)))
    print()
    print("Host load average (1/5/15 min) before -> after each boot:")
    print()
    seen = set()
    for r in rows:
        key = (r["rep"], r["backend"])
        if key in seen:
            continue
        seen.add(key)
        print("- rep %s %s: %s -> %s" % (r["rep"], r["backend"], r["loadavg_before"],
                                         r["loadavg_after"]))
    return 0


def main(argv):
    if len(argv) == 7 and argv[1] == "row":
        return row(*argv[2:])
    if len(argv) == 4 and argv[1] == "table":
        return table(argv[2], [b for b in argv[3].split(",") if b])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

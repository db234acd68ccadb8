//! Timed whole-stack measurements for `tests/perf/run.sh` (not a test: it
//! reports figures and never asserts on time). Each run prints one JSON
//! object on stdout.
//!
//! ```text
//! perf io --file F [--rw read|write] [--bs 4096] [--qd 1] [--seq]
//!         [--cache none] [--stable auto|bounce|trust] [--executor inline|threads[:N]|uring[:N]]
//!         [--poll-us 0] [--secs 5] [--warmup 1]
//!     (`--executor uring+poll30` is short for `uring --poll-us 30`)
//!     4 KiB random (or sequential) I/O through virtio-blk: the TestGuest's
//!     queue with QD chains in flight, device model, hostio, executor, file.
//! perf flushstorm --file F [--streams 32] [--mode engine|naive] [--secs 5]
//!                 [--max-syncs N]
//!     STREAMS threads, each: 4 KiB O_DIRECT write, then flush, repeat.
//!     --max-syncs: DiskOptions::max_syncs_in_flight (0: the default).
//!     engine: every thread on one cache=none Disk (Disk::execute, so the
//!     flush coordinator's group commit decides the fdatasyncs); naive: the
//!     same threads doing pwrite + fdatasync on one O_DIRECT fd.
//! perf fua --file F [--cache writeback|none] [--method dsync|fdatasync]
//!          [--dirty-mib 4] [--batches 20] [--batch 8]
//!     Durable 4 KiB writes: a FUA write (hostio: pwritev2(RWF_DSYNC)) versus
//!     write + FLUSH (fdatasync), each batch after DIRTY_MIB of unrelated
//!     buffered writes to the far half of the same file.
//! ```
//!
//! The file must exist and be fully allocated (the script makes it).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use vm_memory::{Bytes, GuestAddress};
use vmstor_hostio::{
    AlignedBuf, CacheMode, DataBuf, Disk, DiskOptions, ExecutorKind, Outcome, Policy, Request,
};
use vmstor_virtio_blk::testing::{RawDesc, TestGuest, TestGuestOptions};

/// Command-line flags as `--name value` pairs (`--seq` alone means true).
struct Args {
    map: HashMap<String, String>,
}

impl Args {
    fn parse(v: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < v.len() {
            let k = v[i].trim_start_matches("--").to_string();
            if i + 1 < v.len() && !v[i + 1].starts_with("--") {
                map.insert(k, v[i + 1].clone());
                i += 2;
            } else {
                map.insert(k, "true".into());
                i += 1;
            }
        }
        Args { map }
    }

    fn str(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }

    fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> T {
        match self.map.get(k) {
            Some(s) => s
                .parse()
                .unwrap_or_else(|_| die(&format!("--{k}: not a number: {s}"))),
            None => d,
        }
    }

    fn file(&self) -> PathBuf {
        PathBuf::from(
            self.map
                .get("file")
                .unwrap_or_else(|| die("--file is required")),
        )
    }
}

fn die(msg: &str) -> ! {
    eprintln!("perf: {msg}");
    std::process::exit(2)
}

/// The executor named on the command line (or `VMSTOR_PERF_EXECUTOR`):
/// `inline`, `threads` (one worker per request in flight), `threads:N`,
/// `uring` (ring entries = queue depth) or `uring:N`.
/// A new hostio executor is one more arm here.
fn executor(name: &str, qd: usize) -> ExecutorKind {
    let (kind, n) = match name.split_once(':') {
        Some((k, n)) => (k, n.parse().ok()),
        None => (name, None),
    };
    match kind {
        "inline" => ExecutorKind::Inline,
        "threads" => ExecutorKind::Threads(n.unwrap_or(qd).max(1)),
        "uring" => ExecutorKind::IoUring {
            entries: n.unwrap_or(qd).max(1) as u32,
        },
        _ => die(&format!(
            "unknown executor {name} (inline, threads[:N], uring[:N])"
        )),
    }
}

/// xorshift64*: cheap, deterministic offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Latency summary in microseconds.
fn summary(lat: &mut [u64]) -> serde_json::Value {
    lat.sort_unstable();
    let n = lat.len().max(1);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(n - 1))
            .copied()
    };
    let mean = lat.iter().sum::<u64>() as f64 / n as f64;
    json!({
        "mean_us": mean / 1000.0,
        "p50_us": pct(0.5).unwrap_or(0) as f64 / 1000.0,
        "p99_us": pct(0.99).unwrap_or(0) as f64 / 1000.0,
    })
}

fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn policy(args: &Args) -> Policy {
    let cache: CacheMode = args
        .str("cache", "none")
        .parse()
        .unwrap_or_else(|e| die(&format!("{e}")));
    let mut p = Policy::from_mode(cache);
    p.stable_writes = args
        .str("stable", "auto")
        .parse()
        .unwrap_or_else(|e: vmstor_hostio::PolicyParseError| die(&e.to_string()));
    p
}

/// `perf io`: QD chains in flight on one virtio-blk queue.
fn io(args: &Args) -> serde_json::Value {
    let qd: usize = args.num("qd", 1);
    let bs: usize = args.num("bs", 4096);
    let write = args.str("rw", "read") == "write";
    let seq = args.map.contains_key("seq");
    let ex_name = args.str(
        "executor",
        &std::env::var("VMSTOR_PERF_EXECUTOR").unwrap_or_else(|_| "threads".into()),
    );
    let secs: f64 = args.num("secs", 5.0);
    let warmup: f64 = args.num("warmup", 1.0);
    // DiskOptions::poll_us (io_uring: poll the completion ring this long
    // before sleeping).
    // `uring+poll30` is `--executor uring --poll-us 30`.
    let (ex_base, poll_suffix) = match ex_name.split_once("+poll") {
        Some((b, p)) => (b.to_string(), p.parse().ok()),
        None => (ex_name.clone(), None),
    };
    let poll_us: u32 = args.num("poll-us", poll_suffix.unwrap_or(0));
    let pol = policy(args);
    let disk = Arc::new(
        Disk::open(
            &args.file(),
            pol,
            DiskOptions {
                executor: executor(&ex_base, qd),
                poll_us,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| die(&e.to_string())),
    );
    let blocks = disk.size() / bs as u64;
    let mut g = TestGuest::new(
        disk.clone(),
        TestGuestOptions {
            mem_size: (2 << 20) + qd * (bs + 8192),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| die(&e));
    if qd * 3 > usize::from(g.queue_rings(0).3) {
        die("queue depth above a third of the queue size");
    }
    let mem = g.mem().clone();
    let (next, wr) = (
        virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16,
        virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
    );
    let ty = if write {
        virtio_bindings::virtio_blk::VIRTIO_BLK_T_OUT
    } else {
        virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN
    };
    // Slot s: header, data and status in guest memory, descriptors 3s..3s+3.
    let mut slots = Vec::new();
    for s in 0..qd {
        let hdr = g.alloc(16, 16);
        let data = g.alloc(bs, 4096);
        let status = g.alloc(1, 1);
        let _ = mem.write_obj(ty.to_le(), GuestAddress(hdr));
        let _ = mem.write_slice(&vec![0x5a; bs], GuestAddress(data));
        let d = (3 * s) as u16;
        let chain = [
            (
                d,
                RawDesc {
                    addr: hdr,
                    len: 16,
                    flags: next,
                    next: d + 1,
                },
            ),
            (
                d + 1,
                RawDesc {
                    addr: data,
                    len: bs as u32,
                    flags: next | if write { 0 } else { wr },
                    next: d + 2,
                },
            ),
            (
                d + 2,
                RawDesc {
                    addr: status,
                    len: 1,
                    flags: wr,
                    next: 0,
                },
            ),
        ];
        slots.push((hdr, status, chain));
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq_at = 0u64;
    let mut pick = || {
        let b = if seq {
            seq_at = (seq_at + 1) % blocks;
            seq_at
        } else {
            rng.next() % blocks
        };
        b * (bs as u64 / 512)
    };
    let mut started = vec![Instant::now(); qd];
    for (s, (hdr, _, chain)) in slots.iter().enumerate() {
        let _ = mem.write_obj(pick().to_le(), GuestAddress(hdr + 8));
        started[s] = Instant::now();
        g.submit_raw(0, chain, chain[0].0);
    }
    g.kick(0);
    let t0 = Instant::now();
    let measure_from = t0 + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(secs);
    let mut lat = Vec::with_capacity(1 << 20);
    let mut done = 0u64;
    let mut errors = 0u64;
    let mut measured_from = None;
    let mut used = Vec::with_capacity(qd);
    loop {
        used.clear();
        g.poll_used_into(0, &mut used);
        if used.is_empty() {
            g.device_mut().wait_completions();
            continue;
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= measure_from && measured_from.is_none() {
            measured_from = Some(now);
        }
        for u in used.drain(..) {
            let s = usize::from(u.head) / 3;
            let (hdr, status, _) = slots[s];
            if mem.read_obj::<u8>(GuestAddress(status)).unwrap_or(0xff) != 0 {
                errors += 1;
            }
            if measured_from.is_some() {
                lat.push((now - started[s]).as_nanos() as u64);
                done += 1;
            }
            let _ = mem.write_obj(pick().to_le(), GuestAddress(hdr + 8));
            started[s] = Instant::now();
            g.submit_raw(0, &[], u.head);
        }
        g.kick(0);
    }
    let elapsed = measured_from.map_or(0.0, |t| t.elapsed().as_secs_f64());
    // Let the last chains finish before the disk goes away.
    let _ = disk.drain();
    if errors > 0 {
        die(&format!("{errors} requests failed"));
    }
    let c = disk.counters();
    merge(
        json!({
            "bench": "io",
            "rw": if write { "write" } else { "read" },
            "pattern": if seq { "seq" } else { "rand" },
            "bs": bs,
            "qd": qd,
            "executor": ex_name,
            "poll_us": poll_us,
            "cache": pol.mode().map_or("custom", |m| m.name()),
            "stable_writes": pol.stable_writes.name(),
            "secs": elapsed,
            "ios": done,
            "iops": done as f64 / elapsed.max(1e-9),
            "mib_s": done as f64 * bs as f64 / elapsed.max(1e-9) / (1 << 20) as f64,
            "bytes_bounced": c.bytes_bounced,
        }),
        summary(&mut lat),
    )
}

/// Per-thread loop for `flushstorm`: `op(i)` does one write + flush.
fn storm(streams: usize, secs: f64, op: impl Fn(u64) + Sync) -> (u64, f64) {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let go = Barrier::new(streams + 1);
    let mut elapsed = 0.0;
    std::thread::scope(|sc| {
        for t in 0..streams {
            let (stop, count, go, op) = (&stop, &count, &go, &op);
            sc.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64 * 7919);
                go.wait();
                while !stop.load(Ordering::Relaxed) {
                    op(rng.next());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        go.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        elapsed = t0.elapsed().as_secs_f64();
    });
    // Pairs finished after the stop flag are counted; time includes them only
    // up to the flag, which overstates throughput by at most `streams` pairs.
    (count.load(Ordering::Relaxed), elapsed)
}

/// `perf flushstorm`.
fn flushstorm(args: &Args) -> serde_json::Value {
    let streams: usize = args.num("streams", 32);
    let secs: f64 = args.num("secs", 5.0);
    let mode = args.str("mode", "engine");
    let max_syncs: usize = args.num("max-syncs", 0);
    let path = args.file();
    let (pairs, elapsed, fdatasyncs, flushes) = match mode.as_str() {
        "engine" => {
            let disk = Disk::open(
                &path,
                Policy::from_mode(CacheMode::None),
                DiskOptions {
                    max_syncs_in_flight: max_syncs,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| die(&e.to_string()));
            let blocks = disk.size() / 4096;
            let c0 = disk.counters();
            let (n, el) = storm(streams, secs, |r| {
                let buf = DataBuf::Owned(AlignedBuf::from_slice(&[0x6b; 4096]));
                let w = disk.execute(Request::write(r % blocks * 4096, buf, false, 0));
                let f = disk.execute(Request::flush(0));
                for o in [w, f] {
                    match o {
                        Ok(Outcome::Done(c)) if c.result.is_ok() => {}
                        other => die(&format!("request failed: {other:?}")),
                    }
                }
            });
            let c = disk.counters();
            (
                n,
                el,
                c.fdatasyncs - c0.fdatasyncs,
                c.flushes_asked - c0.flushes_asked,
            )
        }
        "naive" => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .unwrap_or_else(|e| die(&e.to_string()));
            let blocks = f.metadata().map(|m| m.len()).unwrap_or(0) / 4096;
            let syncs = AtomicU64::new(0);
            let (n, el) = storm(streams, secs, |r| {
                let buf = AlignedBuf::from_slice(&[0x6b; 4096]);
                f.write_all_at(buf.as_slice(), r % blocks * 4096)
                    .unwrap_or_else(|e| die(&e.to_string()));
                f.sync_data().unwrap_or_else(|e| die(&e.to_string()));
                syncs.fetch_add(1, Ordering::Relaxed);
            });
            let s = syncs.load(Ordering::Relaxed);
            (n, el, s, s)
        }
        m => die(&format!("unknown mode {m} (engine, naive)")),
    };
    json!({
        "bench": "flushstorm",
        "mode": mode,
        "max_syncs": max_syncs,
        "streams": streams,
        "secs": elapsed,
        "durable_writes": pairs,
        "durable_writes_per_s": pairs as f64 / elapsed,
        "flushes": flushes,
        "fdatasyncs": fdatasyncs,
        "fdatasyncs_per_flush": fdatasyncs as f64 / flushes.max(1) as f64,
    })
}

/// `perf fua`.
fn fua(args: &Args) -> serde_json::Value {
    let method = args.str("method", "dsync");
    let dirty_mib: usize = args.num("dirty-mib", 4);
    let batches: usize = args.num("batches", 20);
    let batch: usize = args.num("batch", 8);
    let path = args.file();
    let pol = policy(args);
    let disk =
        Disk::open(&path, pol, DiskOptions::default()).unwrap_or_else(|e| die(&e.to_string()));
    // Unrelated dirty data: buffered writes to the far half of the file
    // through a second, buffered descriptor.
    let other = OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| die(&e.to_string()));
    let half = disk.size() / 2;
    let blocks = half / 4096;
    let dirt = vec![0x33u8; 1 << 20];
    let mut rng = Rng(42);
    let mut lat = Vec::new();
    let c0 = disk.counters();
    let t0 = Instant::now();
    let mut busy = Duration::ZERO;
    for b in 0..batches {
        for m in 0..dirty_mib {
            let at = half + ((b * dirty_mib + m) as u64 % (half >> 20)) * (1 << 20);
            other
                .write_all_at(&dirt, at)
                .unwrap_or_else(|e| die(&e.to_string()));
        }
        for _ in 0..batch {
            let off = rng.next() % blocks * 4096;
            let buf = DataBuf::Owned(AlignedBuf::from_slice(&[0x77; 4096]));
            let t = Instant::now();
            let reqs = if method == "dsync" {
                vec![Request::write(off, buf, true, 0)]
            } else {
                vec![Request::write(off, buf, false, 0), Request::flush(0)]
            };
            for r in reqs {
                match disk.execute(r) {
                    Ok(Outcome::Done(c)) if c.result.is_ok() => {}
                    other => die(&format!("request failed: {other:?}")),
                }
            }
            let d = t.elapsed();
            busy += d;
            lat.push(d.as_nanos() as u64);
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let c = disk.counters();
    let n = lat.len();
    merge(
        json!({
            "bench": "fua",
            "method": method,
            "cache": pol.mode().map_or("custom", |m| m.name()),
            "dirty_mib": dirty_mib,
            "writes": n,
            "durable_writes_per_s": n as f64 / busy.as_secs_f64().max(1e-9),
            "wall_secs": wall,
            "fdatasyncs": c.fdatasyncs - c0.fdatasyncs,
            "fua_writes": c.fua_writes - c0.fua_writes,
        }),
        summary(&mut lat),
    )
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        die("usage: perf io|flushstorm|fua --file F ... (see the source's doc comment)")
    };
    let args = Args::parse(&argv[1..]);
    let out = match cmd.as_str() {
        "io" => io(&args),
        "flushstorm" => flushstorm(&args),
        "fua" => fua(&args),
        c => die(&format!("unknown command {c}")),
    };
    println!("{out}");
}

//! The subcommands. Each returns `Ok(true)` on success, `Ok(false)` when a
//! check failed (exit 1), or an error message (exit 1).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use vmstor_hostio::crash::{self, CaseConfig, GuestOp};
use vmstor_hostio::probe::{probe_path, ProbeReport};
use vmstor_hostio::{
    CacheMode, CannotExpress, DiscardMode, Disk, DiskOptions, ErrorAction, ErrorPolicy,
    ExecutorKind, Fact, GuestDriver, Issued, Policy, StableWrites,
};

use vmstor::controllers::Controller;
use vmstor::script;

const DEMO_SIZE: u64 = 4 << 20;

fn policy(mode: CacheMode, stable: StableWrites) -> Policy {
    Policy {
        stable_writes: stable,
        discard: DiscardMode::Unmap,
        errors: ErrorPolicy {
            read: ErrorAction::Report,
            write: ErrorAction::Report,
        },
        ..Policy::from_mode(mode)
    }
}

fn make_image(path: Option<&Path>, dir: &tempfile::TempDir, name: &str) -> Result<PathBuf, String> {
    let p = match path {
        Some(p) => p.to_path_buf(),
        None => dir.path().join(name),
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&p)
        .map_err(|e| format!("cannot create image {}: {e}", p.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < DEMO_SIZE {
        f.set_len(DEMO_SIZE).map_err(|e| e.to_string())?;
    }
    Ok(p)
}

fn open(path: &Path, p: Policy) -> Result<Arc<Disk>, String> {
    Disk::open(
        path,
        p,
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .map(Arc::new)
    .map_err(|e| e.to_string())
}

/// Data written by a script line: a recognisable pattern per block.
fn data_for(lba: u64, count: u32, bs: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(count as usize * bs as usize);
    for b in 0..u64::from(count) {
        let mut blk = vec![0u8; bs as usize];
        for (i, c) in blk.chunks_mut(8).enumerate() {
            c.copy_from_slice(&((lba + b) << 16 | i as u64).to_le_bytes());
        }
        v.extend_from_slice(&blk);
    }
    v
}

/// Runs one guest op through a driver.
fn exec(d: &mut dyn GuestDriver, op: GuestOp) -> Result<Issued, CannotExpress> {
    let cap = d.capacity();
    let check = |lba: u64, count: u32| -> Result<(), CannotExpress> {
        if lba.checked_add(u64::from(count)).is_none_or(|e| e > cap) {
            return Err(CannotExpress {
                controller: "disk",
                what: format!("blocks {lba}+{count}"),
                why: format!("beyond the disk's {cap} blocks"),
            });
        }
        Ok(())
    };
    match op {
        GuestOp::Write { lba, count, fua } => {
            check(lba, count)?;
            let data = data_for(lba, count, d.block_size());
            d.write(lba, &data, fua)
        }
        GuestOp::Read { lba, count } => {
            check(lba, count)?;
            let mut out = Vec::new();
            d.read(lba, count, &mut out)
        }
        GuestOp::Flush => d.flush(),
        GuestOp::WriteCache(on) => d.set_write_cache(on),
        GuestOp::Discard { lba, count } => {
            check(lba, count)?;
            d.discard(lba, count)
        }
        GuestOp::Zero { lba, count, unmap } => {
            check(lba, count)?;
            d.write_zeroes(lba, count, unmap)
        }
        GuestOp::Reset => d.reset(),
    }
}

fn syscall_summary(entries: &[vmstor_hostio::TraceEntry]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry(e.op.name().to_string()).or_insert(0) += 1;
    }
    m
}

fn summary_text(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{v}x {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------- demo

/// The demo workload: a journaling pattern.
fn journal() -> Vec<GuestOp> {
    use GuestOp::*;
    vec![
        Write {
            lba: 64,
            count: 8,
            fua: false,
        },
        Write {
            lba: 72,
            count: 8,
            fua: false,
        },
        Flush,
        Write {
            lba: 0,
            count: 1,
            fua: true,
        },
        Write {
            lba: 80,
            count: 8,
            fua: false,
        },
        WriteCache(false),
        Write {
            lba: 88,
            count: 8,
            fua: false,
        },
        Write {
            lba: 1,
            count: 1,
            fua: false,
        },
        WriteCache(true),
        Write {
            lba: 96,
            count: 8,
            fua: false,
        },
        Flush,
        Write {
            lba: 2,
            count: 1,
            fua: true,
        },
    ]
}

#[derive(Serialize)]
struct DemoRow {
    controller: String,
    cache: String,
    guest_commands: u64,
    host_ops: BTreeMap<String, u64>,
    flushes_asked: u64,
    fdatasyncs: u64,
    bytes_bounced: u64,
    guest_errors: u64,
    crash_points: u64,
    crash_verdict: String,
    /// The hostio executor the demo's disk ran (inline: one thread, so the
    /// trace is in issue order).
    executor: String,
    notes: Vec<String>,
}

/// FUA a controller cannot express becomes write + flush (what a guest
/// driver does on such a disk).
fn run_workload(
    d: &mut dyn GuestDriver,
    ops: &[GuestOp],
    notes: &mut Vec<String>,
) -> (u64, u64, Vec<GuestOp>) {
    let (mut cmds, mut errors) = (0, 0);
    let mut effective = Vec::new();
    for &op in ops {
        match exec(d, op) {
            Ok(i) => {
                cmds += i.commands.len() as u64;
                errors += u64::from(!i.status.is_ok());
                effective.push(op);
            }
            Err(e) => {
                if let GuestOp::Write {
                    lba,
                    count,
                    fua: true,
                } = op
                {
                    let note = format!("{e}; sent write + flush instead");
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                    let plain = GuestOp::Write {
                        lba,
                        count,
                        fua: false,
                    };
                    for o in [plain, GuestOp::Flush] {
                        if let Ok(i) = exec(d, o) {
                            cmds += i.commands.len() as u64;
                            errors += u64::from(!i.status.is_ok());
                        }
                        effective.push(o);
                    }
                } else {
                    notes.push(e.to_string());
                }
            }
        }
    }
    (cmds, errors, effective)
}

pub fn demo(
    image: Option<PathBuf>,
    controllers: Vec<Controller>,
    caches: Vec<CacheMode>,
    json: bool,
) -> Result<bool, String> {
    let controllers = if controllers.is_empty() {
        Controller::available()
    } else {
        controllers
    };
    let caches = if caches.is_empty() {
        CacheMode::ALL.to_vec()
    } else {
        caches
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pb = ProgressBar::new((controllers.len() * caches.len()) as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").map_err(|e| e.to_string())?,
    );
    let mut rows = Vec::new();
    let mut all_ok = true;
    for &c in &controllers {
        for &mode in &caches {
            pb.set_message(format!("{c} cache={mode}"));
            let path = make_image(image.as_deref(), &dir, &format!("{c}-{mode}.img"))?;
            let disk = open(&path, policy(mode, StableWrites::Auto))?;
            let mut d = c.driver(disk.clone())?;
            let mut notes = Vec::new();
            let (cmds, errors, effective) = run_workload(&mut *d, &journal(), &mut notes);
            let trace = disk.trace().take();
            let counters = disk.counters();
            // The same guest commands on the simulated host, crashed at every
            // host-op boundary.
            let cfg = CaseConfig {
                policy: policy(mode, StableWrites::Auto),
                host: vmstor_hostio::crash::SimHost::Full,
                size: 256 * 1024,
                sabotage: Default::default(),
                fault: None,
                random_crashes: 2,
            };
            let make = |d: Arc<Disk>| c.driver(d).expect("driver for a working controller");
            let (verdict, points) = match crash::run_case(&make, &cfg, &effective) {
                Ok(r) if mode.no_flush() => (
                    "consistent (unsafe: nothing promised)".to_string(),
                    r.crash_points,
                ),
                Ok(r) => ("no acknowledged write lost".to_string(), r.crash_points),
                Err(e) => {
                    all_ok = false;
                    (format!("VIOLATION: {e}"), 0)
                }
            };
            rows.push(DemoRow {
                controller: c.name().into(),
                cache: mode.name().into(),
                guest_commands: cmds,
                host_ops: syscall_summary(&trace),
                flushes_asked: counters.flushes_asked,
                fdatasyncs: counters.fdatasyncs,
                bytes_bounced: counters.bytes_bounced,
                guest_errors: errors,
                crash_points: points,
                crash_verdict: verdict,
                executor: counters.executor.to_string(),
                notes,
            });
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
    } else {
        println!("Workload: data writes, flush, FUA commit record, write cache off, writes, write cache on, flush, FUA commit.");
        println!();
        println!(
            "{:<11} {:<12} {:>5}  {:<62} {:>10} {:>8}  crash model",
            "controller", "cache", "cmds", "host ops (from the trace)", "fdatasync/", "bounced"
        );
        println!(
            "{:<11} {:<12} {:>5}  {:<62} {:>10} {:>8}",
            "", "", "", "", "flushes", "bytes"
        );
        for r in &rows {
            println!(
                "{:<11} {:<12} {:>5}  {:<62} {:>10} {:>8}  {} ({} crash points)",
                r.controller,
                r.cache,
                r.guest_commands,
                summary_text(&r.host_ops),
                format!("{}/{}", r.fdatasyncs, r.flushes_asked),
                r.bytes_bounced,
                r.crash_verdict,
                r.crash_points
            );
        }
        let mut notes: Vec<String> = rows.iter().flat_map(|r| r.notes.clone()).collect();
        notes.sort();
        notes.dedup();
        for n in notes {
            println!("note: {n}");
        }
    }
    Ok(all_ok)
}

// ---------------------------------------------------------------- probe

#[derive(Serialize)]
struct ProbeJson {
    path: String,
    kind: String,
    size: u64,
    logical_block_size: u32,
    physical_block_size: u32,
    dio_mem_align: u32,
    dio_offset_align: u32,
    dio_align_source: String,
    direct_io: Option<bool>,
    rwf_dsync: bool,
    discard: bool,
    write_zeroes: bool,
    host_write_cache: Option<bool>,
    host_fua: Option<bool>,
    rotational: Option<bool>,
    stable_pages_required: Option<bool>,
    stable_pages_why: String,
    devices: BTreeMap<String, Option<bool>>,
    recommended_cache: String,
    recommended_stable_writes: String,
    reason: String,
    /// The executor `vmstor serve` (`--io-engine io_uring`) would run for
    /// this image: "io_uring", or "threads" when io_uring is unavailable;
    /// null when the image could not be opened to find out.
    executor: Option<String>,
    /// io_uring works on this image's descriptor.
    io_uring_available: Option<bool>,
    /// Why not (the kernel's refusal, or why the image could not be opened).
    io_uring_unavailable_why: Option<String>,
}

/// What opening this image with the io_uring executor gives: the executor
/// that would run, or why that could not be found out.
struct EngineProbe {
    executor: Option<&'static str>,
    why_not: Option<String>,
}

/// Opens `path` read-only with `ExecutorKind::IO_URING` (what `vmstor
/// serve` asks for by default), which sets up a ring on the image's
/// descriptor and falls back to the thread pool if the kernel refuses.
fn probe_engine(path: &Path) -> EngineProbe {
    let policy = Policy {
        read_only: true,
        ..Policy::default()
    };
    let opts = DiskOptions {
        executor: ExecutorKind::IO_URING,
        ..Default::default()
    };
    match Disk::open(path, policy, opts) {
        Ok(d) => {
            let info = d.executor_info();
            EngineProbe {
                executor: Some(info.active),
                why_not: info.fallback.clone(),
            }
        }
        Err(e) => EngineProbe {
            executor: None,
            why_not: Some(format!("cannot open the image to try: {e}")),
        },
    }
}

fn yes_no(f: &Fact<bool>) -> String {
    match f {
        Fact::Known(true, src) => format!("yes ({src})"),
        Fact::Known(false, src) => format!("no ({src})"),
        Fact::Unknown(why) => format!("unknown ({why})"),
    }
}

pub fn probe(path: &Path, json: bool) -> Result<bool, String> {
    let r: ProbeReport =
        probe_path(path).map_err(|e| format!("cannot probe {}: {e}", path.display()))?;
    // Discard/zeroing need a writable descriptor; try one (nothing inside
    // the image changes: see hostio::probe).
    let writable = Disk::open(path, Policy::default(), DiskOptions::default()).ok();
    let (discard, zeroes) = match &writable {
        Some(d) => (d.caps().discard, d.caps().write_zeroes),
        None => (r.caps.discard, r.caps.write_zeroes),
    };
    let engine = probe_engine(path);
    let c = &r.caps;
    if json {
        let j = ProbeJson {
            path: path.display().to_string(),
            kind: format!("{:?}", c.kind),
            size: c.size,
            logical_block_size: c.logical_block_size,
            physical_block_size: c.physical_block_size,
            dio_mem_align: c.dio_mem_align,
            dio_offset_align: c.dio_offset_align,
            dio_align_source: r.dio_align_source.clone(),
            direct_io: r.direct_ok.get(),
            rwf_dsync: c.rwf_dsync,
            discard,
            write_zeroes: zeroes,
            host_write_cache: c.host_write_cache.get(),
            host_fua: c.host_fua.get(),
            rotational: c.rotational.get(),
            stable_pages_required: c.stable_pages.get(),
            stable_pages_why: c.stable_pages_why.clone(),
            devices: r
                .devices
                .iter()
                .map(|(n, f)| (n.clone(), f.get()))
                .collect(),
            recommended_cache: r.recommended_cache.to_string(),
            recommended_stable_writes: r.recommended_stable.to_string(),
            reason: r.reason.clone(),
            executor: engine.executor.map(String::from),
            io_uring_available: engine.executor.map(|e| e == "io_uring"),
            io_uring_unavailable_why: engine.why_not.clone(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?
        );
        return Ok(true);
    }
    println!("{}", path.display());
    println!("  backing:               {:?}, {} bytes", c.kind, c.size);
    println!(
        "  block sizes:           logical {} / physical {}",
        c.logical_block_size, c.physical_block_size
    );
    println!("  O_DIRECT:              {}", yes_no(&r.direct_ok));
    println!(
        "  O_DIRECT alignment:    memory {} / offset {} ({})",
        c.dio_mem_align, c.dio_offset_align, r.dio_align_source
    );
    println!(
        "  pwritev2(RWF_DSYNC):   {}",
        if c.rwf_dsync {
            "accepted"
        } else {
            "refused: FUA becomes write + fdatasync"
        }
    );
    println!(
        "  discard:               {}",
        if discard { "yes" } else { "no" }
    );
    println!(
        "  write zeroes:          {}",
        if zeroes {
            "yes (fast)"
        } else {
            "no: explicit zero writes"
        }
    );
    match (engine.executor, &engine.why_not) {
        (Some("io_uring"), _) => {
            println!(
                "  io_uring:              available (vmstor serve runs disks on it by default)"
            )
        }
        (Some(active), why) => println!(
            "  io_uring:              unavailable: {}; disks run the {active} executor",
            why.as_deref().unwrap_or("no reason given")
        ),
        (None, why) => println!(
            "  io_uring:              unknown ({})",
            why.as_deref().unwrap_or("no reason given")
        ),
    }
    println!("  host write cache:      {}", yes_no(&c.host_write_cache));
    println!("  host FUA:              {}", yes_no(&c.host_fua));
    println!("  stable pages needed:   {}", yes_no(&c.stable_pages));
    println!("    why:                 {}", c.stable_pages_why);
    for (n, f) in &r.devices {
        println!("    {n:<20} queue/stable_writes: {}", yes_no(f));
    }
    println!(
        "  recommendation:        cache={} stable_writes={}",
        r.recommended_cache, r.recommended_stable
    );
    println!("    because:             {}", r.reason);
    Ok(true)
}

// ---------------------------------------------------------------- trace

#[derive(Serialize)]
struct TraceLine {
    line: usize,
    text: String,
    commands: Vec<String>,
    status: String,
    host_ops: Vec<String>,
}

pub fn trace(
    c: Controller,
    mode: CacheMode,
    stable: StableWrites,
    image: Option<PathBuf>,
    json: bool,
    script_path: &str,
) -> Result<bool, String> {
    let src = if script_path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read the script from standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(script_path)
            .map_err(|e| format!("cannot read script {script_path}: {e}"))?
    };
    let lines = script::parse(&src).map_err(|e| format!("script {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = make_image(image.as_deref(), &dir, "trace.img")?;
    let disk = open(&path, policy(mode, stable))?;
    let mut d = c.driver(disk.clone())?;
    disk.trace().take();
    let mut out = Vec::new();
    let mut ok = true;
    if !json {
        println!(
            "# {c}, cache={mode} (write cache {}), stable_writes={stable}",
            if disk.write_cache() { "on" } else { "off" }
        );
    }
    for l in &lines {
        let r = exec(&mut *d, l.op);
        let host: Vec<String> = disk.trace().take().iter().map(|e| e.to_string()).collect();
        match r {
            Ok(i) => {
                ok &= i.status.is_ok();
                let tl = TraceLine {
                    line: l.line,
                    text: l.text.clone(),
                    commands: i.commands.clone(),
                    status: i.status.to_string(),
                    host_ops: host,
                };
                if !json {
                    println!("{}: {}", tl.line, tl.text);
                    println!("    {} -> {}", tl.commands.join(", "), tl.status);
                    for h in &tl.host_ops {
                        println!("      host: {h}");
                    }
                    if tl.host_ops.is_empty() {
                        println!("      host: (no host I/O)");
                    }
                }
                out.push(tl);
            }
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
                    );
                }
                return Err(format!("script line {} ({:?}): {e}", l.line, l.text));
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        println!("# counters: {}", disk.counters());
    }
    Ok(ok)
}

// ---------------------------------------------------------------- crashcheck

#[derive(Serialize)]
struct CheckRow {
    controller: String,
    cache: String,
    host: String,
    cases: u64,
    crash_points: u64,
    images_checked: u64,
    violations: u64,
    counterexample: Option<Vec<String>>,
    failure: Option<String>,
}

/// What `vmstor crashcheck` runs per controller and cache mode.
pub struct CheckOptions {
    /// Sequences.
    pub cases: u64,
    /// First seed.
    pub seed: u64,
    /// Guest operations per sequence.
    pub len: usize,
    /// The simulated host's capabilities.
    pub host: crash::SimHost,
    /// Known-bad behaviours switched on (testing the checker).
    pub sabotage: vmstor_hostio::Sabotage,
}

pub fn crashcheck(
    controllers: Vec<Controller>,
    caches: Vec<CacheMode>,
    check: CheckOptions,
    json: bool,
) -> Result<bool, String> {
    let CheckOptions {
        cases,
        seed,
        len,
        host,
        sabotage,
    } = check;
    let controllers = if controllers.is_empty() {
        Controller::available()
    } else {
        controllers
    };
    let caches = if caches.is_empty() {
        CacheMode::ALL.to_vec()
    } else {
        caches
    };
    let pb = ProgressBar::new(controllers.len() as u64 * caches.len() as u64 * cases);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").map_err(|e| e.to_string())?,
    );
    let mut rows = Vec::new();
    for &c in &controllers {
        // Fail early with a clear message if the controller is unavailable.
        c.driver(Arc::new(
            Disk::from_host_file(
                Arc::new(crash::SimFile::new(&vec![0u8; 65536], false)),
                vmstor_hostio::HostCaps::simulated(65536),
                Policy::default(),
                DiskOptions::default(),
            )
            .map_err(|e| e.to_string())?,
        ))?;
        for &mode in &caches {
            pb.set_message(format!("{c} cache={mode}"));
            let cfg = CaseConfig {
                policy: policy(mode, StableWrites::Auto),
                host,
                size: 128 * 1024,
                sabotage,
                fault: None,
                random_crashes: 2,
            };
            let make = |d: Arc<Disk>| c.driver(d).expect("driver for a working controller");
            let mut row = CheckRow {
                controller: c.name().into(),
                cache: mode.name().into(),
                host: host.to_string(),
                cases: 0,
                crash_points: 0,
                images_checked: 0,
                violations: 0,
                counterexample: None,
                failure: None,
            };
            for k in 0..cases {
                let ops = crash::random_ops(seed.wrapping_add(k), len, 256);
                row.cases += 1;
                match crash::run_case(&make, &cfg, &ops) {
                    Ok(r) => {
                        row.crash_points += r.crash_points;
                        row.images_checked += r.images_checked;
                    }
                    Err(e) => {
                        row.violations += 1;
                        let min =
                            crash::shrink(ops, &mut |o| crash::run_case(&make, &cfg, o).is_err());
                        let why = crash::run_case(&make, &cfg, &min)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| e.to_string());
                        row.counterexample = Some(min.iter().map(|o| o.to_string()).collect());
                        row.failure = Some(format!("seed {}: {why}", seed.wrapping_add(k)));
                        pb.inc(cases - k);
                        break;
                    }
                }
                pb.inc(1);
            }
            rows.push(row);
        }
    }
    pb.finish_and_clear();
    let ok = rows.iter().all(|r| r.violations == 0);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
    } else {
        if host != crash::SimHost::Full {
            println!("simulated host: {host}");
        }
        println!(
            "{:<11} {:<12} {:>6} {:>12} {:>14} {:>10}",
            "controller", "cache", "cases", "crash points", "images checked", "violations"
        );
        for r in &rows {
            println!(
                "{:<11} {:<12} {:>6} {:>12} {:>14} {:>10}",
                r.controller, r.cache, r.cases, r.crash_points, r.images_checked, r.violations
            );
            if let (Some(ce), Some(f)) = (&r.counterexample, &r.failure) {
                println!("  minimal counterexample ({f}):");
                for l in ce {
                    println!("    {l}");
                }
            }
        }
    }
    Ok(ok)
}

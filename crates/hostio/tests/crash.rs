//! The crash model through the engine itself (no controller): correct code
//! passes in every cache mode, and each known-bad behaviour is found with a
//! small counterexample. Front ends run the same harness through their own
//! drivers (crates/vmstor/tests/crash.rs).

use std::sync::Arc;

use vmstor_hostio::crash::*;
use vmstor_hostio::*;

fn factory() -> impl Fn(Arc<Disk>) -> Box<dyn GuestDriver> {
    |d| Box::new(EngineDriver::new(d)) as Box<dyn GuestDriver>
}

fn cfg(mode: CacheMode) -> CaseConfig {
    CaseConfig {
        policy: Policy {
            discard: DiscardMode::Unmap,
            ..Policy::from_mode(mode)
        },
        host: SimHost::Full,
        size: 64 * 1024,
        sabotage: Sabotage::default(),
        fault: None,
        random_crashes: 2,
    }
}

fn cases() -> u64 {
    std::env::var("VMSTOR_CRASH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
}

/// The executors the crash model runs, with how many cases each: the
/// io_uring executor runs its emulated ring over the simulated host (the same
/// completion-driven state machine as over a real ring), on a third of the
/// cases to keep the suite's time in budget.
fn executors() -> [(ExecutorKind, u64); 2] {
    [
        (ExecutorKind::Inline, cases()),
        (ExecutorKind::IO_URING, cases().div_ceil(3)),
    ]
}

#[test]
fn every_mode_keeps_its_promises() {
    let f = factory();
    for (exec, cases) in executors() {
        for mode in CacheMode::ALL {
            let c = cfg(mode);
            let mut points = 0;
            for seed in 0..cases {
                let ops = random_ops(seed, 24, 128);
                match run_case_with(&f, &c, &ops, exec) {
                    Ok(r) => points += r.crash_points,
                    Err(e) => panic!("{exec:?} {mode} seed {seed}: {e}\nops: {ops:?}"),
                }
            }
            assert!(points > 0);
            println!("{exec:?} {mode}: {cases} cases, {points} crash points");
        }
    }
}

/// The crash model really runs the io_uring state machine (emulated ring).
#[test]
fn io_uring_over_the_simulated_host_is_the_emulated_ring() {
    let sim = SimFile::new(&[0u8; 8192], true);
    let d = Disk::from_host_file(
        Arc::new(sim),
        HostCaps::simulated(8192),
        Policy::from_mode(CacheMode::None),
        DiskOptions {
            executor: ExecutorKind::IO_URING,
            ..Default::default()
        },
    )
    .unwrap();
    let info = d.executor_info();
    assert_eq!((info.active, &info.fallback), ("io_uring-emulated", &None));
    assert_eq!(d.counters().executor, "io_uring-emulated");
}

#[test]
fn fault_injection_never_breaks_a_promise() {
    let f = factory();
    for (exec, cases) in executors() {
        for mode in [
            CacheMode::Writeback,
            CacheMode::None,
            CacheMode::Writethrough,
        ] {
            for seed in 0..cases / 10 {
                let ops = random_ops(1000 + seed, 16, 128);
                // Count host ops in a clean run, then fail each one in turn.
                let total = run_case_with(&f, &cfg(mode), &ops, exec)
                    .unwrap()
                    .crash_points;
                for n in 1..=total {
                    for kind in [
                        FaultKind::Eio,
                        FaultKind::Enospc,
                        FaultKind::Eintr,
                        FaultKind::Short,
                    ] {
                        let c = CaseConfig {
                            fault: Some((n, kind)),
                            random_crashes: 0,
                            ..cfg(mode)
                        };
                        if let Err(e) = run_case_with(&f, &c, &ops, exec) {
                            panic!(
                                "{exec:?} {mode} seed {seed} fault {kind:?}@{n}: {e}\nops: {ops:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Searches random sequences for a violation; returns the shrunk sequence.
fn find(
    c: &CaseConfig,
    seeds: std::ops::Range<u64>,
    fault_search: bool,
) -> Option<(Vec<GuestOp>, String)> {
    let f = factory();
    let fails = |ops: &[GuestOp]| -> Option<String> {
        if fault_search {
            let total = run_case(
                &f,
                &CaseConfig {
                    sabotage: Default::default(),
                    ..c.clone()
                },
                ops,
            )
            .ok()?
            .crash_points;
            for n in 1..=total {
                let cc = CaseConfig {
                    fault: Some((n, FaultKind::Eio)),
                    ..c.clone()
                };
                if let Err(e) = run_case(&f, &cc, ops) {
                    return Some(format!("fault EIO@{n}: {e}"));
                }
            }
            None
        } else {
            run_case(&f, c, ops).err().map(|e| e.to_string())
        }
    };
    for seed in seeds {
        let ops = random_ops(seed, 24, 128);
        if fails(&ops).is_some() {
            let min = shrink(ops, &mut |o| fails(o).is_some());
            let why = fails(&min).unwrap();
            return Some((min, why));
        }
    }
    None
}

#[test]
fn finds_flush_without_fdatasync_under_none() {
    let c = CaseConfig {
        sabotage: Sabotage {
            skip_flush_when_direct: true,
            ..Default::default()
        },
        ..cfg(CacheMode::None)
    };
    let (min, why) = find(&c, 0..200, false).expect("sabotage must be found");
    println!("minimal counterexample: {min:?}: {why}");
    assert_eq!(min.len(), 2, "{min:?}");
    assert!(matches!(min[0], GuestOp::Write { .. }));
    assert_eq!(min[1], GuestOp::Flush);
}

#[test]
fn finds_wce_off_writes_without_fua() {
    let c = CaseConfig {
        sabotage: Sabotage {
            wce_off_not_fua: true,
            ..Default::default()
        },
        ..cfg(CacheMode::Writethrough)
    };
    let (min, why) = find(&c, 0..200, false).expect("sabotage must be found");
    println!("minimal counterexample: {min:?}: {why}");
    assert_eq!(min.len(), 1, "{min:?}");
    assert!(matches!(min[0], GuestOp::Write { fua: false, .. }));
}

#[test]
fn finds_missing_latch() {
    let c = CaseConfig {
        sabotage: Sabotage {
            no_latch: true,
            ..Default::default()
        },
        random_crashes: 0,
        ..cfg(CacheMode::Writeback)
    };
    let (min, why) = find(&c, 0..100, true).expect("sabotage must be found");
    println!("minimal counterexample: {min:?}: {why}");
    assert!(min.len() <= 3, "{min:?}");
    assert!(min.contains(&GuestOp::Flush) || min.contains(&GuestOp::WriteCache(false)));
}

#[test]
fn oracle_rejects_bytes_nobody_wrote_and_lost_durable_writes() {
    let orig = vec![1u8; 4 * SECTOR];
    let mut o = Oracle::new(orig.clone());
    let a = o.begin(0, vec![2u8; SECTOR], true);
    o.complete(a, true, false);
    let t_flush = o.now();
    // Before the flush completes, old or new is fine.
    assert!(o.check(o.now(), &orig, false).is_ok());
    o.flushed(t_flush);
    assert!(
        o.check(o.now(), &orig, false).is_err(),
        "lost flushed write"
    );
    let mut img = orig.clone();
    img[..SECTOR].fill(2);
    assert!(o.check(o.now(), &img, false).is_ok());
    img[SECTOR] = 9;
    let v = o.check(o.now(), &img, false).unwrap_err();
    assert_eq!(v.sector, 1);
    assert!(v.why.contains("nobody"));
    // unsafe mode: only consistency.
    assert!(o.check(o.now(), &orig, true).is_ok());
}

/// Group commit: flush F1's fdatasync starts (capturing what is dirty), a
/// write B completes, flush F2 is submitted while F1's sync still runs. F2
/// must not be satisfied by F1's sync. Returns the oracle's verdict after a
/// power loss once both flushes completed.
fn group_commit_scenario(sabotage: Sabotage, max_syncs: usize) -> Result<(), Violation> {
    let size = 64 * 1024u64;
    let original = vec![0x11u8; size as usize];
    let sim = SimFile::new(&original, false);
    let mut caps = HostCaps::simulated(size);
    caps.stable_pages = Fact::Known(false, "sim");
    let disk = Arc::new(
        Disk::from_host_file(
            Arc::new(sim.clone()),
            caps,
            Policy::from_mode(CacheMode::Writeback),
            DiskOptions {
                executor: ExecutorKind::Threads(2),
                sabotage,
                max_syncs_in_flight: max_syncs,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut o = Oracle::new(original);
    let write = |o: &mut Oracle, off: u64, v: u8, tag: u64| {
        let id = o.begin(off, vec![v; SECTOR], true);
        disk.submit(Request::write(
            off,
            DataBuf::Owned(AlignedBuf::from_slice(&[v; SECTOR])),
            false,
            tag,
        ))
        .unwrap();
        let c = disk.wait();
        assert_eq!(c.len(), 1);
        o.complete(id, c[0].result.is_ok(), false);
    };
    write(&mut o, 0, 0xaa, 1);
    sim.gate().arm();
    let f1_sub = o.now();
    disk.submit(Request::flush(2)).unwrap();
    sim.gate().wait_entered();
    write(&mut o, 4096, 0xbb, 3);
    let f2_sub = o.now();
    disk.submit(Request::flush(4)).unwrap();
    while disk.flushes_inside() < 2 {
        std::thread::yield_now();
    }
    sim.gate().open();
    let mut done = disk.drain();
    done.sort_by_key(|c| c.tag);
    assert!(done.iter().all(|c| c.result.is_ok()));
    o.flushed(f1_sub);
    o.flushed(f2_sub);
    let img = sim.crash_image(&sim.state(), CrashKind::PowerLoss, Strategy::Oldest);
    o.check(o.now(), &img, false)
}

#[test]
fn finds_group_commit_sharing_a_stale_sync() {
    assert_eq!(group_commit_scenario(Sabotage::default(), 0), Ok(()));
    let v = group_commit_scenario(
        Sabotage {
            share_running_sync: true,
            ..Default::default()
        },
        0,
    )
    .expect_err("a flush satisfied by a sync that started before it must lose B");
    println!("counterexample: write A; flush F1 (sync starts); write B; flush F2 shares F1: {v}");
    assert_eq!(v.sector, 8);
}

/// The same with several syncs allowed at once: F2 starts its own sync
/// while F1's is held (and waits for F1's to end before it completes), so
/// B is durable; the sabotaged coordinator still shares F1's stale sync.
#[test]
fn finds_group_commit_sharing_a_stale_sync_with_concurrent_syncs() {
    let max = vmstor_hostio::flush::MAX_SYNCS_IN_FLIGHT;
    assert_eq!(group_commit_scenario(Sabotage::default(), max), Ok(()));
    let v = group_commit_scenario(
        Sabotage {
            share_running_sync: true,
            ..Default::default()
        },
        max,
    )
    .expect_err("a flush satisfied by a sync that started before it must lose B");
    assert_eq!(v.sector, 8);
}

//! Requests through the inline and thread-pool executors against real files,
//! asserting on the recorded host-op trace; the fault-wrapper tests also run
//! the io_uring executor (faults injected into the real ring).

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmstor_hostio::*;

mod common;
use common::*;

fn open(img: &tempfile::NamedTempFile, mode: CacheMode, exec: ExecutorKind) -> Disk {
    let policy = Policy {
        discard: DiscardMode::Unmap,
        ..Policy::from_mode(mode)
    };
    Disk::open(
        img.path(),
        policy,
        DiskOptions {
            executor: exec,
            trace: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn syscalls(d: &Disk) -> Vec<HostOp> {
    d.trace()
        .take()
        .into_iter()
        .filter(|e| e.op.is_syscall())
        .map(|e| e.op)
        .collect()
}

#[test]
fn none_fua_write_is_one_rwf_dsync_on_odirect() {
    let img = image(8 * MIB);
    let d = open(&img, CacheMode::None, ExecutorKind::Inline);
    let m = mem();
    m.write_slice(&[0xab; 4096], GuestAddress(0)).unwrap();
    let c = run(&d, Request::write(8192, guest(&m, 0, 4096), true, 1));
    assert_eq!(c.result, Ok(4096));
    let t = d.trace().take();
    let sys: Vec<_> = t.iter().filter(|e| e.op.is_syscall()).collect();
    assert_eq!(sys.len(), 1, "{t:?}");
    assert_eq!(
        sys[0].op,
        HostOp::Write {
            offset: 8192,
            len: 4096,
            from: if plan::stable_bounce(d.policy(), d.caps()) {
                BufRef::Bounce(0)
            } else {
                BufRef::Request
            },
            dsync: true
        }
    );
    assert!(sys[0].direct);
    // Data really landed.
    let mut back = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(img.as_file(), &mut back, 8192).unwrap();
    assert_eq!(back, vec![0xab; 4096]);
}

#[test]
fn writeback_with_wce_off_makes_every_write_durable() {
    let img = image(8 * MIB);
    let d = open(&img, CacheMode::Writeback, ExecutorKind::Inline);
    let m = mem();
    run(&d, Request::write(0, guest(&m, 0, 512), false, 1));
    assert_eq!(
        syscalls(&d),
        vec![HostOp::Write {
            offset: 0,
            len: 512,
            from: BufRef::Request,
            dsync: false
        }]
    );
    d.set_write_cache(false).unwrap();
    // Turning the cache off flushed the earlier write.
    assert_eq!(syscalls(&d), vec![HostOp::Fdatasync]);
    run(&d, Request::write(512, guest(&m, 0, 512), false, 2));
    run(&d, Request::write_zeroes(4096, 4096, false, 3));
    assert_eq!(
        syscalls(&d),
        vec![
            HostOp::Write {
                offset: 512,
                len: 512,
                from: BufRef::Request,
                dsync: true
            },
            HostOp::ZeroRange {
                offset: 4096,
                len: 4096
            },
            HostOp::Fdatasync,
        ]
    );
}

#[test]
fn writethrough_and_directsync_start_with_cache_off() {
    for mode in [CacheMode::Writethrough, CacheMode::Directsync] {
        let img = image(MIB);
        let d = open(&img, mode, ExecutorKind::Inline);
        assert!(!d.write_cache());
        let m = mem();
        run(&d, Request::write(0, guest(&m, 0, 4096), false, 1));
        let ops = syscalls(&d);
        assert!(
            matches!(ops.last(), Some(HostOp::Write { dsync: true, .. })),
            "{mode}: {ops:?}"
        );
    }
}

#[test]
fn unsafe_drops_flush_and_fua() {
    let img = image(MIB);
    let d = open(&img, CacheMode::Unsafe, ExecutorKind::Inline);
    let m = mem();
    run(&d, Request::write(0, guest(&m, 0, 512), true, 1));
    run(&d, Request::flush(2));
    assert_eq!(
        syscalls(&d),
        vec![HostOp::Write {
            offset: 0,
            len: 512,
            from: BufRef::Request,
            dsync: false
        }]
    );
    assert_eq!(d.counters().fdatasyncs, 0);
}

#[test]
fn flush_elided_only_when_nothing_written() {
    let img = image(MIB);
    let d = open(&img, CacheMode::Writeback, ExecutorKind::Inline);
    let m = mem();
    run(&d, Request::write(0, guest(&m, 0, 512), false, 1));
    run(&d, Request::flush(2));
    run(&d, Request::flush(3));
    run(&d, Request::discard(0, 512, 4));
    run(&d, Request::flush(5));
    let c = d.counters();
    assert_eq!((c.flushes_asked, c.fdatasyncs, c.flushes_elided), (3, 2, 1));
}

#[test]
fn two_concurrent_flushes_after_one_write_issue_one_fdatasync() {
    let img = image(MIB);
    let d = open(&img, CacheMode::Writeback, ExecutorKind::Threads(2));
    let m = mem();
    d.submit(Request::write(0, guest(&m, 0, 4096), false, 1))
        .unwrap();
    assert_eq!(d.drain().len(), 1);
    d.submit(Request::flush(2)).unwrap();
    d.submit(Request::flush(3)).unwrap();
    let done = d.drain();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.result == Ok(0)));
    let c = d.counters();
    assert_eq!(c.fdatasyncs, 1, "{c}");
    assert_eq!(c.flushes_shared + c.flushes_elided, 1);
}

#[test]
fn thread_pool_signals_eventfd_and_completes_everything() {
    let img = image(4 * MIB);
    let d = open(&img, CacheMode::None, ExecutorKind::Threads(2));
    let fd = d.notify_fd().expect("pool has an eventfd");
    let m = mem();
    for i in 0..64u64 {
        m.write_slice(&[i as u8; 4096], GuestAddress(i * 4096))
            .unwrap();
        d.submit(Request::write(
            i * 4096,
            guest(&m, i * 4096, 4096),
            i % 3 == 0,
            i,
        ))
        .unwrap();
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(r, 1);
    let mut tags: Vec<u64> = d.drain().into_iter().map(|c| c.tag).collect();
    tags.sort();
    assert_eq!(tags, (0..64).collect::<Vec<_>>());
    // Read back through the engine.
    let m2 = mem();
    run(&d, Request::read(0, guest(&m2, 0, 64 * 4096), 100));
    for i in 0..64u64 {
        let mut b = [0u8; 4096];
        m2.read_slice(&mut b, GuestAddress(i * 4096)).unwrap();
        assert!(b.iter().all(|&x| x == i as u8));
    }
}

#[test]
fn misaligned_guest_buffer_is_bounced_under_odirect() {
    let img = image(MIB);
    let d = open(&img, CacheMode::None, ExecutorKind::Inline);
    let m = mem();
    m.write_slice(&[7u8; 4096], GuestAddress(100)).unwrap();
    // Guest buffer at an odd address: must be bounced, never handed to O_DIRECT.
    let c = run(&d, Request::write(0, guest(&m, 100, 4096), false, 1));
    assert_eq!(c.result, Ok(4096));
    let t = d.trace().take();
    assert!(t
        .iter()
        .all(|e| !(matches!(e.op, HostOp::Write { .. }) && e.guest_memory)));
    assert!(d.counters().bytes_bounced >= 4096);
    let c = run(&d, Request::read(0, guest(&m, 8191, 4096), 2));
    assert_eq!(c.result, Ok(4096));
    let mut b = [0u8; 4096];
    m.read_slice(&mut b, GuestAddress(8191)).unwrap();
    assert_eq!(b, [7u8; 4096]);
}

#[test]
fn stable_writes_bounce_copies_every_odirect_write() {
    let img = image(MIB);
    let policy = Policy {
        stable_writes: StableWrites::Bounce,
        ..Policy::from_mode(CacheMode::None)
    };
    let d = Disk::open(
        img.path(),
        policy,
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let m = mem();
    run(&d, Request::write(0, guest(&m, 0, 4096), false, 1));
    let t = d.trace().take();
    assert_eq!(t[0].op, HostOp::FillBounce { at: 0, len: 4096 });
    assert!(matches!(
        t[1].op,
        HostOp::Write {
            from: BufRef::Bounce(0),
            ..
        }
    ));
    assert!(!t[1].guest_memory);
    // trust hands guest memory to the O_DIRECT write.
    let policy = Policy {
        stable_writes: StableWrites::Trust,
        ..Policy::from_mode(CacheMode::None)
    };
    let d = Disk::open(
        img.path(),
        policy,
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    run(&d, Request::write(0, guest(&m, 0, 4096), false, 1));
    let t = d.trace().take();
    assert_eq!(t.len(), 1);
    assert!(t[0].guest_memory && t[0].direct);
}

#[test]
fn requests_are_validated_before_host_io() {
    let img = image(MIB);
    let d = open(&img, CacheMode::Writeback, ExecutorKind::Inline);
    let m = mem();
    let cases = [
        Request::write(MIB, guest(&m, 0, 512), false, 1),
        Request::write(MIB - 512, guest(&m, 0, 1024), false, 1),
        Request::write(100, guest(&m, 0, 512), false, 1),
        Request::read(u64::MAX - 511, guest(&m, 0, 512), 1),
        Request::discard(u64::MAX - 511, 1024, 1),
        Request::write_zeroes(0, 0, false, 1),
        Request::read(0, guest(&m, 5 * MIB, 512), 1),
        Request::read(
            0,
            DataBuf::Guest(GuestBufs::new(
                m.clone(),
                vec![(GuestAddress(0), usize::MAX), (GuestAddress(0), 2)],
            )),
            1,
        ),
    ];
    for r in cases {
        let desc = format!("{:?} {}+{}", r.op, r.offset, r.len);
        assert!(d.execute(r).is_err(), "{desc} accepted");
    }
    assert!(d.trace().take().is_empty());
    // Read-only disks refuse modification.
    let ro = Disk::open(
        img.path(),
        Policy {
            read_only: true,
            ..Policy::default()
        },
        DiskOptions::default(),
    )
    .unwrap();
    assert_eq!(
        ro.execute(Request::write(0, guest(&m, 0, 512), false, 1))
            .unwrap_err(),
        RequestError::ReadOnly
    );
}

#[test]
fn discard_and_write_zeroes_read_back_zero() {
    let img = image(MIB);
    let d = open(&img, CacheMode::Writeback, ExecutorKind::Inline);
    let m = mem();
    m.write_slice(&[0xff; 65536], GuestAddress(0)).unwrap();
    run(&d, Request::write(0, guest(&m, 0, 65536), false, 1));
    run(&d, Request::write_zeroes(0, 8192, true, 2));
    run(&d, Request::write_zeroes(8192, 8192, false, 3));
    let c = run(&d, Request::read(0, guest(&m, 0, 16384), 4));
    assert_eq!(c.result, Ok(16384));
    let mut b = vec![1u8; 16384];
    m.read_slice(&mut b, GuestAddress(0)).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    let ops = syscalls(&d);
    assert!(ops.contains(&HostOp::PunchHole {
        offset: 0,
        len: 8192
    }));
    assert!(ops.contains(&HostOp::ZeroRange {
        offset: 8192,
        len: 8192
    }));
}

#[test]
fn owned_buffers_round_trip() {
    let img = image(MIB);
    let d = open(&img, CacheMode::None, ExecutorKind::Inline);
    let c = run(
        &d,
        Request::write(
            4096,
            DataBuf::Owned(AlignedBuf::from_slice(&[9u8; 1024])),
            false,
            1,
        ),
    );
    assert_eq!(c.result, Ok(1024));
    let c = run(
        &d,
        Request::read(4096, DataBuf::Owned(AlignedBuf::new(1024)), 2),
    );
    match c.buf {
        DataBuf::Owned(b) => assert_eq!(b.as_slice(), &[9u8; 1024][..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn flush_after_only_dsync_writes_needs_no_fdatasync() {
    let img = image(MIB);
    let d = open(&img, CacheMode::Writethrough, ExecutorKind::Inline);
    let m = mem();
    run(&d, Request::write(0, guest(&m, 0, 4096), false, 1));
    run(&d, Request::flush(2));
    assert_eq!(d.counters().fdatasyncs, 0);
    // A volatile write in between must be covered.
    d.set_write_cache(true).unwrap();
    run(&d, Request::write(0, guest(&m, 0, 4096), false, 3));
    run(&d, Request::flush(4));
    assert_eq!(d.counters().fdatasyncs, 1);
}

/// Every fault on a real file: the failing request reports the errno, EINTR
/// and short transfers are retried to completion, no later request reports
/// success for data that was not written, and a failed fdatasync latches.
#[test]
fn fault_wrapper_on_real_files() {
    use vmstor_hostio::crash::FaultKind;
    use vmstor_hostio::fault::FaultFile;
    // The io_uring executor gets the faults on the real ring (FaultFile's
    // inject hook), so each one is an io_uring completion.
    for exec in [ExecutorKind::Inline, ExecutorKind::IO_URING] {
        for kind in [
            FaultKind::Eio,
            FaultKind::Enospc,
            FaultKind::Eintr,
            FaultKind::Short,
        ] {
            for at in 1..=4u64 {
                let img = image(MIB);
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(img.path())
                    .unwrap();
                let caps = vmstor_hostio::probe::probe_path(img.path()).unwrap().caps;
                let ff = Arc::new(FaultFile::new(Arc::new(RealFile::new(file)), at, kind));
                let policy = Policy {
                    errors: ErrorPolicy {
                        read: ErrorAction::Report,
                        write: ErrorAction::Report,
                    },
                    ..Policy::from_mode(CacheMode::Writeback)
                };
                let d = Disk::from_host_file(
                    ff.clone(),
                    caps,
                    policy,
                    DiskOptions {
                        executor: exec,
                        trace: true,
                        ..Default::default()
                    },
                )
                .unwrap();
                let m = mem();
                m.write_slice(&[3u8; 8192], GuestAddress(0)).unwrap();
                // op 1: write, op 2: fdatasync, op 3: write, op 4: read
                let w1 = run(&d, Request::write(0, guest(&m, 0, 8192), false, 1)).result;
                let f1 = run(&d, Request::flush(2)).result;
                let w2 = run(&d, Request::write(8192, guest(&m, 0, 8192), false, 3)).result;
                let r = run(&d, Request::read(0, guest(&m, 65536, 16384), 4)).result;
                let transient = matches!(kind, FaultKind::Eintr | FaultKind::Short);
                let expect_fail = |n: u64| !transient && at == n;
                assert_eq!(
                    w1.is_err(),
                    expect_fail(1),
                    "{exec:?} {kind:?}@{at} w1 {w1:?}"
                );
                assert_eq!(
                    w2.is_err(),
                    expect_fail(3),
                    "{exec:?} {kind:?}@{at} w2 {w2:?}"
                );
                // fdatasync is never retried: an interrupted (or, in this
                // wrapper, "short") sync is a failed one.
                assert_eq!(f1.is_err(), at == 2, "{exec:?} {kind:?}@{at} f1 {f1:?}");
                if let Err(e1) = f1 {
                    // Latched: the next flush fails too, with the same errno.
                    let f2 = run(&d, Request::flush(5)).result.unwrap_err();
                    assert_eq!(f2.errno, e1.errno);
                    assert!(f2.latched);
                }
                if r.is_ok() {
                    let mut b = vec![0u8; 16384];
                    m.read_slice(&mut b, GuestAddress(65536)).unwrap();
                    if w1.is_ok() {
                        assert!(b[..8192].iter().all(|&x| x == 3), "{exec:?} {kind:?}@{at}");
                    }
                    if w2.is_ok() {
                        assert!(b[8192..].iter().all(|&x| x == 3), "{exec:?} {kind:?}@{at}");
                    }
                } else {
                    assert!(expect_fail(4), "{exec:?} {kind:?}@{at} read {r:?}");
                }
            }
        }
    }
}

/// A failed FUA write with nothing volatile outstanding concerns that write
/// alone: no latch, so a retry after the operator frees space can succeed.
/// With volatile writes outstanding it latches (its sync may have consumed
/// their writeback error).
#[test]
fn failed_fua_write_latches_only_with_dirty_data() {
    use vmstor_hostio::crash::FaultKind;
    use vmstor_hostio::fault::FaultFile;
    let policy = Policy {
        errors: ErrorPolicy {
            read: ErrorAction::Report,
            write: ErrorAction::Report,
        },
        ..Policy::from_mode(CacheMode::Writeback)
    };
    for exec in [ExecutorKind::Inline, ExecutorKind::IO_URING] {
        let setup = |at| {
            let img = image(MIB);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(img.path())
                .unwrap();
            let caps = vmstor_hostio::probe::probe_path(img.path()).unwrap().caps;
            let ff = Arc::new(FaultFile::new(
                Arc::new(RealFile::new(file)),
                at,
                FaultKind::Enospc,
            ));
            (
                img,
                Disk::from_host_file(
                    ff,
                    caps,
                    policy,
                    DiskOptions {
                        executor: exec,
                        ..Default::default()
                    },
                )
                .unwrap(),
            )
        };
        let m = mem();
        // Clean disk: FUA write fails with ENOSPC, then succeeds on retry.
        let (_img, d) = setup(1);
        assert_eq!(
            run(&d, Request::write(0, guest(&m, 0, 4096), true, 1))
                .result
                .unwrap_err()
                .errno,
            libc::ENOSPC
        );
        assert_eq!(d.latched_error(), None);
        assert_eq!(
            run(&d, Request::write(0, guest(&m, 0, 4096), true, 2)).result,
            Ok(4096)
        );
        assert_eq!(run(&d, Request::flush(3)).result, Ok(0));
        // A volatile write outstanding: the failure latches.
        let (_img, d) = setup(2);
        assert_eq!(
            run(&d, Request::write(0, guest(&m, 0, 4096), false, 1)).result,
            Ok(4096)
        );
        assert!(run(&d, Request::write(4096, guest(&m, 0, 4096), true, 2))
            .result
            .is_err());
        assert_eq!(d.latched_error(), Some(libc::ENOSPC));
        assert_eq!(
            run(&d, Request::flush(3)).result.unwrap_err().errno,
            libc::ENOSPC
        );
    }
}

//! The io_uring executor against real files on the real kernel ring,
//! asserting on the recorded host-op trace and the counters. Where the kernel
//! refuses io_uring, each test prints `SKIP <test>: <reason>` and returns.

mod common;
use common::*;

use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmstor_hostio::crash::FaultKind;
use vmstor_hostio::fault::FaultFile;
use vmstor_hostio::*;

const RING: ExecutorKind = ExecutorKind::IoUring { entries: 256 };

fn report() -> Policy {
    Policy {
        errors: ErrorPolicy {
            read: ErrorAction::Report,
            write: ErrorAction::Report,
        },
        discard: DiscardMode::Unmap,
        ..Policy::default()
    }
}

/// The disk if it really runs on the kernel ring; otherwise prints SKIP.
fn ring_or_skip(test: &str, d: Disk) -> Option<Disk> {
    let info = d.executor_info().clone();
    if info.active == "io_uring" {
        return Some(d);
    }
    common::skip(
        test,
        &format!(
            "io_uring not in use ({}): {}",
            info.active,
            info.fallback.unwrap_or_default()
        ),
    );
    None
}

fn open(test: &str, img: &tempfile::NamedTempFile, mode: CacheMode) -> Option<Disk> {
    let policy = Policy {
        ..report().with_mode(mode)
    };
    let d = Disk::open(
        img.path(),
        policy,
        DiskOptions {
            executor: RING,
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    ring_or_skip(test, d)
}

/// A disk over `file` (any HostFile with the image's descriptor).
fn over(
    test: &str,
    img: &tempfile::NamedTempFile,
    file: Arc<dyn HostFile>,
    mode: CacheMode,
) -> Option<Disk> {
    over_with(test, img, file, mode, 0)
}

/// [`over`] with `DiskOptions::max_syncs_in_flight`.
fn over_with(
    test: &str,
    img: &tempfile::NamedTempFile,
    file: Arc<dyn HostFile>,
    mode: CacheMode,
    max_syncs_in_flight: usize,
) -> Option<Disk> {
    let caps = vmstor_hostio::probe::probe_path(img.path()).unwrap().caps;
    let d = Disk::from_host_file(
        file,
        caps,
        report().with_mode(mode),
        DiskOptions {
            executor: RING,
            trace: true,
            max_syncs_in_flight,
            ..Default::default()
        },
    )
    .unwrap();
    ring_or_skip(test, d)
}

fn real_file(img: &tempfile::NamedTempFile, direct: bool) -> Arc<RealFile> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(img.path())
        .unwrap();
    Arc::new(RealFile::new(f))
}

/// `len` bytes of the image file at `offset`, read outside the engine.
fn file_bytes(img: &tempfile::NamedTempFile, offset: u64, len: usize) -> Vec<u8> {
    let mut back = vec![0u8; len];
    std::fs::File::open(img.path())
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, offset))
        .unwrap();
    back
}

fn syscalls(d: &Disk) -> Vec<TraceEntry> {
    d.trace()
        .take()
        .into_iter()
        .filter(|e| e.op.is_syscall())
        .collect()
}

/// Waits (bounded) until `n` completions arrived through `poll`.
fn collect(d: &Disk, n: usize) -> Vec<Completion> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions",
            out.len()
        );
        out.extend(d.poll());
        std::thread::sleep(Duration::from_millis(1));
    }
    out
}

fn readable(fd: RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

trait WithMode {
    fn with_mode(self, mode: CacheMode) -> Policy;
}

impl WithMode for Policy {
    fn with_mode(self, mode: CacheMode) -> Policy {
        Policy {
            errors: self.errors,
            discard: self.discard,
            ..Policy::from_mode(mode)
        }
    }
}

#[test]
fn fua_write_under_none_is_one_writev_with_rwf_dsync() {
    let img = image(MIB);
    let Some(d) = open(
        "fua_write_under_none_is_one_writev_with_rwf_dsync",
        &img,
        CacheMode::None,
    ) else {
        return;
    };
    let m = mem();
    m.write_slice(&[9u8; 4096], GuestAddress(0)).unwrap();
    let c = run(&d, Request::write(4096, guest(&m, 0, 4096), true, 1));
    assert_eq!(c.result, Ok(4096));
    let t = syscalls(&d);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(
        t[0].op,
        HostOp::Write {
            offset: 4096,
            len: 4096,
            from: BufRef::Request,
            dsync: true
        }
    );
    assert!(t[0].direct && t[0].guest_memory);
    let k = d.counters();
    assert_eq!(
        (k.fdatasyncs, k.bytes_written, k.executor),
        (0, 4096, "io_uring")
    );
    let back = file_bytes(&img, 4096, 4096);
    assert_eq!(back, vec![9u8; 4096]);
}

#[test]
fn flush_is_one_fsync_datasync_and_is_elided_when_clean() {
    let img = image(MIB);
    let Some(d) = open("flush_is_one_fsync_datasync", &img, CacheMode::Writeback) else {
        return;
    };
    let m = mem();
    assert_eq!(
        run(&d, Request::write(0, guest(&m, 0, 512), false, 1)).result,
        Ok(512)
    );
    assert_eq!(run(&d, Request::flush(2)).result, Ok(0));
    assert_eq!(run(&d, Request::flush(3)).result, Ok(0));
    let t = syscalls(&d);
    let ops: Vec<HostOp> = t.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        vec![
            HostOp::Write {
                offset: 0,
                len: 512,
                from: BufRef::Request,
                dsync: false
            },
            HostOp::Fdatasync
        ]
    );
    assert_eq!(t[1].tag, 2);
    let k = d.counters();
    assert_eq!((k.flushes_asked, k.fdatasyncs, k.flushes_elided), (2, 1, 1));
}

#[test]
fn two_concurrent_flushes_after_one_write_issue_one_fdatasync() {
    let img = image(MIB);
    let Some(d) = open("two_concurrent_flushes", &img, CacheMode::Writeback) else {
        return;
    };
    let m = mem();
    d.submit(Request::write(0, guest(&m, 0, 4096), false, 1))
        .unwrap();
    assert_eq!(d.drain().len(), 1);
    d.plug();
    d.submit(Request::flush(2)).unwrap();
    d.submit(Request::flush(3)).unwrap();
    d.unplug();
    let done = collect(&d, 2);
    assert!(done.iter().all(|c| c.result == Ok(0)), "{done:?}");
    let k = d.counters();
    assert_eq!(k.fdatasyncs, 1, "{k}");
    assert_eq!(k.flushes_shared + k.flushes_elided, 1, "{k}");
}

#[test]
fn misaligned_guest_buffers_are_bounced() {
    let img = image(MIB);
    let Some(d) = open(
        "misaligned_guest_buffers_are_bounced",
        &img,
        CacheMode::None,
    ) else {
        return;
    };
    let m = mem();
    m.write_slice(&[7u8; 4096], GuestAddress(100)).unwrap();
    assert_eq!(
        run(&d, Request::write(0, guest(&m, 100, 4096), false, 1)).result,
        Ok(4096)
    );
    let t = d.trace().take();
    assert!(
        t.iter().any(|e| matches!(e.op, HostOp::FillBounce { .. })),
        "{t:?}"
    );
    assert!(t
        .iter()
        .all(|e| !(matches!(e.op, HostOp::Write { .. }) && e.guest_memory)));
    assert!(d.counters().bytes_bounced >= 4096);
    assert_eq!(
        run(&d, Request::read(0, guest(&m, 8191, 4096), 2)).result,
        Ok(4096)
    );
    let t = d.trace().take();
    assert!(
        t.iter().any(|e| matches!(e.op, HostOp::DrainBounce { .. })),
        "{t:?}"
    );
    let mut b = [0u8; 4096];
    m.read_slice(&mut b, GuestAddress(8191)).unwrap();
    assert_eq!(b, [7u8; 4096]);
}

/// O_DIRECT with an offset alignment (4096) coarser than the logical block
/// (512): sub-block writes become read-modify-write under a range lock.
/// Many overlapping RMWs in flight at once must lose no update.
#[test]
fn rmw_under_odirect_with_coarse_alignment_loses_no_update() {
    const T: &str = "rmw_under_odirect_with_coarse_alignment_loses_no_update";
    let img = image(MIB);
    let mut caps = vmstor_hostio::probe::probe_path(img.path()).unwrap().caps;
    caps.logical_block_size = 512;
    caps.dio_offset_align = 4096;
    caps.dio_mem_align = caps.dio_mem_align.max(512);
    let d = Disk::from_host_file(
        real_file(&img, true),
        caps,
        report().with_mode(CacheMode::None),
        DiskOptions {
            executor: RING,
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let Some(d) = ring_or_skip(T, d) else {
        return;
    };
    let m = mem();
    // One 512-byte write: read the 4 KiB extent, patch, write it back.
    m.write_slice(&[0xabu8; 512], GuestAddress(0)).unwrap();
    assert_eq!(
        run(&d, Request::write(512, guest(&m, 0, 512), false, 1)).result,
        Ok(512)
    );
    let ops: Vec<HostOp> = syscalls(&d).iter().map(|e| e.op).collect();
    assert!(
        matches!(
            ops.as_slice(),
            [
                HostOp::Read {
                    offset: 0,
                    len: 4096,
                    into: BufRef::Bounce(_)
                },
                HostOp::Write {
                    offset: 0,
                    len: 4096,
                    from: BufRef::Bounce(_),
                    ..
                }
            ]
        ),
        "{ops:?}"
    );
    // 8 sectors of two 4 KiB blocks, each written by its own request, all
    // in flight together.
    d.plug();
    for i in 0..16u64 {
        m.write_slice(&[i as u8 + 1; 512], GuestAddress(4096 + i * 512))
            .unwrap();
        d.submit(Request::write(
            i * 512,
            guest(&m, 4096 + i * 512, 512),
            false,
            10 + i,
        ))
        .unwrap();
    }
    d.unplug();
    let done = collect(&d, 16);
    assert!(done.iter().all(|c| c.result == Ok(512)), "{done:?}");
    let back = file_bytes(&img, 0, 8192);
    for i in 0..16usize {
        assert!(
            back[i * 512..(i + 1) * 512]
                .iter()
                .all(|&x| x == i as u8 + 1),
            "sector {i} lost its update"
        );
    }
}

/// A short transfer (the fault wrapper submits half the vectors to the
/// real ring) is resubmitted for the remainder: two SQEs, all the data.
#[test]
fn short_transfers_are_resubmitted_through_the_ring() {
    let img = image(MIB);
    for (at, req_op) in [(1u64, "write"), (2, "read")] {
        let ff = Arc::new(FaultFile::new(real_file(&img, true), at, FaultKind::Short));
        let Some(d) = over(
            "short_transfers_are_resubmitted",
            &img,
            ff.clone(),
            CacheMode::None,
        ) else {
            return;
        };
        let m = mem();
        m.write_slice(&[at as u8 + 5; 16384], GuestAddress(0))
            .unwrap();
        let w = run(&d, Request::write(0, guest(&m, 0, 16384), false, 1));
        assert_eq!(w.result, Ok(16384), "{req_op}");
        let r = run(&d, Request::read(0, guest(&m, 65536, 16384), 2));
        assert_eq!(r.result, Ok(16384), "{req_op}");
        // write + read, one of them resubmitted once.
        assert_eq!(ff.ops(), 3, "{req_op}: the short op went to the ring twice");
        let mut b = vec![0u8; 16384];
        m.read_slice(&mut b, GuestAddress(65536)).unwrap();
        assert!(b.iter().all(|&x| x == at as u8 + 5), "{req_op}");
        let k = d.counters();
        assert_eq!((k.bytes_written, k.bytes_read), (16384, 16384), "{req_op}");
    }
}

/// EIO/ENOSPC fail the request with that errno; EINTR is resubmitted.
#[test]
fn injected_errors_reach_the_guest_and_eintr_is_retried() {
    let img = image(MIB);
    for (kind, errno) in [
        (FaultKind::Eio, Some(libc::EIO)),
        (FaultKind::Enospc, Some(libc::ENOSPC)),
        (FaultKind::Eintr, None),
    ] {
        let ff = Arc::new(FaultFile::new(real_file(&img, false), 1, kind));
        let Some(d) = over("injected_errors", &img, ff.clone(), CacheMode::Writeback) else {
            return;
        };
        let m = mem();
        let c = run(&d, Request::write(0, guest(&m, 0, 4096), false, 1));
        match errno {
            Some(e) => {
                assert_eq!(c.result.unwrap_err().errno, e, "{kind:?}");
                assert_eq!(d.counters().errors.get(&e), Some(&1), "{kind:?}");
                assert_eq!(ff.ops(), 1);
            }
            None => {
                assert_eq!(c.result, Ok(4096), "{kind:?}");
                assert_eq!(ff.ops(), 2, "EINTR resubmitted once");
            }
        }
        let t = syscalls(&d);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].result, errno.map_or(Ok(4096), Err), "{kind:?}");
    }
}

/// A failed fsync latches: the next flush and FUA write fail with the
/// original errno, and no further fsync is issued.
#[test]
fn failed_fsync_latches_flushes_and_fua_writes() {
    let img = image(MIB);
    let ff = Arc::new(FaultFile::new(real_file(&img, false), 2, FaultKind::Enospc));
    let Some(d) = over("failed_fsync_latches", &img, ff, CacheMode::Writeback) else {
        return;
    };
    let m = mem();
    assert_eq!(
        run(&d, Request::write(0, guest(&m, 0, 4096), false, 1)).result,
        Ok(4096)
    );
    let e = run(&d, Request::flush(2)).result.unwrap_err();
    assert_eq!((e.errno, e.latched), (libc::ENOSPC, false));
    let e = run(&d, Request::flush(3)).result.unwrap_err();
    assert_eq!((e.errno, e.latched), (libc::ENOSPC, true));
    let e = run(&d, Request::write(0, guest(&m, 0, 4096), true, 4))
        .result
        .unwrap_err();
    assert_eq!((e.errno, e.latched), (libc::ENOSPC, true));
    let fds = syscalls(&d)
        .iter()
        .filter(|e| e.op == HostOp::Fdatasync)
        .count();
    assert_eq!(fds, 1);
    assert_eq!(d.latched_error(), Some(libc::ENOSPC));
}

/// 200 requests (more than the ring's 128 entries) queued while plugged:
/// nothing reaches the kernel until unplug; then all complete, the eventfd
/// becomes readable, and the data is right.
#[test]
fn plugged_batch_of_200_requests_with_eventfd() {
    let img = image(4 * MIB);
    let d = Disk::open(
        img.path(),
        report().with_mode(CacheMode::None),
        DiskOptions {
            executor: ExecutorKind::IoUring { entries: 128 },
            ..Default::default()
        },
    )
    .unwrap();
    let Some(d) = ring_or_skip("plugged_batch_of_200_requests_with_eventfd", d) else {
        return;
    };
    let fd = d.notify_fd().expect("io_uring has an eventfd");
    let m = mem();
    d.plug();
    for i in 0..200u64 {
        m.write_slice(&[i as u8; 4096], GuestAddress(i * 4096))
            .unwrap();
        d.submit(Request::write(
            i * 4096,
            guest(&m, i * 4096, 4096),
            i % 7 == 0,
            i,
        ))
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        d.poll().is_empty(),
        "plugged requests must not be submitted"
    );
    assert!(!readable(fd, 0));
    d.unplug();
    assert!(readable(fd, 10_000), "eventfd must become readable");
    let mut tags: Vec<u64> = collect(&d, 200)
        .into_iter()
        .map(|c| {
            assert_eq!(c.result, Ok(4096));
            c.tag
        })
        .collect();
    tags.sort();
    assert_eq!(tags, (0..200).collect::<Vec<_>>());
    let m2 = mem();
    assert_eq!(
        run(&d, Request::read(0, guest(&m2, 0, 200 * 4096), 1000)).result,
        Ok(200 * 4096)
    );
    for i in 0..200u64 {
        let mut b = [0u8; 4096];
        m2.read_slice(&mut b, GuestAddress(i * 4096)).unwrap();
        assert!(b.iter().all(|&x| x == i as u8), "block {i}");
    }
    assert_eq!(d.counters().bytes_written, 200 * 4096);
}

/// Dropping the disk with requests in flight waits for them: every write
/// is in the file afterwards.
#[test]
fn drop_with_requests_in_flight_completes_them() {
    let img = image(4 * MIB);
    let d = Disk::open(
        img.path(),
        report().with_mode(CacheMode::None),
        DiskOptions {
            executor: ExecutorKind::IoUring { entries: 16 },
            ..Default::default()
        },
    )
    .unwrap();
    let Some(d) = ring_or_skip("drop_with_requests_in_flight_completes_them", d) else {
        return;
    };
    let m = mem();
    d.plug();
    for i in 0..64u64 {
        m.write_slice(&[0x40 + i as u8; 4096], GuestAddress(i * 4096))
            .unwrap();
        d.submit(Request::write(
            i * 4096,
            guest(&m, i * 4096, 4096),
            false,
            i,
        ))
        .unwrap();
    }
    // Still plugged: the drop itself must submit and wait.
    drop(d);
    let back = file_bytes(&img, 0, 64 * 4096);
    for i in 0..64usize {
        assert!(
            back[i * 4096..(i + 1) * 4096]
                .iter()
                .all(|&x| x == 0x40 + i as u8),
            "block {i}"
        );
    }
}

/// A HostFile over a real file whose blocking-path `fdatasync` waits at a
/// gate (ring ops go to the kernel directly).
struct GatedSync {
    inner: Arc<RealFile>,
    gate: Mutex<(bool, bool)>, // (entered, open)
    cv: Condvar,
}

impl GatedSync {
    fn wait_entered(&self) {
        let mut g = self.gate.lock().unwrap();
        while !g.0 {
            g = self.cv.wait(g).unwrap();
        }
    }
    fn open(&self) {
        self.gate.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl HostFile for GatedSync {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> std::io::Result<usize> {
        self.inner.preadv(iov, offset)
    }
    fn pwritev(&self, iov: &[IoVec], offset: u64, dsync: bool) -> std::io::Result<usize> {
        self.inner.pwritev(iov, offset, dsync)
    }
    fn fdatasync(&self) -> std::io::Result<()> {
        let mut g = self.gate.lock().unwrap();
        g.0 = true;
        self.cv.notify_all();
        while !g.1 {
            g = self.cv.wait(g).unwrap();
        }
        drop(g);
        self.inner.fdatasync()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.punch_hole(offset, len)
    }
    fn zero_range(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.zero_range(offset, len)
    }
    fn blk_discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.blk_discard(offset, len)
    }
    fn blk_zeroout(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.blk_zeroout(offset, len)
    }
    fn raw_fd(&self) -> Option<RawFd> {
        self.inner.raw_fd()
    }
}

/// A guest flush submitted to the ring while `set_write_cache(false)` (or
/// `sync_now`) runs a blocking `fdatasync` on another thread is parked, and must be stepped
/// again when that sync ends (the coordinator's waker steps it), not stranded. With no
/// write in between it shares that sync; with a write in between it needs
/// its own fsync on the ring. With several syncs allowed at once that fsync
/// runs while the blocking sync is held, but the flush still waits (parked)
/// for the blocking sync to end before it completes.
#[test]
fn parked_flush_resumes_after_a_blocking_sync_on_another_thread() {
    for (write_between, max_syncs) in [(false, 0), (true, 0), (false, 4), (true, 4)] {
        let img = image(MIB);
        let gated = Arc::new(GatedSync {
            inner: real_file(&img, false),
            gate: Mutex::new((false, false)),
            cv: Condvar::new(),
        });
        let Some(d) = over_with(
            "parked_flush_resumes",
            &img,
            gated.clone(),
            CacheMode::Writeback,
            max_syncs,
        ) else {
            return;
        };
        let d = Arc::new(d);
        let m = mem();
        assert_eq!(
            run(&d, Request::write(0, guest(&m, 0, 4096), false, 1)).result,
            Ok(4096)
        );
        // The blocking path: turning the write cache off (its flush), or an
        // engine sync that leaves the cache on so a later write is volatile.
        let t = {
            let d = d.clone();
            std::thread::spawn(move || {
                if write_between {
                    d.sync_now()
                } else {
                    d.set_write_cache(false)
                }
            })
        };
        gated.wait_entered();
        if write_between {
            d.submit(Request::write(8192, guest(&m, 0, 4096), false, 2))
                .unwrap();
            assert_eq!(collect(&d, 1)[0].result, Ok(4096));
        }
        d.submit(Request::flush(3)).unwrap();
        // Parked behind the running sync.
        let deadline = Instant::now() + Duration::from_secs(10);
        while d.flushes_inside() < 2 {
            assert!(
                Instant::now() < deadline,
                "flush never reached the coordinator"
            );
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            d.poll().is_empty(),
            "a flush completed while the sync it waits for runs"
        );
        gated.open();
        assert_eq!(t.join().unwrap(), Ok(()));
        let c = collect(&d, 1);
        assert_eq!((c[0].tag, c[0].result), (3, Ok(0)));
        let k = d.counters();
        if write_between {
            assert_eq!((k.fdatasyncs, k.flushes_shared), (2, 0), "{k}");
        } else {
            assert_eq!((k.fdatasyncs, k.flushes_shared), (1, 1), "{k}");
        }
    }
}

/// Discard and write-zeroes go through IORING_OP_FALLOCATE and read back
/// as zeroes.
#[test]
fn discard_and_write_zeroes_through_fallocate() {
    let img = image(MIB);
    let Some(d) = open(
        "discard_and_write_zeroes_through_fallocate",
        &img,
        CacheMode::Writeback,
    ) else {
        return;
    };
    let m = mem();
    m.write_slice(&[0xeeu8; 16384], GuestAddress(0)).unwrap();
    assert_eq!(
        run(&d, Request::write(0, guest(&m, 0, 16384), false, 1)).result,
        Ok(16384)
    );
    assert_eq!(
        run(&d, Request::write_zeroes(0, 4096, false, 2)).result,
        Ok(0)
    );
    assert_eq!(
        run(&d, Request::write_zeroes(4096, 4096, true, 3)).result,
        Ok(0)
    );
    assert_eq!(run(&d, Request::discard(8192, 4096, 4)).result, Ok(0));
    let ops: Vec<HostOp> = syscalls(&d).iter().map(|e| e.op).collect();
    assert!(
        ops.contains(&HostOp::ZeroRange {
            offset: 0,
            len: 4096
        }),
        "{ops:?}"
    );
    assert!(
        ops.contains(&HostOp::PunchHole {
            offset: 4096,
            len: 4096
        }),
        "{ops:?}"
    );
    assert_eq!(
        run(&d, Request::read(0, guest(&m, 65536, 16384), 5)).result,
        Ok(16384)
    );
    let mut b = vec![0u8; 16384];
    m.read_slice(&mut b, GuestAddress(65536)).unwrap();
    assert!(b[..8192].iter().all(|&x| x == 0));
    assert!(b[12288..].iter().all(|&x| x == 0xee));
    // write_zeroes/discard count as modifications: the flush syncs.
    assert_eq!(run(&d, Request::flush(6)).result, Ok(0));
    assert_eq!(d.counters().fdatasyncs, 1);
}

/// [`open`], shared: the disk and a second handle for a worker thread.
fn shared(
    test: &str,
    img: &tempfile::NamedTempFile,
    mode: CacheMode,
) -> Option<(Arc<Disk>, Arc<Disk>)> {
    let d = Arc::new(open(test, img, mode)?);
    Some((d.clone(), d))
}

/// Runs `f` on its own thread and fails (instead of hanging the suite) if it
/// does not return within `secs`.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: no return within {secs} s (a lost wake-up?)"))
}

/// No thread reaps the ring behind the VMM's back: turning the write cache
/// off on the thread that submitted (and never polled) must reap the
/// volatile writes in flight itself, then sync, and leave their completions
/// for the next poll.
#[test]
fn set_write_cache_off_reaps_in_flight_writes_itself() {
    let img = image(4 * MIB);
    let Some((d, d2)) = shared(
        "set_write_cache_off_reaps_in_flight_writes_itself",
        &img,
        CacheMode::Writeback,
    ) else {
        return;
    };
    within(20, "set_write_cache(false)", move || {
        let m = mem();
        for i in 0..32u64 {
            m.write_slice(&[0x11 + i as u8; 4096], GuestAddress(i * 4096))
                .unwrap();
            d2.submit(Request::write(
                i * 4096,
                guest(&m, i * 4096, 4096),
                false,
                i,
            ))
            .unwrap();
        }
        assert_eq!(d2.set_write_cache(false), Ok(()));
        assert_eq!(d2.volatile_in_flight(), 0);
    });
    let k = d.counters();
    assert_eq!(k.fdatasyncs, 1, "{k}");
    let c = collect(&d, 32);
    assert!(c.iter().all(|c| c.result == Ok(4096)));
    let back = file_bytes(&img, 0, 32 * 4096);
    for i in 0..32usize {
        assert!(back[i * 4096..(i + 1) * 4096]
            .iter()
            .all(|&x| x == 0x11 + i as u8));
    }
}

/// The blocking flush path (`sync_now`) arriving while a guest flush's
/// fsync is on the ring, with one sync at a time, must wait for that ring
/// sync by reaping it (nobody else will), not sleep on a condition
/// variable forever.
#[test]
fn blocking_sync_behind_a_ring_sync_reaps_it() {
    let img = image(MIB);
    let Some((d, d2)) = shared(
        "blocking_sync_behind_a_ring_sync_reaps_it",
        &img,
        CacheMode::Writeback,
    ) else {
        return;
    };
    within(20, "sync_now behind a ring fsync", move || {
        let m = mem();
        for round in 0..50u64 {
            // Completed (so the flush has something to sync), volatile.
            let w = run(&d2, Request::write(0, guest(&m, 0, 4096), false, 2 * round));
            assert_eq!(w.result, Ok(4096));
            d2.submit(Request::flush(2 * round + 1)).unwrap();
            // Covered by the ring's fsync, so it waits for it to end.
            assert_eq!(d2.sync_now(), Ok(()));
        }
    });
    let c = collect(&d, 50);
    assert!(c.iter().all(|c| c.result == Ok(0)), "{c:?}");
    let k = d.counters();
    assert_eq!((k.flushes_asked, k.flushes_elided), (50, 0), "{k}");
    assert!(k.fdatasyncs >= 50, "{k}");
}

/// Several threads blocking in `Disk::execute` on one ring while another
/// polls: one holds the reaping role at a time, and nobody's completion is
/// lost or left waiting.
#[test]
fn concurrent_execute_from_many_threads_shares_the_reaping() {
    let img = image(4 * MIB);
    let Some((_d, d2)) = shared(
        "concurrent_execute_from_many_threads_shares_the_reaping",
        &img,
        CacheMode::None,
    ) else {
        return;
    };
    within(60, "4 threads x 200 execute + a poller", move || {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let (d, stop) = (d2.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += d.poll().len();
                    std::thread::yield_now();
                }
                n
            })
        };
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let d = d2.clone();
                std::thread::spawn(move || {
                    let m = mem();
                    for i in 0..200u64 {
                        let at = (t * 256 + i % 256) * 4096;
                        m.write_slice(&[t as u8 + 1; 4096], GuestAddress(0))
                            .unwrap();
                        let w = run(&d, Request::write(at, guest(&m, 0, 4096), i % 5 == 0, i));
                        assert_eq!(w.result, Ok(4096));
                        if i % 10 == 9 {
                            assert_eq!(run(&d, Request::flush(i)).result, Ok(0));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Disk::execute's completions never reach the queue.
        assert_eq!(poller.join().unwrap(), 0);
    });
    for t in 0..4usize {
        let back = file_bytes(&img, (t * 256) as u64 * 4096, 200 * 4096);
        assert!(back.iter().all(|&x| x == t as u8 + 1), "thread {t}");
    }
}

/// With completion polling on (`DiskOptions::poll_us`), waits that find
/// the ring empty spin on it before sleeping: every request still
/// completes once, in `wait` and in `execute`, and the data is right.
#[test]
fn completion_polling_reaps_every_request() {
    let img = image(4 * MIB);
    let d = Disk::open(
        img.path(),
        report().with_mode(CacheMode::None),
        DiskOptions {
            executor: ExecutorKind::IoUring { entries: 8 },
            poll_us: 200,
            ..Default::default()
        },
    )
    .unwrap();
    let Some(d) = ring_or_skip("completion_polling_reaps_every_request", d) else {
        return;
    };
    let m = mem();
    for i in 0..64u64 {
        m.write_slice(&[0x30 + i as u8; 4096], GuestAddress(i * 4096))
            .unwrap();
        d.submit(Request::write(
            i * 4096,
            guest(&m, i * 4096, 4096),
            false,
            i,
        ))
        .unwrap();
        if i % 4 == 3 {
            let mut got = 0;
            while got < 4 {
                let c = d.wait();
                assert!(c.iter().all(|c| c.result == Ok(4096)));
                got += c.len();
            }
            assert_eq!(got, 4, "each completion exactly once");
        }
    }
    assert!(d.poll().is_empty());
    assert_eq!(run(&d, Request::flush(99)).result, Ok(0));
    let m2 = mem();
    assert_eq!(
        run(&d, Request::read(0, guest(&m2, 0, 64 * 4096), 100)).result,
        Ok(64 * 4096)
    );
    for i in 0..64u64 {
        let mut b = [0u8; 4096];
        m2.read_slice(&mut b, GuestAddress(i * 4096)).unwrap();
        assert!(b.iter().all(|&x| x == 0x30 + i as u8), "block {i}");
    }
}

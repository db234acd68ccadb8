//! Multi-queue independence and concurrency on the thread-pool executor,
//! hostio's error policy (report / stop / enospc), failed flushes, reset with
//! held requests, and the crash model driven through the test guest.

mod common;

use std::io;
use std::sync::{Arc, Condvar, Mutex};

use common::*;
use vmstor_hostio::crash::{random_ops, run_case, CaseConfig, FaultKind, SimFile};
use vmstor_hostio::{
    CacheMode, Disk, DiskOptions, ErrorAction, ExecutorKind, GuestDriver, GuestStatus, HostFile,
    IoVec, Policy, Sabotage,
};
use vmstor_virtio_blk::spec::BlkStatus;
use vmstor_virtio_blk::testing::{
    mem_disk, test_caps, BlkReq, MemFile, TestGuest, TestGuestOptions,
};
use vmstor_virtio_blk::{BlkOptions, DeviceError, InterruptKind};

/// A MemFile whose writes at offset 0 block until the test opens the gate.
struct GateFile {
    inner: MemFile,
    state: Mutex<(bool, bool)>, // (a write is waiting, gate open)
    cv: Condvar,
}

impl GateFile {
    fn wait_blocked(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.0 {
            s = self.cv.wait(s).unwrap();
        }
    }
    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl HostFile for GateFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        self.inner.preadv(iov, offset)
    }
    fn pwritev(&self, iov: &[IoVec], offset: u64, dsync: bool) -> io::Result<usize> {
        if offset == 0 {
            let mut s = self.state.lock().unwrap();
            s.0 = true;
            self.cv.notify_all();
            while !s.1 {
                s = self.cv.wait(s).unwrap();
            }
        }
        self.inner.pwritev(iov, offset, dsync)
    }
    fn fdatasync(&self) -> io::Result<()> {
        self.inner.fdatasync()
    }
    fn punch_hole(&self, o: u64, l: u64) -> io::Result<()> {
        self.inner.punch_hole(o, l)
    }
    fn zero_range(&self, o: u64, l: u64) -> io::Result<()> {
        self.inner.zero_range(o, l)
    }
    fn blk_discard(&self, o: u64, l: u64) -> io::Result<()> {
        self.inner.blk_discard(o, l)
    }
    fn blk_zeroout(&self, o: u64, l: u64) -> io::Result<()> {
        self.inner.blk_zeroout(o, l)
    }
}

fn mq_opts(n: u16) -> TestGuestOptions {
    TestGuestOptions {
        device: BlkOptions {
            num_queues: n,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn a_blocked_queue_does_not_hold_up_another() {
    let gate = Arc::new(GateFile {
        inner: MemFile::new(DISK_SIZE as usize),
        state: Mutex::new((false, false)),
        cv: Condvar::new(),
    });
    let disk = Arc::new(
        Disk::from_host_file(
            gate.clone(),
            test_caps(DISK_SIZE),
            policy(CacheMode::Writeback),
            DiskOptions {
                executor: ExecutorKind::Threads(2),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut g = TestGuest::new(disk, mq_opts(2)).unwrap();
    assert_eq!(g.num_queues(), 2);
    let h0 = g.submit(0, &BlkReq::write(0, &pattern(4096, 1)));
    let h1 = g.submit(1, &BlkReq::read(64, 4096));
    g.kick(0);
    g.kick(1);
    gate.wait_blocked();
    // Queue 0's write is stuck in the host; queue 1's read completes.
    let r1 = g.wait_reply(1, h1);
    assert_eq!(r1.status, Some(BlkStatus::Ok));
    assert!(g.take_reply(0, h0).is_none());
    let irqs = g.take_interrupts();
    assert!(irqs.contains(&InterruptKind::Queue(1)));
    assert!(!irqs.contains(&InterruptKind::Queue(0)));
    gate.open();
    let r0 = g.wait_reply(0, h0);
    assert_eq!(r0.status, Some(BlkStatus::Ok));
    assert_eq!(g.take_interrupts(), [InterruptKind::Queue(0)]);
}

#[test]
fn many_requests_on_many_queues_with_the_thread_pool() {
    many_requests_on_many_queues(ExecutorKind::Threads(4));
}

/// The same through the io_uring executor (its emulated ring: the in-memory
/// file has no descriptor).
#[test]
fn many_requests_on_many_queues_with_io_uring() {
    many_requests_on_many_queues(ExecutorKind::IO_URING);
}

fn many_requests_on_many_queues(exec: ExecutorKind) {
    let (disk, file) = mem_disk(DISK_SIZE, policy(CacheMode::None), exec);
    let mut g = TestGuest::new(disk.clone(), mq_opts(4)).unwrap();
    let mut heads = Vec::new();
    for q in 0..4u16 {
        for i in 0..32u64 {
            let sector = (u64::from(q) * 32 + i) * 8;
            let h = g.submit(
                q,
                &BlkReq::write(sector, &pattern(4096, (sector % 251) as u8)),
            );
            heads.push((q, h, sector));
        }
    }
    for q in 0..4 {
        g.kick(q);
    }
    for &(q, h, _) in &heads {
        let r = g.wait_reply(q, h);
        assert_eq!(r.status, Some(BlkStatus::Ok), "queue {q} head {h}");
    }
    let img = file.contents();
    for &(_, _, sector) in &heads {
        let at = sector as usize * 512;
        assert_eq!(
            &img[at..at + 4096],
            &pattern(4096, (sector % 251) as u8)[..]
        );
    }
    // Reads come back on the queue they were sent on.
    for q in 0..4u16 {
        let sector = u64::from(q) * 32 * 8;
        let r = g.run(q, &BlkReq::read(sector, 4096));
        assert_eq!(r.data, pattern(4096, (sector % 251) as u8));
    }
    assert_eq!(g.device().worker().in_flight(), 0);
    assert_eq!(file.violations(), 0);
}

fn sim_guest(p: Policy, accept_all: bool) -> (TestGuest, Arc<Disk>, SimFile) {
    let sim = SimFile::new(&vec![0u8; DISK_SIZE as usize], p.direct);
    let disk = Arc::new(
        Disk::from_host_file(
            Arc::new(sim.clone()),
            test_caps(DISK_SIZE),
            p,
            DiskOptions {
                trace: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let _ = accept_all;
    let g = TestGuest::new(disk.clone(), TestGuestOptions::default()).unwrap();
    (g, disk, sim)
}

#[test]
fn report_policy_gives_ioerr() {
    let mut p = policy(CacheMode::Writeback);
    p.errors.write = ErrorAction::Report;
    let (mut g, _, sim) = sim_guest(p, true);
    sim.inject(1, FaultKind::Eio);
    let w = g.write(0, &pattern(512, 1), false).unwrap();
    assert_eq!(w.status, GuestStatus::Error("IOERR".into()));
    sim.inject(1, FaultKind::Eio);
    let mut out = Vec::new();
    assert_eq!(
        g.read(0, 1, &mut out).unwrap().status,
        GuestStatus::Error("IOERR".into())
    );
    // ENOSPC is reported too under `report`.
    sim.inject(1, FaultKind::Enospc);
    let r = g.run(0, &BlkReq::write(0, &pattern(512, 1)));
    assert_eq!((r.status, r.used_len), (Some(BlkStatus::IoErr), 1));
    // A failed segment fails the whole multi-segment request.
    sim.inject(2, FaultKind::Eio);
    let r = g.run(
        0,
        &BlkReq::ranges(false, &[(0, 8, 0), (8, 8, 0), (16, 8, 0)]),
    );
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    assert_eq!(g.device().worker().in_flight(), 0);
}

#[test]
fn stop_policy_holds_until_resume() {
    for (action, kind, held) in [
        (ErrorAction::Stop, FaultKind::Eio, true),
        (ErrorAction::Enospc, FaultKind::Enospc, true),
        (ErrorAction::Enospc, FaultKind::Eio, false),
    ] {
        let mut p = policy(CacheMode::Writeback);
        p.errors.write = action;
        let (mut g, disk, sim) = sim_guest(p, true);
        sim.inject(1, kind);
        let data = pattern(4096, 7);
        let h = g.submit(0, &BlkReq::write(8, &data));
        g.kick(0);
        let r = g.wait_reply(0, h);
        if !held {
            assert_eq!(r.status, Some(BlkStatus::IoErr));
            continue;
        }
        assert_eq!(r.status, None, "{action:?} {kind:?}: held, not completed");
        assert_eq!(disk.held_count(), 1);
        assert_eq!(g.device().worker().in_flight(), 1);
        // The VMM fixed the cause: the request completes with success.
        assert_eq!(g.device_mut().resume_held(), 1);
        let r = g.wait_reply(0, h);
        assert_eq!(r.status, Some(BlkStatus::Ok));
        assert_eq!(&sim.contents()[4096..8192], &data[..]);
        assert_eq!(g.device().worker().in_flight(), 0);
    }
}

#[test]
fn reset_drops_held_requests() {
    let mut p = policy(CacheMode::Writeback);
    p.errors.write = ErrorAction::Stop;
    let (mut g, disk, sim) = sim_guest(p, true);
    sim.inject(1, FaultKind::Eio);
    let h = g.submit(0, &BlkReq::write(0, &pattern(512, 1)));
    g.kick(0);
    assert_eq!(g.wait_reply(0, h).status, None);
    assert_eq!(
        g.write(0, &pattern(512, 2), false).unwrap().status,
        GuestStatus::Ok,
        "other requests still run"
    );
    let issued = g.reset().unwrap();
    assert!(issued.status.is_ok());
    assert_eq!(disk.held_count(), 0);
    assert_eq!(g.device().worker().in_flight(), 0);
    assert_eq!(g.device_mut().resume_held(), 0);
    assert!(
        g.poll_used(0).is_empty(),
        "a reset device never completes old chains"
    );
}

#[test]
fn failed_flushes() {
    let mut p = policy(CacheMode::Writeback);
    p.errors.write = ErrorAction::Report;
    let (mut g, _, sim) = sim_guest(p, true);
    g.write(0, &pattern(512, 1), false).unwrap();
    sim.inject(1, FaultKind::Eio);
    assert_eq!(
        g.flush().unwrap().status,
        GuestStatus::Error("IOERR".into())
    );
    // Latched: a later flush fails too, even with nothing new written.
    assert_eq!(
        g.flush().unwrap().status,
        GuestStatus::Error("IOERR".into())
    );

    // Turning the cache off must flush; if that fails the guest is told
    // through DEVICE_NEEDS_RESET.
    let (mut g, disk, sim) = sim_guest(policy(CacheMode::Writeback), true);
    g.write(0, &pattern(512, 1), false).unwrap();
    sim.inject(1, FaultKind::Eio);
    g.take_interrupts();
    let issued = g.set_write_cache(false).unwrap();
    assert_eq!(
        issued.status,
        GuestStatus::Error("DEVICE_NEEDS_RESET".into())
    );
    assert!(matches!(g.device().error(), Some(DeviceError::Flush(_))));
    assert_eq!(g.take_interrupts(), [InterruptKind::Config]);
    assert!(!disk.write_cache(), "the cache is off regardless");
}

#[test]
fn failed_reset_flush_is_reported() {
    let (mut g, disk, sim) = sim_guest(policy(CacheMode::Writethrough), true);
    g.set_write_cache(true).unwrap();
    g.write(0, &pattern(512, 1), false).unwrap();
    sim.inject(1, FaultKind::Eio);
    let issued = g.reset().unwrap();
    assert_eq!(
        issued.status,
        GuestStatus::Error("DEVICE_NEEDS_RESET".into())
    );
    assert!(matches!(g.device().error(), Some(DeviceError::Flush(_))));
    assert!(!disk.write_cache());
}

fn crash_cases() -> u64 {
    std::env::var("VMSTOR_CRASH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

fn factory(opts: TestGuestOptions) -> impl Fn(Arc<Disk>) -> Box<dyn GuestDriver> {
    move |d| Box::new(TestGuest::new(d, opts.clone()).expect("driver init")) as Box<dyn GuestDriver>
}

fn case(mode: CacheMode) -> CaseConfig {
    CaseConfig {
        policy: policy(mode),
        host: vmstor_hostio::crash::SimHost::Full,
        size: 64 * 1024,
        sabotage: Sabotage::default(),
        fault: None,
        random_crashes: 2,
    }
}

#[test]
fn crash_model_every_mode_keeps_its_promises() {
    for (accept_flush, opts) in [
        (true, TestGuestOptions::default()),
        (
            false,
            TestGuestOptions {
                accept: vmstor_virtio_blk::Features::all()
                    - vmstor_virtio_blk::Features::FLUSH
                    - vmstor_virtio_blk::Features::CONFIG_WCE,
                ..Default::default()
            },
        ),
    ] {
        let f = factory(opts);
        for mode in CacheMode::ALL {
            let mut points = 0;
            for seed in 0..crash_cases() {
                let ops = random_ops(seed, 16, 128);
                match run_case(&f, &case(mode), &ops) {
                    Ok(r) => points += r.crash_points,
                    Err(e) => panic!("{mode} flush={accept_flush} seed {seed}: {e}\nops: {ops:?}"),
                }
            }
            assert!(points > 0, "{mode}");
        }
    }
}

#[test]
fn crash_model_with_faults() {
    let f = factory(TestGuestOptions::default());
    for mode in [CacheMode::Writeback, CacheMode::Writethrough] {
        for seed in 0..3 {
            // Resets are left out here: when the flush a reset owes (cache
            // back to its write-through default) fails, the device reports
            // DEVICE_NEEDS_RESET, but hostio's harness still counts the reset
            // as a promise (see `failed_reset_flush_is_reported`).
            let ops: Vec<_> = random_ops(500 + seed, 12, 128)
                .into_iter()
                .filter(|o| !matches!(o, vmstor_hostio::crash::GuestOp::Reset))
                .collect();
            let total = run_case(&f, &case(mode), &ops).unwrap().crash_points;
            for n in (1..=total).step_by(3) {
                for kind in [
                    FaultKind::Eio,
                    FaultKind::Short,
                    FaultKind::Enospc,
                    FaultKind::Eintr,
                ] {
                    let mut c = case(mode);
                    c.fault = Some((n, kind));
                    if let Err(e) = run_case(&f, &c, &ops) {
                        panic!("{mode} seed {seed} fault {kind:?}@{n}: {e}\nops: {ops:?}");
                    }
                }
            }
        }
    }
}

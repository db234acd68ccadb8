//! The io_uring executor ([`crate::ExecutorKind::IoUring`]).
//!
//! ## Contract
//! Semantics are those of the synchronous runner: each request's plan is the
//! same [`PlanRun`] state machine, advanced by completions instead of
//! blocking calls. Bounce copies run inline; reads and writes become
//! `IORING_OP_READV`/`IORING_OP_WRITEV` (`RWF_DSYNC` in `rw_flags` for durable
//! writes), resubmitted for the remainder after a short transfer and after
//! EINTR/EAGAIN (bounded), with a zero-length transfer an error (EIO reads,
//! ENOSPC writes); a flush goes through the [`FlushCoordinator`]'s
//! non-blocking step API and becomes `IORING_OP_FSYNC` with
//! `IORING_FSYNC_DATASYNC`; punch-hole and zero-range become
//! `IORING_OP_FALLOCATE`. `BLKDISCARD`, `BLKZEROOUT` and explicit zero writes
//! (rare: block devices and hosts without fallocate) run synchronously on
//! the thread advancing the request. Every op's result goes through
//! [`PlanRun::op_done`], shared with the synchronous runner: counters, flush
//! generation (before the completion is visible), latch, trace.
//!
//! A durable plan checks the latch when it starts; a read-modify-write plan
//! takes its range lock without blocking (it waits in the executor's queue
//! otherwise). At most `entries` requests are in flight; more wait in the
//! queue, in order.
//!
//! ## Threads: no reaper, whoever waits reaps
//! Submitting threads push SQEs under a mutex and enter the kernel once per
//! [`crate::Disk::submit`], or once per batch between [`crate::Disk::plug`]
//! and [`crate::Disk::unplug`]. There is no completion thread: the eventfd
//! behind [`crate::Disk::notify_fd`] is registered with the ring
//! (`IORING_REGISTER_EVENTFD`), so the kernel signals it when a CQE is
//! posted, and [`crate::Disk::poll`] reads the ready CQEs straight from the
//! shared completion ring (no syscall), advances those requests, submits
//! their follow-up SQEs and returns what finished. Blocking calls
//! ([`crate::Disk::wait`], `drain`, `execute`, `set_write_cache`, the flush
//! coordinator's blocking path, drop) reap for themselves: one thread at a
//! time holds the reaping role and sleeps in `io_uring_enter` for a CQE;
//! others wait on a condition variable for it to hand the role back. A
//! completion that does not come through the ring (a synchronous op, a
//! flush elided or covered by a sync on the blocking path) wakes that
//! sleeper with a NOP. A request finished by a thread other than the one
//! about to take the queue signals the eventfd, so an event loop never
//! misses it. Without that hand-off the QD1 path is submit, sleep in the
//! kernel, reap: the same thread throughout.
//!
//! A flush that must wait (a running sync will cover it, its own sync's
//! success awaits an earlier sync, or as many syncs run as
//! [`crate::DiskOptions::max_syncs_in_flight`] allows) is parked and stepped
//! again when a sync ends: a ring sync's end is seen by whoever reaps it; a
//! sync the blocking path ran on another thread (`Disk::sync_now`, from
//! `set_write_cache`) steps them through the coordinator's waker on that
//! thread. Parking compares [`FlushCoordinator::rounds_done`], so a sync
//! that ended between the step and the parking is never missed.
//!
//! Dropping the executor submits anything batched and reaps until every
//! request in flight has completed.
//!
//! ## Files without a descriptor: the emulated ring
//! For a [`HostFile`] with no [`HostFile::raw_fd`] (the crash model's
//! `SimFile`, in-memory test files) the executor runs the same state machine
//! but performs each op by calling the `HostFile` method synchronously and
//! feeding its result back as the completion. That is how the crash model
//! and the fault suites exercise this executor's completion handling. Over a
//! real descriptor, [`HostFile::inject`] lets the fault wrapper fail ops that
//! go to the real ring.
//!
//! ## Fallback
//! If `io_uring_setup` fails (ENOSYS, EPERM from seccomp, ENOMEM...), the
//! probe refuses one of the opcodes used, or a NOP does not complete, the
//! disk runs the thread pool ([`FALLBACK_THREADS`] workers) and
//! [`crate::Disk::executor_info`] (and the counters) say why. Setting
//! [`DISABLE_ENV`] to anything but `0` or empty forces the fallback at open.
//!
//! ## Not done
//! Registered buffers or files, SQPOLL, linked SQEs (e.g. write→fsync for
//! emulated FUA; the plan's ops run one after another), IOPOLL, cancellation
//! of in-flight ops. `Disk::execute` on this executor goes through the ring
//! and waits for its own completion.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use io_uring::{opcode, squeue, types, IoUring};
use smallvec::{smallvec, SmallVec};
use vmm_sys_util::eventfd::EventFd;

use crate::disk::DiskCore;
use crate::exec::{self, Dir, DoneQueue, Executor, Finished, Moved, NextIo, PlanRun, Transfer};
use crate::file::{HostFile, Injected, IoVec, OpKind};
use crate::flush::{FlushStep, FlushTicket};
use crate::plan::{HostOp, Plan};
use crate::request::Request;
use crate::IoError;

#[allow(unused_imports)] // referenced by the module docs
use crate::flush::FlushCoordinator;

/// Environment variable that forces the thread-pool fallback at open.
pub const DISABLE_ENV: &str = "VMSTOR_DISABLE_IO_URING";

/// Worker threads of the pool used when io_uring is not available.
pub const FALLBACK_THREADS: usize = 4;

/// `user_data` of wake-up and stop NOPs (slots are small integers).
const WAKE: u64 = u64::MAX;

/// Vectors per SQE (as `preadv` takes); the rest goes in a resubmission.
const IOV_MAX: usize = 1024;

/// Tries to push an SQE this many times (entering the kernel in between)
/// before giving up on it.
const PUSH_TRIES: u32 = 1000;

/// Whether io_uring is disabled by [`DISABLE_ENV`].
fn disabled_by_env() -> bool {
    std::env::var_os(DISABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

enum Backend {
    /// The kernel ring; `sq` serialises pushes to the submission queue.
    Real {
        ring: Box<IoUring>,
        sq: Mutex<()>,
        fd: RawFd,
    },
    /// Ops run synchronously through the `HostFile`.
    Emulated,
}

/// Where a finished request goes.
enum Sink {
    /// The shared completion queue (and the eventfd).
    Queue,
    /// A caller of `Disk::execute` waiting for this one request.
    Waiter(Arc<Waiter>),
}

#[derive(Default)]
struct Waiter {
    done: Mutex<Option<Finished>>,
}

/// The op a request is waiting on.
enum Cur {
    Idle,
    Xfer(Transfer),
    /// A flush; `sync` is the round and generation of the sync it issued.
    Flush {
        ticket: FlushTicket,
        sync: Option<(u64, u64)>,
    },
    Fallocate(HostOp),
}

/// One request in the executor. Boxed: the SQE in flight points into
/// `cur`'s vectors (held inline in the [`Transfer`] when there are one or
/// two) and `short`, which must not move until its CQE is reaped; nothing
/// touches `cur` between issuing an SQE and reaping its CQE.
struct Job {
    core: Arc<DiskCore>,
    run: PlanRun,
    sink: Sink,
    cur: Cur,
    /// Vectors of an injected short transfer.
    short: Vec<IoVec>,
    /// The range lock this job holds.
    lock: Option<(u64, u64)>,
    started: bool,
    /// `rounds_done` when its flush last saw a running sync.
    seen_rounds: u64,
    fd: Option<RawFd>,
}

/// What a job needs next.
enum Step {
    /// Push this SQE; the job waits for its completion.
    Submit(squeue::Entry),
    /// Its flush waits for a running sync to end.
    Parked,
    /// The plan ended.
    Finished(Result<u64, IoError>),
}

/// An op issued: on the ring, or already done (emulated or injected) with
/// this CQE-style result.
enum Issue {
    Ring(squeue::Entry),
    Now(i64),
}

fn to_res(r: Result<u64, i32>) -> i64 {
    match r {
        Ok(n) => i64::try_from(n).unwrap_or(i64::MAX),
        Err(e) => -i64::from(e),
    }
}

fn from_res(r: i64) -> Result<u64, i32> {
    if r < 0 {
        Err(i32::try_from(-r).unwrap_or(libc::EIO))
    } else {
        Ok(r as u64)
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Job {
    /// Advances the plan with the completion `res` of the op at hand (or
    /// none: start, or step a parked flush) until it needs the ring, parks
    /// or ends.
    fn step(&mut self, mut res: Option<i64>) -> Step {
        let core = self.core.clone();
        if !self.started {
            self.started = true;
            if let Err(e) = exec::latch_check(&core, &self.run.plan, self.run.req.op) {
                return Step::Finished(Err(e));
            }
        }
        loop {
            if let Some(r) = res.take() {
                let r = from_res(r);
                match std::mem::replace(&mut self.cur, Cur::Idle) {
                    Cur::Idle => {}
                    Cur::Xfer(mut t) => {
                        let done = match t.moved(r) {
                            Moved::More => {
                                self.cur = Cur::Xfer(t);
                                match self.issue() {
                                    Issue::Ring(e) => return Step::Submit(e),
                                    Issue::Now(r) => {
                                        res = Some(r);
                                        continue;
                                    }
                                }
                            }
                            Moved::Done(n) => Ok(n),
                            Moved::Failed(e) => Err(e),
                        };
                        if let Err(e) = self.run.op_done(&core, done) {
                            return Step::Finished(Err(e));
                        }
                    }
                    Cur::Flush {
                        mut ticket,
                        sync: Some((round, gen)),
                    } => {
                        let r = r.map(|_| ());
                        exec::sync_ended(&core, self.run.req.tag, r);
                        match core.flush.sync_done(&mut ticket, round, gen, r) {
                            Some(o) => {
                                if let Err(e) = self.run.flush_done(&core, o) {
                                    return Step::Finished(Err(e));
                                }
                            }
                            None => self.cur = Cur::Flush { ticket, sync: None },
                        }
                    }
                    Cur::Flush { ticket, sync: None } => {
                        self.cur = Cur::Flush { ticket, sync: None }
                    }
                    Cur::Fallocate(op) => {
                        let len = match op {
                            HostOp::PunchHole { len, .. } | HostOp::ZeroRange { len, .. } => len,
                            _ => 0,
                        };
                        if let Err(e) = self.run.op_done(&core, r.map(|_| len)) {
                            return Step::Finished(Err(e));
                        }
                    }
                }
            }
            if let Cur::Flush { ticket, sync } = &mut self.cur {
                self.seen_rounds = core.flush.rounds_done();
                match core.flush.step(ticket) {
                    FlushStep::Busy => return Step::Parked,
                    FlushStep::Done(o) => {
                        self.cur = Cur::Idle;
                        if let Err(e) = self.run.flush_done(&core, o) {
                            return Step::Finished(Err(e));
                        }
                    }
                    FlushStep::Start { round, gen } => {
                        *sync = Some((round, gen));
                        exec::sync_started(&core);
                        match self.issue() {
                            Issue::Ring(e) => return Step::Submit(e),
                            Issue::Now(r) => {
                                res = Some(r);
                                continue;
                            }
                        }
                    }
                }
            }
            let issued = match self.run.next_io(&core) {
                Err(e) => return Step::Finished(Err(e)),
                Ok(NextIo::End(n)) => return Step::Finished(Ok(n)),
                Ok(NextIo::Flush) => {
                    self.cur = Cur::Flush {
                        ticket: core.flush.begin(),
                        sync: None,
                    };
                    continue;
                }
                Ok(NextIo::Transfer(t)) => {
                    self.cur = Cur::Xfer(t);
                    self.issue()
                }
                Ok(NextIo::Op(op @ (HostOp::PunchHole { .. } | HostOp::ZeroRange { .. }))) => {
                    self.cur = Cur::Fallocate(op);
                    self.issue()
                }
                Ok(NextIo::Op(op)) => {
                    // Rare ops (ioctls, explicit zero writes): synchronous.
                    let r = exec::run_op_sync(&*core.file, op);
                    if let Err(e) = self.run.op_done(&core, r) {
                        return Step::Finished(Err(e));
                    }
                    continue;
                }
            };
            match issued {
                Issue::Ring(e) => return Step::Submit(e),
                Issue::Now(r) => res = Some(r),
            }
        }
    }

    /// Issues the op at hand: an SQE on the real ring, or (emulated ring,
    /// injected fault) its result right away.
    fn issue(&mut self) -> Issue {
        let Some(fd) = self.fd else {
            return Issue::Now(self.emulate());
        };
        let kind = match &self.cur {
            Cur::Xfer(t) if t.dir == Dir::Read => OpKind::Read,
            Cur::Xfer(_) => OpKind::Write,
            Cur::Flush { .. } => OpKind::Sync,
            Cur::Fallocate(_) => OpKind::Fallocate,
            Cur::Idle => return Issue::Now(-i64::from(libc::EINVAL)),
        };
        let short = match self.core.file.inject(kind) {
            Some(Injected::Error(e)) => return Issue::Now(-i64::from(e)),
            Some(Injected::Short) => true,
            None => false,
        };
        let fd = types::Fd(fd);
        Issue::Ring(match &self.cur {
            Cur::Xfer(t) => {
                let iov: &[IoVec] = if short && t.remaining() > 1 {
                    self.short = crate::fault::half(t.iov());
                    &self.short
                } else {
                    t.iov()
                };
                let n = iov.len().min(IOV_MAX) as u32;
                let ptr: *const libc::iovec = iov.as_ptr().cast();
                match t.dir {
                    Dir::Read => opcode::Readv::new(fd, ptr, n).offset(t.pos()).build(),
                    Dir::Write { dsync } => opcode::Writev::new(fd, ptr, n)
                        .offset(t.pos())
                        .rw_flags(if dsync { libc::RWF_DSYNC } else { 0 })
                        .build(),
                }
            }
            Cur::Flush { .. } => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Cur::Fallocate(op) => {
                let (mode, offset, len) = match *op {
                    HostOp::PunchHole { offset, len } => (
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        offset,
                        len,
                    ),
                    HostOp::ZeroRange { offset, len } => (
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        offset,
                        len,
                    ),
                    _ => return Issue::Now(-i64::from(libc::EINVAL)),
                };
                opcode::Fallocate::new(fd, len)
                    .offset(offset)
                    .mode(mode)
                    .build()
            }
            Cur::Idle => return Issue::Now(-i64::from(libc::EINVAL)),
        })
    }

    /// The emulated ring: the op at hand through the `HostFile` method.
    fn emulate(&mut self) -> i64 {
        let file = &*self.core.file;
        let r = match &self.cur {
            Cur::Xfer(t) => match t.dir {
                Dir::Read => file.preadv(t.iov(), t.pos()),
                Dir::Write { dsync } => file.pwritev(t.iov(), t.pos(), dsync),
            }
            .map(|n| n as u64)
            .map_err(|e| errno_of(&e)),
            Cur::Flush { .. } => file.fdatasync().map(|_| 0).map_err(|e| errno_of(&e)),
            Cur::Fallocate(op) => exec::run_op_sync(file, *op),
            Cur::Idle => Err(libc::EINVAL),
        };
        to_res(r)
    }
}

#[derive(Default)]
struct State {
    /// Jobs with an SQE in flight, by slot (`user_data`). A started job
    /// owns its slot until it finishes, even while a thread advances it.
    slots: Vec<Option<Box<Job>>>,
    free: Vec<usize>,
    /// Jobs started and not finished (bounded by `entries`).
    inflight: usize,
    /// Jobs waiting for room or for their range lock, in order.
    queued: VecDeque<Box<Job>>,
    /// Flushes waiting for a running sync to end, with their slots.
    parked: Vec<(usize, Box<Job>)>,
    plugged: u32,
    /// A thread owns the completion queue (reads CQEs, may block in
    /// `io_uring_enter` for them).
    reaping: bool,
    /// The reaping thread is blocked in `io_uring_enter`: a completion that
    /// does not come through the ring must wake it with a NOP.
    blocked: bool,
    /// Threads waiting on `Shared::cv` (for the reaping role, or, emulated,
    /// for any progress).
    cv_waiters: usize,
}

struct Shared {
    backend: Backend,
    entries: usize,
    state: Mutex<State>,
    /// Signalled (when someone waits) when a job finishes, a sync ends on
    /// the blocking path, or the reaping role is given up.
    cv: Condvar,
    done: DoneQueue,
    efd: EventFd,
    /// How long a thread about to sleep for a CQE polls the ring first.
    poll: std::time::Duration,
}

/// Jobs to advance, with the CQE result each resumes with (inline for the
/// usual handful: no allocation per request).
type Work = SmallVec<[(usize, Box<Job>, Option<i64>); 8]>;

/// SQEs to push.
type Out = SmallVec<[squeue::Entry; 8]>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts queued jobs while there is room and their range is free.
    fn admit(&self, st: &mut State, work: &mut Work) {
        let mut i = 0;
        while i < st.queued.len() && st.inflight < self.entries {
            if let Some((a, b)) = st.queued[i].run.plan.lock {
                if !st.queued[i].core.ranges.try_acquire(a, b) {
                    i += 1;
                    continue;
                }
            }
            let Some(mut job) = st.queued.remove(i) else {
                break;
            };
            job.lock = job.run.plan.lock;
            st.inflight += 1;
            let slot = match st.free.pop() {
                Some(s) => s,
                None => {
                    st.slots.push(None);
                    st.slots.len() - 1
                }
            };
            work.push((slot, job, None));
        }
    }

    /// Queues a new job and starts what can start.
    fn enqueue(&self, job: Box<Job>, submit_now: bool) {
        let mut work = Work::new();
        let submit = {
            let mut st = self.lock();
            st.queued.push_back(job);
            self.admit(&mut st, &mut work);
            submit_now || st.plugged == 0
        };
        let mut out = Out::new();
        self.drive(work, &mut out, true);
        self.push(out, submit);
    }

    /// Advances jobs until each waits for the ring, parks or finishes;
    /// collects the SQEs to push. Then steps parked flushes whose sync ended.
    /// With `signal`, signals the eventfd once if a request finished into
    /// the completion queue (a caller about to take the queue passes false).
    fn drive(&self, mut work: Work, out: &mut Out, signal: bool) {
        let mut queued = false;
        loop {
            while let Some((slot, mut job, res)) = work.pop() {
                match job.step(res) {
                    Step::Submit(e) => {
                        // Back in its slot before the SQE exists, so the
                        // reaping thread finds it whenever the CQE arrives.
                        let mut st = self.lock();
                        if let Some(s) = st.slots.get_mut(slot) {
                            *s = Some(job);
                        }
                        out.push(e.user_data(slot as u64));
                    }
                    Step::Parked => {
                        let mut st = self.lock();
                        if job.core.flush.rounds_done() != job.seen_rounds {
                            // The sync it waited for ended meanwhile.
                            work.push((slot, job, None));
                        } else {
                            st.parked.push((slot, job));
                        }
                    }
                    Step::Finished(r) => queued |= self.finished(slot, job, r, &mut work),
                }
            }
            let mut st = self.lock();
            let mut i = 0;
            while i < st.parked.len() {
                if st.parked[i].1.core.flush.rounds_done() != st.parked[i].1.seen_rounds {
                    let (slot, job) = st.parked.swap_remove(i);
                    work.push((slot, job, None));
                } else {
                    i += 1;
                }
            }
            if work.is_empty() {
                break;
            }
        }
        if queued && signal {
            // A full eventfd counter only means "already signalled".
            let _ = self.efd.write(1);
        }
    }

    /// Publishes a finished job; true if it went to the completion queue.
    fn finished(
        &self,
        slot: usize,
        job: Box<Job>,
        r: Result<u64, IoError>,
        work: &mut Work,
    ) -> bool {
        let job = *job;
        if let Some((a, b)) = job.lock {
            job.core.ranges.release(a, b);
        }
        let f = exec::finish(&job.core, job.run, r);
        let queued = match job.sink {
            Sink::Queue => {
                self.done.push(f);
                true
            }
            Sink::Waiter(w) => {
                *w.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
                false
            }
        };
        let mut st = self.lock();
        st.inflight = st.inflight.saturating_sub(1);
        if let Some(s) = st.slots.get_mut(slot) {
            *s = None;
            st.free.push(slot);
        }
        self.admit(&mut st, work);
        self.poke_locked(st);
        queued
    }

    /// Something a waiter may be waiting for happened outside the ring
    /// (a job finished, a blocking-path sync ended): wakes the thread
    /// blocked in `io_uring_enter` (a NOP) and the condvar waiters.
    fn poke_locked(&self, st: MutexGuard<'_, State>) {
        let nop = st.blocked;
        if st.cv_waiters > 0 {
            self.cv.notify_all();
        }
        drop(st);
        if nop {
            self.push(smallvec![opcode::Nop::new().build().user_data(WAKE)], true);
        }
    }

    /// Pushes SQEs (entering the kernel when the SQ is full) and, if
    /// `submit`, enters the kernel once for all of them.
    fn push(&self, entries: Out, submit: bool) {
        let Backend::Real { ring, sq, .. } = &self.backend else {
            return;
        };
        let mut failed = Vec::new();
        {
            let _g = sq.lock().unwrap_or_else(|e| e.into_inner());
            for e in entries {
                let mut tries = 0;
                loop {
                    // SAFETY: the `sq` mutex makes this the only
                    // SubmissionQueue handle; it is dropped (publishing the
                    // tail) before the kernel is entered below.
                    let mut q = unsafe { ring.submission_shared() };
                    // SAFETY: the SQE's buffers (iovec arrays, data, bounce)
                    // live in a boxed Job that stays in its slot until its
                    // CQE is reaped.
                    let pushed = unsafe { q.push(&e) }.is_ok();
                    drop(q);
                    if pushed {
                        break;
                    }
                    tries += 1;
                    if tries >= PUSH_TRIES {
                        failed.push(e.get_user_data());
                        break;
                    }
                    // SQ full: hand it to the kernel and try again.
                    if ring.submit().is_err() {
                        std::thread::yield_now();
                    }
                }
            }
            if submit {
                self.enter_submit(ring);
            }
        }
        // An SQE that could not be queued completes with EBUSY.
        if !failed.is_empty() {
            let mut work = Work::new();
            {
                let mut st = self.lock();
                for slot in failed {
                    if let Some(job) = usize::try_from(slot)
                        .ok()
                        .and_then(|s| st.slots.get_mut(s))
                        .and_then(Option::take)
                    {
                        work.push((slot as usize, job, Some(-i64::from(libc::EBUSY))));
                    }
                }
            }
            let mut out = Out::new();
            self.drive(work, &mut out, true);
            self.push(out, true);
        }
    }

    fn enter_submit(&self, ring: &IoUring) {
        for _ in 0..PUSH_TRIES {
            match ring.submit() {
                Ok(_) => return,
                // Interrupted, or the kernel is short of memory or CQ room
                // (whoever reaps frees it): try again.
                Err(e) if matches!(errno_of(&e), libc::EINTR | libc::EAGAIN | libc::EBUSY) => {
                    std::thread::yield_now()
                }
                Err(_) => return,
            }
        }
    }

    /// Reads every CQE ready now (no syscall) and advances those jobs. The
    /// caller holds the reaping role. Returns how many CQEs it read.
    fn reap_ready(&self, ring: &IoUring, signal: bool) -> usize {
        let mut cqes: SmallVec<[(u64, i32); 32]> = SmallVec::new();
        // SAFETY: only the thread holding `State::reaping` reads the
        // completion queue.
        for c in unsafe { ring.completion_shared() } {
            cqes.push((c.user_data(), c.result()));
        }
        let n = cqes.len();
        let mut work = Work::new();
        {
            let mut st = self.lock();
            for (ud, res) in cqes {
                if ud == WAKE {
                    continue;
                }
                if let Some(job) = usize::try_from(ud)
                    .ok()
                    .and_then(|s| st.slots.get_mut(s))
                    .and_then(Option::take)
                {
                    work.push((ud as usize, job, Some(i64::from(res))));
                }
            }
            if work.is_empty() && st.parked.is_empty() {
                return n;
            }
        }
        let mut out = Out::new();
        self.drive(work, &mut out, signal);
        if !out.is_empty() {
            self.push(out, true);
        }
        n
    }

    /// Reaps what is ready unless another thread holds the reaping role
    /// (it will publish what it reaps).
    fn reap_now(&self, signal: bool) {
        let Backend::Real { ring, .. } = &self.backend else {
            return;
        };
        {
            let mut st = self.lock();
            if st.reaping {
                return;
            }
            st.reaping = true;
        }
        self.reap_ready(ring, signal);
        let mut st = self.lock();
        st.reaping = false;
        if st.cv_waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Blocks until `cond` (checked under the state lock) holds, reaping
    /// completions meanwhile: the calling thread takes the reaping role
    /// when it is free and waits in `io_uring_enter`; otherwise it waits
    /// for the role's holder (or, emulated, for other threads' progress).
    fn wait_until(&self, cond: &dyn Fn(&State) -> bool, signal: bool) {
        let mut st = self.lock();
        loop {
            if cond(&st) {
                return;
            }
            let ring = match &self.backend {
                Backend::Real { ring, .. } if !st.reaping => ring,
                _ => {
                    st.cv_waiters += 1;
                    let (g, timeout) = self
                        .cv
                        .wait_timeout(st, std::time::Duration::from_millis(100))
                        .unwrap_or_else(|e| e.into_inner());
                    st = g;
                    st.cv_waiters -= 1;
                    if timeout.timed_out() && matches!(self.backend, Backend::Emulated) {
                        // Belt and braces: step parked flushes whose sync
                        // ended without anyone noticing.
                        drop(st);
                        self.drive(Work::new(), &mut Out::new(), true);
                        st = self.lock();
                    }
                    continue;
                }
            };
            st.reaping = true;
            drop(st);
            let mut n = self.reap_ready(ring, signal);
            st = self.lock();
            if n == 0 && !cond(&st) && !self.poll.is_zero() {
                // Poll the completion ring briefly before sleeping.
                drop(st);
                let t0 = std::time::Instant::now();
                // SAFETY: this thread holds the reaping role.
                while unsafe { ring.completion_shared() }.is_empty() && t0.elapsed() < self.poll {
                    std::hint::spin_loop();
                }
                n = self.reap_ready(ring, signal);
                st = self.lock();
            }
            if n == 0 && !cond(&st) {
                st.blocked = true;
                drop(st);
                // Submits anything batched (the awaited request may be),
                // then sleeps until a CQE is ready.
                if let Err(e) = ring.submit_and_wait(1) {
                    if !matches!(errno_of(&e), libc::EINTR | libc::EAGAIN | libc::EBUSY) {
                        // Unexpected: do not spin.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                self.lock().blocked = false;
                self.reap_ready(ring, signal);
                st = self.lock();
            }
            st.reaping = false;
            if st.cv_waiters > 0 {
                self.cv.notify_all();
            }
        }
    }
}

/// The io_uring executor. See the module docs.
pub(crate) struct Uring {
    sh: Arc<Shared>,
}

/// Checks that the kernel runs every opcode the executor uses, and that a
/// NOP completes.
fn probe(ring: &mut IoUring) -> Result<(), String> {
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("IORING_REGISTER_PROBE failed: {e}"))?;
    for (code, name) in [
        (opcode::Nop::CODE, "NOP"),
        (opcode::Readv::CODE, "READV"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::Fsync::CODE, "FSYNC"),
        (opcode::Fallocate::CODE, "FALLOCATE"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("the kernel does not support IORING_OP_{name}"));
        }
    }
    // SAFETY: a NOP references no memory.
    unsafe {
        ring.submission()
            .push(&opcode::Nop::new().build().user_data(1))
    }
    .map_err(|_| "cannot queue a NOP".to_string())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter failed: {e}"))?;
    match ring.completion().next() {
        Some(c) if c.user_data() == 1 && c.result() >= 0 => Ok(()),
        Some(c) => Err(format!("a NOP completed with {}", c.result())),
        None => Err("a NOP did not complete".into()),
    }
}

impl Uring {
    /// Sets up the ring (or the emulated ring for `file` without a
    /// descriptor) with the eventfd registered. `Err` says why io_uring
    /// cannot be used.
    pub(crate) fn new(entries: u32, poll_us: u32, file: &dyn HostFile) -> Result<Uring, String> {
        if disabled_by_env() {
            return Err(format!("disabled by {DISABLE_ENV}"));
        }
        let entries = entries.clamp(1, 4096);
        let efd = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| format!("eventfd: {e}"))?;
        let backend = match file.raw_fd() {
            None => Backend::Emulated,
            Some(fd) => {
                let mut ring =
                    IoUring::new(entries).map_err(|e| format!("io_uring_setup failed: {e}"))?;
                probe(&mut ring)?;
                use std::os::fd::AsRawFd;
                ring.submitter()
                    .register_eventfd(efd.as_raw_fd())
                    .map_err(|e| format!("IORING_REGISTER_EVENTFD failed: {e}"))?;
                Backend::Real {
                    ring: Box::new(ring),
                    sq: Mutex::new(()),
                    fd,
                }
            }
        };
        Ok(Uring {
            sh: Arc::new(Shared {
                backend,
                entries: entries as usize,
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
                done: DoneQueue::default(),
                efd,
                poll: std::time::Duration::from_micros(u64::from(poll_us)),
            }),
        })
    }

    fn job(&self, core: &Arc<DiskCore>, req: Request, plan: Plan, sink: Sink) -> Box<Job> {
        Box::new(Job {
            core: core.clone(),
            run: PlanRun::new(core, req, plan),
            sink,
            cur: Cur::Idle,
            short: Vec::new(),
            lock: None,
            started: false,
            seen_rounds: 0,
            fd: match &self.sh.backend {
                Backend::Real { fd, .. } => Some(*fd),
                Backend::Emulated => None,
            },
        })
    }
}

impl Executor for Uring {
    fn submit(&self, core: &Arc<DiskCore>, req: Request, plan: Plan) {
        self.sh.done.started();
        let job = self.job(core, req, plan, Sink::Queue);
        self.sh.enqueue(job, false);
    }

    fn execute(&self, core: &Arc<DiskCore>, req: Request, plan: Plan) -> Finished {
        let w = Arc::new(Waiter::default());
        let job = self.job(core, req, plan, Sink::Waiter(w.clone()));
        self.sh.enqueue(job, true);
        let ready = || w.done.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        loop {
            self.sh.wait_until(&|_| ready(), true);
            if let Some(f) = w.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return f;
            }
        }
    }

    fn take(&self) -> Vec<Finished> {
        let _ = self.sh.efd.read();
        self.sh.reap_now(false);
        self.sh.done.take()
    }

    fn take_each(&self, f: &mut dyn FnMut(Finished)) {
        let _ = self.sh.efd.read();
        self.sh.reap_now(false);
        self.sh.done.take_each(f);
    }

    fn take_waited(&self, f: &mut dyn FnMut(Finished)) {
        self.sh.reap_now(false);
        self.sh.done.take_each(f);
    }

    fn wait(&self) {
        // The caller takes the queue next (`Disk::wait`, `Disk::drain`).
        self.sh.wait_until(&|_| self.sh.done.ready_or_idle(), false);
    }

    fn wait_until(&self, cond: &dyn Fn() -> bool) -> bool {
        self.sh.wait_until(&|_| cond(), true);
        true
    }

    fn notify_fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.sh.efd.as_raw_fd())
    }

    fn plug(&self) {
        self.sh.lock().plugged += 1;
    }

    fn unplug(&self) {
        let submit = {
            let mut st = self.sh.lock();
            st.plugged = st.plugged.saturating_sub(1);
            st.plugged == 0
        };
        if submit {
            self.sh.push(Out::new(), true);
        }
    }

    fn name(&self) -> &'static str {
        match self.sh.backend {
            Backend::Real { .. } => "io_uring",
            Backend::Emulated => "io_uring-emulated",
        }
    }

    fn flush_waker(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        let weak: Weak<Shared> = Arc::downgrade(&self.sh);
        Some(Box::new(move || {
            if let Some(sh) = weak.upgrade() {
                // Step the flushes parked on it here: nobody else may be
                // looking at the ring.
                let mut out = Out::new();
                sh.drive(Work::new(), &mut out, true);
                sh.push(out, true);
                sh.poke_locked(sh.lock());
            }
        }))
    }

    fn flush_progress(&self) -> Option<crate::flush::Progress> {
        let weak: Weak<Shared> = Arc::downgrade(&self.sh);
        Some(Box::new(move |cond: &dyn Fn() -> bool| {
            match weak.upgrade() {
                Some(sh) => {
                    sh.wait_until(&|_| cond(), true);
                    true
                }
                None => false,
            }
        }))
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Anything batched goes to the kernel, then every job in flight
        // completes (reaped by this thread if nobody else does).
        self.sh.lock().plugged = 0;
        self.sh.push(Out::new(), true);
        self.sh
            .wait_until(&|st| st.inflight == 0 && st.queued.is_empty(), true);
    }
}

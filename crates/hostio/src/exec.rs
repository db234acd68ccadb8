//! Executors: run a [`Plan`]'s host ops against the disk's [`HostFile`].
//!
//! Every executor advances the same plan state machine ([`PlanRun`]): CPU
//! ops run inside it, and each host op's result goes through the one
//! [`PlanRun::op_done`] (counters, flush generation, latch, trace, advisory
//! discard errors), so the semantics are identical; executors differ only in
//! where the work runs and how completions come back:
//! - [`ExecutorKind::Inline`]: on the submitting thread (the synchronous
//!   runner `run_plan`); completions are queued for the next `poll`.
//! - [`ExecutorKind::Threads`]: a pool of worker threads running `run_plan`;
//!   completions are queued and signalled through an eventfd a VMM event
//!   loop can poll.
//! - [`ExecutorKind::IoUring`]: completion-driven over an io_uring
//!   ([`crate::uring`]); same completion queue and eventfd as the pool.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use smallvec::{smallvec, SmallVec};
use vmm_sys_util::eventfd::EventFd;

use crate::buf::{AlignedBuf, DataBuf};
use crate::disk::DiskCore;
use crate::file::{HostFile, IoVec};
use crate::flush::FlushOutcome;
use crate::plan::{BufRef, HostOp, Plan};
use crate::request::{Op, Request};
use crate::IoError;

/// Which executor a disk uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// Synchronous, on the submitting thread.
    #[default]
    Inline,
    /// A pool of this many worker threads (at least 1).
    Threads(usize),
    /// An io_uring with this many submission entries; also the bound on
    /// requests in flight (more are queued inside the executor). Falls back
    /// to a thread pool when the kernel refuses io_uring (see
    /// [`crate::Disk::executor_info`]).
    IoUring {
        /// Submission queue entries (rounded up to a power of two by the
        /// kernel; at least 1).
        entries: u32,
    },
}

impl ExecutorKind {
    /// The io_uring executor with a default queue depth (128).
    pub const IO_URING: ExecutorKind = ExecutorKind::IoUring { entries: 128 };
}

/// A request that finished executing (before the error policy is applied).
pub(crate) struct Finished {
    pub req: Request,
    pub result: Result<u64, IoError>,
}

pub(crate) trait Executor: Send + Sync {
    fn submit(&self, core: &Arc<DiskCore>, req: Request, plan: Plan);
    fn take(&self) -> Vec<Finished>;
    /// Hands every finished request to `f`, like [`Executor::take`] but
    /// without collecting them into a `Vec` first.
    fn take_each(&self, f: &mut dyn FnMut(Finished)) {
        self.take().into_iter().for_each(f);
    }
    /// Blocks until at least one finished request is queued or nothing is in
    /// flight.
    fn wait(&self);
    /// [`Executor::take_each`] right after [`Executor::wait`]: an executor
    /// whose eventfd the kernel signals (io_uring) may leave it signalled
    /// (one spurious wake-up of an event loop instead of a `read` per wait).
    fn take_waited(&self, f: &mut dyn FnMut(Finished)) {
        self.take_each(f);
    }
    fn notify_fd(&self) -> Option<RawFd>;
    /// Runs one request to completion for [`crate::Disk::execute`]; its
    /// completion is returned, not queued.
    fn execute(&self, core: &Arc<DiskCore>, req: Request, plan: Plan) -> Finished {
        run_job(core, req, plan)
    }
    /// Starts batching submissions (see [`crate::Disk::plug`]).
    fn plug(&self) {}
    /// Ends a batch and submits it.
    fn unplug(&self) {}
    /// Which executor this is, for [`crate::Disk::executor_info`].
    fn name(&self) -> &'static str;
    /// A callback for the flush coordinator to run when a blocking-path
    /// sync ends, if this executor parks flushes.
    fn flush_waker(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        None
    }
    /// For an executor whose completions are reaped by its callers
    /// (io_uring): blocks until `cond` holds, reaping meanwhile, and returns
    /// true. Executors that progress on their own return false at once; the
    /// caller then waits on its own condition variable.
    fn wait_until(&self, _cond: &dyn Fn() -> bool) -> bool {
        false
    }
    /// The same for the flush coordinator's blocking path, which otherwise
    /// waits on its condition variable for a sync to end.
    fn flush_progress(&self) -> Option<crate::flush::Progress> {
        None
    }
}

/// Completion queue shared by executors.
///
/// `push` wakes a waiter only when one is blocked in [`DoneQueue::wait`]:
/// std's `Condvar::notify_all` is an unconditional `FUTEX_WAKE` syscall,
/// which the inline executor would otherwise pay on every request. Waiters
/// are counted under the mutex, and a waiter registers before it releases
/// the mutex in `Condvar::wait`, so no wake-up can be lost.
#[derive(Default)]
pub(crate) struct DoneQueue {
    q: Mutex<DoneState>,
    cv: Condvar,
}

#[derive(Default)]
struct DoneState {
    done: VecDeque<Finished>,
    /// Requests started and not yet pushed.
    in_flight: usize,
    /// Threads blocked in [`DoneQueue::wait`].
    waiters: usize,
}

impl DoneQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, DoneState> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn started(&self) {
        self.lock().in_flight += 1;
    }
    pub(crate) fn push(&self, f: Finished) {
        let mut g = self.lock();
        g.done.push_back(f);
        g.in_flight -= 1;
        if g.waiters > 0 {
            self.cv.notify_all();
        }
    }
    pub(crate) fn take(&self) -> Vec<Finished> {
        self.lock().done.drain(..).collect()
    }
    /// Whether a finished request is queued or nothing is in flight (what
    /// [`DoneQueue::wait`] waits for).
    pub(crate) fn ready_or_idle(&self) -> bool {
        let g = self.lock();
        !g.done.is_empty() || g.in_flight == 0
    }
    /// Hands every finished request to `f`, under the queue's lock (`f`
    /// must not touch this queue).
    pub(crate) fn take_each(&self, f: &mut dyn FnMut(Finished)) {
        self.lock().done.drain(..).for_each(f);
    }
    pub(crate) fn wait(&self) {
        let mut g = self.lock();
        while g.done.is_empty() && g.in_flight > 0 {
            g.waiters += 1;
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            g.waiters -= 1;
        }
    }
}

/// Runs on the submitting thread.
#[derive(Default)]
pub(crate) struct Inline {
    done: DoneQueue,
}

impl Executor for Inline {
    fn submit(&self, core: &Arc<DiskCore>, req: Request, plan: Plan) {
        self.done.started();
        let f = run_job(core, req, plan);
        self.done.push(f);
    }
    fn take(&self) -> Vec<Finished> {
        self.done.take()
    }
    fn take_each(&self, f: &mut dyn FnMut(Finished)) {
        self.done.take_each(f);
    }
    fn wait(&self) {}
    fn notify_fd(&self) -> Option<RawFd> {
        None
    }
    fn name(&self) -> &'static str {
        "inline"
    }
}

type Job = (Arc<DiskCore>, Request, Plan);

/// A pool of worker threads.
pub(crate) struct Pool {
    tx: Mutex<Option<Sender<Job>>>,
    done: Arc<DoneQueue>,
    efd: Arc<EventFd>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn new(n: usize) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(DoneQueue::default());
        let efd = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            let (rx, done, efd) = (rx.clone(), done.clone(), efd.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("hostio-{i}"))
                    .spawn(move || loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((core, req, plan)) = job else { return };
                        let f = run_job(&core, req, plan);
                        done.push(f);
                        // A full eventfd counter only means "already signalled".
                        let _ = efd.write(1);
                    })?,
            );
        }
        Ok(Pool {
            tx: Mutex::new(Some(tx)),
            done,
            efd,
            workers: Mutex::new(workers),
        })
    }
}

impl Executor for Pool {
    fn submit(&self, core: &Arc<DiskCore>, req: Request, plan: Plan) {
        self.done.started();
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = tx.as_ref() {
            if let Err(mpsc::SendError((core, req, plan))) = tx.send((core.clone(), req, plan)) {
                // Workers gone (cannot happen while the pool lives): run here.
                let f = run_job(&core, req, plan);
                self.done.push(f);
            }
        }
    }
    fn take(&self) -> Vec<Finished> {
        let _ = self.efd.read();
        self.done.take()
    }
    fn take_each(&self, f: &mut dyn FnMut(Finished)) {
        let _ = self.efd.read();
        self.done.take_each(f);
    }
    fn wait(&self) {
        self.done.wait();
    }
    fn notify_fd(&self) -> Option<RawFd> {
        Some(self.efd.as_raw_fd())
    }
    fn name(&self) -> &'static str {
        "threads"
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = w.join();
        }
    }
}

/// Runs one request's plan on this thread and accounts for it.
pub(crate) fn run_job(core: &DiskCore, req: Request, plan: Plan) -> Finished {
    let mut run = PlanRun::new(core, req, plan);
    let result = run_plan(core, &mut run);
    finish(core, run, result)
}

/// Accounting every executor does when a request's plan ended: the
/// volatile-write count [`crate::Disk::set_write_cache`] waits on, and the
/// error counters.
pub(crate) fn finish(core: &DiskCore, mut run: PlanRun, result: Result<u64, IoError>) -> Finished {
    if let Some(b) = run.bounce.take() {
        core.bounce.give(b);
    }
    if !run.plan.durable && run.req.op.is_write() {
        core.volatile_done();
    }
    if let Err(e) = &result {
        core.counters.error(e.errno);
    }
    Finished {
        req: run.req,
        result,
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// A durable plan (other than a flush, which reports the latch itself) fails
/// at once with the latched errno.
pub(crate) fn latch_check(core: &DiskCore, plan: &Plan, op: Op) -> Result<(), IoError> {
    if plan.durable && op != Op::Flush {
        if let Some(e) = core.flush.latched() {
            return Err(IoError {
                errno: e,
                latched: true,
            });
        }
    }
    Ok(())
}

/// A list of I/O vectors. Nearly every request has one or two (one guest
/// segment, or a bounce buffer), which then live inline instead of in a heap
/// allocation of their own. The vectors point into heap memory (guest memory,
/// owned or bounce buffers), never into the list, so moving a list is fine;
/// a list handed to the kernel asynchronously (io_uring) must itself stay
/// put until the kernel is done with it (see `uring.rs`).
pub(crate) type IoVecs = SmallVec<[IoVec; 2]>;

/// The request buffer as I/O vectors (guest memory or owned buffer).
fn request_iovecs(buf: &mut DataBuf) -> Result<IoVecs, IoError> {
    match buf {
        DataBuf::None => Ok(IoVecs::new()),
        DataBuf::Owned(b) => {
            // SAFETY: the AlignedBuf's heap allocation is owned by the
            // request, which the PlanRun holding these vectors owns too;
            // moving the request does not move the allocation.
            Ok(smallvec![unsafe {
                IoVec::from_raw(b.as_mut_slice().as_mut_ptr(), b.len())
            }])
        }
        DataBuf::Guest(g) => {
            let mut out = IoVecs::new();
            let mapped = g.for_each_slice(|s| {
                // SAFETY: the slice maps guest memory kept alive by the
                // request's Arc<GuestMemoryMmap> for the whole plan.
                out.push(unsafe { IoVec::from_raw(s.ptr_guard_mut().as_ptr(), s.len()) });
            });
            if mapped {
                Ok(out)
            } else {
                Err(IoError::new(libc::EFAULT))
            }
        }
    }
}

/// Sub-range `[at, at+len)` of a vector list.
fn sub_iovecs(iov: &[IoVec], mut at: u64, mut len: u64) -> IoVecs {
    let mut out = IoVecs::new();
    for v in iov {
        if len == 0 {
            break;
        }
        let vl = v.len() as u64;
        if at >= vl {
            at -= vl;
            continue;
        }
        let n = (vl - at).min(len);
        // SAFETY: [at, at+n) lies inside v.
        out.push(unsafe { IoVec::from_raw(v.ptr().add(at as usize), n as usize) });
        len -= n;
        at = 0;
    }
    out
}

/// Direction of a [`Transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write { dsync: bool },
}

/// What a transfer does after one (partial) transfer returned.
pub(crate) enum Moved {
    /// Issue the remainder ([`Transfer::iov`] at [`Transfer::pos`]).
    More,
    /// Everything moved.
    Done(u64),
    /// Failed with this errno.
    Failed(i32),
}

/// Bounded retries of a transfer that moved nothing (EINTR, EAGAIN).
const MAX_RETRIES: u32 = 16;

/// One vectored read or write that is repeated until `len` bytes moved; a
/// zero-length transfer is an error (EIO for reads, ENOSPC for writes), never
/// a silent success. Shared by the synchronous runner and the io_uring
/// executor, which resubmits [`Transfer::iov`] on [`Moved::More`].
pub(crate) struct Transfer {
    pub dir: Dir,
    iov: IoVecs,
    offset: u64,
    len: u64,
    done: u64,
    retries: u32,
}

impl Transfer {
    fn new(dir: Dir, iov: IoVecs, offset: u64, len: u64) -> Transfer {
        Transfer {
            dir,
            iov,
            offset,
            len,
            done: 0,
            retries: 0,
        }
    }

    /// The vectors still to transfer.
    pub(crate) fn iov(&self) -> &[IoVec] {
        &self.iov
    }

    /// The file offset of the first remaining byte.
    pub(crate) fn pos(&self) -> u64 {
        self.offset + self.done
    }

    /// Bytes still to transfer.
    pub(crate) fn remaining(&self) -> u64 {
        self.len - self.done
    }

    fn eof_errno(&self) -> i32 {
        match self.dir {
            Dir::Read => libc::EIO,
            Dir::Write { .. } => libc::ENOSPC,
        }
    }

    /// Accounts for one transfer's result (bytes or errno).
    pub(crate) fn moved(&mut self, r: Result<u64, i32>) -> Moved {
        let n = match r {
            // Nothing was transferred; try again (boundedly).
            Err(libc::EINTR | libc::EAGAIN) if self.retries < MAX_RETRIES => {
                self.retries += 1;
                return Moved::More;
            }
            Err(e) => return Moved::Failed(e),
            Ok(n) => n.min(self.remaining()),
        };
        if n == 0 {
            return Moved::Failed(self.eof_errno());
        }
        self.done += n;
        if self.done == self.len {
            return Moved::Done(self.done);
        }
        self.iov = sub_iovecs(&self.iov, n, self.len - self.done);
        Moved::More
    }

    /// Runs the transfer synchronously against `file`.
    fn run(mut self, file: &dyn HostFile) -> Result<u64, i32> {
        if self.len == 0 {
            return Ok(0);
        }
        loop {
            let r = match self.dir {
                Dir::Read => file.preadv(&self.iov, self.pos()),
                Dir::Write { dsync } => file.pwritev(&self.iov, self.pos(), dsync),
            };
            match self.moved(r.map(|n| n as u64).map_err(|e| errno_of(&e))) {
                Moved::More => {}
                Moved::Done(n) => return Ok(n),
                Moved::Failed(e) => return Err(e),
            }
        }
    }
}

fn bounce_iov(bounce: &mut Option<AlignedBuf>, at: u64, len: u64) -> Result<IoVecs, i32> {
    let b = bounce.as_mut().ok_or(libc::EINVAL)?;
    let end = at.checked_add(len).ok_or(libc::EINVAL)?;
    if end > b.len() as u64 {
        return Err(libc::EINVAL);
    }
    let s = &mut b.as_mut_slice()[at as usize..end as usize];
    // SAFETY: the bounce buffer's heap allocation is owned by the PlanRun
    // that holds the transfer using these vectors.
    Ok(smallvec![unsafe {
        IoVec::from_raw(s.as_mut_ptr(), s.len())
    }])
}

const ZERO_CHUNK: usize = 1 << 20;

/// The next host op of a plan that needs the host (CPU-only ops never
/// surface: [`PlanRun::next_io`] runs them).
pub(crate) enum NextIo {
    /// Every op ran; the request's result.
    End(u64),
    /// A read or write of the op at hand.
    Transfer(Transfer),
    /// The op at hand is a flush: go through the flush coordinator.
    Flush,
    /// Another op (fallocate, ioctl, explicit zero writes).
    Op(HostOp),
}

/// One request's plan in progress: the state both the synchronous runner
/// and the io_uring executor advance. It owns the request (whose buffer the
/// vectors point into) and the bounce buffer; both are heap allocations that
/// do not move when the `PlanRun` does.
pub(crate) struct PlanRun {
    pub req: Request,
    pub plan: Plan,
    bounce: Option<AlignedBuf>,
    req_iov: Result<IoVecs, IoError>,
    guest: bool,
    next: usize,
}

impl PlanRun {
    pub(crate) fn new(core: &DiskCore, mut req: Request, plan: Plan) -> PlanRun {
        let bounce = (plan.bounce_len > 0).then(|| core.bounce.take(plan.bounce_len as usize));
        let guest = matches!(req.buf, DataBuf::Guest(_));
        let req_iov = request_iovecs(&mut req.buf);
        PlanRun {
            req,
            plan,
            bounce,
            req_iov,
            guest,
            next: 0,
        }
    }

    /// The op at hand.
    fn op(&self) -> Option<HostOp> {
        self.plan.ops.get(self.next).copied()
    }

    /// Runs CPU-only ops (bounce copies) and returns the next op that needs
    /// the host, or the end of the plan.
    pub(crate) fn next_io(&mut self, core: &DiskCore) -> Result<NextIo, IoError> {
        if let Err(e) = &self.req_iov {
            return Err(*e);
        }
        loop {
            let Some(op) = self.op() else {
                return Ok(NextIo::End(match self.req.op {
                    Op::Read | Op::Write { .. } => self.req.len,
                    _ => 0,
                }));
            };
            let r: Result<u64, i32> = match op {
                HostOp::Read { offset, len, into }
                | HostOp::Write {
                    offset,
                    len,
                    from: into,
                    ..
                } => {
                    let iov = match into {
                        BufRef::Request => {
                            sub_iovecs(self.req_iov.as_deref().unwrap_or(&[]), 0, len)
                        }
                        BufRef::Bounce(at) => {
                            bounce_iov(&mut self.bounce, at, len).map_err(IoError::new)?
                        }
                    };
                    let dir = match op {
                        HostOp::Write { dsync, .. } => Dir::Write { dsync },
                        _ => Dir::Read,
                    };
                    if len > 0 {
                        return Ok(NextIo::Transfer(Transfer::new(dir, iov, offset, len)));
                    }
                    Ok(0)
                }
                HostOp::FillBounce { at, len } => {
                    let b = self.bounce.as_mut().ok_or(IoError::new(libc::EINVAL))?;
                    let dst = b
                        .as_mut_slice()
                        .get_mut(at as usize..(at + len) as usize)
                        .ok_or(IoError::new(libc::EINVAL))?;
                    let r = match &self.req.buf {
                        DataBuf::Guest(g) => g.copy_out(0, dst).map_err(|_| libc::EFAULT),
                        DataBuf::Owned(o) => o
                            .as_slice()
                            .get(..len as usize)
                            .map(|s| dst.copy_from_slice(s))
                            .ok_or(libc::EINVAL),
                        DataBuf::None => Err(libc::EINVAL),
                    };
                    r.map(|_| len)
                }
                HostOp::ZeroBounce { at, len } => {
                    let b = self.bounce.as_mut().ok_or(IoError::new(libc::EINVAL))?;
                    b.as_mut_slice()
                        .get_mut(at as usize..(at + len) as usize)
                        .ok_or(IoError::new(libc::EINVAL))?
                        .fill(0);
                    Ok(len)
                }
                HostOp::DrainBounce { at, len } => {
                    let b = self.bounce.as_ref().ok_or(IoError::new(libc::EINVAL))?;
                    let src = b
                        .as_slice()
                        .get(at as usize..(at + len) as usize)
                        .ok_or(IoError::new(libc::EINVAL))?;
                    let r = match &mut self.req.buf {
                        DataBuf::Guest(g) => g.copy_in(0, src).map_err(|_| libc::EFAULT),
                        DataBuf::Owned(o) => o
                            .as_mut_slice()
                            .get_mut(..len as usize)
                            .map(|d| d.copy_from_slice(src))
                            .ok_or(libc::EINVAL),
                        DataBuf::None => Err(libc::EINVAL),
                    };
                    r.map(|_| len)
                }
                HostOp::Fdatasync => return Ok(NextIo::Flush),
                _ => return Ok(NextIo::Op(op)),
            };
            self.op_done(core, r)?;
        }
    }

    /// The op at hand ended with `r`: the one place where an op's result
    /// becomes counters, flush generation, latch and trace, for every
    /// executor. Moves on to the next op unless the plan failed.
    pub(crate) fn op_done(&mut self, core: &DiskCore, r: Result<u64, i32>) -> Result<(), IoError> {
        let Some(op) = self.op() else {
            return Err(IoError::new(libc::EINVAL));
        };
        self.next += 1;
        let c = &core.counters;
        match (op, r) {
            (HostOp::Read { .. }, Ok(n)) => {
                c.bytes_read.fetch_add(n, Relaxed);
            }
            (HostOp::Write { dsync, .. }, Ok(n)) => {
                c.bytes_written.fetch_add(n, Relaxed);
                // An RWF_DSYNC write is durable on return: it leaves nothing
                // for a later flush to cover.
                if !dsync {
                    core.flush.write_completed();
                }
            }
            (HostOp::WriteZeroBuf { dsync, len, .. }, Ok(_)) => {
                c.bytes_written.fetch_add(len, Relaxed);
                if !dsync {
                    core.flush.write_completed();
                }
            }
            // The sync half of RWF_DSYNC may have consumed the file's
            // writeback error for other pages.
            (
                HostOp::Write { dsync: true, .. } | HostOp::WriteZeroBuf { dsync: true, .. },
                Err(e),
            ) => core.flush.latch_if_dirty(e),
            (HostOp::FillBounce { len, .. } | HostOp::DrainBounce { len, .. }, _) => {
                c.bytes_bounced.fetch_add(len, Relaxed);
            }
            (
                HostOp::PunchHole { .. }
                | HostOp::BlkDiscard { .. }
                | HostOp::ZeroRange { .. }
                | HostOp::BlkZeroout { .. },
                Ok(_),
            ) => core.flush.write_completed(),
            _ => {}
        }
        let on_guest = self.guest && crate::trace::touches_request_buf(&op);
        core.trace
            .record(self.req.tag, op, core.policy.direct, on_guest, r);
        match r {
            Ok(_) => Ok(()),
            // Discard is advisory: an unsupported punch/discard is success.
            Err(e)
                if self.req.op == Op::Discard
                    && matches!(e, libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS) =>
            {
                Ok(())
            }
            Err(e) => Err(IoError::new(e)),
        }
    }

    /// The flush at hand was decided: counters, then the next op. (The
    /// `fdatasync` itself is traced by [`sync_ended`] when it was issued.)
    pub(crate) fn flush_done(&mut self, core: &DiskCore, o: FlushOutcome) -> Result<(), IoError> {
        self.next += 1;
        match o {
            FlushOutcome::Synced => Ok(()),
            FlushOutcome::Shared => {
                core.counters.flushes_shared.fetch_add(1, Relaxed);
                Ok(())
            }
            FlushOutcome::Elided => {
                core.counters.flushes_elided.fetch_add(1, Relaxed);
                Ok(())
            }
            FlushOutcome::Failed(e) => Err(IoError::new(e)),
            FlushOutcome::Latched(e) => Err(IoError {
                errno: e,
                latched: true,
            }),
        }
    }
}

/// An `fdatasync` is about to be issued.
pub(crate) fn sync_started(core: &DiskCore) {
    core.counters.fdatasyncs.fetch_add(1, Relaxed);
}

/// An `fdatasync` issued for request `tag` returned `r`.
pub(crate) fn sync_ended(core: &DiskCore, tag: u64, r: Result<(), i32>) {
    core.trace.record(
        tag,
        HostOp::Fdatasync,
        core.policy.direct,
        false,
        r.map(|_| 0),
    );
}

/// A flush through the blocking coordinator path, with a synchronous
/// `fdatasync` when one is needed (`tag` is recorded in the trace).
pub(crate) fn blocking_flush(core: &DiskCore, tag: u64) -> FlushOutcome {
    core.flush.flush(|| {
        sync_started(core);
        let r = core.file.fdatasync();
        sync_ended(core, tag, r.as_ref().map(|_| ()).map_err(errno_of));
        r
    })
}

/// Runs a non-transfer op synchronously (fallocate, ioctls, zero writes).
pub(crate) fn run_op_sync(file: &dyn HostFile, op: HostOp) -> Result<u64, i32> {
    let unit = |r: io::Result<()>, len: u64| r.map(|_| len).map_err(|e| errno_of(&e));
    match op {
        HostOp::PunchHole { offset, len } => unit(file.punch_hole(offset, len), len),
        HostOp::ZeroRange { offset, len } => unit(file.zero_range(offset, len), len),
        HostOp::BlkDiscard { offset, len } => unit(file.blk_discard(offset, len), len),
        HostOp::BlkZeroout { offset, len } => unit(file.blk_zeroout(offset, len), len),
        HostOp::WriteZeroBuf { offset, len, dsync } => {
            let mut zeroes = AlignedBuf::new(ZERO_CHUNK.min(len as usize));
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeroes.len() as u64);
                // SAFETY: `zeroes` outlives the transfer; the kernel only
                // reads from it.
                let iov = smallvec![unsafe {
                    IoVec::from_raw(zeroes.as_mut_slice().as_mut_ptr(), n as usize)
                }];
                Transfer::new(Dir::Write { dsync }, iov, offset + done, n).run(file)?;
                done += n;
            }
            Ok(len)
        }
        // Transfers, copies and flushes are not run here.
        _ => Err(libc::EINVAL),
    }
}

/// The synchronous runner (inline executor, thread pool, `Disk::execute`).
fn run_plan(core: &DiskCore, run: &mut PlanRun) -> Result<u64, IoError> {
    latch_check(core, &run.plan, run.req.op)?;
    let _guard = run.plan.lock.map(|(a, b)| core.ranges.lock(a, b));
    loop {
        match run.next_io(core)? {
            NextIo::End(n) => return Ok(n),
            NextIo::Transfer(t) => {
                let r = t.run(&*core.file);
                run.op_done(core, r)?;
            }
            NextIo::Flush => {
                let o = blocking_flush(core, run.req.tag);
                run.flush_done(core, o)?;
            }
            NextIo::Op(op) => {
                let r = run_op_sync(&*core.file, op);
                run.op_done(core, r)?;
            }
        }
    }
}

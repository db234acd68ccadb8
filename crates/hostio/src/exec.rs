//! Executors: run a [`Plan`]'s host ops against the disk's [`HostFile`].
//!
//! Every executor calls the same [`run_plan`], so the semantics (short-I/O
//! retry, flush coordination, latch, trace, counters) are identical; they
//! differ only in where the work runs and how completions come back:
//! - [`ExecutorKind::Inline`]: on the submitting thread; completions are
//!   queued for the next `poll`.
//! - [`ExecutorKind::Threads`]: a pool of worker threads; completions are
//!   queued and signalled through an eventfd a VMM event loop can poll.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::buf::{AlignedBuf, DataBuf};
use crate::disk::DiskCore;
use crate::file::IoVec;
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
}

/// A request that finished executing (before the error policy is applied).
pub(crate) struct Finished {
    pub req: Request,
    pub result: Result<u64, IoError>,
}

pub(crate) trait Executor: Send + Sync {
    fn submit(&self, core: &Arc<DiskCore>, req: Request, plan: Plan);
    fn take(&self) -> Vec<Finished>;
    /// Blocks until at least one finished request is queued or nothing is in
    /// flight.
    fn wait(&self);
    fn notify_fd(&self) -> Option<RawFd>;
}

/// Completion queue shared by executors.
#[derive(Default)]
pub(crate) struct DoneQueue {
    q: Mutex<(VecDeque<Finished>, usize)>,
    cv: Condvar,
}

impl DoneQueue {
    fn started(&self) {
        self.q.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
    }
    fn push(&self, f: Finished) {
        let mut g = self.q.lock().unwrap_or_else(|e| e.into_inner());
        g.0.push_back(f);
        g.1 -= 1;
        self.cv.notify_all();
    }
    fn take(&self) -> Vec<Finished> {
        self.q
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .drain(..)
            .collect()
    }
    fn wait(&self) {
        let mut g = self.q.lock().unwrap_or_else(|e| e.into_inner());
        while g.0.is_empty() && g.1 > 0 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
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
        let f = run_job(core, req, &plan);
        self.done.push(f);
    }
    fn take(&self) -> Vec<Finished> {
        self.done.take()
    }
    fn wait(&self) {}
    fn notify_fd(&self) -> Option<RawFd> {
        None
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
                        let f = run_job(&core, req, &plan);
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
                let f = run_job(&core, req, &plan);
                self.done.push(f);
            }
        }
    }
    fn take(&self) -> Vec<Finished> {
        let _ = self.efd.read();
        self.done.take()
    }
    fn wait(&self) {
        self.done.wait();
    }
    fn notify_fd(&self) -> Option<RawFd> {
        Some(self.efd.as_raw_fd())
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

/// Runs one request's plan and accounts for it.
pub(crate) fn run_job(core: &DiskCore, mut req: Request, plan: &Plan) -> Finished {
    let result = run_plan(core, &mut req, plan);
    if !plan.durable && req.op.is_write() {
        core.volatile_done();
    }
    if let Err(e) = &result {
        core.counters.error(e.errno);
    }
    Finished { req, result }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The request buffer as I/O vectors (guest memory or owned buffer).
fn request_iovecs(buf: &mut DataBuf) -> Result<Vec<IoVec>, IoError> {
    match buf {
        DataBuf::None => Ok(Vec::new()),
        DataBuf::Owned(b) => {
            // SAFETY: the AlignedBuf is owned by the request, which outlives
            // every use of these vectors inside run_plan.
            Ok(vec![unsafe {
                IoVec::from_raw(b.as_mut_slice().as_mut_ptr(), b.len())
            }])
        }
        DataBuf::Guest(g) => {
            let slices = g.slices().ok_or(IoError::new(libc::EFAULT))?;
            Ok(slices
                .iter()
                .map(|s| {
                    // SAFETY: the slice maps guest memory kept alive by the
                    // request's Arc<GuestMemoryMmap> for the whole plan.
                    unsafe { IoVec::from_raw(s.ptr_guard_mut().as_ptr(), s.len()) }
                })
                .collect())
        }
    }
}

/// Sub-range `[at, at+len)` of a vector list.
fn sub_iovecs(iov: &[IoVec], mut at: u64, mut len: u64) -> Vec<IoVec> {
    let mut out = Vec::new();
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

/// Repeats a vectored transfer until `len` bytes moved; a zero-length
/// transfer is an error (`eof_errno`), never a silent success.
fn full_transfer(
    mut iov: Vec<IoVec>,
    offset: u64,
    len: u64,
    eof_errno: i32,
    mut f: impl FnMut(&[IoVec], u64) -> io::Result<usize>,
) -> Result<u64, i32> {
    let mut done = 0u64;
    let mut interrupted = 0;
    while done < len {
        let n = match f(&iov, offset + done) {
            Ok(n) => n as u64,
            // Nothing was transferred; try again (boundedly).
            Err(e) if e.raw_os_error() == Some(libc::EINTR) && interrupted < 16 => {
                interrupted += 1;
                continue;
            }
            Err(e) => return Err(errno_of(&e)),
        };
        if n == 0 {
            return Err(eof_errno);
        }
        done += n;
        iov = sub_iovecs(&iov, n, len - done);
    }
    Ok(done)
}

fn bounce_iov(bounce: &mut Option<AlignedBuf>, at: u64, len: u64) -> Result<Vec<IoVec>, i32> {
    let b = bounce.as_mut().ok_or(libc::EINVAL)?;
    let end = at.checked_add(len).ok_or(libc::EINVAL)?;
    if end > b.len() as u64 {
        return Err(libc::EINVAL);
    }
    let s = &mut b.as_mut_slice()[at as usize..end as usize];
    // SAFETY: the bounce buffer lives until run_plan returns.
    Ok(vec![unsafe { IoVec::from_raw(s.as_mut_ptr(), s.len()) }])
}

const ZERO_CHUNK: usize = 1 << 20;

fn run_plan(core: &DiskCore, req: &mut Request, plan: &Plan) -> Result<u64, IoError> {
    let latched = |e: i32| IoError {
        errno: e,
        latched: true,
    };
    if plan.durable && req.op != Op::Flush {
        if let Some(e) = core.flush.latched() {
            return Err(latched(e));
        }
    }
    let _guard = plan.lock.map(|(a, b)| core.ranges.lock(a, b));
    let mut bounce = (plan.bounce_len > 0).then(|| AlignedBuf::new(plan.bounce_len as usize));
    let guest = matches!(req.buf, DataBuf::Guest(_));
    let req_iov = request_iovecs(&mut req.buf)?;
    let direct = core.policy.direct;
    let tag = req.tag;
    let file = &core.file;
    for op in &plan.ops {
        let on_guest = guest && crate::trace::touches_request_buf(op);
        let r: Result<u64, i32> = match *op {
            HostOp::Read { offset, len, into } => {
                let iov = match into {
                    BufRef::Request => sub_iovecs(&req_iov, 0, len),
                    BufRef::Bounce(at) => bounce_iov(&mut bounce, at, len).map_err(IoError::new)?,
                };
                let r = full_transfer(iov, offset, len, libc::EIO, |v, o| file.preadv(v, o));
                if let Ok(n) = r {
                    core.counters.bytes_read.fetch_add(n, Relaxed);
                }
                r
            }
            HostOp::Write {
                offset,
                len,
                from,
                dsync,
            } => {
                let iov = match from {
                    BufRef::Request => sub_iovecs(&req_iov, 0, len),
                    BufRef::Bounce(at) => bounce_iov(&mut bounce, at, len).map_err(IoError::new)?,
                };
                let r = full_transfer(iov, offset, len, libc::ENOSPC, |v, o| {
                    file.pwritev(v, o, dsync)
                });
                match r {
                    Ok(n) => {
                        core.counters.bytes_written.fetch_add(n, Relaxed);
                        // An RWF_DSYNC write is durable on return: it leaves
                        // nothing for a later flush to cover.
                        if !dsync {
                            core.flush.write_completed();
                        }
                    }
                    // The sync half of RWF_DSYNC may have consumed the file's
                    // writeback error for other pages.
                    Err(e) if dsync => core.flush.latch_if_dirty(e),
                    Err(_) => {}
                }
                r
            }
            HostOp::FillBounce { at, len } => {
                let b = bounce.as_mut().ok_or(IoError::new(libc::EINVAL))?;
                let dst = b
                    .as_mut_slice()
                    .get_mut(at as usize..(at + len) as usize)
                    .ok_or(IoError::new(libc::EINVAL))?;
                let r = match &req.buf {
                    DataBuf::Guest(g) => g.copy_out(0, dst).map_err(|_| libc::EFAULT),
                    DataBuf::Owned(o) => o
                        .as_slice()
                        .get(..len as usize)
                        .map(|s| dst.copy_from_slice(s))
                        .ok_or(libc::EINVAL),
                    DataBuf::None => Err(libc::EINVAL),
                };
                core.counters.bytes_bounced.fetch_add(len, Relaxed);
                r.map(|_| len)
            }
            HostOp::ZeroBounce { at, len } => {
                let b = bounce.as_mut().ok_or(IoError::new(libc::EINVAL))?;
                b.as_mut_slice()
                    .get_mut(at as usize..(at + len) as usize)
                    .ok_or(IoError::new(libc::EINVAL))?
                    .fill(0);
                Ok(len)
            }
            HostOp::DrainBounce { at, len } => {
                let b = bounce.as_ref().ok_or(IoError::new(libc::EINVAL))?;
                let src = b
                    .as_slice()
                    .get(at as usize..(at + len) as usize)
                    .ok_or(IoError::new(libc::EINVAL))?;
                let r = match &mut req.buf {
                    DataBuf::Guest(g) => g.copy_in(0, src).map_err(|_| libc::EFAULT),
                    DataBuf::Owned(o) => o
                        .as_mut_slice()
                        .get_mut(..len as usize)
                        .map(|d| d.copy_from_slice(src))
                        .ok_or(libc::EINVAL),
                    DataBuf::None => Err(libc::EINVAL),
                };
                core.counters.bytes_bounced.fetch_add(len, Relaxed);
                r.map(|_| len)
            }
            HostOp::Fdatasync => {
                let outcome = core.flush.flush(|| {
                    core.counters.fdatasyncs.fetch_add(1, Relaxed);
                    let r = file.fdatasync();
                    core.trace.record(
                        tag,
                        HostOp::Fdatasync,
                        direct,
                        false,
                        r.as_ref().map(|_| 0).map_err(errno_of),
                    );
                    r
                });
                match outcome {
                    FlushOutcome::Synced => {}
                    FlushOutcome::Shared => {
                        core.counters.flushes_shared.fetch_add(1, Relaxed);
                    }
                    FlushOutcome::Elided => {
                        core.counters.flushes_elided.fetch_add(1, Relaxed);
                    }
                    FlushOutcome::Failed(e) => return Err(IoError::new(e)),
                    FlushOutcome::Latched(e) => return Err(latched(e)),
                }
                // Recorded inside the closure when actually issued.
                continue;
            }
            HostOp::PunchHole { offset, len } | HostOp::BlkDiscard { offset, len } => {
                let r = if matches!(op, HostOp::PunchHole { .. }) {
                    file.punch_hole(offset, len)
                } else {
                    file.blk_discard(offset, len)
                };
                match r {
                    Ok(()) => {
                        core.flush.write_completed();
                        Ok(len)
                    }
                    Err(e) => Err(errno_of(&e)),
                }
            }
            HostOp::ZeroRange { offset, len } | HostOp::BlkZeroout { offset, len } => {
                let r = if matches!(op, HostOp::ZeroRange { .. }) {
                    file.zero_range(offset, len)
                } else {
                    file.blk_zeroout(offset, len)
                };
                match r {
                    Ok(()) => {
                        core.flush.write_completed();
                        Ok(len)
                    }
                    Err(e) => Err(errno_of(&e)),
                }
            }
            HostOp::WriteZeroBuf { offset, len, dsync } => {
                let zeroes = AlignedBuf::new(ZERO_CHUNK.min(len as usize));
                let mut done = 0u64;
                let mut res = Ok(len);
                while done < len {
                    let n = (len - done).min(zeroes.len() as u64);
                    // SAFETY: `zeroes` outlives the transfer; the kernel only
                    // reads from it.
                    let iov = vec![unsafe {
                        IoVec::from_raw(zeroes.as_slice().as_ptr() as *mut u8, n as usize)
                    }];
                    if let Err(e) = full_transfer(iov, offset + done, n, libc::ENOSPC, |v, o| {
                        file.pwritev(v, o, dsync)
                    }) {
                        if dsync {
                            core.flush.latch_if_dirty(e);
                        }
                        res = Err(e);
                        break;
                    }
                    done += n;
                }
                if res.is_ok() {
                    core.counters.bytes_written.fetch_add(len, Relaxed);
                    if !dsync {
                        core.flush.write_completed();
                    }
                }
                res
            }
        };
        core.trace.record(tag, *op, direct, on_guest, r);
        match r {
            Ok(_) => {}
            // Discard is advisory: an unsupported punch/discard is success.
            Err(e)
                if req.op == Op::Discard
                    && matches!(e, libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS) => {}
            Err(e) => return Err(IoError::new(e)),
        }
    }
    Ok(match req.op {
        Op::Read | Op::Write { .. } => req.len,
        _ => 0,
    })
}

//! [`Disk`]: one open image with its policy, caps, live write-cache state,
//! flush coordinator, counters, trace and executor. This is what front ends
//! hold.
//!
//! Lifecycle and contracts for front ends:
//! - [`Disk::submit`] validates (typed [`RequestError`], no host I/O on
//!   rejection), plans and hands the request to the executor. Completions
//!   come back from [`Disk::poll`] (or [`Disk::wait`]); with the thread pool
//!   or io_uring the [`Disk::notify_fd`] eventfd becomes readable when there
//!   may be some (io_uring has no thread of its own: `poll` reaps the ring).
//! - [`Disk::execute`] runs one request synchronously on the caller's thread
//!   (simple front ends, tests).
//! - A failed request whose direction's [`crate::ErrorAction`] holds it
//!   produces no completion: it waits in the disk until the VMM calls
//!   [`Disk::resume_held`], which re-plans and resubmits it.
//! - [`Disk::set_write_cache`]`(false)` waits for in-flight volatile writes,
//!   flushes, and only then returns: writes completed after the switch are
//!   FUA, writes completed before it are covered by the flush.

use std::fs::OpenOptions;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::buf::DataBuf;
use crate::caps::HostCaps;
use crate::counters::{CounterSnapshot, Counters};
use crate::exec::{self, Executor, ExecutorKind, Finished};
use crate::file::{HostFile, RealFile};
use crate::flush::{FlushCoordinator, FlushOutcome, Sabotage};
use crate::plan::{self, BufShape, Plan, RequestShape};
use crate::policy::Policy;
use crate::request::{Op, Request, RequestError};
use crate::trace::Trace;
use crate::IoError;

/// Options for opening a disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskOptions {
    /// Which executor runs host I/O.
    pub executor: ExecutorKind,
    /// Start with the trace recorder on.
    pub trace: bool,
    /// Known-bad behaviours, for proving the test suite catches them.
    #[doc(hidden)]
    pub sabotage: Sabotage,
    /// How many `fdatasync`s the flush coordinator may run at once (0:
    /// [`crate::flush::DEFAULT_MAX_SYNCS`]; at most
    /// [`crate::flush::MAX_SYNCS_IN_FLIGHT`]). See `docs/durability.md`.
    pub max_syncs_in_flight: usize,
    /// io_uring only: for how many microseconds a thread that blocks for a
    /// completion ([`Disk::wait`], [`Disk::drain`], [`Disk::execute`],
    /// [`Disk::set_write_cache`]) polls the completion ring before it
    /// sleeps in the kernel (at most [`MAX_POLL_US`]; 0, the default, never
    /// polls). Polling trades CPU for latency: a sleeping vCPU of a virtual
    /// host takes tens of microseconds to wake (`docs/performance.md`).
    pub poll_us: u32,
}

/// The longest completion polling [`DiskOptions::poll_us`] allows.
pub const MAX_POLL_US: u32 = 1000;

/// Why a disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The image could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The probe failed.
    #[error("cannot probe {path}: {source}")]
    Probe {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The image does not fit the policy.
    #[error("{0}")]
    Unsuitable(String),
    /// The executor could not be started.
    #[error("cannot start executor: {0}")]
    Executor(std::io::Error),
}

/// Serialises overlapping ranges (read-modify-write under `O_DIRECT`).
#[derive(Debug, Default)]
pub(crate) struct RangeLock {
    held: Mutex<Vec<(u64, u64)>>,
    cv: Condvar,
}

pub(crate) struct RangeGuard<'a> {
    lock: &'a RangeLock,
    range: (u64, u64),
}

impl RangeLock {
    pub(crate) fn lock(&self, a: u64, b: u64) -> RangeGuard<'_> {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while h.iter().any(|&(x, y)| x < b && a < y) {
            h = self.cv.wait(h).unwrap_or_else(|e| e.into_inner());
        }
        h.push((a, b));
        RangeGuard {
            lock: self,
            range: (a, b),
        }
    }
}

impl RangeLock {
    /// Takes `[a, b)` if no overlapping range is held (never blocks); release
    /// it with [`RangeLock::release`].
    pub(crate) fn try_acquire(&self, a: u64, b: u64) -> bool {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if h.iter().any(|&(x, y)| x < b && a < y) {
            return false;
        }
        h.push((a, b));
        true
    }

    /// Releases a range taken by [`RangeLock::lock`] or
    /// [`RangeLock::try_acquire`].
    pub(crate) fn release(&self, a: u64, b: u64) {
        let mut h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = h.iter().position(|r| *r == (a, b)) {
            h.swap_remove(i);
        }
        self.cv.notify_all();
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(self.range.0, self.range.1);
    }
}

/// State shared between the disk and its executor threads.
pub(crate) struct DiskCore {
    pub file: Arc<dyn HostFile>,
    pub policy: Policy,
    pub caps: HostCaps,
    pub wce: AtomicBool,
    pub flush: FlushCoordinator,
    pub counters: Counters,
    pub trace: Arc<Trace>,
    pub ranges: RangeLock,
    pub sabotage: Sabotage,
    /// Reused bounce buffers.
    pub(crate) bounce: crate::buf::BouncePool,
    volatile: Mutex<Volatile>,
    volatile_cv: Condvar,
}

/// Volatile writes in flight, and the threads waiting for them to drain.
#[derive(Debug, Default)]
struct Volatile {
    count: u64,
    /// Threads blocked in [`Disk::set_write_cache`]; only they need a
    /// wake-up (std's `notify_all` is a syscall even with no waiter).
    waiters: usize,
}

impl DiskCore {
    pub(crate) fn volatile_done(&self) {
        let mut v = self.volatile.lock().unwrap_or_else(|e| e.into_inner());
        v.count = v.count.saturating_sub(1);
        if v.waiters > 0 {
            self.volatile_cv.notify_all();
        }
    }
}

/// A completed request.
#[derive(Debug)]
pub struct Completion {
    /// The request's tag.
    pub tag: u64,
    /// The request's op.
    pub op: Op,
    /// Bytes transferred (reads/writes) or 0, or the host error.
    pub result: Result<u64, IoError>,
    /// The request's buffer, returned (read data for owned buffers).
    pub buf: DataBuf,
}

/// Result of [`Disk::execute`].
#[derive(Debug)]
pub enum Outcome {
    /// The request completed (successfully or not).
    Done(Completion),
    /// The request failed and is held by the `stop` error policy.
    Held,
}

/// Which executor a disk actually runs (see [`Disk::executor_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorInfo {
    /// What [`DiskOptions::executor`] asked for.
    pub requested: ExecutorKind,
    /// What runs: `"inline"`, `"threads"`, `"io_uring"` (the kernel ring)
    /// or `"io_uring-emulated"` (the io_uring state machine over a
    /// [`HostFile`] without a descriptor, e.g. the crash model).
    pub active: &'static str,
    /// Why io_uring was asked for but the thread pool runs instead.
    pub fallback: Option<String>,
}

/// One open image. See the module docs.
pub struct Disk {
    core: Arc<DiskCore>,
    exec: Box<dyn Executor>,
    held: Mutex<Vec<Request>>,
    info: ExecutorInfo,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("policy", &self.core.policy)
            .field("size", &self.core.caps.size)
            .finish()
    }
}

impl Disk {
    /// Opens and probes the image at `path`.
    pub fn open(path: &Path, policy: Policy, opts: DiskOptions) -> Result<Disk, OpenError> {
        let p = path.display().to_string();
        let mut oo = OpenOptions::new();
        oo.read(true).write(!policy.read_only);
        let mut flags = libc::O_CLOEXEC;
        if policy.direct {
            flags |= libc::O_DIRECT;
        }
        oo.custom_flags(flags);
        let file = oo.open(path).map_err(|source| OpenError::Open {
            path: p.clone(),
            source,
        })?;
        let report = crate::probe::probe_file(&file, path, policy.direct).map_err(|source| {
            OpenError::Probe {
                path: p.clone(),
                source,
            }
        })?;
        let caps = report.caps;
        if policy.direct && caps.size % u64::from(caps.dio_offset_align) != 0 {
            return Err(OpenError::Unsuitable(format!(
                "{p}: size {} is not a multiple of the O_DIRECT alignment {}; \
                 resize the image or use a buffered cache mode (writeback, writethrough)",
                caps.size, caps.dio_offset_align
            )));
        }
        Disk::from_host_file(Arc::new(RealFile::new(file)), caps, policy, opts)
    }

    /// A disk over any [`HostFile`] (the crash model, fault injection, tests).
    pub fn from_host_file(
        file: Arc<dyn HostFile>,
        caps: HostCaps,
        policy: Policy,
        opts: DiskOptions,
    ) -> Result<Disk, OpenError> {
        let mut fallback = None;
        let exec: Box<dyn Executor> = match opts.executor {
            ExecutorKind::Inline => Box::<exec::Inline>::default(),
            ExecutorKind::Threads(n) => Box::new(exec::Pool::new(n).map_err(OpenError::Executor)?),
            ExecutorKind::IoUring { entries } => {
                match crate::uring::Uring::new(entries, opts.poll_us.min(MAX_POLL_US), &*file) {
                    Ok(u) => Box::new(u),
                    Err(why) => {
                        let pool = exec::Pool::new(crate::uring::FALLBACK_THREADS)
                            .map_err(OpenError::Executor)?;
                        fallback = Some(why);
                        Box::new(pool)
                    }
                }
            }
        };
        let info = ExecutorInfo {
            requested: opts.executor,
            active: exec.name(),
            fallback,
        };
        let trace = Arc::new(Trace::default());
        trace.enable(opts.trace);
        let counters = Counters::default();
        counters.set_executor(info.active, info.fallback.clone());
        let core = Arc::new(DiskCore {
            file,
            wce: AtomicBool::new(policy.write_cache),
            policy,
            caps,
            flush: FlushCoordinator::with_limits(opts.sabotage, opts.max_syncs_in_flight),
            counters,
            trace,
            ranges: RangeLock::default(),
            sabotage: opts.sabotage,
            bounce: Default::default(),
            volatile: Mutex::new(Volatile::default()),
            volatile_cv: Condvar::new(),
        });
        if let Some(p) = exec.flush_progress() {
            core.flush.set_progress(p);
        }
        if let Some(w) = exec.flush_waker() {
            core.flush.set_waker(w);
        }
        Ok(Disk {
            core,
            exec,
            held: Mutex::new(Vec::new()),
            info,
        })
    }

    /// The executor actually in use, and why io_uring fell back to the
    /// thread pool if it did.
    pub fn executor_info(&self) -> &ExecutorInfo {
        &self.info
    }

    /// Starts a batch: until the matching [`Disk::unplug`], submissions are
    /// queued without entering the kernel, so a front end handling one
    /// queue notification submits all its requests with one
    /// `io_uring_enter`. Nests. A no-op for the other executors.
    pub fn plug(&self) {
        self.exec.plug();
    }

    /// Ends a batch started by [`Disk::plug`] and submits what it queued.
    pub fn unplug(&self) {
        self.exec.unplug();
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.core.policy
    }

    /// The host caps.
    pub fn caps(&self) -> &HostCaps {
        &self.core.caps
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.core.caps.size
    }

    /// Logical block size in bytes.
    pub fn logical_block_size(&self) -> u32 {
        self.core.caps.logical_block_size
    }

    /// Whether the disk refuses modifications.
    pub fn read_only(&self) -> bool {
        self.core.policy.read_only
    }

    /// The live guest-visible write cache state.
    pub fn write_cache(&self) -> bool {
        self.core.wce.load(Ordering::SeqCst)
    }

    /// The trace recorder.
    pub fn trace(&self) -> &Trace {
        &self.core.trace
    }

    /// A copy of the counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.core.counters.snapshot()
    }

    /// The latched flush errno, if a flush failed since open.
    pub fn latched_error(&self) -> Option<i32> {
        self.core.flush.latched()
    }

    /// Flushes currently being coordinated (for deterministic tests).
    #[doc(hidden)]
    pub fn flushes_inside(&self) -> usize {
        self.core.flush.flushes_inside()
    }

    /// The eventfd signalled when completions are ready (thread pool and
    /// io_uring; `None` for the inline executor). With io_uring the kernel
    /// signals it when it posts a completion, which only [`Disk::poll`] (or
    /// a blocking call) turns into a [`Completion`]: when it is readable,
    /// call `poll`. A `poll` may then find nothing (a blocking call on
    /// another thread took them first), and after [`Disk::wait`] it may
    /// stay readable once more than needed.
    pub fn notify_fd(&self) -> Option<RawFd> {
        self.exec.notify_fd()
    }

    fn shape(&self, req: &Request) -> RequestShape {
        let caps = &self.core.caps;
        let buf = match &req.buf {
            DataBuf::None => BufShape::None,
            DataBuf::Owned(_) => BufShape::Owned,
            DataBuf::Guest(g) => {
                let ma = u64::from(caps.dio_mem_align.max(1));
                let oa = caps.dio_offset_align.max(1) as usize;
                let mut aligned = true;
                let mapped = g.for_each_slice(|s| {
                    aligned =
                        aligned && (s.ptr_guard().as_ptr() as u64) % ma == 0 && s.len() % oa == 0;
                });
                let aligned = mapped && aligned;
                BufShape::Guest { aligned }
            }
        };
        RequestShape {
            op: req.op,
            offset: req.offset,
            len: req.len,
            buf,
        }
    }

    fn plan(&self, req: &Request) -> Plan {
        let c = &self.core;
        let wce = self.write_cache() || c.sabotage.wce_off_not_fua;
        let mut p = plan::plan(&self.shape(req), &c.policy, wce, &c.caps);
        if c.sabotage.skip_flush_when_direct && c.policy.direct && req.op == Op::Flush {
            p.ops.clear();
        }
        // With O_DIRECT and an offset alignment coarser than the logical
        // block, read-modify-write can happen: every modifying request then
        // locks its aligned extent so an RMW never writes back stale data
        // over a concurrent write.
        let oa = u64::from(c.caps.dio_offset_align);
        if c.policy.direct
            && oa > u64::from(c.caps.logical_block_size)
            && req.op.is_write()
            && p.lock.is_none()
        {
            let a0 = req.offset - req.offset % oa;
            let a1 = (req.offset + req.len).div_ceil(oa) * oa;
            p.lock = Some((a0, a1));
        }
        p
    }

    fn validate(&self, req: &Request) -> Result<(), RequestError> {
        let c = &self.core;
        req.validate(c.caps.size, c.caps.logical_block_size, c.policy.read_only)
    }

    fn start(&self, req: &Request) -> Plan {
        if !req.op.is_write() {
            return self.plan(req);
        }
        // Plan under the volatile-count lock. `set_write_cache(false)` turns
        // the cache off and then waits on this lock for the count to drain,
        // so a write either read the cache as on and is counted before that
        // wait looks, or reads it as off and is planned durable. Planning
        // first and counting after would let a volatile write slip past a
        // completed write-cache disable.
        let mut volatile = self.core.volatile.lock().unwrap_or_else(|e| e.into_inner());
        let plan = self.plan(req);
        if !plan.durable {
            volatile.count += 1;
        }
        plan
    }

    /// Volatile (non-durable) writes planned and not yet completed (tests).
    #[doc(hidden)]
    pub fn volatile_in_flight(&self) -> u64 {
        self.core
            .volatile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .count
    }

    /// Validates, plans and submits `req`. See the module docs.
    pub fn submit(&self, req: Request) -> Result<(), RequestError> {
        self.validate(&req)?;
        self.core.counters.request(req.op);
        let plan = self.start(&req);
        self.exec.submit(&self.core, req, plan);
        Ok(())
    }

    /// Runs `req` on this thread and returns its outcome.
    pub fn execute(&self, req: Request) -> Result<Outcome, RequestError> {
        self.validate(&req)?;
        self.core.counters.request(req.op);
        let plan = self.start(&req);
        let f = self.exec.execute(&self.core, req, plan);
        Ok(match self.finish(f) {
            Some(c) => Outcome::Done(c),
            None => Outcome::Held,
        })
    }

    fn finish(&self, f: Finished) -> Option<Completion> {
        if let Err(e) = &f.result {
            let action = if f.req.op == Op::Read {
                self.core.policy.errors.read
            } else {
                self.core.policy.errors.write
            };
            if action.holds(e.errno) {
                self.core
                    .counters
                    .held
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(f.req);
                return None;
            }
        }
        Some(Completion {
            tag: f.req.tag,
            op: f.req.op,
            result: f.result,
            buf: f.req.buf,
        })
    }

    /// Completions ready now (never blocks).
    pub fn poll(&self) -> Vec<Completion> {
        let mut out = Vec::new();
        self.poll_into(&mut out);
        out
    }

    /// [`Disk::poll`] appending to `out`, so a caller that keeps one vector
    /// allocates nothing per call.
    pub fn poll_into(&self, out: &mut Vec<Completion>) {
        self.exec.take_each(&mut |f| {
            if let Some(c) = self.finish(f) {
                out.push(c);
            }
        });
    }

    /// Blocks until at least one completion is ready (or nothing is in
    /// flight), then returns what is ready. The [`Disk::notify_fd`] eventfd
    /// may stay readable afterwards (the next `poll` clears it).
    pub fn wait(&self) -> Vec<Completion> {
        let mut out = Vec::new();
        self.wait_into(&mut out);
        out
    }

    /// [`Disk::wait`] appending to `out`.
    pub fn wait_into(&self, out: &mut Vec<Completion>) {
        self.exec.wait();
        self.exec.take_waited(&mut |f| {
            if let Some(c) = self.finish(f) {
                out.push(c);
            }
        });
    }

    /// Number of requests held by the `stop` error policy.
    pub fn held_count(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Resubmits every held request (the VMM resolved the cause). Their
    /// completions arrive through [`Disk::poll`]. Returns how many.
    pub fn resume_held(&self) -> usize {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        let n = held.len();
        for req in held {
            let plan = self.start(&req);
            self.exec.submit(&self.core, req, plan);
        }
        n
    }

    /// Drops every held request, returning their tags (device reset).
    pub fn cancel_held(&self) -> Vec<u64> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .map(|r| r.tag)
            .collect()
    }

    /// Sets the guest-visible write cache. Turning it off first makes every
    /// later write FUA, then waits for in-flight volatile writes and flushes;
    /// it returns only when every write completed so far is durable. The
    /// flush's error (e.g. a latched one) is returned; the cache stays off.
    pub fn set_write_cache(&self, on: bool) -> Result<(), IoError> {
        let was = self.core.wce.swap(on, Ordering::SeqCst);
        if on || self.core.policy.no_flush {
            return Ok(());
        }
        let _ = was; // Even if it was already off, a flush is cheap and safe.
        let drained = || {
            self.core
                .volatile
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .count
                == 0
        };
        // io_uring: this thread may be the one that has to reap them.
        if !self.exec.wait_until(&drained) {
            let mut v = self.core.volatile.lock().unwrap_or_else(|e| e.into_inner());
            while v.count > 0 {
                v.waiters += 1;
                v = self
                    .core
                    .volatile_cv
                    .wait(v)
                    .unwrap_or_else(|e| e.into_inner());
                v.waiters -= 1;
            }
        }
        self.sync_now()
    }

    /// Restores the policy's write-cache default (virtio-blk reset).
    pub fn restore_default_write_cache(&self) -> Result<(), IoError> {
        self.set_write_cache(self.core.policy.write_cache)
    }

    /// A flush issued by the engine itself (not counted as a guest flush).
    pub fn sync_now(&self) -> Result<(), IoError> {
        if self.core.policy.no_flush {
            return Ok(());
        }
        match exec::blocking_flush(&self.core, u64::MAX) {
            FlushOutcome::Failed(e) => Err(IoError::new(e)),
            FlushOutcome::Latched(e) => Err(IoError {
                errno: e,
                latched: true,
            }),
            _ => Ok(()),
        }
    }

    /// Blocks until nothing is in flight; returns the completions gathered.
    pub fn drain(&self) -> Vec<Completion> {
        let mut out = Vec::new();
        loop {
            self.exec.wait();
            let got = self.exec.take();
            if got.is_empty() {
                return out;
            }
            out.extend(got.into_iter().filter_map(|f| self.finish(f)));
        }
    }
}

//! Per-disk counters: requests by type, flushes asked versus fdatasyncs
//! issued, elided and shared flushes, bytes bounced, errors by errno.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::request::Op;

/// Live counters (atomics; cheap to bump from any executor thread).
#[derive(Debug, Default)]
pub struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    fua_writes: AtomicU64,
    flushes: AtomicU64,
    discards: AtomicU64,
    write_zeroes: AtomicU64,
    pub(crate) fdatasyncs: AtomicU64,
    pub(crate) flushes_elided: AtomicU64,
    pub(crate) flushes_shared: AtomicU64,
    pub(crate) bytes_bounced: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) held: AtomicU64,
    errors: Mutex<BTreeMap<i32, u64>>,
    executor: Mutex<(&'static str, Option<String>)>,
}

impl Counters {
    pub(crate) fn request(&self, op: Op) {
        let c = match op {
            Op::Read => &self.reads,
            Op::Write { fua } => {
                if fua {
                    self.fua_writes.fetch_add(1, Relaxed);
                }
                &self.writes
            }
            Op::Flush => &self.flushes,
            Op::Discard => &self.discards,
            Op::WriteZeroes { .. } => &self.write_zeroes,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Records the executor in use and, if io_uring fell back, why.
    pub(crate) fn set_executor(&self, name: &'static str, fallback: Option<String>) {
        *self.executor.lock().unwrap_or_else(|e| e.into_inner()) = (name, fallback);
    }

    pub(crate) fn error(&self, errno: i32) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(errno)
            .or_default() += 1;
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> CounterSnapshot {
        let (executor, io_uring_fallback) = self
            .executor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        CounterSnapshot {
            executor,
            io_uring_fallback,
            reads: self.reads.load(Relaxed),
            writes: self.writes.load(Relaxed),
            fua_writes: self.fua_writes.load(Relaxed),
            flushes_asked: self.flushes.load(Relaxed),
            discards: self.discards.load(Relaxed),
            write_zeroes: self.write_zeroes.load(Relaxed),
            fdatasyncs: self.fdatasyncs.load(Relaxed),
            flushes_elided: self.flushes_elided.load(Relaxed),
            flushes_shared: self.flushes_shared.load(Relaxed),
            bytes_bounced: self.bytes_bounced.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            held: self.held.load(Relaxed),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A copy of a disk's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Read requests.
    pub reads: u64,
    /// Write requests (FUA included).
    pub writes: u64,
    /// Write requests with FUA set by the guest.
    pub fua_writes: u64,
    /// Flush requests from the guest.
    pub flushes_asked: u64,
    /// Discard requests.
    pub discards: u64,
    /// Write-zeroes requests.
    pub write_zeroes: u64,
    /// `fdatasync` calls issued (flushes, emulated FUA, WCE switches).
    pub fdatasyncs: u64,
    /// Flushes completed without a syscall (nothing written since the last
    /// successful `fdatasync`).
    pub flushes_elided: u64,
    /// Flushes satisfied by an `fdatasync` another flush started after them.
    pub flushes_shared: u64,
    /// Bytes copied through bounce buffers.
    pub bytes_bounced: u64,
    /// Bytes read from the image.
    pub bytes_read: u64,
    /// Bytes written to the image.
    pub bytes_written: u64,
    /// Requests held by the `stop` error policy.
    pub held: u64,
    /// Host errors by errno.
    pub errors: BTreeMap<i32, u64>,
    /// The executor running host I/O (see [`crate::ExecutorInfo::active`]).
    pub executor: &'static str,
    /// Why io_uring was asked for but the thread pool runs instead.
    pub io_uring_fallback: Option<String>,
}

impl fmt::Display for CounterSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reads={} writes={} fua_writes={} flushes_asked={} discards={} write_zeroes={} \
             fdatasyncs={} flushes_elided={} flushes_shared={} bytes_bounced={} held={}",
            self.reads,
            self.writes,
            self.fua_writes,
            self.flushes_asked,
            self.discards,
            self.write_zeroes,
            self.fdatasyncs,
            self.flushes_elided,
            self.flushes_shared,
            self.bytes_bounced,
            self.held
        )?;
        if !self.errors.is_empty() {
            f.write_str(" errors=")?;
            for (i, (e, n)) in self.errors.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{}:{n}", crate::errno_name(*e))?;
            }
        }
        Ok(())
    }
}

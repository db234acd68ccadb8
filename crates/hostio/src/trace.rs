//! Trace recorder: every host op issued, with its result.
//!
//! Disabled by default (one relaxed atomic load per op when off). Tests, the
//! CLI (`vmstor trace`, `vmstor demo`) and the docs read the same records.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::plan::{BufRef, HostOp};

/// One recorded host op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Sequence number (per disk, from 0).
    pub seq: u64,
    /// Tag of the request the op belongs to.
    pub tag: u64,
    /// The op.
    pub op: HostOp,
    /// Whether the image fd is `O_DIRECT`.
    pub direct: bool,
    /// Whether a transfer's source/destination was guest memory (as opposed
    /// to an engine or front-end buffer).
    pub guest_memory: bool,
    /// Bytes transferred, or the errno.
    pub result: Result<u64, i32>,
}

impl fmt::Display for TraceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if self.op.is_syscall() {
            f.write_str(if self.direct {
                " [O_DIRECT]"
            } else {
                " [buffered]"
            })?;
        }
        if self.guest_memory {
            f.write_str(" [guest memory]")?;
        }
        match self.result {
            Ok(_) => Ok(()),
            Err(e) => write!(f, " = -{}", crate::errno_name(e)),
        }
    }
}

/// The recorder.
#[derive(Debug, Default)]
pub struct Trace {
    on: AtomicBool,
    seq: AtomicU64,
    entries: Mutex<Vec<TraceEntry>>,
}

impl Trace {
    /// Starts or stops recording.
    pub fn enable(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Whether recording is on.
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Takes every entry recorded so far.
    pub fn take(&self) -> Vec<TraceEntry> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A copy of every entry recorded so far.
    pub fn snapshot(&self) -> Vec<TraceEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn record(
        &self,
        tag: u64,
        op: HostOp,
        direct: bool,
        guest_memory: bool,
        result: Result<u64, i32>,
    ) {
        if !self.enabled() {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TraceEntry {
                seq,
                tag,
                op,
                direct,
                guest_memory,
                result,
            });
    }
}

/// Whether `op` reads or writes the request's own buffer directly.
pub(crate) fn touches_request_buf(op: &HostOp) -> bool {
    matches!(
        op,
        HostOp::Read {
            into: BufRef::Request,
            ..
        } | HostOp::Write {
            from: BufRef::Request,
            ..
        } | HostOp::FillBounce { .. }
            | HostOp::DrainBounce { .. }
    )
}

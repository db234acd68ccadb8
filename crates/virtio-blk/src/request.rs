//! Request parsing: a descriptor chain becomes an [`Action`] (host work or
//! an immediate status), a [`Reject`] (a status byte with a named reason),
//! or a [`ChainError`] (no status byte can be written: the device needs a
//! reset).
//!
//! Contract: everything here is guest-controlled. The chain walk is bounded
//! ([`MAX_CHAIN_DESCRIPTORS`], plus `virtio-queue`'s own loop guard); every
//! address sum is checked; every sector range is checked against the
//! capacity, the logical block and the advertised limits *before* any host
//! I/O is planned (hostio validates again). Nothing here panics for any
//! input.
//!
//! Layout rules (virtio 1.2 §2.7.4, §5.2.6): the status is the last byte of
//! the last descriptor, which must be device-writable; the header is the
//! first 16 device-readable bytes; device-readable descriptors precede
//! device-writable ones. Data may share a descriptor with the header or the
//! status (`VIRTIO_F_ANY_LAYOUT` is the modern default), so the split is by
//! bytes, not descriptors.

use std::ops::Deref;

use virtio_bindings::virtio_blk as blk;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::FromBytes;

use crate::config::{RequestLimits, MAX_CHAIN_DESCRIPTORS};
use crate::features::Features;
use crate::spec::{
    BlkStatus, VirtioBlkDiscardWriteZeroes, VirtioBlkReqHeader, DWZ_FLAG_UNMAP, SECTOR_SIZE,
};

/// A guest memory range: address and length.
pub type Seg = (GuestAddress, usize);

/// A list of [`Seg`]s, inline for the common short chains (no allocation
/// per request).
pub type Segs = smallvec::SmallVec<[Seg; 4]>;

/// What kind of work a request type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Read sectors into device-writable data.
    In,
    /// Write device-readable data to sectors.
    Out,
    /// Make completed writes durable.
    Flush,
    /// Return the serial.
    GetId,
    /// Discard segments.
    Discard,
    /// Zero segments.
    WriteZeroes,
}

/// One row of [`REQUEST_TYPES`].
#[derive(Debug, Clone, Copy)]
pub struct RequestType {
    /// `type` field value.
    pub ty: u32,
    /// The spec's name.
    pub name: &'static str,
    /// Dispatch.
    pub kind: RequestKind,
    /// Feature that must be negotiated, else UNSUPP.
    pub feature: Option<Features>,
    /// How it maps onto hostio (for the docs).
    pub maps_to: &'static str,
}

/// Every request type the device executes; any other `type` gets UNSUPP.
/// Drives dispatch ([`lookup`]) and the request table in
/// `docs/virtio-blk.md`.
pub const REQUEST_TYPES: &[RequestType] = &[
    RequestType {
        ty: blk::VIRTIO_BLK_T_IN,
        name: "VIRTIO_BLK_T_IN",
        kind: RequestKind::In,
        feature: None,
        maps_to: "one `Op::Read` into the data descriptors (guest scatter list)",
    },
    RequestType {
        ty: blk::VIRTIO_BLK_T_OUT,
        name: "VIRTIO_BLK_T_OUT",
        kind: RequestKind::Out,
        feature: None,
        maps_to:
            "one `Op::Write { fua: false }`; with the write cache off hostio makes it durable (FUA)",
    },
    RequestType {
        ty: blk::VIRTIO_BLK_T_FLUSH,
        name: "VIRTIO_BLK_T_FLUSH",
        kind: RequestKind::Flush,
        feature: None,
        maps_to:
            "`Op::Flush` (also honoured when FLUSH was not negotiated: flushing is always safe)",
    },
    RequestType {
        ty: blk::VIRTIO_BLK_T_GET_ID,
        name: "VIRTIO_BLK_T_GET_ID",
        kind: RequestKind::GetId,
        feature: None,
        maps_to: "no host I/O: the serial, NUL-padded to 20 bytes only when shorter",
    },
    RequestType {
        ty: blk::VIRTIO_BLK_T_DISCARD,
        name: "VIRTIO_BLK_T_DISCARD",
        kind: RequestKind::Discard,
        feature: Some(Features::DISCARD),
        maps_to: "one `Op::Discard` per segment (policy `discard=ignore` makes it a no-op)",
    },
    RequestType {
        ty: blk::VIRTIO_BLK_T_WRITE_ZEROES,
        name: "VIRTIO_BLK_T_WRITE_ZEROES",
        kind: RequestKind::WriteZeroes,
        feature: Some(Features::WRITE_ZEROES),
        maps_to: "one `Op::WriteZeroes { may_unmap: UNMAP && write_zeroes_may_unmap }` per segment",
    },
];

/// The table row for request type `ty`.
pub fn lookup(ty: u32) -> Option<&'static RequestType> {
    REQUEST_TYPES.iter().find(|r| r.ty == ty)
}

/// Why a request was answered with an error status without host I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// `type` is not in [`REQUEST_TYPES`].
    UnknownType,
    /// The type's feature was not negotiated.
    NotNegotiated,
    /// Fewer than 16 device-readable bytes.
    ShortHeader,
    /// A device-readable descriptor after a device-writable one, or data in
    /// the wrong direction for the type.
    WrongDirection,
    /// Data where the type takes none (FLUSH).
    UnexpectedData,
    /// No data where the type needs some, or a zero-sector segment.
    EmptyData,
    /// Data not a multiple of 512 bytes, or a segment list not a multiple
    /// of 16 bytes.
    PartialSector,
    /// Sector range not aligned to the logical block size.
    Misaligned,
    /// Sector arithmetic overflows.
    Overflow,
    /// Range ends beyond the capacity.
    BeyondCapacity,
    /// More data segments than `seg_max`.
    TooManySegments,
    /// A data segment longer than `size_max`.
    SegmentTooLarge,
    /// A modifying request on a read-only disk.
    ReadOnly,
    /// More discard/write-zeroes segments than the advertised maximum.
    TooManyRanges,
    /// A discard/write-zeroes segment longer than the advertised maximum.
    RangeTooLarge,
    /// Reserved flag bits set in a discard/write-zeroes segment.
    UnknownFlags,
    /// `unmap` set on a discard segment.
    UnmapOnDiscard,
    /// A header, segment or data address outside guest memory.
    BadAddress,
    /// hostio refused the request (its validation, before host I/O).
    HostRejected,
}

impl Reject {
    /// Every reason, in documentation order.
    pub const ALL: [Reject; 19] = [
        Reject::UnknownType,
        Reject::NotNegotiated,
        Reject::ShortHeader,
        Reject::WrongDirection,
        Reject::UnexpectedData,
        Reject::EmptyData,
        Reject::PartialSector,
        Reject::Misaligned,
        Reject::Overflow,
        Reject::BeyondCapacity,
        Reject::TooManySegments,
        Reject::SegmentTooLarge,
        Reject::ReadOnly,
        Reject::TooManyRanges,
        Reject::RangeTooLarge,
        Reject::UnknownFlags,
        Reject::UnmapOnDiscard,
        Reject::BadAddress,
        Reject::HostRejected,
    ];

    /// The status the guest sees.
    pub fn status(self) -> BlkStatus {
        match self {
            // The spec names UNSUPP for unknown types and for unknown or
            // misplaced discard/write-zeroes flags; QEMU also answers UNSUPP
            // for too many segments.
            Reject::UnknownType
            | Reject::NotNegotiated
            | Reject::TooManyRanges
            | Reject::UnknownFlags
            | Reject::UnmapOnDiscard => BlkStatus::Unsupp,
            _ => BlkStatus::IoErr,
        }
    }

    /// A short description (docs and logs).
    pub fn describe(self) -> &'static str {
        match self {
            Reject::UnknownType => {
                "unknown request type (SCSI_CMD, GET_LIFETIME, SECURE_ERASE, zoned, ...)"
            }
            Reject::NotNegotiated => "DISCARD / WRITE_ZEROES without the feature negotiated",
            Reject::ShortHeader => "fewer than 16 device-readable header bytes",
            Reject::WrongDirection => {
                "readable after writable descriptors, or data in the wrong direction for the type"
            }
            Reject::UnexpectedData => "FLUSH carrying data",
            Reject::EmptyData => {
                "no data for IN/OUT/GET_ID/DISCARD/WRITE_ZEROES, or a 0-sector segment"
            }
            Reject::PartialSector => "data not a multiple of 512 bytes (16 for segment lists)",
            Reject::Misaligned => "range not aligned to the logical block size",
            Reject::Overflow => "sector arithmetic overflows",
            Reject::BeyondCapacity => "range ends beyond the capacity",
            Reject::TooManySegments => "more data segments than `seg_max`",
            Reject::SegmentTooLarge => "a data segment larger than `size_max`",
            Reject::ReadOnly => "OUT on a read-only disk",
            Reject::TooManyRanges => {
                "more segments than `max_discard_seg` / `max_write_zeroes_seg`"
            }
            Reject::RangeTooLarge => {
                "a segment larger than `max_discard_sectors` / `max_write_zeroes_sectors`"
            }
            Reject::UnknownFlags => "reserved segment flag bits set",
            Reject::UnmapOnDiscard => "UNMAP flag on a DISCARD segment",
            Reject::BadAddress => "header, segment list or data outside guest memory",
            Reject::HostRejected => "hostio's validation refused the request",
        }
    }
}

/// A chain that cannot be answered: no status byte can be located or
/// written. The device sets `DEVICE_NEEDS_RESET` and raises a config
/// interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ChainError {
    /// No descriptor could be read (head index out of range, unreadable
    /// table, empty indirect table).
    #[error("descriptor chain is empty or its head is out of range")]
    Empty,
    /// More than [`MAX_CHAIN_DESCRIPTORS`] descriptors.
    #[error("descriptor chain is longer than 1024 descriptors")]
    TooLong,
    /// The chain loops, nests indirect tables, points past its table or
    /// overflows 4 GiB.
    #[error("descriptor chain loops, nests indirect tables or runs off its table")]
    Broken,
    /// The last descriptor is not device-writable or is empty.
    #[error("last descriptor is not a device-writable status byte")]
    NoStatus,
    /// The status byte is outside guest memory.
    #[error("status byte lies outside guest memory")]
    StatusOutOfMemory,
}

/// A chain split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLayout {
    /// Device-readable ranges, in order (header, then out data).
    pub readable: Segs,
    /// Device-writable ranges before the status byte.
    pub writable: Segs,
    /// The status byte.
    pub status: GuestAddress,
    /// A device-readable descriptor followed a device-writable one.
    pub mixed: bool,
}

/// Walks `chain` and splits it. See the module docs.
pub fn chain_layout<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
) -> Result<ChainLayout, ChainError>
where
    M: Deref<Target = GuestMemoryMmap>,
{
    // One pass, no intermediate list: every descriptor but the last is
    // sorted into readable/writable as the next one arrives.
    let mut l = ChainLayout {
        readable: Segs::new(),
        writable: Segs::new(),
        status: GuestAddress(0),
        mixed: false,
    };
    let mut last: Option<Descriptor> = None;
    for (n, d) in chain.enumerate() {
        if n == MAX_CHAIN_DESCRIPTORS {
            return Err(ChainError::TooLong);
        }
        if let Some(p) = last.replace(d) {
            if p.len() == 0 {
                continue;
            }
            if p.is_write_only() {
                l.writable.push((p.addr(), p.len() as usize));
            } else {
                l.mixed |= !l.writable.is_empty();
                l.readable.push((p.addr(), p.len() as usize));
            }
        }
    }
    let last = last.ok_or(ChainError::Empty)?;
    // `virtio-queue` ends the walk silently on a loop (its TTL), a nested or
    // malformed indirect table, an unreadable descriptor or a 4 GiB overflow;
    // in every such case the last descriptor it yielded still says NEXT.
    if last.has_next() {
        return Err(ChainError::Broken);
    }
    if !last.is_write_only() || last.len() == 0 {
        return Err(ChainError::NoStatus);
    }
    l.status = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .ok_or(ChainError::StatusOutOfMemory)?;
    if !GuestMemoryBackend::check_range(mem, l.status, 1) {
        return Err(ChainError::StatusOutOfMemory);
    }
    if last.len() > 1 {
        l.writable.push((last.addr(), last.len() as usize - 1));
    }
    Ok(l)
}

fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.1 as u64).sum()
}

/// Splits `segs` after `n` bytes. `None` if an address overflows or the
/// list is shorter than `n`.
fn split_at(segs: &[Seg], mut n: usize) -> Option<(Segs, Segs)> {
    let (mut head, mut tail) = (Segs::new(), Segs::new());
    for &(a, l) in segs {
        if n == 0 {
            tail.push((a, l));
        } else if l <= n {
            head.push((a, l));
            n -= l;
        } else {
            head.push((a, n));
            tail.push((a.checked_add(n as u64)?, l - n));
            n = 0;
        }
    }
    (n == 0).then_some((head, tail))
}

/// Reads `out.len()` bytes from the ranges `segs` (which hold at least that
/// many). `None` if a byte lies outside guest memory.
fn read_segs(mem: &GuestMemoryMmap, segs: &[Seg], out: &mut [u8]) -> Option<()> {
    let mut done = 0;
    for &(a, l) in segs {
        if done == out.len() {
            break;
        }
        let n = l.min(out.len() - done);
        mem.read_slice(&mut out[done..done + n], a).ok()?;
        done += n;
    }
    (done == out.len()).then_some(())
}

/// Writes `data` into the ranges `segs`. `None` if a byte lies outside
/// guest memory or the ranges are too short.
pub(crate) fn write_segs(mem: &GuestMemoryMmap, segs: &[Seg], data: &[u8]) -> Option<()> {
    let mut done = 0;
    for &(a, l) in segs {
        if done == data.len() {
            break;
        }
        let n = l.min(data.len() - done);
        mem.write_slice(&data[done..done + n], a).ok()?;
        done += n;
    }
    (done == data.len()).then_some(())
}

/// What the device does for a well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Read `len` bytes at byte `offset` into `segs`.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Destination ranges (total `len`).
        segs: Vec<Seg>,
        /// Bytes.
        len: u64,
    },
    /// Write `len` bytes from `segs` at byte `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Source ranges.
        segs: Vec<Seg>,
        /// Bytes.
        len: u64,
    },
    /// Flush.
    Flush,
    /// Write the serial into `segs` (at most 20 bytes).
    GetId {
        /// Destination ranges.
        segs: Vec<Seg>,
    },
    /// Discard these `(offset, len)` byte ranges.
    Discard(Vec<(u64, u64)>),
    /// Zero these `(offset, len, may_unmap)` byte ranges.
    WriteZeroes(Vec<(u64, u64, bool)>),
}

/// The disk facts the parser checks ranges against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskGeometry {
    /// Size in bytes.
    pub size: u64,
    /// Logical block size in bytes.
    pub lbs: u32,
}

impl DiskGeometry {
    /// Checks a sector range; returns the byte offset.
    fn range(&self, sector: u64, len: u64) -> Result<u64, Reject> {
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(Reject::Overflow)?;
        let end = offset.checked_add(len).ok_or(Reject::Overflow)?;
        if end > self.size {
            return Err(Reject::BeyondCapacity);
        }
        let lbs = u64::from(self.lbs.max(1));
        if offset % lbs != 0 || len % lbs != 0 {
            return Err(Reject::Misaligned);
        }
        Ok(offset)
    }
}

fn check_data_segs(l: &RequestLimits, mem: &GuestMemoryMmap, segs: &[Seg]) -> Result<(), Reject> {
    if segs.len() > l.seg_max {
        return Err(Reject::TooManySegments);
    }
    for &(a, n) in segs {
        if l.size_max.is_some_and(|m| n as u64 > u64::from(m)) {
            return Err(Reject::SegmentTooLarge);
        }
        if !GuestMemoryBackend::check_range(mem, a, n) {
            return Err(Reject::BadAddress);
        }
    }
    Ok(())
}

/// Parses the request in `layout` into an [`Action`] or a [`Reject`].
pub fn parse(
    layout: &ChainLayout,
    mem: &GuestMemoryMmap,
    limits: &RequestLimits,
    disk: DiskGeometry,
) -> Result<Action, Reject> {
    const HDR: usize = std::mem::size_of::<VirtioBlkReqHeader>();
    let readable_len = total(&layout.readable);
    if readable_len < HDR as u64 {
        return Err(Reject::ShortHeader);
    }
    let (hdr_segs, out_data) = split_at(&layout.readable, HDR).ok_or(Reject::BadAddress)?;
    let mut raw = [0u8; HDR];
    read_segs(mem, &hdr_segs, &mut raw).ok_or(Reject::BadAddress)?;
    let hdr = VirtioBlkReqHeader::read_from_bytes(&raw).map_err(|_| Reject::ShortHeader)?;
    let ty = lookup(hdr.type_.get()).ok_or(Reject::UnknownType)?;
    if ty.feature.is_some_and(|f| !limits.features.contains(f)) {
        return Err(Reject::NotNegotiated);
    }
    if layout.mixed {
        return Err(Reject::WrongDirection);
    }
    let in_data = &layout.writable;
    let in_len = total(in_data);
    let out_len = readable_len - HDR as u64;
    match ty.kind {
        RequestKind::In => {
            if out_len != 0 {
                return Err(Reject::WrongDirection);
            }
            let offset = data_range(disk, hdr.sector.get(), in_len)?;
            check_data_segs(limits, mem, in_data)?;
            Ok(Action::Read {
                offset,
                segs: in_data.to_vec(),
                len: in_len,
            })
        }
        RequestKind::Out => {
            if limits.read_only {
                return Err(Reject::ReadOnly);
            }
            if in_len != 0 {
                return Err(Reject::WrongDirection);
            }
            let offset = data_range(disk, hdr.sector.get(), out_len)?;
            check_data_segs(limits, mem, &out_data)?;
            Ok(Action::Write {
                offset,
                segs: out_data.to_vec(),
                len: out_len,
            })
        }
        RequestKind::Flush => {
            if out_len != 0 || in_len != 0 {
                return Err(Reject::UnexpectedData);
            }
            Ok(Action::Flush)
        }
        RequestKind::GetId => {
            if out_len != 0 {
                return Err(Reject::WrongDirection);
            }
            if in_len == 0 {
                return Err(Reject::EmptyData);
            }
            Ok(Action::GetId {
                segs: in_data.to_vec(),
            })
        }
        RequestKind::Discard | RequestKind::WriteZeroes => {
            let discard = ty.kind == RequestKind::Discard;
            if limits.read_only {
                return Err(Reject::ReadOnly);
            }
            if in_len != 0 {
                return Err(Reject::WrongDirection);
            }
            parse_ranges(&out_data, out_len, discard, mem, limits, disk)
        }
    }
}

fn data_range(disk: DiskGeometry, sector: u64, len: u64) -> Result<u64, Reject> {
    if len == 0 {
        return Err(Reject::EmptyData);
    }
    if len % SECTOR_SIZE != 0 {
        return Err(Reject::PartialSector);
    }
    disk.range(sector, len)
}

fn parse_ranges(
    data: &[Seg],
    len: u64,
    discard: bool,
    mem: &GuestMemoryMmap,
    limits: &RequestLimits,
    disk: DiskGeometry,
) -> Result<Action, Reject> {
    const SEG: u64 = std::mem::size_of::<VirtioBlkDiscardWriteZeroes>() as u64;
    let (max_seg, max_sectors) = if discard {
        (limits.max_discard_seg, limits.max_discard_sectors)
    } else {
        (limits.max_write_zeroes_seg, limits.max_write_zeroes_sectors)
    };
    if len == 0 {
        return Err(Reject::EmptyData);
    }
    if len % SEG != 0 {
        return Err(Reject::PartialSector);
    }
    // Bounded before reading: at most max_seg (≤ 256) segments are read.
    if len / SEG > u64::from(max_seg) {
        return Err(Reject::TooManyRanges);
    }
    let mut raw = vec![0u8; len as usize];
    read_segs(mem, data, &mut raw).ok_or(Reject::BadAddress)?;
    let segs: Vec<VirtioBlkDiscardWriteZeroes> = raw
        .chunks_exact(SEG as usize)
        .filter_map(|c| VirtioBlkDiscardWriteZeroes::read_from_bytes(c).ok())
        .collect();
    // Flag errors (UNSUPP) take precedence over range errors (IOERR).
    for s in &segs {
        let flags = s.flags.get();
        if flags & !DWZ_FLAG_UNMAP != 0 {
            return Err(Reject::UnknownFlags);
        }
        if discard && flags & DWZ_FLAG_UNMAP != 0 {
            return Err(Reject::UnmapOnDiscard);
        }
    }
    let mut ranges = Vec::with_capacity(segs.len());
    for s in &segs {
        let n = s.num_sectors.get();
        if n == 0 {
            return Err(Reject::EmptyData);
        }
        if n > max_sectors {
            return Err(Reject::RangeTooLarge);
        }
        let bytes = u64::from(n) * SECTOR_SIZE;
        let offset = disk.range(s.sector.get(), bytes)?;
        let unmap = s.flags.get() & DWZ_FLAG_UNMAP != 0;
        ranges.push((offset, bytes, unmap));
    }
    Ok(if discard {
        Action::Discard(ranges.into_iter().map(|(o, l, _)| (o, l)).collect())
    } else {
        Action::WriteZeroes(
            ranges
                .into_iter()
                .map(|(o, l, u)| (o, l, u && limits.write_zeroes_may_unmap))
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_handles_boundaries_and_overflow() {
        let segs = vec![(GuestAddress(0x1000), 10), (GuestAddress(0x2000), 20)];
        let (h, t) = split_at(&segs, 16).unwrap();
        assert_eq!(
            h[..],
            [(GuestAddress(0x1000), 10), (GuestAddress(0x2000), 6)]
        );
        assert_eq!(t[..], [(GuestAddress(0x2006), 14)]);
        let (h, t) = split_at(&segs, 10).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(t.len(), 1);
        assert!(split_at(&segs, 31).is_none());
        assert!(split_at(&[(GuestAddress(u64::MAX), 4)], 2).is_none());
    }

    #[test]
    fn ranges_are_checked_in_sector_units() {
        let d = DiskGeometry {
            size: 1 << 20,
            lbs: 4096,
        };
        assert_eq!(d.range(8, 4096), Ok(4096));
        assert_eq!(d.range(1, 4096), Err(Reject::Misaligned));
        assert_eq!(d.range(8, 512), Err(Reject::Misaligned));
        assert_eq!(d.range(2048, 4096), Err(Reject::BeyondCapacity));
        assert_eq!(d.range(u64::MAX, 512), Err(Reject::Overflow));
        assert_eq!(d.range((u64::MAX >> 9) - 1, 4096), Err(Reject::Overflow));
    }

    #[test]
    fn table_has_unique_types_and_statuses_follow_the_spec() {
        for (i, a) in REQUEST_TYPES.iter().enumerate() {
            assert!(REQUEST_TYPES[i + 1..].iter().all(|b| b.ty != a.ty));
            assert_eq!(lookup(a.ty).unwrap().name, a.name);
        }
        assert!(lookup(blk::VIRTIO_BLK_T_SCSI_CMD).is_none());
        assert_eq!(Reject::UnmapOnDiscard.status(), BlkStatus::Unsupp);
        assert_eq!(Reject::UnknownFlags.status(), BlkStatus::Unsupp);
        assert_eq!(Reject::BeyondCapacity.status(), BlkStatus::IoErr);
        assert_eq!(Reject::ReadOnly.status(), BlkStatus::IoErr);
    }
}

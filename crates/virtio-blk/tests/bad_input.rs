//! Every bad-input case: a status byte where one can be written (with the
//! named reason and no host I/O), DEVICE_NEEDS_RESET where it cannot.

mod common;

use std::sync::Arc;

use common::*;
use virtio_bindings::virtio_blk as blk;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};
use vmstor_hostio::{CacheMode, Disk, DiskOptions, ExecutorKind, GuestDriver};
use vmstor_virtio_blk::spec::BlkStatus;
use vmstor_virtio_blk::testing::{
    test_caps, BlkReq, MemFile, RawDesc, TestGuest, TestGuestOptions,
};
use vmstor_virtio_blk::{BlkOptions, ChainError, DeviceError, Features, InterruptKind, Reject};

const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// A buffer in guest memory.
fn buf(g: &mut TestGuest, bytes: &[u8]) -> u64 {
    let a = g.alloc(bytes.len().max(1), 512);
    g.mem().write_slice(bytes, GuestAddress(a)).unwrap();
    a
}

fn header(g: &mut TestGuest, ty: u32, sector: u64) -> u64 {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&ty.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    buf(g, &h)
}

/// Lays out `parts` (addr, len, device-writable) as a chain at descriptor
/// indices 200.. and makes it available; returns the head.
fn chain(g: &mut TestGuest, parts: &[(u64, u32, bool)]) -> u16 {
    let descs: Vec<(u16, RawDesc)> = parts
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, w))| {
            let last = i + 1 == parts.len();
            let flags = if w { WRITE } else { 0 } | if last { 0 } else { NEXT };
            (
                200 + i as u16,
                RawDesc {
                    addr,
                    len,
                    flags,
                    next: 201 + i as u16,
                },
            )
        })
        .collect();
    g.submit_raw(0, &descs, 200);
    200
}

struct Outcome {
    used: Option<u32>,
    status: u8,
}

/// Submits `parts`, kicks, and reports the used entry and the status byte at
/// `status_addr`.
fn run(g: &mut TestGuest, parts: &[(u64, u32, bool)], status_addr: u64) -> Outcome {
    let head = chain(g, parts);
    g.kick(0);
    let used = g.poll_used(0).into_iter().find(|u| u.head == head);
    Outcome {
        used: used.map(|u| u.len),
        status: g.mem().read_obj(GuestAddress(status_addr)).unwrap(),
    }
}

/// Asserts the request was answered with `reason`'s status, no host I/O.
fn assert_rejected(
    g: &mut TestGuest,
    disk: &Disk,
    parts: &[(u64, u32, bool)],
    status_addr: u64,
    reason: Reject,
) {
    let before = g.device().worker().rejects(reason);
    let o = run(g, parts, status_addr);
    assert_eq!(o.used, Some(1), "{reason:?}: used len is the status byte");
    assert_eq!(o.status, reason.status() as u8, "{reason:?}");
    assert_eq!(
        g.device().worker().rejects(reason),
        before + 1,
        "{reason:?}"
    );
    assert_eq!(ops(disk), [], "{reason:?}: no host I/O");
    assert!(!g.device().needs_reset());
}

fn assert_needs_reset(g: &mut TestGuest, disk: &Disk, head: u16, want: Option<ChainError>) {
    g.take_interrupts();
    g.kick(0);
    assert!(g.device().needs_reset(), "{want:?}");
    assert!(g.poll_used(0).iter().all(|u| u.head != head), "not used");
    assert_eq!(g.take_interrupts(), [InterruptKind::Config]);
    if let Some(w) = want {
        assert_eq!(
            g.device().error(),
            Some(&DeviceError::Chain { queue: 0, err: w })
        );
    }
    assert_eq!(ops(disk), []);
    // Ignored until reset; then the device works again.
    let data = pattern(512, 1);
    let h2 = g.submit(0, &BlkReq::write(0, &data));
    g.kick(0);
    assert!(g.poll_used(0).iter().all(|u| u.head != h2));
    assert_eq!(ops(disk), [], "no host I/O after NEEDS_RESET");
    g.reset().unwrap();
    assert!(!g.device().needs_reset());
    let r = g.run(0, &BlkReq::write(0, &data));
    assert_eq!(r.status, Some(BlkStatus::Ok));
    ops(disk);
}

fn status(g: &mut TestGuest) -> u64 {
    buf(g, &[0xff])
}

#[test]
fn wrong_directions_get_ioerr() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    // IN whose data is device-readable.
    let h = header(&mut g, blk::VIRTIO_BLK_T_IN, 0);
    let d = buf(&mut g, &[0; 512]);
    let s = status(&mut g);
    let parts = [(h, 16, false), (d, 512, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::WrongDirection);
    // OUT whose data is device-writable.
    let h = header(&mut g, blk::VIRTIO_BLK_T_OUT, 0);
    let parts = [(h, 16, false), (d, 512, true), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::WrongDirection);
    // A readable descriptor after a writable one.
    let parts = [
        (h, 16, false),
        (d, 512, true),
        (d, 512, false),
        (s, 1, true),
    ];
    assert_rejected(&mut g, &disk, &parts, s, Reject::WrongDirection);
    // GET_ID with readable data.
    let h = header(&mut g, blk::VIRTIO_BLK_T_GET_ID, 0);
    let parts = [(h, 16, false), (d, 20, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::WrongDirection);
    // DISCARD with writable segments.
    let h = header(&mut g, blk::VIRTIO_BLK_T_DISCARD, 0);
    let parts = [(h, 16, false), (d, 16, true), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::WrongDirection);
}

#[test]
fn missing_or_short_header_gets_ioerr() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    let s = status(&mut g);
    assert_rejected(&mut g, &disk, &[(s, 1, true)], s, Reject::ShortHeader);
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    let parts = [(h, 8, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::ShortHeader);
    // A header split over two descriptors is fine.
    let parts = [(h, 8, false), (h + 8, 8, false), (s, 1, true)];
    assert_eq!(run(&mut g, &parts, s).status, 0);
    // A header outside guest memory.
    let parts = [(1 << 40, 16, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::BadAddress);
}

#[test]
fn missing_status_needs_reset() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    let head = chain(&mut g, &[(h, 16, false)]);
    assert_needs_reset(&mut g, &disk, head, Some(ChainError::NoStatus));
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    let s = status(&mut g);
    let head = chain(&mut g, &[(h, 16, false), (s, 0, true)]);
    assert_needs_reset(&mut g, &disk, head, Some(ChainError::NoStatus));
    let head = chain(&mut g, &[(h, 16, false), (1 << 40, 1, true)]);
    assert_needs_reset(&mut g, &disk, head, Some(ChainError::StatusOutOfMemory));
    let head = chain(&mut g, &[(h, 16, false), (u64::MAX, 2, true)]);
    assert_needs_reset(&mut g, &disk, head, Some(ChainError::StatusOutOfMemory));
}

#[test]
fn zero_length_and_partial_data_get_ioerr() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    let s = status(&mut g);
    let d = buf(&mut g, &[7; 4096]);
    for ty in [
        blk::VIRTIO_BLK_T_IN,
        blk::VIRTIO_BLK_T_OUT,
        blk::VIRTIO_BLK_T_GET_ID,
    ] {
        let h = header(&mut g, ty, 0);
        assert_rejected(
            &mut g,
            &disk,
            &[(h, 16, false), (s, 1, true)],
            s,
            Reject::EmptyData,
        );
    }
    let h = header(&mut g, blk::VIRTIO_BLK_T_DISCARD, 0);
    assert_rejected(
        &mut g,
        &disk,
        &[(h, 16, false), (s, 1, true)],
        s,
        Reject::EmptyData,
    );
    let h = header(&mut g, blk::VIRTIO_BLK_T_OUT, 0);
    let parts = [(h, 16, false), (d, 100, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::PartialSector);
    let h = header(&mut g, blk::VIRTIO_BLK_T_IN, 0);
    let parts = [(h, 16, false), (d, 513, true), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::PartialSector);
    // Zero-length descriptors are skipped, not counted as data.
    let parts = [(h, 16, false), (d, 0, true), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::EmptyData);
    // A zero-sector discard segment.
    let r = g.run(0, &BlkReq::ranges(true, &[(0, 0, 0)]));
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    // A segment list not a multiple of 16 bytes.
    let mut req = BlkReq::ranges(false, &[(0, 8, 0)]);
    req.out.truncate(12);
    assert_eq!(g.run(0, &req).status, Some(BlkStatus::IoErr));
    // FLUSH with data.
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    let parts = [(h, 16, false), (d, 512, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::UnexpectedData);
    assert_eq!(ops(&disk), []);
}

#[test]
fn sector_overflow_and_beyond_capacity_get_ioerr_without_host_io() {
    let (mut g, disk, _) = guest(CacheMode::None);
    let s = status(&mut g);
    let d = buf(&mut g, &[1; 1024]);
    let cap = DISK_SIZE / 512;
    for (sector, reason) in [
        (u64::MAX, Reject::Overflow),
        (u64::MAX / 512, Reject::Overflow),
        (cap - 1, Reject::BeyondCapacity),
        (cap, Reject::BeyondCapacity),
        (1 << 50, Reject::BeyondCapacity),
    ] {
        for (ty, w) in [(blk::VIRTIO_BLK_T_IN, true), (blk::VIRTIO_BLK_T_OUT, false)] {
            let h = header(&mut g, ty, sector);
            let parts = [(h, 16, false), (d, 1024, w), (s, 1, true)];
            assert_rejected(&mut g, &disk, &parts, s, reason);
        }
    }
    // Discard / write-zeroes segments too.
    for discard in [true, false] {
        let r = g.run(0, &BlkReq::ranges(discard, &[(0, 8, 0), (cap - 4, 8, 0)]));
        assert_eq!(r.status, Some(BlkStatus::IoErr));
        let r = g.run(0, &BlkReq::ranges(discard, &[(u64::MAX - 3, 8, 0)]));
        assert_eq!(r.status, Some(BlkStatus::IoErr));
    }
    assert_eq!(ops(&disk), [], "not even the valid first segment ran");
    // The last sector itself is fine.
    let r = g.run(0, &BlkReq::read(cap - 1, 512));
    assert_eq!(r.status, Some(BlkStatus::Ok));
}

#[test]
fn misaligned_to_a_4k_logical_block_gets_ioerr() {
    let file = Arc::new(MemFile::new(DISK_SIZE as usize));
    let mut caps = test_caps(DISK_SIZE);
    caps.logical_block_size = 4096;
    let disk = Arc::new(
        Disk::from_host_file(
            file,
            caps,
            policy(CacheMode::Writeback),
            DiskOptions {
                trace: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut g = TestGuest::new(
        disk.clone(),
        TestGuestOptions {
            device: BlkOptions::default(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(g.block_size(), 4096);
    assert_eq!(g.config().physical_block_exp, 0);
    for (sector, len) in [(1, 4096), (8, 512), (4, 4096)] {
        let r = g.run(0, &BlkReq::write(sector, &pattern(len, 1)));
        assert_eq!(
            r.status,
            Some(BlkStatus::IoErr),
            "sector {sector} len {len}"
        );
    }
    assert_eq!(g.device().worker().rejects(Reject::Misaligned), 3);
    let r = g.run(0, &BlkReq::ranges(true, &[(4, 8, 0)]));
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    assert_eq!(disk.trace().take(), []);
    let r = g.run(0, &BlkReq::write(8, &pattern(4096, 1)));
    assert_eq!(r.status, Some(BlkStatus::Ok));
}

#[test]
fn too_many_or_too_large_segments() {
    let (mut g, disk, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            device: BlkOptions {
                seg_max: 4,
                size_max: 4096,
                max_discard_seg: 2,
                max_discard_sectors: 16,
                max_write_zeroes_seg: 1,
                max_write_zeroes_sectors: 8,
                ..Default::default()
            },
            data_seg: 512,
            ..Default::default()
        },
    );
    let c = g.config();
    assert_eq!((c.seg_max.get(), c.size_max.get()), (4, 4096));
    // 5 data segments > seg_max 4.
    let r = g.run(0, &BlkReq::write(0, &pattern(5 * 512, 1)));
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    assert_eq!(g.device().worker().rejects(Reject::TooManySegments), 1);
    let r = g.run(0, &BlkReq::write(0, &pattern(4 * 512, 1)));
    assert_eq!(r.status, Some(BlkStatus::Ok));
    ops(&disk);
    // One 8 KiB segment > size_max 4 KiB.
    let s = status(&mut g);
    let h = header(&mut g, blk::VIRTIO_BLK_T_IN, 0);
    let d = buf(&mut g, &[0; 8192]);
    let parts = [(h, 16, false), (d, 8192, true), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::SegmentTooLarge);
    // Discard: 3 segments > 2 → UNSUPP; 24 sectors > 16 → IOERR.
    let r = g.run(
        0,
        &BlkReq::ranges(true, &[(0, 8, 0), (8, 8, 0), (16, 8, 0)]),
    );
    assert_eq!(r.status, Some(BlkStatus::Unsupp));
    let r = g.run(0, &BlkReq::ranges(true, &[(0, 24, 0)]));
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    let r = g.run(0, &BlkReq::ranges(true, &[(0, 16, 0), (32, 8, 0)]));
    assert_eq!(r.status, Some(BlkStatus::Ok));
    let r = g.run(0, &BlkReq::ranges(false, &[(0, 8, 0), (8, 8, 0)]));
    assert_eq!(r.status, Some(BlkStatus::Unsupp));
    let r = g.run(0, &BlkReq::ranges(false, &[(0, 16, 0)]));
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    assert_eq!(g.device().worker().rejects(Reject::TooManyRanges), 2);
    assert_eq!(g.device().worker().rejects(Reject::RangeTooLarge), 2);
    // The driver helper splits by the advertised limits.
    let issued = g.discard(0, 48).unwrap();
    assert_eq!(issued.commands.len(), 2);
    assert!(issued.status.is_ok());
}

#[test]
fn descriptor_loops_and_bad_indirect_tables_need_reset() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    let s = status(&mut g);
    // 200 → 201 → 200 ...
    g.submit_raw(
        0,
        &[
            (
                200,
                RawDesc {
                    addr: h,
                    len: 16,
                    flags: NEXT,
                    next: 201,
                },
            ),
            (
                201,
                RawDesc {
                    addr: s,
                    len: 1,
                    flags: NEXT | WRITE,
                    next: 200,
                },
            ),
        ],
        200,
    );
    assert_needs_reset(&mut g, &disk, 200, Some(ChainError::Broken));
    // next index beyond the table.
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    g.submit_raw(
        0,
        &[(
            200,
            RawDesc {
                addr: h,
                len: 16,
                flags: NEXT,
                next: 9999,
            },
        )],
        200,
    );
    assert_needs_reset(&mut g, &disk, 200, Some(ChainError::Broken));
    // Nested indirect table.
    let h = header(&mut g, blk::VIRTIO_BLK_T_FLUSH, 0);
    let s = status(&mut g);
    let inner = g.alloc(32, 16);
    let outer = g.alloc(32, 16);
    let raw = |d: RawDesc| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&d.addr.to_le_bytes());
        b[8..12].copy_from_slice(&d.len.to_le_bytes());
        b[12..14].copy_from_slice(&d.flags.to_le_bytes());
        b[14..].copy_from_slice(&d.next.to_le_bytes());
        b
    };
    let ind = VRING_DESC_F_INDIRECT as u16;
    g.mem()
        .write_slice(
            &raw(RawDesc {
                addr: h,
                len: 16,
                flags: NEXT,
                next: 1,
            }),
            GuestAddress(inner),
        )
        .unwrap();
    g.mem()
        .write_slice(
            &raw(RawDesc {
                addr: s,
                len: 1,
                flags: WRITE,
                next: 0,
            }),
            GuestAddress(inner + 16),
        )
        .unwrap();
    g.mem()
        .write_slice(
            &raw(RawDesc {
                addr: inner,
                len: 32,
                flags: ind,
                next: 0,
            }),
            GuestAddress(outer),
        )
        .unwrap();
    g.submit_raw(
        0,
        &[(
            200,
            RawDesc {
                addr: outer,
                len: 16,
                flags: ind,
                next: 0,
            },
        )],
        200,
    );
    assert_needs_reset(&mut g, &disk, 200, None);
    // The same table one level deep is fine.
    g.submit_raw(
        0,
        &[(
            200,
            RawDesc {
                addr: inner,
                len: 32,
                flags: ind,
                next: 0,
            },
        )],
        200,
    );
    g.kick(0);
    assert!(g.poll_used(0).iter().any(|u| u.head == 200));
    assert!(!g.device().needs_reset());
    // An indirect table whose length is not a multiple of 16.
    g.submit_raw(
        0,
        &[(
            200,
            RawDesc {
                addr: inner,
                len: 24,
                flags: ind,
                next: 0,
            },
        )],
        200,
    );
    assert_needs_reset(&mut g, &disk, 200, Some(ChainError::Empty));
    // An indirect table outside guest memory.
    g.submit_raw(
        0,
        &[(
            200,
            RawDesc {
                addr: 1 << 40,
                len: 32,
                flags: ind,
                next: 0,
            },
        )],
        200,
    );
    assert_needs_reset(&mut g, &disk, 200, Some(ChainError::Empty));
}

#[test]
fn bad_head_index_and_avail_index_need_reset() {
    let (mut g, disk, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            queue_size: Some(16),
            ..Default::default()
        },
    );
    g.submit_raw(0, &[], 16);
    assert_needs_reset(&mut g, &disk, 16, Some(ChainError::Empty));
    // The avail index jumps more than a queue's worth ahead (the device has
    // consumed one chain since the reset: 18 - 1 > 16).
    g.set_avail_idx(0, 18);
    g.take_interrupts();
    g.kick(0);
    assert!(g.device().needs_reset());
    assert!(matches!(
        g.device().error(),
        Some(DeviceError::Ring { queue: 0, .. })
    ));
    assert_eq!(g.take_interrupts(), [InterruptKind::Config]);
    assert_eq!(ops(&disk), []);
}

#[test]
fn data_outside_guest_memory_gets_ioerr_without_host_io() {
    let (mut g, disk, _) = guest(CacheMode::None);
    let s = status(&mut g);
    for (ty, w) in [(blk::VIRTIO_BLK_T_IN, true), (blk::VIRTIO_BLK_T_OUT, false)] {
        let h = header(&mut g, ty, 0);
        for addr in [1u64 << 40, u64::MAX - 100, (8 << 20) - 512] {
            let parts = [(h, 16, false), (addr, 1024, w), (s, 1, true)];
            assert_rejected(&mut g, &disk, &parts, s, Reject::BadAddress);
        }
    }
    // Discard segments outside guest memory.
    let h = header(&mut g, blk::VIRTIO_BLK_T_DISCARD, 0);
    let parts = [(h, 16, false), (1 << 40, 16, false), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::BadAddress);
    // GET_ID into memory that does not exist.
    let h = header(&mut g, blk::VIRTIO_BLK_T_GET_ID, 0);
    let parts = [(h, 16, false), (1 << 40, 20, true), (s, 1, true)];
    assert_rejected(&mut g, &disk, &parts, s, Reject::BadAddress);
}

#[test]
fn unsupported_types_and_flags_get_unsupp() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    let s = status(&mut g);
    let d = buf(&mut g, &[0; 512]);
    for ty in [
        blk::VIRTIO_BLK_T_SCSI_CMD,
        10, // GET_LIFETIME
        blk::VIRTIO_BLK_T_SECURE_ERASE,
        blk::VIRTIO_BLK_T_ZONE_REPORT,
        blk::VIRTIO_BLK_T_IN | blk::VIRTIO_BLK_T_BARRIER,
        0xdead_beef,
    ] {
        let h = header(&mut g, ty, 0);
        let parts = [(h, 16, false), (d, 512, true), (s, 1, true)];
        assert_rejected(&mut g, &disk, &parts, s, Reject::UnknownType);
    }
    let r = g.run(0, &BlkReq::ranges(true, &[(0, 8, 1)]));
    assert_eq!((r.status, r.used_len), (Some(BlkStatus::Unsupp), 1));
    assert_eq!(g.device().worker().rejects(Reject::UnmapOnDiscard), 1);
    for discard in [true, false] {
        let r = g.run(0, &BlkReq::ranges(discard, &[(0, 8, 0), (8, 8, 2)]));
        assert_eq!(r.status, Some(BlkStatus::Unsupp));
    }
    assert_eq!(g.device().worker().rejects(Reject::UnknownFlags), 2);
    assert_eq!(ops(&disk), []);

    // Not negotiated.
    let (mut g, disk, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            accept: Features::all() - Features::DISCARD - Features::WRITE_ZEROES,
            ..Default::default()
        },
    );
    assert!(g.discard(0, 1).is_err(), "the driver cannot express it");
    for discard in [true, false] {
        let r = g.run(0, &BlkReq::ranges(discard, &[(0, 8, 0)]));
        assert_eq!(r.status, Some(BlkStatus::Unsupp));
    }
    assert_eq!(g.device().worker().rejects(Reject::NotNegotiated), 2);
    assert_eq!(ops(&disk), []);
}

#[test]
fn read_only_disk() {
    let mut p = policy(CacheMode::Writeback);
    p.read_only = true;
    let (mut g, disk, file) = guest_with(p, TestGuestOptions::default());
    let f = g.negotiated();
    assert!(f.contains(Features::RO));
    assert!(!f.intersects(Features::DISCARD | Features::WRITE_ZEROES));
    let r = g.run(0, &BlkReq::write(0, &pattern(512, 1)));
    assert_eq!(r.status, Some(BlkStatus::IoErr));
    assert_eq!(g.device().worker().rejects(Reject::ReadOnly), 1);
    assert!(file.contents().iter().all(|b| *b == 0));
    let r = g.run(0, &BlkReq::read(0, 512));
    assert_eq!(r.status, Some(BlkStatus::Ok));
    assert!(g.flush().unwrap().status.is_ok());
    assert_eq!(ops(&disk).len(), 1, "the read; flush elided");
}

#[test]
fn get_id_lengths() {
    for (serial, len, want) in [
        (
            &b"0123456789abcdefghij"[..],
            20,
            &b"0123456789abcdefghij"[..],
        ),
        (b"short", 20, b"short\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
        (b"0123456789abcdefghij", 8, b"01234567"),
        (b"0123456789abcdefghij", 64, b"0123456789abcdefghij"),
    ] {
        let (mut g, _, _) = guest_with(
            policy(CacheMode::Writeback),
            TestGuestOptions {
                device: BlkOptions {
                    serial: serial.to_vec(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        let mut req = BlkReq::get_id();
        req.in_len = len;
        let r = g.run(0, &req);
        assert_eq!(r.status, Some(BlkStatus::Ok));
        assert_eq!(r.used_len as usize, want.len() + 1);
        assert_eq!(&r.data[..want.len()], want);
        // Beyond what the device wrote, the driver's fill is untouched.
        assert!(r.data[want.len()..].iter().all(|b| *b == 0xa5));
    }
}

#[test]
fn unoffered_features_refuse_features_ok() {
    let (disk, _) = vmstor_virtio_blk::testing::mem_disk(
        DISK_SIZE,
        policy(CacheMode::Writeback),
        ExecutorKind::Inline,
    );
    let mem =
        Arc::new(vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    let mut dev = vmstor_virtio_blk::VirtioBlk::new(disk, mem, BlkOptions::default()).unwrap();
    dev.set_status(3);
    dev.set_driver_features(dev.device_features() | (1 << 17)); // ZONED
    dev.set_status(3 | 8);
    assert_eq!(dev.status() & 8, 0);
    dev.set_driver_features(dev.device_features());
    dev.set_status(3 | 8);
    assert_eq!(dev.status() & 8, 8);
    // Features are frozen after FEATURES_OK.
    dev.set_driver_features(0);
    assert_eq!(dev.driver_features(), dev.device_features());
}

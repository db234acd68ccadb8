//! The fuzz target's logic (feature `test-utils`), callable from the
//! libFuzzer target `fuzz/fuzz_targets/virtio_blk.rs` and from unit tests.
//!
//! [`fuzz_entry`] reads a cache mode, policy switches, the driver's accepted
//! features, queue and limit options from the input, lays out one or two
//! split virtqueues in a guest memory with a hole, then interprets the rest
//! of the input as guest actions: raw descriptors, raw bytes, request
//! headers, well-formed requests, avail-ring pushes and index jumps,
//! notifications, config reads and writes, completions and resets.
//!
//! Invariants checked after every action (a violation panics, which the
//! fuzzer reports):
//! - no host access outside the image ([`MemFile::violations`] is 0, and
//!   every host op in hostio's trace lies within the image);
//! - the device never panics;
//! - a device that needs reset never touches the host again until reset.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{CacheMode, DiscardMode, Disk, DiskOptions, HostOp, Policy};

use crate::config::BlkOptions;
use crate::device::{QueueConfig, VirtioBlk};
use crate::features::Features;
use crate::spec::device_status as st;
use crate::testing::{test_caps, MemFile, RawDesc};

/// Image size used by the fuzz target.
pub const FUZZ_DISK_SIZE: u64 = 64 * 1024;
const REGION0: (u64, usize) = (0, 0x1_0000);
const REGION1: (u64, usize) = (0x2_0000, 0x1_0000);

struct Input<'a> {
    d: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.d.split_first() {
            Some((b, rest)) => {
                self.d = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn empty(&self) -> bool {
        self.d.is_empty()
    }
    /// An address: mostly inside one of the regions, sometimes anywhere.
    fn addr(&mut self) -> u64 {
        match self.u8() % 8 {
            0 => self.u64(),
            1 => REGION1.0 + u64::from(self.u16()),
            2 => REGION0.1 as u64 + u64::from(self.u16()), // the hole
            _ => 0x4000 + u64::from(self.u16() % 0xc000),
        }
    }
    fn len(&mut self) -> u32 {
        match self.u8() % 8 {
            0 => self.u32(),
            1 => 0,
            2 => 1,
            3 => 16,
            _ => u32::from(self.u16() % 4096),
        }
    }
    fn sector(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => self.u64(),
            1 => FUZZ_DISK_SIZE / 512 - u64::from(self.u8() % 16),
            _ => u64::from(self.u8() % 128),
        }
    }
}

fn host_range(op: &HostOp) -> Option<(u64, u64)> {
    match *op {
        HostOp::Read { offset, len, .. }
        | HostOp::Write { offset, len, .. }
        | HostOp::PunchHole { offset, len }
        | HostOp::ZeroRange { offset, len }
        | HostOp::BlkDiscard { offset, len }
        | HostOp::BlkZeroout { offset, len }
        | HostOp::WriteZeroBuf { offset, len, .. } => Some((offset, len)),
        _ => None,
    }
}

fn check(disk: &Disk, file: &MemFile, stats: &mut FuzzStats) {
    assert_eq!(file.violations(), 0, "host access outside the image");
    assert_eq!(file.size(), FUZZ_DISK_SIZE, "image size changed");
    for e in disk.trace().take() {
        stats.host_ops += 1;
        if let Some((o, l)) = host_range(&e.op) {
            assert!(
                o.checked_add(l).is_some_and(|end| end <= FUZZ_DISK_SIZE),
                "host op outside the image: {e}"
            );
        }
    }
}

struct Rig {
    dev: VirtioBlk,
    mem: Arc<GuestMemoryMmap>,
    accept: u64,
    qsize: u16,
    avail_idx: [u16; 2],
}

fn queue_base(q: u16) -> u64 {
    u64::from(q) * 0x2000
}

impl Rig {
    fn init(&mut self) {
        let d = &mut self.dev;
        d.set_status(st::ACKNOWLEDGE | st::DRIVER);
        d.set_driver_features(self.accept);
        d.set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK);
        for q in 0..d.num_queues() {
            let b = queue_base(q);
            let _ = d.set_queue(
                q,
                QueueConfig {
                    size: self.qsize,
                    desc_table: GuestAddress(b),
                    avail_ring: GuestAddress(b + 0x800),
                    used_ring: GuestAddress(b + 0x1000),
                },
            );
            let _ = d.set_queue_ready(q, true);
        }
        let s = d.status() | st::DRIVER_OK;
        d.set_status(s);
        self.avail_idx = [0; 2];
    }

    fn push(&mut self, q: u16, head: u16) {
        let q = q % self.dev.num_queues();
        let b = queue_base(q);
        let i = &mut self.avail_idx[usize::from(q)];
        let slot = b + 0x800 + 4 + u64::from(*i % self.qsize) * 2;
        let _ = self.mem.write_obj(head, GuestAddress(slot));
        *i = i.wrapping_add(1);
        let _ = self.mem.write_obj(*i, GuestAddress(b + 0x802));
    }

    fn desc(&self, q: u16, i: u16, d: RawDesc) {
        let b = queue_base(q % self.dev.num_queues());
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&d.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&d.len.to_le_bytes());
        raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
        raw[14..].copy_from_slice(&d.next.to_le_bytes());
        let _ = self
            .mem
            .write_slice(&raw, GuestAddress(b + u64::from(i % self.qsize) * 16));
    }
}

/// What one input exercised (so tests can show the fuzzer is not idle).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuzzStats {
    /// Host ops issued (from hostio's trace).
    pub host_ops: u64,
    /// Requests rejected with a status byte.
    pub rejected: u64,
    /// Times the device set DEVICE_NEEDS_RESET.
    pub needs_reset: u64,
}

/// Runs one fuzz input. Panics if an invariant breaks (see module docs).
pub fn fuzz_entry(data: &[u8]) -> FuzzStats {
    let mut stats = FuzzStats::default();
    let mut r = Input { d: data };
    let mode = CacheMode::ALL[usize::from(r.u8()) % CacheMode::ALL.len()];
    let mut policy = Policy::from_mode(mode);
    let sw = r.u8();
    if sw & 1 != 0 {
        policy.discard = DiscardMode::Unmap;
    }
    policy.read_only = sw & 0x0e == 0;
    let mut caps = test_caps(FUZZ_DISK_SIZE);
    if sw & 0x10 != 0 {
        caps.logical_block_size = 4096;
    }
    let file = Arc::new(MemFile::new(FUZZ_DISK_SIZE as usize));
    let disk = Arc::new(
        Disk::from_host_file(
            file.clone(),
            caps,
            policy,
            DiskOptions {
                trace: true,
                ..Default::default()
            },
        )
        .expect("in-memory disk"),
    );
    let opts = BlkOptions {
        features: Features::from_bits_truncate(r.u64()) | Features::CONFIGURABLE,
        num_queues: 1 + u16::from(r.u8() % 2),
        queue_size: 2 << (r.u8() % 4),
        serial: b"fuzz".to_vec(),
        seg_max: 1 + u32::from(r.u8() % 8),
        max_discard_sectors: 8 * (1 + u32::from(r.u8() % 8)),
        max_discard_seg: 1 + u32::from(r.u8() % 4),
        max_write_zeroes_sectors: 8 * (1 + u32::from(r.u8() % 8)),
        max_write_zeroes_seg: 1 + u32::from(r.u8() % 4),
        ..Default::default()
    };
    let accept = r.u64();
    let mem = Arc::new(
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(REGION0.0), REGION0.1),
            (GuestAddress(REGION1.0), REGION1.1),
        ])
        .expect("guest memory"),
    );
    let qsize = opts.queue_size;
    let dev = VirtioBlk::new(disk.clone(), mem.clone(), opts).expect("valid options");
    let mut rig = Rig {
        dev,
        mem,
        accept,
        qsize,
        avail_idx: [0; 2],
    };
    rig.init();
    check(&disk, &file, &mut stats);
    let mut steps = 0;
    while !r.empty() && steps < 256 {
        steps += 1;
        if rig.dev.needs_reset() && steps % 4 == 0 {
            // Recover like a driver would, so one bad chain does not end the
            // input's exploration.
            stats.needs_reset += 1;
            rig.dev.set_status(0);
            check(&disk, &file, &mut stats);
            rig.init();
        }
        let q = u16::from(r.u8() % 2);
        match r.u8() % 12 {
            0 => {
                let i = r.u16();
                let d = RawDesc {
                    addr: r.addr(),
                    len: r.len(),
                    flags: u16::from(r.u8() & 7),
                    next: r.u16() % (qsize + 1),
                };
                rig.desc(q, i, d);
            }
            1 => {
                let a = r.addr();
                let n = usize::from(r.u8() % 64);
                let bytes: Vec<u8> = (0..n).map(|_| r.u8()).collect();
                let _ = rig.mem.write_slice(&bytes, GuestAddress(a));
            }
            2 => {
                let a = r.addr();
                let ty = [0u32, 1, 4, 8, 11, 13, 2, 14][usize::from(r.u8() % 8)];
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&ty.to_le_bytes());
                h[8..].copy_from_slice(&r.sector().to_le_bytes());
                let _ = rig.mem.write_slice(&h, GuestAddress(a));
            }
            3 => {
                let head = r.u16() % (qsize + 1);
                rig.push(q, head);
            }
            4 => {
                let _ = rig.dev.notify(q);
            }
            5 => {
                let off = u64::from(r.u8() % 100);
                let v = [r.u8()];
                rig.dev.write_config(off, &v);
            }
            6 => {
                let mut buf = [0u8; 128];
                let off = u64::from(r.u8());
                rig.dev.read_config(off, &mut buf);
            }
            7 => {
                stats.needs_reset += u64::from(rig.dev.needs_reset());
                rig.dev.set_status(0);
                check(&disk, &file, &mut stats);
                rig.init();
            }
            8 => {
                let b = queue_base(q % rig.dev.num_queues());
                let v = r.u16();
                let _ = rig.mem.write_obj(v, GuestAddress(b + 0x802));
            }
            9 => {
                let a = r.addr();
                let mut s = [0u8; 16];
                s[..8].copy_from_slice(&r.sector().to_le_bytes());
                s[8..12].copy_from_slice(&u32::from(r.u8() % 64).to_le_bytes());
                s[12..].copy_from_slice(&u32::from(r.u8() % 4).to_le_bytes());
                let _ = rig.mem.write_slice(&s, GuestAddress(a));
            }
            10 => {
                rig.dev.process_completions();
            }
            _ => well_formed(&mut rig, &mut r, q),
        }
        let quiet = rig.dev.needs_reset();
        let ops_before = disk.counters();
        check(&disk, &file, &mut stats);
        if quiet {
            // Once broken, notifications do nothing until reset.
            rig.dev.notify(q);
            assert_eq!(disk.counters(), ops_before, "host I/O after NEEDS_RESET");
        }
    }
    stats.needs_reset += u64::from(rig.dev.needs_reset());
    stats.rejected += rejected(&rig.dev);
    rig.dev.set_status(0);
    check(&disk, &file, &mut stats);
    stats
}

fn rejected(dev: &VirtioBlk) -> u64 {
    crate::request::Reject::ALL
        .iter()
        .map(|r| dev.worker().rejects(*r))
        .sum()
}

/// A mostly well-formed request at fixed addresses in region 0, so the
/// fuzzer reaches the I/O paths often.
fn well_formed(rig: &mut Rig, r: &mut Input<'_>, q: u16) {
    let q = q % rig.dev.num_queues();
    let ty = [0u32, 1, 4, 8, 11, 13][usize::from(r.u8() % 6)];
    let (hdr, data, status) = (0x8000u64, 0x9000u64, 0xf000u64);
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&ty.to_le_bytes());
    let sector = if r.u8() % 4 == 0 {
        r.sector()
    } else {
        u64::from(r.u8() % 64) * 8
    };
    h[8..].copy_from_slice(&sector.to_le_bytes());
    let _ = rig.mem.write_slice(&h, GuestAddress(hdr));
    let dlen = match r.u8() % 4 {
        0 => 512 * u32::from(r.u8() % 9),
        _ => 4096 * (1 + u32::from(r.u8() % 2)),
    };
    if matches!(ty, 11 | 13) {
        // One discard/write-zeroes segment in the data buffer.
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&sector.to_le_bytes());
        s[8..12].copy_from_slice(&(8 * (1 + u32::from(r.u8() % 4))).to_le_bytes());
        s[12..].copy_from_slice(&u32::from(r.u8() % 2).to_le_bytes());
        let _ = rig.mem.write_slice(&s, GuestAddress(data));
    }
    let dlen = if matches!(ty, 11 | 13) { 16 } else { dlen };
    let write = matches!(ty, 0 | 8);
    let base = (r.u8() % 4) * 4;
    let n = u16::from(qsize_guard(rig.qsize));
    let i0 = u16::from(base) % n;
    let i1 = (i0 + 1) % n;
    let i2 = (i0 + 2) % n;
    let next = 1u16; // VRING_DESC_F_NEXT
    let wflag = 2u16; // VRING_DESC_F_WRITE
    rig.desc(
        q,
        i0,
        RawDesc {
            addr: hdr,
            len: 16,
            flags: next,
            next: i1,
        },
    );
    rig.desc(
        q,
        i1,
        RawDesc {
            addr: data,
            len: dlen,
            flags: next | if write { wflag } else { 0 },
            next: i2,
        },
    );
    rig.desc(
        q,
        i2,
        RawDesc {
            addr: status,
            len: 1,
            flags: wflag,
            next: 0,
        },
    );
    rig.push(q, i0);
    let _ = rig.dev.notify(q);
}

fn qsize_guard(q: u16) -> u8 {
    // Queue sizes are 2..=16 here.
    q.clamp(1, 255) as u8
}

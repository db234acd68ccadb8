//! Fuzz entry points shared by `fuzz/fuzz_targets/ata_*.rs` and the unit
//! tests that run them over random inputs.
//!
//! The oracle: no panic anywhere (the [`MemFile`] asserts every host access
//! lies inside the image) and bounded work for every input.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{CacheMode, DiscardMode, Disk, ErrorAction, Policy};

use super::{mem_disk, FaultOp, MemFile, Tf};
use crate::device::{AtaDevice, DeviceConfig};
use crate::ide::bmdma::{PrdEntry, BM_CMD_START, BM_CMD_WRITE_MEMORY};
use crate::ide::{ControllerConfig, IdeController, Region};

/// Guest memory size of the fuzz setups (small, so PRDs often fall off it).
pub const FUZZ_MEM: usize = 256 << 10;
/// Disk size of the fuzz setups: 128 sectors, so LBAs hit the end.
pub const FUZZ_DISK: usize = 64 << 10;

/// What a fuzz run reached (summed host requests over the disks), so tests
/// can check the inputs exercise the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuzzStats {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// FUA write requests.
    pub fua_writes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Discard requests.
    pub discards: u64,
    /// Requests held by the `stop` policy.
    pub held: u64,
}

impl std::ops::AddAssign for FuzzStats {
    fn add_assign(&mut self, o: FuzzStats) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.fua_writes += o.fua_writes;
        self.flushes += o.flushes;
        self.discards += o.discards;
        self.held += o.held;
    }
}

impl Rig {
    fn stats(&self) -> FuzzStats {
        let mut s = FuzzStats::default();
        for d in &self.disks {
            let c = d.counters();
            s += FuzzStats {
                reads: c.reads,
                writes: c.writes,
                fua_writes: c.fua_writes,
                flushes: c.flushes_asked,
                discards: c.discards,
                held: c.held,
            };
        }
        s
    }
}

struct Input<'a> {
    d: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.d.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.u8()?) | u16::from(self.u8()?) << 8)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) | u32::from(self.u16()?) << 16)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let end = (self.at + n).min(self.d.len());
        let s = &self.d[self.at..end];
        self.at = end;
        s
    }
}

struct Rig {
    ctrl: IdeController,
    mem: Arc<GuestMemoryMmap>,
    files: Vec<Arc<MemFile>>,
    disks: Vec<Arc<Disk>>,
}

fn rig(setup: u8) -> Rig {
    let mut policy = Policy::from_mode(if setup & 1 != 0 {
        CacheMode::Writethrough
    } else {
        CacheMode::Writeback
    });
    if setup & 2 != 0 {
        policy.discard = DiscardMode::Unmap;
    }
    if setup & 4 != 0 {
        policy.errors.write = ErrorAction::Stop;
        policy.errors.read = ErrorAction::Stop;
    }
    policy.read_only = setup & 0x80 != 0;
    let mut cfg = match (setup >> 3) & 3 {
        0 => ControllerConfig::piix3(),
        1 => ControllerConfig::piix3_native(),
        _ => ControllerConfig::piix4(),
    };
    cfg.strict_prd = setup & 0x20 == 0;
    let mem = Arc::new(
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), FUZZ_MEM)]).expect("guest memory"),
    );
    let mut ctrl = IdeController::new(cfg, mem.clone());
    let mut files = Vec::new();
    let mut disks = Vec::new();
    let slots: &[(usize, usize)] = if setup & 0x40 != 0 {
        &[(0, 0), (0, 1), (1, 0)]
    } else {
        &[(0, 0)]
    };
    for &(ch, drive) in slots {
        let (f, disk) = mem_disk(FUZZ_DISK, policy);
        disk.trace().enable(false);
        ctrl.attach(
            ch,
            drive,
            AtaDevice::new(disk.clone(), DeviceConfig::default()),
        );
        files.push(f);
        disks.push(disk);
    }
    ctrl.set_irq_callback(0, Box::new(|_| {}));
    Rig {
        ctrl,
        mem,
        files,
        disks,
    }
}

fn region(v: u8) -> Region {
    match v % 5 {
        0 => Region::Command(0),
        1 => Region::Control(0),
        2 => Region::Command(1),
        3 => Region::Control(1),
        _ => Region::BusMaster,
    }
}

fn size(v: u8) -> u8 {
    [1, 2, 4, 1][usize::from(v & 3)]
}

fn fault(r: &Rig, v: u8) {
    for f in &r.files {
        f.clear_faults();
        if v & 0x10 != 0 {
            let op = [
                FaultOp::Read,
                FaultOp::Write,
                FaultOp::Fdatasync,
                FaultOp::Discard,
            ][usize::from(v & 3)];
            f.fail(op, if v & 4 != 0 { libc::ENOSPC } else { libc::EIO });
        }
    }
}

/// Arbitrary register-access sequences with arbitrary guest memory (PRD
/// tables included), PCI configuration cycles, host faults and resumes.
pub fn regs(data: &[u8]) -> FuzzStats {
    let mut inp = Input { d: data, at: 0 };
    let Some(setup) = inp.u8() else {
        return FuzzStats::default();
    };
    let mut r = rig(setup);
    for _ in 0..4096 {
        let Some(op) = inp.u8() else { break };
        match op % 10 {
            0 => {
                let (Some(g), Some(o), Some(s)) = (inp.u8(), inp.u8(), inp.u8()) else {
                    break;
                };
                r.ctrl.read(region(g), u64::from(o % 20), size(s));
            }
            1 | 2 => {
                let (Some(g), Some(o), Some(s), Some(v)) =
                    (inp.u8(), inp.u8(), inp.u8(), inp.u32())
                else {
                    break;
                };
                r.ctrl.write(region(g), u64::from(o % 20), size(s), v);
            }
            3 => {
                let (Some(a), Some(n)) = (inp.u32(), inp.u8()) else {
                    break;
                };
                let bytes = inp.bytes(usize::from(n)).to_vec();
                let _ = r.mem.write_slice(
                    &bytes,
                    GuestAddress(u64::from(a) % (FUZZ_MEM as u64 + 4096)),
                );
            }
            4 => {
                let (Some(a), Some(base), Some(len), Some(fl)) =
                    (inp.u16(), inp.u32(), inp.u16(), inp.u8())
                else {
                    break;
                };
                let e = PrdEntry::new(
                    base % (FUZZ_MEM as u32 + 0x10000),
                    u32::from(len),
                    fl & 1 != 0,
                );
                let _ = e.write(&r.mem, GuestAddress(u64::from(a) & !7));
            }
            5 => {
                let (Some(o), Some(s), Some(v)) = (inp.u8(), inp.u8(), inp.u32()) else {
                    break;
                };
                r.ctrl.pci_config_write(u16::from(o), size(s), v);
            }
            6 => {
                let (Some(o), Some(s)) = (inp.u8(), inp.u8()) else {
                    break;
                };
                r.ctrl.pci_config_read(u16::from(o), size(s));
            }
            7 => {
                let Some(v) = inp.u8() else { break };
                fault(&r, v);
                if v & 0x80 != 0 {
                    for d in &r.disks {
                        d.resume_held();
                    }
                }
                r.ctrl.poll();
            }
            8 => {
                let (Some(p), Some(s), Some(v)) = (inp.u16(), inp.u8(), inp.u32()) else {
                    break;
                };
                if s & 0x80 != 0 {
                    r.ctrl.io_write(p, size(s), v);
                } else {
                    r.ctrl.io_read(p, size(s));
                }
            }
            _ => {
                if inp.u8().is_some_and(|v| v == 0xa5) {
                    r.ctrl.reset();
                }
            }
        }
    }
    r.ctrl.poll();
    r.stats()
}

/// Arbitrary command blocks driven through the registers the way a driver
/// would: load the task file (with HOB), issue the command, then serve the
/// data phase from the input (PIO words, or a PRD table built from input
/// bytes and the engine started).
///
/// Input layout: a setup byte, then per command: features (2), count (2),
/// LBA (6), device, command, mode, PRD entry count (0-3) and 4 bytes per
/// entry (base / 4, length), payload count (0-3) and 8 bytes per payload
/// word written at the first region.
pub fn cmd(data: &[u8]) -> FuzzStats {
    let mut inp = Input { d: data, at: 0 };
    let Some(setup) = inp.u8() else {
        return FuzzStats::default();
    };
    let mut r = rig(setup);
    // Program BARs and enable decoding + bus mastering as firmware would.
    r.ctrl.pci_config_write(0x20, 4, 0xc000);
    r.ctrl.pci_config_write(0x10, 4, 0xc040);
    r.ctrl.pci_config_write(0x14, 4, 0xc050);
    r.ctrl.pci_config_write(4, 2, 0x0005);
    for _ in 0..256 {
        let (Some(feat), Some(count), Some(lo), Some(hi), Some(dev), Some(op), Some(mode)) = (
            inp.u16(),
            inp.u16(),
            inp.u32(),
            inp.u16(),
            inp.u8(),
            inp.u8(),
            inp.u8(),
        ) else {
            break;
        };
        let lba = u64::from(lo) | u64::from(hi) << 32;
        let tf = Tf {
            features: feat,
            count,
            lba,
            lba48: true,
            ..Tf::default()
        };
        let ch = Region::Command(0);
        // Stop the engine left running by the previous command, as a
        // driver does before issuing the next one.
        r.ctrl.write(Region::BusMaster, 0, 1, 0);
        let w = |c: &mut IdeController, reg: u64, v: u8| c.write(ch, reg, 1, u32::from(v));
        w(&mut r.ctrl, 6, dev);
        w(&mut r.ctrl, 1, (tf.features >> 8) as u8);
        w(&mut r.ctrl, 2, (tf.count >> 8) as u8);
        w(&mut r.ctrl, 3, (lba >> 24) as u8);
        w(&mut r.ctrl, 4, (lba >> 32) as u8);
        w(&mut r.ctrl, 5, (lba >> 40) as u8);
        w(&mut r.ctrl, 1, tf.features as u8);
        w(&mut r.ctrl, 2, tf.count as u8);
        w(&mut r.ctrl, 3, lba as u8);
        w(&mut r.ctrl, 4, (lba >> 8) as u8);
        w(&mut r.ctrl, 5, (lba >> 16) as u8);
        if mode & 0x40 != 0 {
            fault(&r, mode);
        }
        w(&mut r.ctrl, 7, op);
        // Data phase, bounded.
        let words = usize::from(mode & 0x3f) * 64;
        let wide = if mode & 0x80 != 0 { 4 } else { 2 };
        for i in 0..words {
            let status = r.ctrl.read(Region::Control(0), 2, 1) as u8;
            if status & 0x08 == 0 {
                break;
            }
            if i % 2 == 0 {
                r.ctrl.read(ch, 0, wide);
            } else {
                r.ctrl.write(ch, 0, wide, i as u32);
            }
        }
        // DMA: a PRD table from the input.
        let n = inp.u8().unwrap_or(0) % 4;
        let mut first = None;
        for i in 0..u64::from(n) {
            let (Some(base), Some(len)) = (inp.u16(), inp.u16()) else {
                break;
            };
            let base = u32::from(base) << 2;
            first.get_or_insert(base);
            let e = PrdEntry::new(base, u32::from(len), i + 1 == u64::from(n));
            let _ = e.write(&r.mem, GuestAddress(0x1000 + 8 * i));
        }
        // Payload for data-out commands (e.g. TRIM ranges) at the first region.
        let m = usize::from(inp.u8().unwrap_or(0) % 4);
        let payload = inp.bytes(8 * m).to_vec();
        if let Some(base) = first {
            let _ = r.mem.write_slice(&payload, GuestAddress(u64::from(base)));
        }
        r.ctrl.write(Region::BusMaster, 0, 1, 0);
        r.ctrl.write(Region::BusMaster, 2, 1, 0x06);
        r.ctrl.write(Region::BusMaster, 4, 4, 0x1000);
        let dir = if mode & 1 != 0 {
            BM_CMD_WRITE_MEMORY
        } else {
            0
        };
        r.ctrl
            .write(Region::BusMaster, 0, 1, u32::from(dir | BM_CMD_START));
        r.ctrl.poll();
        if mode & 0x20 != 0 {
            for d in &r.disks {
                d.resume_held();
            }
            r.ctrl.poll();
        }
        if mode == 0xff {
            r.ctrl.write(Region::Control(0), 2, 1, 0x04);
            r.ctrl.write(Region::Control(0), 2, 1, 0x00);
        }
        r.ctrl.read(ch, 7, 1);
    }
    r.stats()
}

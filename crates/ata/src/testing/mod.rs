//! Test support (feature `test-utils`): an in-memory [`HostFile`] with
//! fault injection, the register-level guest driver [`IdeDriver`] (a
//! [`GuestDriver`]) and the fuzz entry points ([`fuzz`]).

pub mod fuzz;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{
    CannotExpress, Disk, DiskOptions, ExecutorKind, GuestDriver, GuestStatus, HostCaps, HostFile,
    IoVec, Issued, Policy,
};

use crate::device::{AtaDevice, DeviceConfig};
use crate::ide::bmdma::{PrdEntry, BM_CMD_START, BM_CMD_WRITE_MEMORY};
use crate::ide::{ControllerConfig, IdeController, Region};
use crate::identify::IdentifyData;
use crate::regs::{AtaError, DeviceControl, Status};

/// Which host operation a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// `preadv`.
    Read,
    /// `pwritev` / `pwritev2`.
    Write,
    /// `fdatasync`.
    Fdatasync,
    /// Punch hole / discard / zeroing.
    Discard,
}

/// An in-memory image. Every access is bounds-checked with `assert!`: an
/// access outside the image is a bug in the engine or the front end, and
/// the fuzzers rely on it panicking.
#[derive(Debug, Default)]
pub struct MemFile {
    data: Mutex<Vec<u8>>,
    faults: Mutex<Vec<(FaultOp, i32)>>,
}

impl MemFile {
    /// A zeroed image of `size` bytes.
    pub fn new(size: usize) -> Arc<MemFile> {
        Arc::new(MemFile {
            data: Mutex::new(vec![0; size]),
            faults: Mutex::new(Vec::new()),
        })
    }

    /// From now on `op` fails with `errno` (until [`MemFile::clear_faults`]).
    pub fn fail(&self, op: FaultOp, errno: i32) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((op, errno));
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn fault(&self, op: FaultOp) -> io::Result<()> {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        match f.iter().find(|(o, _)| *o == op) {
            Some((_, e)) => Err(io::Error::from_raw_os_error(*e)),
            None => Ok(()),
        }
    }

    /// A copy of the image.
    pub fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Overwrites bytes of the image.
    pub fn poke(&self, offset: usize, bytes: &[u8]) {
        self.data.lock().unwrap_or_else(|e| e.into_inner())[offset..offset + bytes.len()]
            .copy_from_slice(bytes);
    }

    fn check(len: usize, offset: u64, n: u64) -> usize {
        let end = offset.checked_add(n).expect("host access overflows");
        assert!(
            end <= len as u64,
            "host access {offset}+{n} beyond image of {len} bytes"
        );
        offset as usize
    }
}

impl HostFile for MemFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        self.fault(FaultOp::Read)?;
        let data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = iov.iter().map(|v| v.len() as u64).sum();
        let mut at = Self::check(data.len(), offset, total);
        for v in iov {
            v.copy_from(0, &data[at..at + v.len()]);
            at += v.len();
        }
        Ok(total as usize)
    }

    fn pwritev(&self, iov: &[IoVec], offset: u64, _dsync: bool) -> io::Result<usize> {
        self.fault(FaultOp::Write)?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = iov.iter().map(|v| v.len() as u64).sum();
        let mut at = Self::check(data.len(), offset, total);
        for v in iov {
            v.copy_to(0, &mut data[at..at + v.len()]);
            at += v.len();
        }
        Ok(total as usize)
    }

    fn fdatasync(&self) -> io::Result<()> {
        self.fault(FaultOp::Fdatasync)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fault(FaultOp::Discard)?;
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let at = Self::check(data.len(), offset, len);
        data[at..at + len as usize].fill(0);
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }

    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }

    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }
}

/// A sparse image of any size: 512-byte blocks kept in a map, zeroes
/// elsewhere. For capacities beyond what [`MemFile`] can hold (LBA28/LBA48
/// boundaries). Accesses must be 512-byte aligned and inside the size.
#[derive(Debug)]
pub struct SparseFile {
    size: u64,
    blocks: Mutex<std::collections::BTreeMap<u64, Vec<u8>>>,
}

impl SparseFile {
    /// An empty image of `size` bytes.
    pub fn new(size: u64) -> Arc<SparseFile> {
        Arc::new(SparseFile {
            size,
            blocks: Mutex::new(Default::default()),
        })
    }

    /// The 512-byte block at `lba`.
    pub fn block(&self, lba: u64) -> Vec<u8> {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&lba)
            .cloned()
            .unwrap_or_else(|| vec![0; 512])
    }

    fn check(&self, offset: u64, n: u64) {
        assert!(offset % 512 == 0 && n % 512 == 0, "unaligned host access");
        assert!(
            offset.checked_add(n).is_some_and(|e| e <= self.size),
            "host access {offset}+{n} beyond image of {} bytes",
            self.size
        );
    }
}

impl HostFile for SparseFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        let total: u64 = iov.iter().map(|v| v.len() as u64).sum();
        self.check(offset, total);
        let mut flat = vec![0u8; total as usize];
        for (i, c) in flat.chunks_mut(512).enumerate() {
            c.copy_from_slice(&self.block(offset / 512 + i as u64));
        }
        let mut at = 0;
        for v in iov {
            v.copy_from(0, &flat[at..at + v.len()]);
            at += v.len();
        }
        Ok(total as usize)
    }

    fn pwritev(&self, iov: &[IoVec], offset: u64, _dsync: bool) -> io::Result<usize> {
        let total: u64 = iov.iter().map(|v| v.len() as u64).sum();
        self.check(offset, total);
        let mut flat = vec![0u8; total as usize];
        let mut at = 0;
        for v in iov {
            v.copy_to(0, &mut flat[at..at + v.len()]);
            at += v.len();
        }
        let mut b = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        for (i, c) in flat.chunks(512).enumerate() {
            b.insert(offset / 512 + i as u64, c.to_vec());
        }
        Ok(total as usize)
    }

    fn fdatasync(&self) -> io::Result<()> {
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len);
        let mut b = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<u64> = b
            .range(offset / 512..(offset + len) / 512)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            b.remove(&k);
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }

    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }

    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()> {
        self.punch_hole(offset, len)
    }
}

/// A disk of `size` bytes over a fresh [`MemFile`], inline executor, trace on.
pub fn mem_disk(size: usize, policy: Policy) -> (Arc<MemFile>, Arc<Disk>) {
    mem_disk_with(size, policy, HostCaps::simulated(size as u64))
}

/// Like [`mem_disk`] with explicit host caps.
pub fn mem_disk_with(size: usize, policy: Policy, caps: HostCaps) -> (Arc<MemFile>, Arc<Disk>) {
    let f = MemFile::new(size);
    let disk = Disk::from_host_file(
        f.clone(),
        caps,
        policy,
        DiskOptions {
            executor: ExecutorKind::Inline,
            trace: true,
            ..Default::default()
        },
    )
    .expect("in-memory disk");
    (f, Arc::new(disk))
}

/// Guest memory layout used by [`IdeDriver`].
pub const PRD_TABLE: u64 = 0x1000;
/// Start of the driver's DMA data buffer (64 KiB aligned).
pub const DATA_BUF: u64 = 0x10000;
/// Size of the driver's DMA data buffer.
pub const DATA_LEN: usize = 1 << 20;
/// Guest memory size of [`IdeDriver::new`].
pub const MEM_SIZE: usize = 2 << 20;

/// A task file as a driver loads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tf {
    /// Features (15:8 go to the HOB write for 48-bit commands).
    pub features: u16,
    /// Count.
    pub count: u16,
    /// LBA (or CHS bytes when `chs`).
    pub lba: u64,
    /// Load the high-order bytes first (48-bit command).
    pub lba48: bool,
    /// Leave Device bit 6 clear (CHS): `lba` bytes are sector, cyl low,
    /// cyl high; `head` is Device bits 3:0.
    pub chs: bool,
    /// Head for CHS.
    pub head: u8,
}

/// The result of one command as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Final Status.
    pub status: Status,
    /// Error register (meaningful with ERR).
    pub error: AtaError,
    /// Bus-master status after the command (DMA only).
    pub bm_status: u8,
    /// Data read (PIO in / DMA in).
    pub data: Vec<u8>,
    /// Interrupts (rising edges of the channel line) during the command.
    pub irqs: u64,
    /// The command is still BSY with a held host request.
    pub pending: bool,
}

impl Outcome {
    /// Whether the command succeeded.
    pub fn ok(&self) -> bool {
        !self.pending
            && !self
                .status
                .intersects(Status::ERR | Status::BSY | Status::DF)
            && self.bm_status & 0x02 == 0
    }

    /// The guest-visible status.
    pub fn guest_status(&self) -> GuestStatus {
        if self.pending {
            return GuestStatus::Pending;
        }
        if self.bm_status & 0x02 != 0 {
            return GuestStatus::Error(format!("BMDMA ERR, ERR {}", err_names(self.error)));
        }
        if self.status.contains(Status::ERR) {
            return GuestStatus::Error(format!("ERR {}", err_names(self.error)));
        }
        if self.status.contains(Status::BSY) {
            return GuestStatus::Error("timeout (BSY)".into());
        }
        GuestStatus::Ok
    }
}

/// Error register bit names, e.g. `ABRT`, `IDNF`, `UNC`.
pub fn err_names(e: AtaError) -> String {
    let names: Vec<&str> = e.iter_names().map(|(n, _)| n).collect();
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join("|")
    }
}

/// A register-level guest driver over one device of an [`IdeController`]:
/// it speaks only through register reads/writes and guest memory (the PRD
/// table and data buffers live in guest memory), the way Linux libata
/// drives a PIIX. As the VMM's event loop it also calls
/// [`IdeController::poll`]/[`IdeController::wait_io`] while the device is
/// BSY. Implements [`GuestDriver`] with DMA commands (WRITE DMA EXT, WRITE
/// DMA FUA EXT, READ DMA EXT, FLUSH CACHE EXT, SET FEATURES 02h/82h, DATA
/// SET MANAGEMENT TRIM, SRST).
pub struct IdeDriver {
    /// The controller.
    pub ctrl: IdeController,
    mem: Arc<GuestMemoryMmap>,
    disk: Arc<Disk>,
    channel: usize,
    drive: usize,
    edges: Arc<AtomicU64>,
    level: Arc<AtomicBool>,
    id: IdentifyData,
    /// Use 32-bit data port accesses for PIO.
    pub pio32: bool,
}

impl std::fmt::Debug for IdeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeDriver")
            .field("channel", &self.channel)
            .field("drive", &self.drive)
            .finish_non_exhaustive()
    }
}

impl IdeDriver {
    /// A PIIX4 controller (compatibility mode) with `disk` as primary
    /// master, 2 MiB of guest memory, probed (SRST + IDENTIFY).
    pub fn new(disk: Arc<Disk>) -> IdeDriver {
        Self::with_config(disk, ControllerConfig::piix4(), DeviceConfig::default())
    }

    /// Like [`IdeDriver::new`] with explicit configurations.
    pub fn with_config(disk: Arc<Disk>, cfg: ControllerConfig, dev: DeviceConfig) -> IdeDriver {
        let mem = Arc::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory"),
        );
        let mut ctrl = IdeController::new(cfg, mem.clone());
        ctrl.attach(0, 0, AtaDevice::new(disk.clone(), dev));
        Self::over(ctrl, mem, disk, 0, 0)
    }

    /// A driver for device `drive` of `channel` of an existing controller
    /// (whose guest memory is `mem`, at least [`MEM_SIZE`] bytes); probes it.
    pub fn over(
        mut ctrl: IdeController,
        mem: Arc<GuestMemoryMmap>,
        disk: Arc<Disk>,
        channel: usize,
        drive: usize,
    ) -> IdeDriver {
        // Enable I/O decoding and bus mastering as the guest OS does
        // (`pci_enable_device` + `pci_set_master`).
        let cmd = ctrl.pci_config_read(4, 2);
        ctrl.pci_config_write(4, 2, cmd | 0x5);
        let edges = Arc::new(AtomicU64::new(0));
        let level = Arc::new(AtomicBool::new(false));
        let (e, l) = (edges.clone(), level.clone());
        ctrl.set_irq_callback(
            channel,
            Box::new(move |v| {
                if v && !l.swap(true, Ordering::SeqCst) {
                    e.fetch_add(1, Ordering::SeqCst);
                }
                if !v {
                    l.store(false, Ordering::SeqCst);
                }
            }),
        );
        let mut d = IdeDriver {
            ctrl,
            mem,
            disk,
            channel,
            drive,
            edges,
            level,
            id: IdentifyData::default(),
            pio32: false,
        };
        d.probe();
        d
    }

    /// The guest memory.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The IDENTIFY data read at the last probe/identify.
    pub fn identify_data(&self) -> &IdentifyData {
        &self.id
    }

    /// Rising edges of the channel's interrupt line so far.
    pub fn irq_count(&self) -> u64 {
        self.edges.load(Ordering::SeqCst)
    }

    /// The channel's interrupt line level now.
    pub fn irq_line(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }

    // ----- registers ------------------------------------------------------

    /// Reads command-block register `reg` (1..=7).
    pub fn inb(&mut self, reg: u64) -> u8 {
        self.ctrl.read(Region::Command(self.channel), reg, 1) as u8
    }

    /// Writes command-block register `reg` (1..=7).
    pub fn outb(&mut self, reg: u64, v: u8) {
        self.ctrl
            .write(Region::Command(self.channel), reg, 1, u32::from(v));
    }

    /// Alternate Status.
    pub fn alt_status(&mut self) -> Status {
        Status::from_bits_retain(self.ctrl.read(Region::Control(self.channel), 2, 1) as u8)
    }

    /// Writes Device Control.
    pub fn devctl(&mut self, v: DeviceControl) {
        self.ctrl
            .write(Region::Control(self.channel), 2, 1, u32::from(v.bits()));
    }

    /// Reads a bus-master register of this channel.
    pub fn bm_read(&mut self, reg: u64) -> u8 {
        self.ctrl
            .read(Region::BusMaster, 8 * self.channel as u64 + reg, 1) as u8
    }

    /// Writes a bus-master register of this channel.
    pub fn bm_write(&mut self, reg: u64, size: u8, v: u32) {
        self.ctrl
            .write(Region::BusMaster, 8 * self.channel as u64 + reg, size, v);
    }

    /// Reads `n` bytes from the data port (16- or 32-bit accesses).
    pub fn read_data(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let step = if self.pio32 { 4 } else { 2 };
        while out.len() < n {
            let v = self.ctrl.read(Region::Command(self.channel), 0, step as u8);
            out.extend_from_slice(&v.to_le_bytes()[..step]);
        }
        out.truncate(n);
        out
    }

    /// Writes bytes to the data port.
    pub fn write_data(&mut self, data: &[u8]) {
        let step = if self.pio32 { 4 } else { 2 };
        for c in data.chunks(step) {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            self.ctrl.write(
                Region::Command(self.channel),
                0,
                step as u8,
                u32::from_le_bytes(b),
            );
        }
    }

    /// Waits while BSY, acting as the VMM's event loop. Returns the status,
    /// or `None` if the device stays BSY (held request or no progress).
    pub fn wait(&mut self) -> Option<Status> {
        for _ in 0..1000 {
            let s = self.alt_status();
            if !s.contains(Status::BSY) {
                return Some(s);
            }
            self.ctrl.poll();
            if self.alt_status().contains(Status::BSY) {
                if self.disk.held_count() > 0 {
                    return None;
                }
                self.ctrl.wait_io();
            }
        }
        None
    }

    /// Loads the task file (HOB bytes first for 48-bit commands).
    pub fn load_tf(&mut self, tf: &Tf) {
        let dev_bit = (self.drive as u8) << 4;
        let mut device = 0xa0 | dev_bit;
        if !tf.chs {
            device |= 0x40;
        }
        self.outb(6, device);
        if tf.lba48 {
            self.outb(1, (tf.features >> 8) as u8);
            self.outb(2, (tf.count >> 8) as u8);
            self.outb(3, (tf.lba >> 24) as u8);
            self.outb(4, (tf.lba >> 32) as u8);
            self.outb(5, (tf.lba >> 40) as u8);
        }
        self.outb(1, tf.features as u8);
        self.outb(2, tf.count as u8);
        self.outb(3, tf.lba as u8);
        self.outb(4, (tf.lba >> 8) as u8);
        self.outb(5, (tf.lba >> 16) as u8);
        if tf.chs {
            device |= tf.head & 0x0f;
        } else if !tf.lba48 {
            device |= (tf.lba >> 24) as u8 & 0x0f;
        }
        self.outb(6, device);
    }

    fn finish(&mut self, irq0: u64, bm_status: u8, data: Vec<u8>) -> Outcome {
        let pending = self.alt_status().contains(Status::BSY);
        let error = AtaError::from_bits_retain(self.inb(1));
        // Reading Status acknowledges the interrupt, as a driver does.
        let status = Status::from_bits_retain(self.inb(7));
        Outcome {
            status,
            error,
            bm_status,
            data,
            irqs: self.irq_count() - irq0,
            pending: pending && self.disk.held_count() > 0,
        }
    }

    /// Runs a non-data command.
    pub fn non_data(&mut self, cmd: u8, tf: &Tf) -> Outcome {
        let irq0 = self.irq_count();
        self.load_tf(tf);
        self.outb(7, cmd);
        self.wait();
        self.finish(irq0, 0, Vec::new())
    }

    /// Runs a PIO data-in command reading DRQ blocks of `block` bytes (the
    /// last one shorter) until the device drops DRQ or `total` bytes were
    /// read.
    pub fn pio_in(&mut self, cmd: u8, tf: &Tf, block: usize, total: usize) -> Outcome {
        let irq0 = self.irq_count();
        self.load_tf(tf);
        self.outb(7, cmd);
        let mut data = Vec::new();
        while let Some(s) = self.wait() {
            if s.contains(Status::ERR) || !s.contains(Status::DRQ) || data.len() >= total {
                break;
            }
            // Acknowledge the per-block interrupt like a driver's handler.
            self.inb(7);
            let chunk = self.read_data(block.min(total - data.len()));
            data.extend_from_slice(&chunk);
        }
        self.finish(irq0, 0, data)
    }

    /// Runs a PIO data-out command writing `data` in DRQ blocks of `block`.
    pub fn pio_out(&mut self, cmd: u8, tf: &Tf, block: usize, data: &[u8]) -> Outcome {
        let irq0 = self.irq_count();
        self.load_tf(tf);
        self.outb(7, cmd);
        let mut chunks = data.chunks(block);
        while let Some(s) = self.wait() {
            if s.contains(Status::ERR) || !s.contains(Status::DRQ) {
                break;
            }
            let Some(c) = chunks.next() else { break };
            self.inb(7);
            self.write_data(c);
        }
        self.finish(irq0, 0, Vec::new())
    }

    /// Writes a PRD table at [`PRD_TABLE`] describing `len` bytes of the
    /// data buffer in 64 KiB regions.
    pub fn build_prd(&mut self, len: usize) {
        let mut at = 0usize;
        let mut i = 0u64;
        while at < len {
            let n = (len - at).min(0x10000);
            let e = PrdEntry::new((DATA_BUF as usize + at) as u32, n as u32, at + n >= len);
            e.write(&self.mem, GuestAddress(PRD_TABLE + 8 * i))
                .expect("PRD table in guest memory");
            at += n;
            i += 1;
        }
    }

    /// Programs the bus master (stop, clear, table pointer, direction) the
    /// way libata's `ata_bmdma_setup` does.
    pub fn bm_setup(&mut self, table: u32, to_memory: bool) {
        self.bm_write(0, 1, 0);
        let st = self.bm_read(2);
        self.bm_write(2, 1, u32::from(st | 0x06));
        self.bm_write(4, 4, table);
        self.bm_write(
            0,
            1,
            if to_memory {
                u32::from(BM_CMD_WRITE_MEMORY)
            } else {
                0
            },
        );
    }

    /// Runs a DMA command over the data buffer: for `to_memory` reads `len`
    /// bytes, otherwise the buffer must already hold the data.
    pub fn dma(&mut self, cmd: u8, tf: &Tf, len: usize, to_memory: bool) -> Outcome {
        let irq0 = self.irq_count();
        self.build_prd(len);
        self.bm_setup(PRD_TABLE as u32, to_memory);
        self.load_tf(tf);
        self.outb(7, cmd);
        let c = self.bm_read(0);
        self.bm_write(0, 1, u32::from(c | BM_CMD_START));
        self.wait();
        let bm = self.bm_read(2);
        let c = self.bm_read(0);
        self.bm_write(0, 1, u32::from(c & !BM_CMD_START));
        self.bm_write(2, 1, u32::from(bm & !0x01));
        let data = if to_memory {
            let mut v = vec![0u8; len];
            self.mem
                .read_slice(&mut v, GuestAddress(DATA_BUF))
                .expect("data buffer");
            v
        } else {
            Vec::new()
        };
        self.finish(irq0, bm, data)
    }

    /// Copies `data` into the DMA data buffer.
    pub fn fill_buffer(&mut self, data: &[u8]) {
        self.mem
            .write_slice(data, GuestAddress(DATA_BUF))
            .expect("data buffer");
    }

    /// SRST, wait for the signature, then IDENTIFY.
    pub fn probe(&mut self) -> Outcome {
        self.devctl(DeviceControl::SRST);
        self.devctl(DeviceControl::empty());
        self.wait();
        self.identify()
    }

    /// IDENTIFY DEVICE; stores the data.
    pub fn identify(&mut self) -> Outcome {
        let o = self.pio_in(0xec, &Tf::default(), 512, 512);
        if o.ok() && o.data.len() == 512 {
            if let Ok(id) = zerocopy::FromBytes::read_from_bytes(&o.data[..]) {
                self.id = id;
            }
        }
        o
    }

    /// What libata's error handler does when a command timed out: if the
    /// device is still BSY or DRQ (e.g. a request held by the `stop`
    /// policy that nobody resumed), SRST it. Returns the command name when
    /// it had to.
    pub fn recover(&mut self) -> Option<String> {
        if !self.alt_status().intersects(Status::BSY | Status::DRQ) {
            return None;
        }
        self.ctrl.poll();
        if !self.alt_status().intersects(Status::BSY | Status::DRQ) {
            return None;
        }
        self.devctl(DeviceControl::SRST);
        self.devctl(DeviceControl::empty());
        self.wait();
        Some("SRST (timeout recovery)".into())
    }

    fn issued(&mut self) -> Issued {
        Issued {
            commands: self.recover().into_iter().collect(),
            status: GuestStatus::Ok,
        }
    }

    fn sectors_per_command(&self) -> u64 {
        (DATA_LEN as u64 / u64::from(self.block_size())).min(65536)
    }

    fn cannot(&self, what: &str, why: &str) -> CannotExpress {
        CannotExpress {
            controller: "ide",
            what: what.into(),
            why: why.into(),
        }
    }

    fn lba48(&self) -> bool {
        self.id.bit(83, 10)
    }
}

fn count_field(n: u64) -> u16 {
    if n == 65536 {
        0
    } else {
        n as u16
    }
}

impl GuestDriver for IdeDriver {
    fn controller(&self) -> &'static str {
        "ide"
    }

    fn block_size(&self) -> u32 {
        if self.id.word(106) & 0xd000 == 0x5000 {
            (u32::from(self.id.word(117)) | u32::from(self.id.word(118)) << 16) * 2
        } else {
            512
        }
    }

    fn capacity(&self) -> u64 {
        if self.lba48() {
            (0..4).fold(0, |a, i| a | u64::from(self.id.word(100 + i)) << (16 * i))
        } else {
            u64::from(self.id.word(60)) | u64::from(self.id.word(61)) << 16
        }
    }

    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<Issued, CannotExpress> {
        if fua && !self.id.bit(84, 6) {
            return Err(self.cannot("FUA write", "IDENTIFY word 84 bit 6 is clear"));
        }
        let bs = u64::from(self.block_size());
        let (op, name) = match (fua, self.lba48()) {
            (true, _) => (0x3d, "WRITE DMA FUA EXT"),
            (false, true) => (0x35, "WRITE DMA EXT"),
            (false, false) => (0xca, "WRITE DMA"),
        };
        let per = self.sectors_per_command() * bs;
        let mut issued = self.issued();
        for (i, chunk) in data.chunks(per as usize).enumerate() {
            let n = chunk.len() as u64 / bs;
            self.fill_buffer(chunk);
            let tf = Tf {
                count: count_field(n),
                lba: lba + i as u64 * (per / bs),
                lba48: op != 0xca,
                ..Tf::default()
            };
            let o = self.dma(op, &tf, chunk.len(), false);
            issued.commands.push(name.to_string());
            issued.status = o.guest_status();
            if !issued.status.is_ok() {
                break;
            }
        }
        Ok(issued)
    }

    fn read(&mut self, lba: u64, count: u32, out: &mut Vec<u8>) -> Result<Issued, CannotExpress> {
        let bs = u64::from(self.block_size());
        let (op, name) = if self.lba48() {
            (0x25, "READ DMA EXT")
        } else {
            (0xc8, "READ DMA")
        };
        out.clear();
        let per = self.sectors_per_command();
        let mut issued = self.issued();
        let mut done = 0u64;
        while done < u64::from(count) {
            let n = (u64::from(count) - done).min(per);
            let tf = Tf {
                count: count_field(n),
                lba: lba + done,
                lba48: op == 0x25,
                ..Tf::default()
            };
            let o = self.dma(op, &tf, (n * bs) as usize, true);
            issued.commands.push(name.to_string());
            issued.status = o.guest_status();
            if !issued.status.is_ok() {
                break;
            }
            out.extend_from_slice(&o.data);
            done += n;
        }
        Ok(issued)
    }

    fn flush(&mut self) -> Result<Issued, CannotExpress> {
        let (op, name) = if self.lba48() {
            (0xea, "FLUSH CACHE EXT")
        } else {
            (0xe7, "FLUSH CACHE")
        };
        let mut issued = self.issued();
        let o = self.non_data(op, &Tf::default());
        issued.commands.push(name.into());
        issued.status = o.guest_status();
        Ok(issued)
    }

    fn set_write_cache(&mut self, on: bool) -> Result<Issued, CannotExpress> {
        if !self.id.bit(82, 5) {
            return Err(self.cannot("write cache toggle", "IDENTIFY word 82 bit 5 is clear"));
        }
        let (code, name) = if on {
            (0x02, "SET FEATURES 02h (enable write cache)")
        } else {
            (0x82, "SET FEATURES 82h (disable write cache)")
        };
        let tf = Tf {
            features: code,
            ..Tf::default()
        };
        let mut issued = self.issued();
        let o = self.non_data(0xef, &tf);
        issued.commands.push(name.into());
        issued.status = o.guest_status();
        Ok(issued)
    }

    fn write_cache(&mut self) -> Result<bool, CannotExpress> {
        self.recover();
        let o = self.identify();
        if !o.ok() {
            return Err(self.cannot("write cache query", "IDENTIFY DEVICE failed"));
        }
        Ok(self.id.bit(85, 5))
    }

    fn discard(&mut self, lba: u64, count: u32) -> Result<Issued, CannotExpress> {
        let mut issued = self.issued();
        self.identify();
        if !self.id.bit(169, 0) {
            return Err(self.cannot(
                "discard",
                "IDENTIFY word 169 bit 0 (TRIM) is clear: the disk's discard policy is not unmap",
            ));
        }
        let max_blocks = u64::from(self.id.word(105).max(1));
        let mut entries: Vec<u64> = Vec::new();
        let mut at = 0u64;
        while at < u64::from(count) {
            let n = (u64::from(count) - at).min(0xffff);
            entries.push((lba + at) | n << 48);
            at += n;
        }
        for group in entries.chunks((max_blocks * 64) as usize) {
            let blocks = (group.len() as u64).div_ceil(64);
            let mut payload = vec![0u8; (blocks * 512) as usize];
            for (i, e) in group.iter().enumerate() {
                payload[8 * i..8 * i + 8].copy_from_slice(&e.to_le_bytes());
            }
            self.fill_buffer(&payload);
            let tf = Tf {
                features: 1,
                count: blocks as u16,
                lba48: true,
                ..Tf::default()
            };
            let o = self.dma(0x06, &tf, payload.len(), false);
            issued.commands.push("DATA SET MANAGEMENT (TRIM)".into());
            issued.status = o.guest_status();
            if !issued.status.is_ok() {
                break;
            }
        }
        Ok(issued)
    }

    fn write_zeroes(
        &mut self,
        _lba: u64,
        _count: u32,
        _unmap: bool,
    ) -> Result<Issued, CannotExpress> {
        Err(self.cannot(
            "write zeroes",
            "the ATA command set implemented here has no zeroing command (TRIM does not guarantee zeroes)",
        ))
    }

    fn reset(&mut self) -> Result<Issued, CannotExpress> {
        let o = self.probe();
        Ok(Issued {
            commands: vec!["SRST".into(), "IDENTIFY DEVICE".into()],
            status: o.guest_status(),
        })
    }
}

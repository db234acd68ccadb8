//! The ATA device: the command set, independent of the transport.
//!
//! Task-file register writes and a command opcode go in; Status/Error,
//! output registers, PIO data and DMA requests come out. A transport (the
//! PIIX-style [`crate::ide`] controller here; an AHCI port could reuse it)
//! moves PIO data through [`AtaDevice::data_read`]/[`AtaDevice::data_write`]
//! and DMA data by handing [`AtaDevice::dma_start`] a scatter list in guest
//! memory built from its descriptors.
//!
//! ## I/O model
//! Host I/O goes through [`Disk::submit`] and completes in
//! [`AtaDevice::poll`], which every entry point calls after submitting. With
//! the inline executor a command therefore completes inside the register
//! write that started it; with a thread pool the device stays BSY until the
//! VMM calls `poll` (when `disk.notify_fd()` is readable) or
//! [`AtaDevice::wait_io`]. A request held by the `stop` error policy keeps
//! the device BSY until the VMM calls `disk.resume_held()` and then `poll`.
//! One [`Disk`] belongs to exactly one device: `poll` consumes every
//! completion the disk returns.
//!
//! ## Data paths
//! - PIO reads: one host read per command into a device buffer (commands
//!   larger than [`PIO_CHUNK_BYTES`] use one read per chunk); DRQ blocks
//!   are then served from the buffer.
//! - PIO writes: DRQ blocks accumulate in a device buffer and the command
//!   becomes **one host write** (one per [`PIO_CHUNK_BYTES`] chunk for
//!   larger commands), so write-through costs one `RWF_DSYNC` write per
//!   command rather than one per sector as in QEMU. The command completes
//!   only when that write has completed.
//! - DMA: one host request straight to/from the PRD scatter list
//!   (`DataBuf::Guest`), no copy in the device.
//!
//! ## Errors (see `docs/ata.md`)
//! Out-of-range address → IDNF; unknown, gated-off or malformed command →
//! ABRT; host read failure → UNC; host write, flush or discard failure →
//! ABRT (what QEMU reports; Linux libata retries an aborted write and then
//! fails the I/O); a request rejected by hostio's validation → ABRT.
//! On host errors the LBA registers report the first LBA of the failed
//! request.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{AlignedBuf, Completion, DataBuf, Disk, GuestBufs, IoError, Op, Request};

use crate::commands::{self, Action, Addressing, CommandDesc, Feature, Protocol};
use crate::identify::{
    gate_open, DmaMode, Geometry, IdentifyData, IdentifyInputs, TransferModes, LBA28_LIMIT,
};
use crate::regs::{AtaError, Reg, Status, TaskFile, DEVICE_LBA};

/// Largest READ/WRITE MULTIPLE block (IDENTIFY word 47).
pub const MAX_MULTIPLE: u8 = 16;
/// Largest host request a PIO command is split into.
pub const PIO_CHUNK_BYTES: usize = 4 << 20;
/// Largest DATA SET MANAGEMENT payload in 512-byte blocks (IDENTIFY word 105).
pub const MAX_DSM_BLOCKS: u16 = 8;

/// Device identity and capabilities fixed at construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Model number (IDENTIFY words 27-46, up to 40 ASCII characters).
    pub model: String,
    /// Serial number (words 10-19, up to 20 characters).
    pub serial: String,
    /// Firmware revision (words 23-26, up to 8 characters).
    pub firmware: String,
    /// Transfer modes of the device; a controller narrows them further.
    pub modes: TransferModes,
    /// Known-bad behaviour for proving the crash suite catches it: IDENTIFY
    /// word 85 claims the write cache is disabled while writes stay volatile
    /// (QEMU 0.10's IDE). Never set outside tests.
    #[doc(hidden)]
    pub sabotage_identify_no_write_cache: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            model: "vmstor ATA disk".into(),
            serial: "VMSTOR-0000".into(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            modes: TransferModes::GENERIC,
            sabotage_identify_no_write_cache: false,
        }
    }
}

/// Power mode (ACS-3 §4.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerMode {
    /// Active.
    Active,
    /// Idle.
    Idle,
    /// Standby.
    Standby,
    /// Sleep: only a reset leaves it; commands are aborted meanwhile.
    Sleep,
}

/// Direction of a DMA transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaDirection {
    /// Device to guest memory (a read).
    ToMemory,
    /// Guest memory to device (a write, or DSM parameter data).
    FromMemory,
}

/// A DMA transfer the device is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmaRequest {
    /// Direction.
    pub direction: DmaDirection,
    /// Bytes.
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    multiple: u8,
    dma_mode: DmaMode,
    pio_mode: u8,
    look_ahead: bool,
    revert: bool,
    geometry: Geometry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// DRQ: the host reads `buf[pos..drq_end]`.
    DataIn,
    /// DRQ: the host writes `buf[pos..drq_end]`.
    DataOut,
    /// Waiting for the transport's DMA engine.
    DmaWait,
    /// BSY: host requests outstanding.
    Io,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoKind {
    PioRead,
    PioWrite,
    Verify,
    DmaRead,
    DmaWrite,
    Flush,
    Discard,
}

/// The command in progress.
#[derive(Debug)]
struct Cmd {
    desc: &'static CommandDesc,
    /// Next LBA to request from / write to the host.
    lba: u64,
    /// Sectors not yet requested (reads) / not yet placed in a chunk (writes).
    left: u64,
    /// Sectors per host request.
    chunk_sectors: u64,
    /// Bytes per DRQ block.
    drq: usize,
    buf: Option<AlignedBuf>,
    /// Valid bytes in `buf`.
    len: usize,
    /// Host cursor in `buf`.
    pos: usize,
    /// End of the current DRQ block in `buf`.
    drq_end: usize,
    /// LBA of `buf[0]` (writes) or of the outstanding request.
    chunk_lba: u64,
    io: IoKind,
    /// Outstanding host requests.
    pending: usize,
    /// First failure of a multi-request step.
    failed: Option<AtaError>,
    /// DMA direction / length while waiting for the engine.
    dma: Option<DmaRequest>,
}

impl Cmd {
    fn new(desc: &'static CommandDesc, io: IoKind) -> Cmd {
        Cmd {
            desc,
            lba: 0,
            left: 0,
            chunk_sectors: 0,
            drq: 512,
            buf: None,
            len: 0,
            pos: 0,
            drq_end: 0,
            chunk_lba: 0,
            io,
            pending: 0,
            failed: None,
            dma: None,
        }
    }
}

/// One ATA disk device. See the module docs.
pub struct AtaDevice {
    disk: Arc<Disk>,
    cfg: DeviceConfig,
    modes: TransferModes,
    tf: TaskFile,
    status: Status,
    error: AtaError,
    intrq: bool,
    phase: Phase,
    cmd: Option<Cmd>,
    settings: Settings,
    power: PowerMode,
    next_tag: u64,
    inflight: Vec<u64>,
    dma_end: bool,
    last_host_error: Option<IoError>,
}

impl std::fmt::Debug for AtaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtaDevice")
            .field("status", &self.status)
            .field("error", &self.error)
            .field("phase", &self.phase)
            .field("tf", &self.tf)
            .finish_non_exhaustive()
    }
}

fn settings_default(capacity: u64, modes: TransferModes) -> Settings {
    let g = Geometry::default_for(capacity);
    Settings {
        multiple: MAX_MULTIPLE,
        // The fastest DMA mode the controller offers is selected at
        // power-on, so firmware that never sends SET FEATURES 03h still sees
        // a consistent word 63/88.
        dma_mode: match (modes.udma, modes.mwdma) {
            (Some(u), _) => DmaMode::Udma(u),
            (None, Some(m)) => DmaMode::Mwdma(m),
            (None, None) => DmaMode::None,
        },
        pio_mode: modes.pio,
        look_ahead: true,
        revert: false,
        geometry: g,
    }
}

impl AtaDevice {
    /// A device over `disk` (built by the caller; one device per disk).
    /// The device starts as after power-on: signature in the task file,
    /// DRDY set, write cache as the disk's policy says.
    pub fn new(disk: Arc<Disk>, cfg: DeviceConfig) -> AtaDevice {
        let modes = cfg.modes.intersect(TransferModes::GENERIC);
        let cap = disk.size() / u64::from(disk.logical_block_size().max(512));
        AtaDevice {
            settings: settings_default(cap, modes),
            disk,
            cfg,
            modes,
            tf: TaskFile::signature(),
            status: Status::DRDY | Status::DSC,
            error: AtaError::AMNF,
            intrq: false,
            phase: Phase::Idle,
            cmd: None,
            power: PowerMode::Active,
            next_tag: 1,
            inflight: Vec::new(),
            dma_end: false,
            last_host_error: None,
        }
    }

    /// Narrows the transfer modes to what the controller supports (called
    /// by the controller on attach) and resets the mode settings.
    pub fn set_controller_modes(&mut self, modes: TransferModes) {
        self.modes = self.cfg.modes.intersect(modes);
        let d = settings_default(self.capacity(), self.modes);
        self.settings.dma_mode = d.dma_mode;
        self.settings.pio_mode = d.pio_mode;
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    /// Transfer modes in effect (device ∩ controller).
    pub fn modes(&self) -> TransferModes {
        self.modes
    }

    /// Logical sector size in bytes.
    pub fn sector_size(&self) -> u64 {
        u64::from(self.disk.logical_block_size().max(512))
    }

    /// Capacity in logical sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size() / self.sector_size()
    }

    /// Status register (no side effect).
    pub fn status(&self) -> Status {
        self.status
    }

    /// Error register.
    pub fn error(&self) -> AtaError {
        self.error
    }

    /// The task file (inputs and outputs).
    pub fn taskfile(&self) -> &TaskFile {
        &self.tf
    }

    /// Whether the device asserts INTRQ (before nIEN masking).
    pub fn intrq(&self) -> bool {
        self.intrq
    }

    /// The power mode.
    pub fn power_mode(&self) -> PowerMode {
        self.power
    }

    /// The last host error seen (for the VMM's logs).
    pub fn last_host_error(&self) -> Option<IoError> {
        self.last_host_error
    }

    /// Whether host requests are outstanding (in flight or held).
    pub fn io_pending(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// A Status register read: returns the status and clears INTRQ.
    pub fn read_status(&mut self) -> Status {
        self.intrq = false;
        self.status
    }

    /// A command-block register read (`Reg::StatusCommand` reads Status
    /// without clearing INTRQ; use [`AtaDevice::read_status`] for that).
    /// With `hob`, the 48-bit previous content is returned.
    pub fn read_register(&self, reg: Reg, hob: bool) -> u8 {
        let t = &self.tf;
        match (reg, hob) {
            (Reg::ErrorFeatures, _) => self.error.bits(),
            (Reg::Count, false) => t.count,
            (Reg::Count, true) => t.hob_count,
            (Reg::LbaLow, false) => t.lba_low,
            (Reg::LbaLow, true) => t.hob_lba_low,
            (Reg::LbaMid, false) => t.lba_mid,
            (Reg::LbaMid, true) => t.hob_lba_mid,
            (Reg::LbaHigh, false) => t.lba_high,
            (Reg::LbaHigh, true) => t.hob_lba_high,
            (Reg::Device, _) => t.device,
            (Reg::StatusCommand, _) => self.status.bits(),
        }
    }

    /// A command-block register write. Ignored while BSY (the host must not
    /// write then; ATA/ATAPI-6 §9.1). `Reg::StatusCommand` goes to
    /// [`AtaDevice::command`] instead.
    pub fn write_register(&mut self, reg: Reg, v: u8) {
        if self.status.contains(Status::BSY) {
            return;
        }
        if reg == Reg::StatusCommand {
            self.command(v);
        } else {
            self.tf.write(reg, v);
        }
    }

    /// Whether the device is in a PIO data phase (DRQ set, data port live).
    pub fn drq(&self) -> bool {
        matches!(self.phase, Phase::DataIn | Phase::DataOut)
    }

    // ----- completion helpers -------------------------------------------

    fn finish_ok(&mut self, irq: bool) {
        self.status = Status::DRDY | Status::DSC;
        self.error = AtaError::empty();
        self.phase = Phase::Idle;
        self.cmd = None;
        if irq {
            self.intrq = true;
        }
    }

    fn finish_err(&mut self, err: AtaError) {
        if let Some(c) = &self.cmd {
            if matches!(c.desc.protocol, Protocol::DmaIn | Protocol::DmaOut)
                && self.phase == Phase::Io
            {
                self.dma_end = true;
            }
        }
        self.status = Status::DRDY | Status::ERR;
        self.error = err;
        self.phase = Phase::Idle;
        self.cmd = None;
        self.intrq = true;
    }

    fn abort(&mut self) {
        self.finish_err(AtaError::ABRT);
    }

    /// Reports `lba` in the LBA registers of a failed read/write command.
    fn report_lba(&mut self, lba: u64) {
        let Some(c) = &self.cmd else { return };
        match c.desc.addressing {
            Addressing::Lba48 => self.tf.set_lba48(lba),
            Addressing::Lba28 if self.tf.device & DEVICE_LBA != 0 => self.tf.set_lba28(lba),
            _ => {}
        }
    }

    fn busy(&mut self) {
        self.status = Status::BSY | Status::DRDY;
        self.phase = Phase::Io;
    }

    fn submit(&mut self, make: impl FnOnce(u64) -> Request) -> Result<(), ()> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        match self.disk.submit(make(tag)) {
            Ok(()) => {
                self.inflight.push(tag);
                if let Some(c) = &mut self.cmd {
                    c.pending += 1;
                }
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    // ----- commands -----------------------------------------------------

    /// A Command register write. Ignored while BSY or DRQ (ATA/ATAPI-6
    /// §9.1; QEMU does the same). Writing a command clears INTRQ.
    pub fn command(&mut self, opcode: u8) {
        if self.status.intersects(Status::BSY | Status::DRQ) {
            return;
        }
        self.intrq = false;
        self.dma_end = false;
        let trim = self.trim_enabled();
        let Some(desc) = commands::lookup(opcode).filter(|d| gate_open(d.gate, trim)) else {
            self.abort();
            return;
        };
        if self.power == PowerMode::Sleep {
            self.abort();
            return;
        }
        match desc.action {
            Action::Nop => self.abort(),
            Action::Recalibrate => self.finish_ok(true),
            Action::Read | Action::Write | Action::ReadVerify => self.start_rw(desc),
            Action::Seek => match self.address(desc) {
                Ok(_) => self.finish_ok(true),
                Err(e) => self.finish_err(e),
            },
            Action::ExecuteDiagnostic => self.execute_diagnostic(true),
            Action::InitializeDeviceParameters => {
                let sectors = u32::from(self.tf.count);
                let heads = u32::from(self.tf.device & 0x0f) + 1;
                if sectors == 0 {
                    self.abort();
                } else {
                    self.settings.geometry = Geometry::with(self.capacity(), heads, sectors);
                    self.finish_ok(true);
                }
            }
            Action::ReadNativeMax => {
                let max = self.capacity().saturating_sub(1);
                if desc.addressing == Addressing::Lba48 {
                    self.tf.set_lba48(max);
                } else {
                    self.tf.set_lba28(max.min(LBA28_LIMIT));
                }
                self.finish_ok(true);
            }
            Action::SetMultiple => {
                let n = self.tf.count;
                if n == 0 || (n.is_power_of_two() && n <= MAX_MULTIPLE) {
                    self.settings.multiple = n;
                    self.finish_ok(true);
                } else {
                    self.abort();
                }
            }
            Action::StandbyImmediate | Action::Standby => {
                self.power = PowerMode::Standby;
                self.finish_ok(true);
            }
            Action::IdleImmediate | Action::Idle => {
                self.power = PowerMode::Idle;
                self.finish_ok(true);
            }
            Action::CheckPowerMode => {
                self.tf.count = match self.power {
                    PowerMode::Active => 0xff,
                    PowerMode::Idle => 0x80,
                    PowerMode::Standby | PowerMode::Sleep => 0x00,
                };
                self.finish_ok(true);
            }
            Action::Sleep => {
                self.power = PowerMode::Sleep;
                self.finish_ok(true);
            }
            Action::Flush => {
                self.power = PowerMode::Active;
                self.cmd = Some(Cmd::new(desc, IoKind::Flush));
                self.busy();
                if self.submit(Request::flush).is_err() {
                    self.abort();
                }
                self.poll();
            }
            Action::Identify => {
                let id = self.identify_data();
                let mut c = Cmd::new(desc, IoKind::PioRead);
                c.buf = Some(AlignedBuf::from_slice(zerocopy::IntoBytes::as_bytes(&id)));
                c.len = 512;
                c.drq = 512;
                c.drq_end = 512;
                self.cmd = Some(c);
                self.enter_data_in();
            }
            Action::SetFeatures => self.set_features(),
            Action::DataSetManagement => self.start_dsm(desc),
        }
    }

    fn trim_enabled(&self) -> bool {
        self.disk.policy().discard == vmstor_hostio::DiscardMode::Unmap && !self.disk.read_only()
    }

    /// The first LBA and sector count of a read/write/verify/seek command,
    /// or IDNF when the range is not addressable.
    fn address(&self, desc: &CommandDesc) -> Result<(u64, u64), AtaError> {
        let t = &self.tf;
        let cap = self.capacity();
        let (lba, count, limit) = match desc.addressing {
            Addressing::Lba48 => {
                let n = match t.count16() {
                    0 => 65536,
                    n => u64::from(n),
                };
                (t.lba48(), n, cap)
            }
            Addressing::Lba28 | Addressing::None => {
                let n = match t.count {
                    0 => 256,
                    n => u64::from(n),
                };
                let lba = if t.device & DEVICE_LBA != 0 {
                    t.lba28()
                } else {
                    let g = self.settings.geometry;
                    let cyl = u32::from(t.lba_high) << 8 | u32::from(t.lba_mid);
                    let head = u32::from(t.device & 0x0f);
                    let sector = u32::from(t.lba_low);
                    if sector == 0 || sector > g.sectors || head >= g.heads || cyl >= g.cylinders {
                        return Err(AtaError::IDNF);
                    }
                    (u64::from(cyl) * u64::from(g.heads) + u64::from(head)) * u64::from(g.sectors)
                        + u64::from(sector)
                        - 1
                };
                (lba, n, cap.min(LBA28_LIMIT))
            }
        };
        // SEEK addresses one sector whatever the count says.
        let count = if desc.action == Action::Seek {
            1
        } else {
            count
        };
        match lba.checked_add(count) {
            Some(end) if end <= limit => Ok((lba, count)),
            _ => Err(AtaError::IDNF),
        }
    }

    fn start_rw(&mut self, desc: &'static CommandDesc) {
        let (lba, count) = match self.address(desc) {
            Ok(v) => v,
            Err(e) => return self.finish_err(e),
        };
        if desc.action == Action::Write && self.disk.read_only() {
            return self.abort();
        }
        let drq_sectors = if desc.multiple {
            match self.settings.multiple {
                0 => return self.abort(),
                m => u64::from(m),
            }
        } else {
            1
        };
        self.power = PowerMode::Active;
        let ss = self.sector_size();
        let per_chunk = (PIO_CHUNK_BYTES as u64 / ss).max(1);
        let io = match (desc.action, desc.protocol) {
            (Action::ReadVerify, _) => IoKind::Verify,
            (_, Protocol::PioIn) => IoKind::PioRead,
            (_, Protocol::PioOut) => IoKind::PioWrite,
            (_, Protocol::DmaIn) => IoKind::DmaRead,
            _ => IoKind::DmaWrite,
        };
        let mut c = Cmd::new(desc, io);
        c.lba = lba;
        c.left = count;
        c.drq = (drq_sectors * ss) as usize;
        c.chunk_sectors = (per_chunk / drq_sectors).max(1) * drq_sectors;
        self.cmd = Some(c);
        match io {
            IoKind::PioRead | IoKind::Verify => {
                self.busy();
                self.issue_read_chunk();
                self.poll();
            }
            IoKind::PioWrite => self.next_write_chunk(None, false),
            _ => {
                let dir = if io == IoKind::DmaRead {
                    DmaDirection::ToMemory
                } else {
                    DmaDirection::FromMemory
                };
                self.wait_dma(DmaRequest {
                    direction: dir,
                    len: count * ss,
                });
            }
        }
    }

    fn wait_dma(&mut self, req: DmaRequest) {
        if let Some(c) = &mut self.cmd {
            c.dma = Some(req);
        }
        self.phase = Phase::DmaWait;
        // DRQ set while the device waits for the DMA engine (as QEMU and
        // most drives report); BSY is set once host I/O is under way.
        self.status = Status::DRDY | Status::DSC | Status::DRQ;
    }

    /// Submits the next read of a PIO read or verify.
    fn issue_read_chunk(&mut self) {
        let ss = self.sector_size();
        let Some(c) = &mut self.cmd else { return };
        let n = c.left.min(c.chunk_sectors);
        let (lba, bytes) = (c.lba, (n * ss) as usize);
        c.chunk_lba = lba;
        c.lba += n;
        c.left -= n;
        let buf = match c.buf.take() {
            Some(b) if b.len() == bytes => b,
            _ => AlignedBuf::new(bytes),
        };
        if self
            .submit(|tag| Request::read(lba * ss, DataBuf::Owned(buf), tag))
            .is_err()
        {
            self.abort();
        }
    }

    /// Starts the data-out phase for the next chunk of a PIO write, reusing
    /// `buf` when its size fits. `irq`: the device interrupts for the first
    /// DRQ block of this chunk (every block but the command's first).
    fn next_write_chunk(&mut self, buf: Option<AlignedBuf>, irq: bool) {
        let ss = self.sector_size();
        let Some(c) = &mut self.cmd else { return };
        let n = c.left.min(c.chunk_sectors);
        let bytes = (n * ss) as usize;
        c.chunk_lba = c.lba;
        c.lba += n;
        c.left -= n;
        c.buf = Some(match buf {
            Some(b) if b.len() == bytes => b,
            _ => AlignedBuf::new(bytes),
        });
        c.len = bytes;
        c.pos = 0;
        c.drq_end = c.drq.min(bytes);
        self.phase = Phase::DataOut;
        self.status = Status::DRDY | Status::DSC | Status::DRQ;
        if irq {
            self.intrq = true;
        }
    }

    fn enter_data_in(&mut self) {
        self.phase = Phase::DataIn;
        self.status = Status::DRDY | Status::DSC | Status::DRQ;
        self.intrq = true;
    }

    fn set_features(&mut self) {
        let Some(f) = commands::lookup_feature(self.tf.features) else {
            return self.abort();
        };
        match f.feature {
            Feature::EnableWriteCache => {
                // Turning the cache on never fails in hostio.
                let _ = self.disk.set_write_cache(true);
            }
            Feature::DisableWriteCache => {
                // Flushes everything written so far before returning; the
                // command completes only after that (ACS-3 §7.45.9).
                if let Err(e) = self.disk.set_write_cache(false) {
                    self.last_host_error = Some(e);
                    return self.abort();
                }
            }
            Feature::SetTransferMode => {
                let v = self.tf.count;
                let n = v & 0x07;
                let m = self.modes;
                match v >> 3 {
                    // 00h/01h: PIO default (with/without IORDY).
                    0 if n <= 1 => self.settings.pio_mode = m.pio.min(2),
                    // 08h + n: PIO flow-control mode n.
                    1 if n <= m.pio => self.settings.pio_mode = n,
                    // 20h + n: multiword DMA mode n.
                    4 if m.mwdma.is_some_and(|x| n <= x) => {
                        self.settings.dma_mode = DmaMode::Mwdma(n)
                    }
                    // 40h + n: Ultra DMA mode n.
                    8 if m.udma.is_some_and(|x| n <= x) => {
                        self.settings.dma_mode = DmaMode::Udma(n)
                    }
                    _ => return self.abort(),
                }
            }
            Feature::EnableLookAhead => self.settings.look_ahead = true,
            Feature::DisableLookAhead => self.settings.look_ahead = false,
            Feature::EnableRevert => self.settings.revert = true,
            Feature::DisableRevert => self.settings.revert = false,
        }
        self.finish_ok(true);
    }

    fn start_dsm(&mut self, desc: &'static CommandDesc) {
        let blocks = self.tf.count16();
        // Features bit 0 = TRIM; the other bits are reserved. A count of
        // zero is reserved.
        if self.tf.features16() != 0x0001
            || blocks == 0
            || blocks > MAX_DSM_BLOCKS
            || self.disk.read_only()
        {
            return self.abort();
        }
        self.cmd = Some(Cmd::new(desc, IoKind::Discard));
        self.wait_dma(DmaRequest {
            direction: DmaDirection::FromMemory,
            len: u64::from(blocks) * 512,
        });
    }

    /// The IDENTIFY DEVICE data for the device's current state.
    pub fn identify_data(&self) -> IdentifyData {
        let cap = self.capacity();
        let caps = self.disk.caps();
        IdentifyData::build(&IdentifyInputs {
            model: &self.cfg.model,
            serial: &self.cfg.serial,
            firmware: &self.cfg.firmware,
            capacity: cap,
            logical_sector: self.sector_size() as u32,
            physical_sector: caps.physical_block_size,
            write_cache: self.disk.write_cache() && !self.cfg.sabotage_identify_no_write_cache,
            look_ahead: self.settings.look_ahead,
            max_multiple: MAX_MULTIPLE,
            multiple: self.settings.multiple,
            modes: self.modes,
            dma_mode: self.settings.dma_mode,
            default_geometry: Geometry::default_for(cap),
            geometry: self.settings.geometry,
            trim: self.trim_enabled(),
            max_dsm_blocks: MAX_DSM_BLOCKS,
            rotational: caps.rotational.get(),
        })
    }

    // ----- PIO ----------------------------------------------------------

    /// Host reads from the data port: copies up to `out.len()` bytes of the
    /// current DRQ block and returns how many (0 outside a data-in phase).
    pub fn data_read(&mut self, out: &mut [u8]) -> usize {
        if self.phase != Phase::DataIn {
            return 0;
        }
        let Some(c) = &mut self.cmd else { return 0 };
        let Some(buf) = &c.buf else { return 0 };
        let n = out.len().min(c.drq_end - c.pos);
        out[..n].copy_from_slice(&buf.as_slice()[c.pos..c.pos + n]);
        c.pos += n;
        if c.pos == c.drq_end {
            if c.pos < c.len {
                c.drq_end = (c.pos + c.drq).min(c.len);
                self.intrq = true;
            } else if c.left > 0 {
                self.busy();
                self.issue_read_chunk();
                self.poll();
            } else {
                // No interrupt after the last block of a PIO data-in
                // command (ATA/ATAPI-6 §9.7).
                self.finish_ok(false);
            }
        }
        n
    }

    /// Host writes to the data port: stores up to `data.len()` bytes into
    /// the current DRQ block and returns how many (0 outside data-out).
    pub fn data_write(&mut self, data: &[u8]) -> usize {
        if self.phase != Phase::DataOut {
            return 0;
        }
        let ss = self.sector_size();
        let Some(c) = &mut self.cmd else { return 0 };
        let Some(buf) = &mut c.buf else { return 0 };
        let n = data.len().min(c.drq_end - c.pos);
        buf.as_mut_slice()[c.pos..c.pos + n].copy_from_slice(&data[..n]);
        c.pos += n;
        if c.pos == c.drq_end {
            if c.pos < c.len {
                c.drq_end = (c.pos + c.drq).min(c.len);
                self.intrq = true;
            } else {
                let (lba, fua) = (c.chunk_lba, c.desc.fua);
                let buf = c.buf.take();
                self.busy();
                let buf = buf.unwrap_or_else(|| AlignedBuf::new(0));
                if self
                    .submit(|tag| Request::write(lba * ss, DataBuf::Owned(buf), fua, tag))
                    .is_err()
                {
                    self.abort();
                }
                self.poll();
            }
        }
        n
    }

    // ----- DMA ----------------------------------------------------------

    /// The DMA transfer the device waits for, if any.
    pub fn dma_request(&self) -> Option<DmaRequest> {
        if self.phase != Phase::DmaWait {
            return None;
        }
        self.cmd.as_ref().and_then(|c| c.dma)
    }

    /// Runs the pending DMA transfer over `segs` in `mem` (whose lengths
    /// the transport made sum to [`DmaRequest::len`]). Completion is
    /// reported through status/INTRQ and [`AtaDevice::take_dma_end`].
    pub fn dma_start(&mut self, mem: &Arc<GuestMemoryMmap>, segs: Vec<(GuestAddress, usize)>) {
        let Some(req) = self.dma_request() else {
            return;
        };
        let ss = self.sector_size();
        let Some(c) = &self.cmd else { return };
        let (lba, io, fua) = (c.lba, c.io, c.desc.fua);
        self.busy();
        match io {
            IoKind::DmaRead | IoKind::DmaWrite => {
                if let Some(c) = &mut self.cmd {
                    c.chunk_lba = lba;
                }
                let bufs = DataBuf::Guest(GuestBufs::new(mem.clone(), segs));
                let r = if io == IoKind::DmaRead {
                    self.submit(|tag| Request::read(lba * ss, bufs, tag))
                } else {
                    self.submit(|tag| Request::write(lba * ss, bufs, fua, tag))
                };
                if r.is_err() {
                    self.report_lba(lba);
                    self.abort();
                }
            }
            IoKind::Discard => self.run_trim(mem, &segs, req.len as usize),
            _ => self.abort(),
        }
        self.poll();
    }

    /// Parses the TRIM range list (ACS-3 §7.5.3.3: 8-byte entries, LBA in
    /// bits 47:0, sector count in 63:48, count 0 = unused) and submits one
    /// discard per used entry. Any range past the end aborts the command
    /// before any discard is issued.
    fn run_trim(&mut self, mem: &Arc<GuestMemoryMmap>, segs: &[(GuestAddress, usize)], len: usize) {
        let mut data = vec![0u8; len];
        let mut at = 0usize;
        for &(addr, n) in segs {
            let n = n.min(len - at);
            if mem.read_slice(&mut data[at..at + n], addr).is_err() {
                return self.abort();
            }
            at += n;
        }
        if at != len {
            return self.abort();
        }
        let cap = self.capacity();
        let mut ranges = Vec::new();
        for e in data.chunks_exact(8) {
            let v = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
            let (lba, n) = (v & 0xffff_ffff_ffff, v >> 48);
            if n == 0 {
                continue;
            }
            if lba + n > cap {
                return self.abort();
            }
            ranges.push((lba, n));
        }
        let ss = self.sector_size();
        for (lba, n) in ranges {
            if self
                .submit(|tag| Request::discard(lba * ss, n * ss, tag))
                .is_err()
            {
                if let Some(c) = &mut self.cmd {
                    c.failed = Some(AtaError::ABRT);
                }
            }
        }
        let (pending, failed) = self
            .cmd
            .as_ref()
            .map_or((0, None), |c| (c.pending, c.failed));
        if pending == 0 {
            self.dma_end = true;
            match failed {
                Some(e) => self.finish_err(e),
                None => self.finish_ok(true),
            }
        }
    }

    /// The transport's DMA engine failed (e.g. a PRD outside guest memory):
    /// the command is aborted with ABRT and INTRQ.
    pub fn dma_abort(&mut self) {
        if self.phase == Phase::DmaWait {
            self.abort();
        }
    }

    /// Whether a DMA command finished its transfer since the last call (the
    /// transport then updates its engine state).
    pub fn take_dma_end(&mut self) -> bool {
        std::mem::take(&mut self.dma_end)
    }

    // ----- completions --------------------------------------------------

    /// Processes every completion the disk has ready. Returns whether any
    /// belonged to this device.
    pub fn poll(&mut self) -> bool {
        let mut any = false;
        while !self.inflight.is_empty() {
            let done = self.disk.poll();
            if done.is_empty() {
                break;
            }
            for c in done {
                if let Some(i) = self.inflight.iter().position(|t| *t == c.tag) {
                    self.inflight.swap_remove(i);
                    any = true;
                    self.complete(c);
                }
            }
        }
        any
    }

    /// Blocks until the disk has a completion (thread-pool executor), then
    /// processes what is ready. Returns at once when nothing is in flight;
    /// a held request stays held.
    pub fn wait_io(&mut self) {
        if !self.inflight.is_empty() {
            let done = self.disk.wait();
            for c in done {
                if let Some(i) = self.inflight.iter().position(|t| *t == c.tag) {
                    self.inflight.swap_remove(i);
                    self.complete(c);
                }
            }
            self.poll();
        }
    }

    fn complete(&mut self, comp: Completion) {
        let Some(c) = &mut self.cmd else { return };
        c.pending = c.pending.saturating_sub(1);
        let expected = comp.buf.len();
        let result = match comp.result {
            Ok(n) if matches!(comp.op, Op::Read | Op::Write { .. }) && n != expected => {
                Err(IoError::new(libc::EIO))
            }
            r => r,
        };
        if let Err(e) = result {
            self.last_host_error = Some(e);
        }
        let io = c.io;
        let lba = c.chunk_lba;
        match (io, result) {
            (IoKind::PioRead, Ok(_)) => {
                if let DataBuf::Owned(b) = comp.buf {
                    c.len = b.len();
                    c.pos = 0;
                    c.drq_end = c.drq.min(c.len);
                    c.buf = Some(b);
                    self.enter_data_in();
                } else {
                    self.abort();
                }
            }
            (IoKind::Verify, Ok(_)) => {
                if c.left > 0 {
                    if let DataBuf::Owned(b) = comp.buf {
                        c.buf = Some(b);
                    }
                    self.issue_read_chunk();
                } else {
                    self.finish_ok(true);
                }
            }
            (IoKind::PioWrite, Ok(_)) => {
                if c.left > 0 {
                    let buf = match comp.buf {
                        DataBuf::Owned(b) => Some(b),
                        _ => None,
                    };
                    self.next_write_chunk(buf, true);
                } else {
                    self.finish_ok(true);
                }
            }
            (IoKind::DmaRead | IoKind::DmaWrite, Ok(_)) => {
                self.dma_end = true;
                self.finish_ok(true);
            }
            (IoKind::Flush, Ok(_)) => self.finish_ok(true),
            (IoKind::Discard, r) => {
                if r.is_err() {
                    c.failed = Some(AtaError::ABRT);
                }
                if c.pending == 0 {
                    let failed = c.failed;
                    self.dma_end = true;
                    match failed {
                        Some(e) => self.finish_err(e),
                        None => self.finish_ok(true),
                    }
                }
            }
            (IoKind::PioRead | IoKind::Verify | IoKind::DmaRead, Err(_)) => {
                self.report_lba(lba);
                self.finish_err(AtaError::UNC);
            }
            (IoKind::PioWrite | IoKind::DmaWrite, Err(_)) => {
                self.report_lba(lba);
                self.finish_err(AtaError::ABRT);
            }
            (IoKind::Flush, Err(_)) => self.finish_err(AtaError::ABRT),
        }
    }

    // ----- resets -------------------------------------------------------

    /// Abandons the command in progress: waits for in-flight host requests
    /// (they cannot be cancelled; data already in guest memory stays) and
    /// drops held ones (never acknowledged, so nothing acknowledged is lost).
    fn abandon(&mut self) {
        if !self.inflight.is_empty() {
            let _ = self.disk.drain();
            self.inflight.clear();
        }
        let _ = self.disk.cancel_held();
        self.cmd = None;
        self.phase = Phase::Idle;
        self.dma_end = false;
    }

    /// SRST asserted: the command in progress is abandoned and the device
    /// reports BSY until [`AtaDevice::end_reset`].
    pub fn begin_reset(&mut self) {
        self.abandon();
        self.status = Status::BSY;
        self.intrq = false;
    }

    /// SRST released: the signature is loaded and the device is ready
    /// (ATA/ATAPI-6 §9.12). With "revert to power-on defaults" enabled
    /// (SET FEATURES CCh) the settings return to their power-on values.
    pub fn end_reset(&mut self) {
        if self.settings.revert {
            self.settings = settings_default(self.capacity(), self.modes);
            self.settings.revert = true;
            if let Err(e) = self.disk.restore_default_write_cache() {
                self.last_host_error = Some(e);
            }
        }
        if self.power == PowerMode::Sleep {
            self.power = PowerMode::Standby;
        }
        self.tf = TaskFile::signature();
        self.error = AtaError::AMNF;
        self.status = Status::DRDY | Status::DSC;
        self.intrq = false;
    }

    /// Power-on / hardware reset: everything returns to its power-on value,
    /// including the write cache (the policy's default; turning it off
    /// flushes first).
    pub fn hardware_reset(&mut self) {
        self.abandon();
        self.settings = settings_default(self.capacity(), self.modes);
        self.power = PowerMode::Active;
        if let Err(e) = self.disk.restore_default_write_cache() {
            self.last_host_error = Some(e);
        }
        self.tf = TaskFile::signature();
        self.error = AtaError::AMNF;
        self.status = Status::DRDY | Status::DSC;
        self.intrq = false;
    }

    /// EXECUTE DEVICE DIAGNOSTIC on this device: signature, error 01h
    /// ("passed"), ready. `irq`: this device reports completion (device 0).
    pub fn execute_diagnostic(&mut self, irq: bool) {
        if self.status.intersects(Status::BSY | Status::DRQ) && self.cmd.is_some() {
            return;
        }
        self.tf = TaskFile::signature();
        self.error = AtaError::AMNF;
        self.status = Status::DRDY | Status::DSC;
        self.phase = Phase::Idle;
        self.cmd = None;
        self.intrq = irq;
    }
}

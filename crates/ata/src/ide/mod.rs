//! `ata::ide`: a PIIX-style IDE controller — two channels of two devices,
//! the task-file command and control blocks, the 16/32-bit PIO data port,
//! bus-master DMA, an IRQ line per channel and a PCI configuration header.
//!
//! ## API
//! The controller is bus-agnostic: the VMM forwards accesses as
//! `read/write(region, offset, size)` ([`Region`]), or lets the controller
//! decode port numbers against the legacy ranges and its own BARs
//! ([`IdeController::io_read`], which is what a remote behind QEMU's PCI
//! proxy receives: absolute port numbers). Configuration cycles go to
//! [`IdeController::pci_config_read`]/[`IdeController::pci_config_write`].
//! DMA uses the guest memory given at construction (replaceable with
//! [`IdeController::set_guest_memory`] when the VMM remaps it). Each
//! channel's interrupt line is reported through a callback on every level
//! change; in native-PCI mode both channels share INTx, see
//! [`shared_irq`]. Callbacks run while the controller is borrowed and must
//! not call back into it.
//!
//! With a thread-pool disk executor the VMM calls [`IdeController::poll`]
//! when a disk's `notify_fd` is readable (and after `resume_held`).
//!
//! ## Register map
//! | region | offset | read | write |
//! |---|---|---|---|
//! | command | 0 | data (16/32-bit PIO) | data |
//! | command | 1 | Error | Features |
//! | command | 2-5 | Count, LBA Low/Mid/High (HOB selects previous) | same |
//! | command | 6 | Device | Device (bit 4 selects the device) |
//! | command | 7 | Status (clears INTRQ) | Command |
//! | control | 2 | Alternate Status | Device Control (nIEN, SRST, HOB) |
//! | bus master | 0/8 | Command (start, direction) | Command |
//! | bus master | 2/10 | Status (active, error, interrupt, DMA capable) | W1C / RW bits |
//! | bus master | 4-7/12-15 | PRD table pointer | same |
//!
//! Legacy ports: 1F0h-1F7h + 3F6h (primary, IRQ 14), 170h-177h + 376h
//! (secondary, IRQ 15), decoded while the channel is in compatibility mode
//! (independently of the PCI I/O enable, as in QEMU, so firmware-less VMMs
//! work). Native BARs decode once assigned with I/O decoding enabled.
//!
//! ## DMA semantics
//! A transfer runs when the device waits for DMA, the engine is active
//! (Start written 0→1) and bus mastering is enabled, in whichever order
//! those happen. The PRD walk ([`bmdma::walk`]) then yields the scatter
//! list for the whole command, handed to the device in one piece:
//! - table exactly as long as the transfer: Active clears, Interrupt sets;
//! - table longer: Active stays set (a later command continues where this
//!   one stopped, as on PIIX);
//! - table shorter: nothing is transferred, Active clears, no interrupt,
//!   the device keeps waiting (re-arm the engine with a longer table, or
//!   reset) — the transfer is all-or-nothing;
//! - descriptor or region outside guest memory, 64 KiB boundary crossed
//!   (strict mode), more than 8192 descriptors, or the engine's direction
//!   contradicting the command: Error sets, Active clears, and the command
//!   is aborted (ABRT) with an interrupt, so a driver notices at once.

pub mod bmdma;
pub mod pci;

use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use crate::device::{AtaDevice, DmaDirection};
use crate::identify::TransferModes;
use crate::regs::{DeviceControl, Reg, Status, DEVICE_DEV};
use bmdma::{BusMaster, PrdFault, BM_CMD_START, BM_CMD_WRITE_MEMORY};
pub use pci::{BarSizes, PciIdentity};

/// An interrupt line: called with the new level on every change.
pub type IrqCallback = Box<dyn FnMut(bool) + Send>;

/// Legacy (compatibility mode) command block bases.
pub const LEGACY_COMMAND: [u16; 2] = [0x1f0, 0x170];
/// Legacy control block ports (Alternate Status / Device Control).
pub const LEGACY_CONTROL: [u16; 2] = [0x3f6, 0x376];
/// Legacy IRQs.
pub const LEGACY_IRQ: [u8; 2] = [14, 15];

/// A register block of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// Command block of channel 0 or 1 (legacy 1F0h/170h, or BAR0/BAR2).
    Command(usize),
    /// Control block of channel 0 or 1 (BAR1/BAR3; legacy base 3F4h/374h,
    /// so Alternate Status / Device Control is offset 2).
    Control(usize),
    /// Bus-master block (BAR4): channel 0 at 0-7, channel 1 at 8-15.
    BusMaster,
}

/// Controller configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControllerConfig {
    /// PCI identity (IDs, class, programming interface).
    pub pci: PciIdentity,
    /// Transfer modes the controller supports (IDENTIFY words 63/64/88 of
    /// attached devices follow).
    pub modes: TransferModes,
    /// I/O BAR sizes.
    pub bar_sizes: BarSizes,
    /// Reject PRD regions and tables that cross a 64 KiB boundary.
    pub strict_prd: bool,
}

impl ControllerConfig {
    /// PIIX3 in compatibility mode (legacy ports, IRQ 14/15), as QEMU's
    /// `piix3-ide`.
    pub fn piix3() -> ControllerConfig {
        ControllerConfig {
            pci: PciIdentity::PIIX3,
            modes: TransferModes::PIIX3,
            bar_sizes: BarSizes::SPEC,
            strict_prd: true,
        }
    }

    /// PIIX3 IDs in native-PCI mode with 16-byte I/O BARs: what a bus that
    /// forwards only BARs (QEMU's PCI proxy) needs; Linux binds `ata_piix`.
    pub fn piix3_native() -> ControllerConfig {
        ControllerConfig {
            pci: PciIdentity::PIIX3_NATIVE,
            bar_sizes: BarSizes::PROXY,
            ..ControllerConfig::piix3()
        }
    }

    /// PIIX4 (UDMA 2) in compatibility mode.
    pub fn piix4() -> ControllerConfig {
        ControllerConfig {
            pci: PciIdentity::PIIX4,
            modes: TransferModes::PIIX4,
            ..ControllerConfig::piix3()
        }
    }
}

struct Channel {
    devices: [Option<AtaDevice>; 2],
    selected: usize,
    ctl: DeviceControl,
    bm: BusMaster,
    /// The selected device's INTRQ as driven onto the cable (nIEN applied).
    device_line: bool,
    /// The level last reported through the callback.
    line: bool,
    irq: Option<IrqCallback>,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            devices: [None, None],
            selected: 0,
            ctl: DeviceControl::empty(),
            bm: BusMaster::default(),
            device_line: false,
            line: false,
            irq: None,
        }
    }

    fn capable_bits(&self) -> u8 {
        let mut v = 0;
        if self.devices[0].is_some() {
            v |= bmdma::BM_STATUS_DRIVE0_DMA;
        }
        if self.devices[1].is_some() {
            v |= bmdma::BM_STATUS_DRIVE1_DMA;
        }
        v
    }

    fn sel(&mut self) -> Option<&mut AtaDevice> {
        self.devices[self.selected].as_mut()
    }
}

/// The controller. See the module docs.
pub struct IdeController {
    cfg: ControllerConfig,
    pci: pci::PciConfig,
    channels: [Channel; 2],
    mem: Arc<GuestMemoryMmap>,
}

impl std::fmt::Debug for IdeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeController")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Two channel callbacks that drive one shared line (native-PCI INTx): the
/// output is the OR of both channels, reported on change.
pub fn shared_irq(output: impl FnMut(bool) + Send + 'static) -> [IrqCallback; 2] {
    struct Shared {
        levels: [bool; 2],
        out: bool,
        cb: Box<dyn FnMut(bool) + Send>,
    }
    let s = Arc::new(Mutex::new(Shared {
        levels: [false; 2],
        out: false,
        cb: Box::new(output),
    }));
    let mk = |i: usize| -> IrqCallback {
        let s = s.clone();
        Box::new(move |level| {
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            g.levels[i] = level;
            let out = g.levels[0] || g.levels[1];
            if out != g.out {
                g.out = out;
                (g.cb)(out);
            }
        })
    };
    [mk(0), mk(1)]
}

impl IdeController {
    /// A controller with no devices attached, DMA into `mem`.
    pub fn new(cfg: ControllerConfig, mem: Arc<GuestMemoryMmap>) -> IdeController {
        IdeController {
            pci: pci::PciConfig::new(cfg.pci, cfg.bar_sizes),
            cfg,
            channels: [Channel::new(), Channel::new()],
            mem,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.cfg
    }

    /// Attaches `dev` as device `drive` (0 = master, 1 = slave) of
    /// `channel`, replacing any device there. Its transfer modes are
    /// narrowed to the controller's.
    pub fn attach(&mut self, channel: usize, drive: usize, mut dev: AtaDevice) {
        dev.set_controller_modes(self.cfg.modes);
        let c = &mut self.channels[channel & 1];
        c.devices[drive & 1] = Some(dev);
        c.bm.status |= c.capable_bits();
    }

    /// Detaches and returns a device.
    pub fn detach(&mut self, channel: usize, drive: usize) -> Option<AtaDevice> {
        let d = self.channels[channel & 1].devices[drive & 1].take();
        self.service(channel & 1);
        d
    }

    /// A device.
    pub fn device(&self, channel: usize, drive: usize) -> Option<&AtaDevice> {
        self.channels[channel & 1].devices[drive & 1].as_ref()
    }

    /// A device, mutably (e.g. to poll it directly).
    pub fn device_mut(&mut self, channel: usize, drive: usize) -> Option<&mut AtaDevice> {
        self.channels[channel & 1].devices[drive & 1].as_mut()
    }

    /// Sets the interrupt callback of `channel`; it is called at once with
    /// the current level.
    pub fn set_irq_callback(&mut self, channel: usize, mut cb: IrqCallback) {
        let c = &mut self.channels[channel & 1];
        cb(c.line);
        c.irq = Some(cb);
    }

    /// Replaces the guest memory DMA goes to (after a remap). Transfers
    /// already handed to the host keep the memory they were given.
    pub fn set_guest_memory(&mut self, mem: Arc<GuestMemoryMmap>) {
        self.mem = mem;
    }

    /// The current level of `channel`'s interrupt line.
    pub fn irq_level(&self, channel: usize) -> bool {
        self.channels[channel & 1].line
    }

    /// The size of BAR `bar` (0-5) if the controller implements it (BAR0-3
    /// only for channels that can run in native-PCI mode; BAR4 always).
    pub fn bar_size(&self, bar: usize) -> Option<u32> {
        self.pci.bar_size(bar)
    }

    /// The completion eventfds of attached disks that use a thread-pool
    /// executor: when one is readable, call [`IdeController::poll`].
    pub fn notify_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.channels
            .iter()
            .flat_map(|c| c.devices.iter().flatten())
            .filter_map(|d| d.disk().notify_fd())
            .collect()
    }

    /// Whether `channel` is in native-PCI mode (its IRQ is the PCI INTx
    /// line) rather than compatibility mode (IRQ 14/15).
    pub fn native(&self, channel: usize) -> bool {
        self.pci.native(channel & 1)
    }

    // ----- PCI ----------------------------------------------------------

    /// A configuration read.
    pub fn pci_config_read(&self, offset: u16, size: u8) -> u32 {
        let intx = (0..2).any(|ch| self.pci.native(ch) && self.channels[ch].device_line);
        self.pci.read(offset, size, intx)
    }

    /// A configuration write.
    pub fn pci_config_write(&mut self, offset: u16, size: u8, value: u32) {
        self.pci.write(offset, size, value);
        // Bus mastering or INTx masking may have changed.
        self.service(0);
        self.service(1);
    }

    // ----- decoding -----------------------------------------------------

    /// The region and offset an I/O port falls in, given the channel modes
    /// and BARs.
    pub fn decode(&self, port: u16) -> Option<(Region, u64)> {
        let p = u32::from(port);
        // A guest may place a BAR at the top of the I/O space: no `base + size`.
        let within = |base: u32, size: u32| p.checked_sub(base).filter(|&o| o < size);
        for ch in 0..2 {
            if !self.pci.channel_enabled(ch) {
                continue;
            }
            if self.pci.native(ch) {
                let sizes = self.cfg.bar_sizes;
                if let Some(o) = self
                    .pci
                    .bar_base(2 * ch)
                    .and_then(|b| within(b, sizes.command))
                {
                    return Some((Region::Command(ch), u64::from(o)));
                }
                if let Some(o) = self
                    .pci
                    .bar_base(2 * ch + 1)
                    .and_then(|b| within(b, sizes.control))
                {
                    return Some((Region::Control(ch), u64::from(o)));
                }
            } else {
                if let Some(o) = within(u32::from(LEGACY_COMMAND[ch]), 8) {
                    return Some((Region::Command(ch), u64::from(o)));
                }
                if p == u32::from(LEGACY_CONTROL[ch]) {
                    return Some((Region::Control(ch), 2));
                }
            }
        }
        let bm = self
            .pci
            .bar_base(4)
            .and_then(|b| within(b, self.cfg.bar_sizes.bus_master))?;
        Some((Region::BusMaster, u64::from(bm)))
    }

    /// An I/O port read; `None` if the port is not decoded.
    pub fn io_read(&mut self, port: u16, size: u8) -> Option<u32> {
        let (r, o) = self.decode(port)?;
        Some(self.read(r, o, size))
    }

    /// An I/O port write; `false` if the port is not decoded.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) -> bool {
        match self.decode(port) {
            Some((r, o)) => {
                self.write(r, o, size, value);
                true
            }
            None => false,
        }
    }

    /// A read of BAR `bar` (0-4) at `offset`, for VMMs that map BARs
    /// themselves.
    pub fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u32 {
        match Self::bar_region(bar) {
            Some(r) => self.read(r, offset, size),
            None => 0,
        }
    }

    /// A write of BAR `bar` (0-4) at `offset`.
    pub fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u32) {
        if let Some(r) = Self::bar_region(bar) {
            self.write(r, offset, size, value);
        }
    }

    fn bar_region(bar: usize) -> Option<Region> {
        Some(match bar {
            0 => Region::Command(0),
            1 => Region::Control(0),
            2 => Region::Command(1),
            3 => Region::Control(1),
            4 => Region::BusMaster,
            _ => return None,
        })
    }

    // ----- register access ----------------------------------------------

    /// A read of `size` (1, 2 or 4) bytes at `offset` in `region`.
    /// Multi-byte accesses other than the data port are split into byte
    /// accesses, low byte first.
    pub fn read(&mut self, region: Region, offset: u64, size: u8) -> u32 {
        let size = size.clamp(1, 4);
        if let Region::Command(ch) = region {
            if offset == 0 {
                return self.data_read(ch & 1, size);
            }
        }
        let mut v = 0u32;
        for i in 0..u64::from(size) {
            v |= u32::from(self.read_byte(region, offset + i)) << (8 * i);
        }
        v
    }

    /// A write of `size` (1, 2 or 4) bytes at `offset` in `region`.
    pub fn write(&mut self, region: Region, offset: u64, size: u8, value: u32) {
        let size = size.clamp(1, 4);
        if let Region::Command(ch) = region {
            if offset == 0 {
                return self.data_write(ch & 1, size, value);
            }
        }
        for i in 0..u64::from(size) {
            self.write_byte(region, offset + i, (value >> (8 * i)) as u8);
        }
    }

    fn read_byte(&mut self, region: Region, offset: u64) -> u8 {
        match region {
            Region::Command(ch) => {
                let ch = ch & 1;
                let c = &mut self.channels[ch];
                let hob = c.ctl.contains(DeviceControl::HOB);
                let v = match (Reg::from_offset(offset), c.sel()) {
                    (Some(Reg::StatusCommand), Some(d)) => d.read_status().bits(),
                    (Some(r), Some(d)) => d.read_register(r, hob),
                    // Absent device (or offset 0 as a byte of a wider
                    // access): reads as zero, which libata's device check
                    // takes as "no device".
                    (Some(_), None) => 0,
                    (None, _) => 0xff,
                };
                if offset == 7 {
                    self.service(ch);
                }
                v
            }
            Region::Control(ch) => {
                let c = &mut self.channels[ch & 1];
                match (offset, c.sel()) {
                    (2, Some(d)) => d.status().bits(),
                    (2, None) => 0,
                    _ => 0xff,
                }
            }
            Region::BusMaster => {
                if offset >= 16 {
                    return 0xff;
                }
                self.channels[(offset / 8) as usize].bm.read(offset % 8)
            }
        }
    }

    fn write_byte(&mut self, region: Region, offset: u64, v: u8) {
        match region {
            Region::Command(ch) => {
                let ch = ch & 1;
                let Some(reg) = Reg::from_offset(offset) else {
                    return;
                };
                let c = &mut self.channels[ch];
                // A write to any command block register clears HOB.
                c.ctl.remove(DeviceControl::HOB);
                if c.ctl.contains(DeviceControl::SRST) {
                    return;
                }
                match reg {
                    Reg::StatusCommand => self.command(ch, v),
                    _ => {
                        if reg == Reg::Device {
                            let busy = c.sel().is_some_and(|d| d.status().contains(Status::BSY));
                            if !busy {
                                c.selected = usize::from(v & DEVICE_DEV != 0);
                            }
                        }
                        for d in c.devices.iter_mut().flatten() {
                            d.write_register(reg, v);
                        }
                    }
                }
                self.service(ch);
            }
            Region::Control(ch) => {
                if offset == 2 {
                    self.device_control(ch & 1, v);
                }
            }
            Region::BusMaster => {
                if offset < 16 {
                    let ch = (offset / 8) as usize;
                    self.channels[ch].bm.write(offset % 8, v);
                    self.service(ch);
                }
            }
        }
    }

    fn command(&mut self, ch: usize, cmd: u8) {
        let c = &mut self.channels[ch];
        let sel = c.selected;
        let Some(status) = c.devices[sel].as_ref().map(|d| d.status()) else {
            return;
        };
        if status.intersects(Status::BSY | Status::DRQ) {
            return;
        }
        if cmd == 0x90 && crate::commands::lookup(cmd).is_some() {
            // EXECUTE DEVICE DIAGNOSTIC: both devices run it whichever is
            // selected; device 0 reports (device 1 when it is alone), and
            // the signature's Device register selects device 0.
            let first = if c.devices[0].is_some() { 0 } else { 1 };
            for (i, d) in c.devices.iter_mut().enumerate() {
                if let Some(d) = d {
                    d.execute_diagnostic(i == first);
                }
            }
            c.selected = first;
        } else if let Some(d) = c.devices[sel].as_mut() {
            d.command(cmd);
        }
    }

    fn device_control(&mut self, ch: usize, v: u8) {
        let c = &mut self.channels[ch];
        let new = DeviceControl::from_bits_truncate(v);
        let was = c.ctl;
        c.ctl = new;
        if new.contains(DeviceControl::SRST) && !was.contains(DeviceControl::SRST) {
            for d in c.devices.iter_mut().flatten() {
                d.begin_reset();
            }
            c.bm.transfer = None;
        } else if !new.contains(DeviceControl::SRST) && was.contains(DeviceControl::SRST) {
            for d in c.devices.iter_mut().flatten() {
                d.end_reset();
            }
            c.selected = 0;
        }
        self.service(ch);
    }

    fn data_read(&mut self, ch: usize, size: u8) -> u32 {
        // An 8-bit access still moves a 16-bit word on the cable; the low
        // byte is returned.
        let n = if size == 4 { 4 } else { 2 };
        let mut buf = [0xffu8; 4];
        let Some(d) = self.channels[ch].sel() else {
            return 0;
        };
        d.data_read(&mut buf[..n]);
        self.service(ch);
        let v = u32::from_le_bytes(buf);
        match size {
            1 => v & 0xff,
            2 => v & 0xffff,
            _ => v,
        }
    }

    fn data_write(&mut self, ch: usize, size: u8, value: u32) {
        let n = if size == 4 { 4 } else { 2 };
        let bytes = value.to_le_bytes();
        let Some(d) = self.channels[ch].sel() else {
            return;
        };
        d.data_write(&bytes[..n]);
        self.service(ch);
    }

    // ----- engine and interrupts ------------------------------------------

    /// Processes host completions for every device (thread-pool executor,
    /// or after `disk.resume_held()`).
    pub fn poll(&mut self) {
        for ch in 0..2 {
            for d in self.channels[ch].devices.iter_mut().flatten() {
                d.poll();
            }
            self.service(ch);
        }
    }

    /// Blocks until every device with host I/O in flight has progressed
    /// (thread-pool executor), then services the channels. Returns at once
    /// with the inline executor or when requests are held.
    pub fn wait_io(&mut self) {
        for ch in 0..2 {
            for d in self.channels[ch].devices.iter_mut().flatten() {
                d.wait_io();
            }
            self.service(ch);
        }
    }

    /// Hardware reset (PCI reset / machine reset): configuration space,
    /// bus-master registers and devices return to power-on state; the
    /// interrupt lines drop.
    pub fn reset(&mut self) {
        self.pci.reset();
        for ch in 0..2 {
            let c = &mut self.channels[ch];
            for d in c.devices.iter_mut().flatten() {
                d.hardware_reset();
            }
            c.selected = 0;
            c.ctl = DeviceControl::empty();
            let capable = c.capable_bits();
            c.bm.reset(capable);
            self.service(ch);
        }
    }

    /// Runs the DMA engine and recomputes the interrupt line of `ch`.
    fn service(&mut self, ch: usize) {
        let mem = self.mem.clone();
        let strict = self.cfg.strict_prd;
        let bme = self.pci.bus_master_enabled();
        let native = self.pci.native(ch);
        let intx_off = self.pci.intx_disabled();
        let c = &mut self.channels[ch];
        Self::finish_transfers(c);
        if c.bm.active && c.bm.cmd & BM_CMD_START != 0 && bme && c.bm.transfer.is_none() {
            let waiting = (0..2).find_map(|i| {
                c.devices[i]
                    .as_ref()
                    .and_then(|d| d.dma_request())
                    .map(|r| (i, r))
            });
            if let (Some((i, req)), Some(cur)) = (waiting, c.bm.cursor) {
                let to_memory = c.bm.cmd & BM_CMD_WRITE_MEMORY != 0;
                let dir_ok = (req.direction == DmaDirection::ToMemory) == to_memory;
                let walked = if dir_ok {
                    bmdma::walk(&mem, c.bm.table, cur, req.len, strict)
                } else {
                    Err(PrdFault::Memory)
                };
                match walked {
                    Ok(w) => {
                        c.bm.transfer = Some((i, w.eot, w.next));
                        if let Some(d) = c.devices[i].as_mut() {
                            d.dma_start(&mem, w.segs);
                        }
                        Self::finish_transfers(c);
                    }
                    Err(PrdFault::Short) => {
                        c.bm.active = false;
                        c.bm.cursor = None;
                    }
                    Err(_) => {
                        c.bm.status |= bmdma::BM_STATUS_ERROR;
                        c.bm.active = false;
                        c.bm.cursor = None;
                        if let Some(d) = c.devices[i].as_mut() {
                            d.dma_abort();
                        }
                    }
                }
            }
        }
        // Interrupt line: only the selected device drives INTRQ; nIEN
        // masks it. PIIX latches the rising edge in the bus-master
        // Interrupt bit.
        let dev_line = !c.ctl.contains(DeviceControl::NIEN)
            && c.devices[c.selected].as_ref().is_some_and(|d| d.intrq());
        if dev_line && !c.device_line {
            c.bm.status |= bmdma::BM_STATUS_INTERRUPT;
        }
        c.device_line = dev_line;
        let line = dev_line && !(native && intx_off);
        if line != c.line {
            c.line = line;
            if let Some(cb) = c.irq.as_mut() {
                cb(line);
            }
        }
    }

    fn finish_transfers(c: &mut Channel) {
        for i in 0..2 {
            let ended = c.devices[i].as_mut().is_some_and(|d| d.take_dma_end());
            if !ended {
                continue;
            }
            if let Some((dev, eot, next)) = c.bm.transfer {
                if dev == i {
                    c.bm.transfer = None;
                    if c.bm.active {
                        c.bm.active = !eot;
                        c.bm.cursor = (!eot).then_some(next);
                    }
                }
            }
        }
    }
}

//! vmstor's IDE controller (`vmstor-ata`) as a proxied PCI function.
//!
//! The controller runs as a PIIX3 in native-PCI mode on both channels
//! (`ControllerConfig::piix3_native`: IDs 8086:7010, prog-if 8Fh, 16-byte I/O
//! BARs), so Linux's `ata_piix` binds it by itself and every register sits in
//! a BAR the proxy forwards: compatibility-mode ports (1F0h, IRQ 14) cannot be
//! proxied. One disk is attached as the primary master. Both channels'
//! interrupt outputs are ORed onto the function's INTx line.
//!
//! Host I/O runs on hostio's inline executor: a command completes inside the
//! register write that starts it (the guest's vCPU waits for the disk, which
//! is what a synchronous register access through the proxy means anyway).

use std::path::Path;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmstor_ata::ide::shared_irq;
use vmstor_ata::{AtaDevice, ControllerConfig, DeviceConfig, IdeController};
use vmstor_hostio::{
    CacheMode, CounterSnapshot, Disk, DiskOptions, ExecutorKind, HostOp, OpenError, Policy,
};

use crate::irq::IrqLine;
use crate::pci::{BarDesc, BarKind, PciFunction, NUM_BARS};

/// Host operations of a traced disk, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostOpCounts {
    /// `pwritev2(RWF_DSYNC)`: writes durable on completion.
    pub dsync_writes: u64,
    /// Plain `pwritev`.
    pub writes: u64,
    /// `fdatasync`.
    pub fdatasyncs: u64,
}

/// The IDE function.
pub struct IdeFunction {
    ctrl: IdeController,
    disk: Arc<Disk>,
}

impl std::fmt::Debug for IdeFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdeFunction").finish_non_exhaustive()
    }
}

impl IdeFunction {
    /// A controller with `disk` as the primary master.
    pub fn new(disk: Arc<Disk>) -> IdeFunction {
        let mut ctrl = IdeController::new(
            ControllerConfig::piix3_native(),
            Arc::new(GuestMemoryMmap::new()),
        );
        let cfg = DeviceConfig {
            model: "vmstor IDE disk".into(),
            serial: "vmstor-ide".into(),
            ..DeviceConfig::default()
        };
        ctrl.attach(0, 0, AtaDevice::new(disk.clone(), cfg));
        IdeFunction { ctrl, disk }
    }

    /// Opens `image` with the cache `mode` and attaches it. With `trace`,
    /// hostio records every host operation (memory grows with the I/O done:
    /// for tests, see [`IdeFunction::host_ops`]).
    pub fn open(image: &Path, mode: CacheMode, trace: bool) -> Result<IdeFunction, OpenError> {
        let opts = DiskOptions {
            executor: ExecutorKind::Inline,
            trace,
            ..DiskOptions::default()
        };
        let disk = Disk::open(image, Policy::from_mode(mode), opts)?;
        Ok(IdeFunction::new(Arc::new(disk)))
    }

    /// The disk's host-I/O counters.
    pub fn counters(&self) -> CounterSnapshot {
        self.disk.counters()
    }

    /// Host operations recorded so far (needs `trace`), by kind.
    pub fn host_ops(&self) -> HostOpCounts {
        let mut c = HostOpCounts::default();
        for e in self.disk.trace().snapshot() {
            match e.op {
                HostOp::Write { dsync: true, .. } => c.dsync_writes += 1,
                HostOp::Write { dsync: false, .. } => c.writes += 1,
                HostOp::Fdatasync => c.fdatasyncs += 1,
                _ => {}
            }
        }
        c
    }
}

impl PciFunction for IdeFunction {
    fn bars(&self) -> [Option<BarDesc>; NUM_BARS] {
        std::array::from_fn(|i| {
            self.ctrl.bar_size(i).map(|size| BarDesc {
                kind: BarKind::Io,
                size: u64::from(size),
            })
        })
    }

    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        self.ctrl.pci_config_read(offset, size)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) {
        self.ctrl.pci_config_write(offset, size, value);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        // I/O accesses are at most 4 bytes on x86; a wider one reads as two halves' worth of
        // nothing rather than reaching the controller with a size it does not know.
        if size > 4 {
            return u64::MAX;
        }
        u64::from(self.ctrl.bar_read(bar, offset, size))
    }

    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64) {
        if size <= 4 {
            self.ctrl.bar_write(bar, offset, size, value as u32);
        }
    }

    fn reset(&mut self) {
        self.ctrl.reset();
    }

    fn set_irq_sink(&mut self, irq: IrqLine) {
        let [a, b] = shared_irq(move |level| irq.set_level(level));
        self.ctrl.set_irq_callback(0, a);
        self.ctrl.set_irq_callback(1, b);
    }

    fn set_guest_memory(&mut self, mem: Arc<GuestMemoryMmap>) {
        self.ctrl.set_guest_memory(mem);
    }

    fn wake_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.ctrl.notify_fds()
    }

    fn poll(&mut self) {
        self.ctrl.poll();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::decode_bar;
    use crate::wire::Space;

    #[test]
    fn presents_a_native_piix3_with_io_bars() {
        let img = tempfile::NamedTempFile::new().unwrap();
        img.as_file().set_len(8 << 20).unwrap();
        let mut f = IdeFunction::open(img.path(), CacheMode::Writeback, false).unwrap();
        assert_eq!(f.config_read(0, 4), 0x7010_8086);
        assert_eq!(f.config_read(0x09, 1), 0x8f, "native mode, both channels");
        assert_eq!(f.config_read(0x3d, 1), 1, "INTA#");
        let bars = f.bars();
        for (i, b) in bars.iter().take(5).enumerate() {
            let b = b.expect("BAR0-4");
            assert_eq!(b.kind, BarKind::Io);
            assert!(
                b.size >= 16,
                "BAR{i}: {} bytes (the proxy needs >= 16)",
                b.size
            );
        }
        assert!(bars[5].is_none());
        // assign BAR0 and read the primary status register through the decoder
        f.config_write(0x10, 4, 0xc000);
        f.config_write(0x04, 2, 0x5);
        let (bar, off) = decode_bar(&mut f, Space::Io, 0xc007, 1).expect("status register");
        assert_eq!((bar, off), (0, 7));
        let st = f.bar_read(bar, off, 1);
        assert_eq!(st & 0x80, 0, "not BSY: {st:#x}");
        assert_eq!(f.bar_read(0, 0, 8), u64::MAX, "no 8-byte I/O");
        let line = IrqLine::new();
        f.set_irq_sink(line.clone());
        assert!(!line.level());
        f.reset();
        assert_eq!(f.config_read(0x10, 4) & !0xf, 0, "reset clears BARs");
    }
}

//! The controller's register, port-decoding, interrupt and PCI surface.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::ide::{shared_irq, ControllerConfig, IdeController, Region};
use crate::regs::{DeviceControl, Status};
use crate::testing::MEM_SIZE;
use crate::{AtaDevice, DeviceConfig};
use vm_memory::{GuestAddress, GuestMemoryMmap};

fn mem() -> Arc<GuestMemoryMmap> {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap())
}

fn dev(size: usize) -> (Arc<MemFile>, AtaDevice) {
    let (f, disk) = mem_disk(size, Policy::default());
    (f, AtaDevice::new(disk, DeviceConfig::default()))
}

#[test]
fn legacy_ports_decode_in_compatibility_mode() {
    let mut c = IdeController::new(ControllerConfig::piix3(), mem());
    let (_f, d) = dev(DISK);
    c.attach(0, 0, d);
    assert_eq!(c.decode(0x1f7), Some((Region::Command(0), 7)));
    assert_eq!(c.decode(0x3f6), Some((Region::Control(0), 2)));
    assert_eq!(c.decode(0x177), Some((Region::Command(1), 7)));
    assert_eq!(c.decode(0x376), Some((Region::Control(1), 2)));
    assert_eq!(c.decode(0x3f7), None, "floppy's port stays unclaimed");
    assert_eq!(c.decode(0x1f8), None);
    assert_eq!(
        c.io_read(0x1f7, 1),
        Some(u32::from((Status::DRDY | Status::DSC).bits()))
    );
    assert_eq!(c.io_read(0x1f2, 1), Some(1), "signature count");
    // Empty secondary channel reads as zero (no device).
    assert_eq!(c.io_read(0x177, 1), Some(0));
    // BAR4 decodes once assigned with I/O enabled.
    assert_eq!(c.decode(0xc000), None);
    c.pci_config_write(0x20, 4, 0xc000);
    c.pci_config_write(4, 2, 1);
    assert_eq!(c.decode(0xc00a), Some((Region::BusMaster, 10)));
    assert_eq!(c.decode(0xc010), None);
    // IDETIM decode enable off: the channel disappears.
    c.pci_config_write(0x40, 2, 0);
    assert_eq!(c.decode(0x1f7), None);
    assert_eq!(c.decode(0x177), Some((Region::Command(1), 7)));
}

#[test]
fn native_mode_decodes_bars_only() {
    let mut c = IdeController::new(ControllerConfig::piix3_native(), mem());
    let (_f, d) = dev(DISK);
    c.attach(0, 0, d);
    assert!(c.native(0) && c.native(1));
    assert_eq!(c.decode(0x1f7), None);
    // Linux-style assignment: BAR0 cmd, BAR1 ctl (+2), BAR4 bus master.
    c.pci_config_write(0x10, 4, 0xc040);
    c.pci_config_write(0x14, 4, 0xc050);
    c.pci_config_write(0x20, 4, 0xc000);
    assert_eq!(c.decode(0xc047), None, "I/O decoding still off");
    c.pci_config_write(4, 2, 0x5);
    assert_eq!(c.decode(0xc047), Some((Region::Command(0), 7)));
    assert_eq!(c.decode(0xc052), Some((Region::Control(0), 2)));
    assert_eq!(c.io_read(0xc052, 1), Some(0x50));
    assert_eq!(c.bar_read(1, 2, 1), 0x50);
    // 16-byte BARs (proxy-friendly): offsets 8-15 are decoded but unused.
    assert_eq!(c.io_read(0xc04f, 1), Some(0xff));
    // Switching the primary channel back to compatibility mode.
    c.pci_config_write(9, 1, 0x8e);
    assert!(!c.native(0) && c.native(1));
    assert_eq!(c.decode(0x1f7), Some((Region::Command(0), 7)));
    assert_eq!(c.decode(0xc047), None);
}

#[test]
fn bars_at_the_top_of_the_io_space_decode_without_overflow() {
    // A guest (or a fuzzer) may size a BAR and leave the all-ones value in
    // it with I/O decoding on: the last 16 ports are then the BAR's, and
    // decoding must neither wrap around nor overflow.
    let mut c = IdeController::new(ControllerConfig::piix3_native(), mem());
    let (_f, d) = dev(DISK);
    c.attach(0, 0, d);
    for bar in 0..5 {
        c.pci_config_write(0x10 + 4 * bar, 4, 0xffff_ffff);
    }
    c.pci_config_write(4, 2, 0x5);
    assert_eq!(c.decode(0xfff7), None, "u16 ports never reach 0xfffffff0");
    assert_eq!(c.decode(0), None, "no wrap-around to port 0");
    assert_eq!(c.io_read(0xffff, 1), None);
    c.io_write(0xfff7, 1, 0xec);
    // BAR0 just below the top of a 16-bit port space still decodes fully.
    c.pci_config_write(0x10, 4, 0xfff0);
    assert_eq!(c.decode(0xffff), Some((Region::Command(0), 15)));
    assert_eq!(c.decode(0xfff7), Some((Region::Command(0), 7)));
}

#[test]
fn pci_header_for_linux_ata_piix_native() {
    let c = IdeController::new(ControllerConfig::piix3_native(), mem());
    assert_eq!(c.pci_config_read(0, 2), 0x8086);
    assert_eq!(c.pci_config_read(2, 2), 0x7010);
    assert_eq!(c.pci_config_read(8, 4) >> 8, 0x01018f);
    assert_eq!(c.pci_config_read(0x3d, 1), 1, "INTA#");
    assert_eq!(c.pci_config_read(0x0e, 1), 0, "type 0 header");
    assert_eq!(c.pci_config_read(0x34, 1), 0, "no capabilities (no MSI)");
    // Port enable bits ata_piix's prereset checks (41h/43h bit 7).
    assert_eq!(c.pci_config_read(0x41, 1) & 0x80, 0x80);
    assert_eq!(c.pci_config_read(0x43, 1) & 0x80, 0x80);
    // Sizes of every BAR; BAR5, CardBus CIS and ROM are zero.
    let mut c = c;
    for (bar, size) in [(0, 16u32), (1, 16), (2, 16), (3, 16), (4, 16)] {
        c.pci_config_write(0x10 + 4 * bar, 4, 0xffff_ffff);
        assert_eq!(c.pci_config_read(0x10 + 4 * bar, 4), !(size - 1) | 1);
    }
    for off in [0x24, 0x28, 0x30] {
        c.pci_config_write(off, 4, 0xffff_ffff);
        assert_eq!(c.pci_config_read(off, 4), 0);
    }
    assert_eq!(
        (0..6).map(|b| c.bar_size(b)).collect::<Vec<_>>(),
        vec![Some(16), Some(16), Some(16), Some(16), Some(16), None]
    );
    c.pci_config_write(0x3c, 1, 10);
    assert_eq!(c.pci_config_read(0x3c, 1), 10);
    c.reset();
    assert_eq!(c.pci_config_read(0x10, 4), 1, "BARs unassigned after reset");
}

#[test]
fn absent_slave_reads_zero_and_ignores_commands() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    // libata's device check: write patterns with device 1 selected.
    d.outb(6, 0xb0);
    d.outb(2, 0x55);
    d.outb(3, 0xaa);
    assert_eq!((d.inb(2), d.inb(3), d.inb(7)), (0, 0, 0));
    assert_eq!(d.alt_status().bits(), 0);
    d.outb(7, 0xec);
    assert_eq!(d.inb(7), 0);
    // Device 0 latched the writes (the registers are shared on the cable).
    d.outb(6, 0xa0);
    assert_eq!((d.inb(2), d.inb(3)), (0x55, 0xaa));
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
}

#[test]
fn master_and_slave_on_one_channel() {
    let m = mem();
    let mut c = IdeController::new(ControllerConfig::piix4(), m.clone());
    let (f0, d0) = dev(DISK);
    let (f1, d1) = dev(DISK);
    c.attach(0, 0, d0);
    c.attach(0, 1, d1);
    let disk1 = c.device(0, 1).unwrap().disk().clone();
    // Slave driver: its writes go to the slave's disk only.
    let mut drv = IdeDriver::over(c, m, disk1, 0, 1);
    let data = pattern(1024, 3);
    assert!(drv.pio_out(0x30, &lba28(4, 2), 512, &data).ok());
    assert!(f1.contents()[2048..3072] == data[..]);
    assert!(f0.contents().iter().all(|b| *b == 0));
    drv.fill_buffer(&data);
    assert!(drv.dma(0xca, &lba28(40, 2), 1024, false).ok());
    assert!(f1.contents()[40 * 512..42 * 512] == data[..]);
    assert_eq!(drv.bm_read(2) & 0x60, 0x60, "both drives DMA capable");
    // EXECUTE DEVICE DIAGNOSTIC with the slave selected: both reset to the
    // signature, device 0 ends up selected and reports.
    drv.outb(6, 0xb0);
    drv.outb(7, 0x90);
    assert_eq!(drv.inb(6), 0, "device register 00h: device 0 selected");
    assert_eq!((drv.inb(1), drv.inb(2), drv.inb(3)), (1, 1, 1));
    assert!(drv.irq_line());
    drv.inb(7);
    assert!(!drv.irq_line());
    drv.outb(6, 0xb0);
    assert_eq!(
        (drv.inb(1), drv.inb(2), drv.inb(3), drv.inb(4)),
        (1, 1, 1, 0)
    );
}

#[test]
fn hob_reads_previous_values_and_is_cleared_by_writes() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    for (reg, hi, lo) in [
        (2, 0x12, 0x34),
        (3, 0x56, 0x78),
        (4, 0x9a, 0xbc),
        (5, 0xde, 0xf0),
    ] {
        d.outb(reg, hi);
        d.outb(reg, lo);
    }
    assert_eq!(
        (d.inb(2), d.inb(3), d.inb(4), d.inb(5)),
        (0x34, 0x78, 0xbc, 0xf0)
    );
    d.devctl(DeviceControl::HOB);
    assert_eq!(
        (d.inb(2), d.inb(3), d.inb(4), d.inb(5)),
        (0x12, 0x56, 0x9a, 0xde)
    );
    // A command block write clears HOB.
    d.outb(1, 0);
    assert_eq!(d.inb(2), 0x34);
}

#[test]
fn status_read_clears_interrupt_alt_status_does_not() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    d.outb(6, 0xa0);
    d.outb(7, 0xe7);
    assert!(d.irq_line());
    d.alt_status();
    assert!(d.irq_line(), "alternate status leaves INTRQ");
    assert_eq!(d.bm_read(2) & 0x04, 0x04, "PIIX latches the interrupt");
    d.inb(7);
    assert!(!d.irq_line());
    assert_eq!(d.bm_read(2) & 0x04, 0x04, "latched until written 1");
    d.bm_write(2, 1, 0x04);
    assert_eq!(d.bm_read(2) & 0x04, 0);
}

#[test]
fn nien_masks_the_line() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    d.bm_write(2, 1, 0x04);
    d.devctl(DeviceControl::NIEN);
    let irq0 = d.irq_count();
    d.outb(6, 0xa0);
    d.outb(7, 0xe7);
    assert!(!d.irq_line());
    assert_eq!(d.irq_count(), irq0);
    assert_eq!(d.bm_read(2) & 0x04, 0, "no interrupt seen by the PIIX");
    // Pending INTRQ shows once nIEN clears.
    d.devctl(DeviceControl::empty());
    assert!(d.irq_line());
    d.inb(7);
    assert!(!d.irq_line());
    // Polled PIO IDENTIFY with nIEN (what libata does at probe).
    d.devctl(DeviceControl::NIEN);
    let o = d.identify();
    assert!(o.ok());
    assert_eq!(o.irqs, 0);
}

#[test]
fn native_mode_intx_disable_and_pci_interrupt_status() {
    let m = mem();
    let mut c = IdeController::new(ControllerConfig::piix3_native(), m.clone());
    let (_f, d) = dev(DISK);
    c.attach(0, 0, d);
    let disk = c.device(0, 0).unwrap().disk().clone();
    let mut drv = IdeDriver::over(c, m, disk, 0, 0);
    drv.ctrl.pci_config_write(4, 2, 0x405);
    drv.outb(6, 0xa0);
    drv.outb(7, 0xe7);
    assert!(!drv.irq_line(), "INTx disabled");
    assert_eq!(
        drv.ctrl.pci_config_read(6, 2) & 0x08,
        0x08,
        "interrupt status"
    );
    drv.ctrl.pci_config_write(4, 2, 0x005);
    assert!(drv.irq_line());
    drv.inb(7);
    assert_eq!(drv.ctrl.pci_config_read(6, 2) & 0x08, 0);
}

#[test]
fn shared_intx_ors_both_channels() {
    let level = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicUsize::new(0));
    let (l, n) = (level.clone(), changes.clone());
    let [a, b] = shared_irq(move |v| {
        l.store(v, Ordering::SeqCst);
        n.fetch_add(1, Ordering::SeqCst);
    });
    let mut c = IdeController::new(ControllerConfig::piix3_native(), mem());
    let (_f0, d0) = dev(DISK);
    let (_f1, d1) = dev(DISK);
    c.attach(0, 0, d0);
    c.attach(1, 0, d1);
    c.set_irq_callback(0, a);
    c.set_irq_callback(1, b);
    c.write(Region::Command(0), 7, 1, 0xe7);
    c.write(Region::Command(1), 7, 1, 0xe7);
    assert!(level.load(Ordering::SeqCst));
    assert_eq!(changes.load(Ordering::SeqCst), 1);
    c.read(Region::Command(0), 7, 1);
    assert!(level.load(Ordering::SeqCst), "channel 1 still pending");
    c.read(Region::Command(1), 7, 1);
    assert!(!level.load(Ordering::SeqCst));
    assert_eq!(changes.load(Ordering::SeqCst), 2);
}

#[test]
fn data_port_access_widths() {
    let (f, mut d) = setup(CacheMode::Writeback);
    f.poke(0, &pattern(512, 9));
    d.load_tf(&lba28(0, 1));
    d.outb(7, 0x20);
    let want = pattern(512, 9);
    let r = Region::Command(0);
    assert_eq!(
        d.ctrl.read(r, 0, 4),
        u32::from_le_bytes(want[0..4].try_into().unwrap())
    );
    assert_eq!(
        d.ctrl.read(r, 0, 2),
        u32::from(u16::from_le_bytes([want[4], want[5]]))
    );
    // An 8-bit read moves a whole word and returns its low byte.
    assert_eq!(d.ctrl.read(r, 0, 1), u32::from(want[6]));
    assert_eq!(
        d.ctrl.read(r, 0, 2),
        u32::from(u16::from_le_bytes([want[8], want[9]]))
    );
    let rest = d.read_data(502);
    assert!(rest == want[10..]);
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    // Outside a data phase the port reads all ones and ignores writes.
    assert_eq!(d.ctrl.read(r, 0, 2), 0xffff);
    d.ctrl.write(r, 0, 4, 0x1234_5678);
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    // Multi-byte accesses to other registers split into bytes.
    d.outb(2, 0x11);
    d.outb(3, 0x22);
    assert_eq!(d.ctrl.read(r, 2, 2), 0x2211);
}

#[test]
fn hardware_reset_restores_power_on_state() {
    let (f, disk) = mem_disk(DISK, Policy::from_mode(CacheMode::Writethrough));
    let m = mem();
    let mut c = IdeController::new(ControllerConfig::piix4(), m.clone());
    c.attach(0, 0, AtaDevice::new(disk.clone(), DeviceConfig::default()));
    let mut d = IdeDriver::over(c, m, disk, 0, 0);
    drop(f);
    // The guest enabled the cache and changed settings.
    assert!(vmstor_hostio::GuestDriver::set_write_cache(&mut d, true)
        .unwrap()
        .status
        .is_ok());
    d.non_data(0xc6, &lba28(0, 2));
    assert!(d.disk().write_cache());
    d.ctrl.reset();
    assert!(!d.disk().write_cache(), "policy default restored");
    assert_eq!(d.ctrl.pci_config_read(4, 2), 0);
    let cmd = 0x5;
    d.ctrl.pci_config_write(4, 2, cmd);
    assert!(d.identify().ok());
    assert_eq!(d.identify_data().word(59), 0x0110);
    assert!(!d.identify_data().bit(85, 5));
}

#[test]
fn srst_keeps_settings_unless_revert_enabled() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let sf = |features| Tf {
        features,
        ..Tf::default()
    };
    d.non_data(0xc6, &lba28(0, 4));
    assert!(d.non_data(0xef, &sf(0x82)).ok());
    d.probe();
    assert_eq!(d.identify_data().word(59), 0x0104);
    assert!(!d.identify_data().bit(85, 5), "WCE off survives SRST");
    // With revert enabled (CCh), SRST restores power-on defaults.
    assert!(d.non_data(0xef, &sf(0xcc)).ok());
    d.probe();
    assert_eq!(d.identify_data().word(59), 0x0110);
    assert!(d.identify_data().bit(85, 5));
    assert!(d.non_data(0xef, &sf(0x66)).ok());
    d.non_data(0xc6, &lba28(0, 8));
    d.probe();
    assert_eq!(d.identify_data().word(59), 0x0108);
}

#[test]
fn guest_memory_can_be_replaced() {
    let (f, mut d) = setup(CacheMode::Writeback);
    f.poke(0, &pattern(512, 1));
    let m2 = mem();
    d.ctrl.set_guest_memory(m2.clone());
    d.build_prd(512);
    // The driver's PRD table is in the old memory; the new one is empty,
    // so the engine reads a zero descriptor (64 KiB at 0, no EOT, ...).
    let o = d.dma(0x25, &lba48(0, 1), 512, true);
    assert!(o.ok(), "{o:?}");
    let mut got = vec![0u8; 512];
    vm_memory::Bytes::read_slice(&*m2, &mut got, GuestAddress(0)).unwrap();
    assert!(got == pattern(512, 1), "data went to the new memory");
}

#[test]
fn controller_is_send() {
    // A VMM moves it into its device thread (the PCI proxy's PciFunction
    // requires Send).
    fn send<T: Send>() {}
    send::<IdeController>();
    send::<AtaDevice>();
}

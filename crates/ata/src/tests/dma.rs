//! Bus-master DMA edge cases, driven through registers and guest memory.

use super::*;
use crate::ide::bmdma::{PrdEntry, BM_CMD_START, BM_CMD_WRITE_MEMORY};
use crate::ide::ControllerConfig;
use crate::regs::{AtaError, DeviceControl, Status};
use crate::testing::{DATA_BUF, MEM_SIZE, PRD_TABLE};
use crate::DeviceConfig;
use vm_memory::{Bytes, GuestAddress};

fn put_prd(d: &IdeDriver, at: u64, entries: &[PrdEntry]) {
    for (i, e) in entries.iter().enumerate() {
        e.write(d.memory(), GuestAddress(at + 8 * i as u64))
            .unwrap();
    }
}

/// Issues a DMA command with a hand-made table; returns (status, error,
/// bm status, irqs).
fn run(
    d: &mut IdeDriver,
    cmd: u8,
    tf: &Tf,
    table: u32,
    to_memory: bool,
) -> (Status, AtaError, u8, u64) {
    let irq0 = d.irq_count();
    d.bm_setup(table, to_memory);
    d.load_tf(tf);
    d.outb(7, cmd);
    let c = d.bm_read(0);
    d.bm_write(0, 1, u32::from(c | BM_CMD_START));
    d.wait();
    let bm = d.bm_read(2);
    let st = Status::from_bits_retain(d.alt_status().bits());
    (
        st,
        AtaError::from_bits_retain(d.inb(1)),
        bm,
        d.irq_count() - irq0,
    )
}

#[test]
fn table_longer_than_transfer_keeps_active() {
    let (f, mut d) = setup(CacheMode::Writeback);
    let data = pattern(2048, 1);
    f.poke(0, &data);
    put_prd(
        &d,
        PRD_TABLE,
        &[
            PrdEntry::new(DATA_BUF as u32, 1024, false),
            PrdEntry::new(DATA_BUF as u32 + 0x4000, 4096, true),
        ],
    );
    let (st, _, bm, irqs) = run(&mut d, 0x25, &lba48(0, 4), PRD_TABLE as u32, true);
    assert_eq!(st, Status::DRDY | Status::DSC);
    assert_eq!(bm & 0x07, 0x05, "Active stays set, Interrupt set");
    assert_eq!(irqs, 1);
    let mut got = vec![0u8; 2048];
    d.memory()
        .read_slice(&mut got[..1024], GuestAddress(DATA_BUF))
        .unwrap();
    d.memory()
        .read_slice(&mut got[1024..], GuestAddress(DATA_BUF + 0x4000))
        .unwrap();
    assert!(got == data);
    // Without restarting the engine, the next command continues in the
    // remaining 3 KiB of the second region (PIIX behaviour).
    d.inb(7);
    d.load_tf(&lba48(4, 2));
    d.outb(7, 0x25);
    d.wait();
    assert_eq!(d.bm_read(2) & 0x07, 0x05);
    let mut more = vec![0u8; 1024];
    d.memory()
        .read_slice(&mut more, GuestAddress(DATA_BUF + 0x4000 + 1024))
        .unwrap();
    assert!(more == f.contents()[2048..3072]);
}

#[test]
fn table_shorter_than_transfer_waits_without_io() {
    let (f, mut d) = setup(CacheMode::Writeback);
    d.fill_buffer(&pattern(4096, 2));
    put_prd(&d, PRD_TABLE, &[PrdEntry::new(DATA_BUF as u32, 1024, true)]);
    let (st, _, bm, irqs) = run(&mut d, 0x35, &lba48(0, 8), PRD_TABLE as u32, false);
    assert!(st.contains(Status::DRQ), "device still waits: {st:?}");
    assert_eq!(bm & 0x07, 0x00, "Active and Interrupt clear");
    assert_eq!(irqs, 0);
    assert!(ops(d.disk()).is_empty());
    // Re-arm with a table covering the transfer: the command completes.
    d.build_prd(4096);
    d.bm_write(0, 1, 0);
    d.bm_write(4, 4, PRD_TABLE as u32);
    d.bm_write(0, 1, u32::from(BM_CMD_START));
    d.wait();
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert_eq!(d.bm_read(2) & 0x07, 0x04);
    assert!(f.contents()[..4096] == pattern(4096, 2)[..]);
}

#[test]
fn prd_outside_guest_memory_is_a_bus_master_error() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let end = MEM_SIZE as u32;
    for (table, entries) in [
        // Region beyond the end of memory.
        (PRD_TABLE as u32, vec![PrdEntry::new(end - 512, 1024, true)]),
        // Region far outside.
        (
            PRD_TABLE as u32,
            vec![PrdEntry::new(0xfff0_0000, 512, true)],
        ),
        // Table itself outside memory.
        (end + 0x100, vec![]),
    ] {
        put_prd(&d, u64::from(table), &entries);
        for to_memory in [true, false] {
            let cmd = if to_memory { 0x25 } else { 0x35 };
            let (st, err, bm, irqs) = run(&mut d, cmd, &lba48(0, 1), table, to_memory);
            assert_eq!(st, Status::DRDY | Status::ERR);
            assert_eq!(err, AtaError::ABRT);
            assert_eq!(bm & 0x07, 0x06, "Error + Interrupt, not active");
            assert_eq!(irqs, 1);
        }
    }
    assert!(ops(d.disk()).is_empty(), "never host I/O for a bad PRD");
}

#[test]
fn sixty_four_k_boundary_rules() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    // Region crossing 64 KiB: strict (default) rejects.
    put_prd(
        &d,
        PRD_TABLE,
        &[PrdEntry::new(DATA_BUF as u32 + 0xff00, 512, true)],
    );
    let (_, err, bm, _) = run(&mut d, 0x25, &lba48(0, 1), PRD_TABLE as u32, true);
    assert_eq!((err, bm & 0x02), (AtaError::ABRT, 0x02));
    // Table crossing 64 KiB (starts 8 bytes before the boundary).
    put_prd(
        &d,
        0xfff8,
        &[
            PrdEntry::new(DATA_BUF as u32, 512, false),
            PrdEntry::new(DATA_BUF as u32 + 512, 512, true),
        ],
    );
    let (_, err, _, _) = run(&mut d, 0x25, &lba48(0, 2), 0xfff8, true);
    assert_eq!(err, AtaError::ABRT);
    // Count 0 = 64 KiB, aligned: fine.
    put_prd(&d, PRD_TABLE, &[PrdEntry::new(DATA_BUF as u32, 0, true)]);
    let (st, _, bm, _) = run(&mut d, 0x25, &lba48(0, 128), PRD_TABLE as u32, true);
    assert_eq!((st, bm & 0x07), (Status::DRDY | Status::DSC, 0x04));

    // Lenient controllers accept the crossing region.
    let (f, disk) = mem_disk(DISK, Policy::default());
    let cfg = ControllerConfig {
        strict_prd: false,
        ..ControllerConfig::piix4()
    };
    let mut d = IdeDriver::with_config(disk, cfg, DeviceConfig::default());
    f.poke(0, &pattern(512, 3));
    put_prd(
        &d,
        PRD_TABLE,
        &[PrdEntry::new(DATA_BUF as u32 + 0xff00, 512, true)],
    );
    let (st, _, _, _) = run(&mut d, 0x25, &lba48(0, 1), PRD_TABLE as u32, true);
    assert_eq!(st, Status::DRDY | Status::DSC);
    let mut got = vec![0u8; 512];
    d.memory()
        .read_slice(&mut got, GuestAddress(DATA_BUF + 0xff00))
        .unwrap();
    assert!(got == pattern(512, 3));
}

#[test]
fn table_without_eot_is_bounded() {
    let (f, disk) = mem_disk(DISK, Policy::default());
    let cfg = ControllerConfig {
        strict_prd: false,
        ..ControllerConfig::piix4()
    };
    let mut d = IdeDriver::with_config(disk, cfg, DeviceConfig::default());
    drop(f);
    // 8192 two-byte entries and no EOT cannot describe 64 KiB.
    let e = PrdEntry::new(DATA_BUF as u32, 2, false);
    for i in 0..8192u64 {
        e.write(d.memory(), GuestAddress(0x100000 + 8 * i)).unwrap();
    }
    let (_, err, bm, _) = run(&mut d, 0x25, &lba48(0, 128), 0x100000, true);
    assert_eq!((err, bm & 0x02), (AtaError::ABRT, 0x02));
}

#[test]
fn odd_bits_of_address_and_count_are_ignored() {
    let (f, mut d) = setup(CacheMode::Writeback);
    f.poke(0, &pattern(1024, 4));
    // Base bit 0 and count bit 0 are reserved (zero in hardware).
    let raw = [
        (DATA_BUF as u32 | 1).to_le_bytes().to_vec(),
        1025u16.to_le_bytes().to_vec(),
        0x8000u16.to_le_bytes().to_vec(),
    ]
    .concat();
    d.memory()
        .write_slice(&raw, GuestAddress(PRD_TABLE))
        .unwrap();
    let (st, _, bm, _) = run(&mut d, 0x25, &lba48(0, 2), PRD_TABLE as u32, true);
    assert_eq!((st, bm & 0x07), (Status::DRDY | Status::DSC, 0x04));
    let mut got = vec![0u8; 1024];
    d.memory()
        .read_slice(&mut got, GuestAddress(DATA_BUF))
        .unwrap();
    assert!(got == pattern(1024, 4));
}

#[test]
fn direction_mismatch_is_an_error() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    d.build_prd(512);
    // READ DMA with the engine set to read memory.
    let (_, err, bm, _) = run(&mut d, 0x25, &lba48(0, 1), PRD_TABLE as u32, false);
    assert_eq!((err, bm & 0x02), (AtaError::ABRT, 0x02));
    let (_, err, _, _) = run(&mut d, 0x35, &lba48(0, 1), PRD_TABLE as u32, true);
    assert_eq!(err, AtaError::ABRT);
    assert!(ops(d.disk()).is_empty());
}

#[test]
fn engine_started_before_the_command() {
    let (f, mut d) = setup(CacheMode::Writeback);
    d.fill_buffer(&pattern(512, 5));
    d.build_prd(512);
    d.bm_setup(PRD_TABLE as u32, false);
    d.bm_write(0, 1, u32::from(BM_CMD_START));
    d.load_tf(&lba48(3, 1));
    d.outb(7, 0x35);
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert_eq!(d.bm_read(2) & 0x07, 0x04);
    assert!(f.contents()[1536..2048] == pattern(512, 5)[..]);
}

#[test]
fn bus_mastering_disabled_defers_the_transfer() {
    let (f, mut d) = setup(CacheMode::Writeback);
    let cmd = d.ctrl.pci_config_read(4, 2);
    d.ctrl.pci_config_write(4, 2, cmd & !0x4);
    d.fill_buffer(&pattern(512, 6));
    d.build_prd(512);
    let (st, _, bm, _) = run(&mut d, 0x35, &lba48(0, 1), PRD_TABLE as u32, false);
    assert!(st.contains(Status::DRQ));
    assert_eq!(bm & 0x07, 0x01, "engine active, waiting for the bus");
    assert!(ops(d.disk()).is_empty());
    d.ctrl.pci_config_write(4, 2, cmd);
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert!(f.contents()[..512] == pattern(512, 6)[..]);
}

#[test]
fn stopping_the_engine_before_the_transfer() {
    let (f, mut d) = setup(CacheMode::Writeback);
    let cmd = d.ctrl.pci_config_read(4, 2);
    d.ctrl.pci_config_write(4, 2, cmd & !0x4);
    d.fill_buffer(&pattern(512, 7));
    d.build_prd(512);
    run(&mut d, 0x35, &lba48(0, 1), PRD_TABLE as u32, false);
    // Stop, then enable bus mastering: nothing happens until restarted.
    d.bm_write(0, 1, 0);
    d.ctrl.pci_config_write(4, 2, cmd);
    assert!(d.alt_status().contains(Status::DRQ));
    assert!(ops(d.disk()).is_empty());
    d.bm_write(0, 1, u32::from(BM_CMD_START));
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert!(f.contents()[..512] == pattern(512, 7)[..]);
}

#[test]
fn srst_while_waiting_for_dma() {
    let (f, mut d) = setup(CacheMode::Writeback);
    d.fill_buffer(&pattern(512, 8));
    d.build_prd(512);
    d.bm_setup(PRD_TABLE as u32, false);
    d.load_tf(&lba48(0, 1));
    d.outb(7, 0x35);
    assert!(d.alt_status().contains(Status::DRQ));
    d.devctl(DeviceControl::SRST);
    d.devctl(DeviceControl::empty());
    // The engine started after the reset finds no waiting device.
    d.bm_write(0, 1, u32::from(BM_CMD_START));
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert_eq!(d.bm_read(2) & 0x06, 0);
    assert!(ops(d.disk()).is_empty());
    assert!(f.contents()[..512].iter().all(|b| *b == 0));
    d.bm_write(0, 1, 0);
    // A fresh command works.
    let o = d.dma(0x35, &lba48(0, 1), 512, false);
    assert!(o.ok());
}

#[test]
fn interrupt_bit_is_write_one_to_clear() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let o = d.dma(0x25, &lba48(0, 1), 512, true);
    assert!(o.ok());
    // The driver cleared it in `dma`.
    assert_eq!(d.bm_read(2) & 0x06, 0);
    d.bm_write(0, 1, u32::from(BM_CMD_WRITE_MEMORY));
    assert_eq!(d.bm_read(0), BM_CMD_WRITE_MEMORY);
    assert_eq!(d.bm_read(2) & 0x60, 0x20, "drive 0 DMA capable");
}

//! Error mapping (each row of `docs::ERRORS`), LBA28/LBA48 boundaries,
//! the `stop` policy, commands while BSY/DRQ, and SRST mid-command.

use super::*;
use crate::regs::{AtaError, DeviceControl, Status};
use crate::testing::{FaultOp, SparseFile};
use vmstor_hostio::{DiskOptions, ErrorAction, GuestDriver, GuestStatus, HostCaps};

fn abrt(o: &crate::testing::Outcome) {
    assert_eq!(o.status, Status::DRDY | Status::ERR, "{o:?}");
    assert_eq!(o.error, AtaError::ABRT, "{o:?}");
}

#[test]
fn unknown_opcodes_abort_with_interrupt() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let mut unknown = 0;
    for op in 0..=255u8 {
        if crate::commands::lookup(op).is_some() {
            continue;
        }
        unknown += 1;
        let o = d.non_data(op, &lba28(0, 1));
        abrt(&o);
        assert_eq!(o.irqs, 1, "{op:#x}");
    }
    // e.g. IDENTIFY PACKET DEVICE, SMART, SECURITY, DEVICE RESET are absent.
    assert!(unknown > 200);
    assert!(ops(d.disk()).is_empty(), "no host I/O for aborted commands");
}

#[test]
fn nop_always_aborts() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    abrt(&d.non_data(0x00, &Tf::default()));
    abrt(&d.non_data(
        0x00,
        &Tf {
            features: 1,
            ..Tf::default()
        },
    ));
}

#[test]
fn lba28_and_lba48_boundaries() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let last = SECTORS - 1;
    // Last sector: fine, by every addressing form.
    assert!(d.pio_in(0x20, &lba28(last, 1), 512, 512).ok());
    assert!(d.pio_in(0x24, &lba48(last, 1), 512, 512).ok());
    assert!(d.dma(0xc8, &lba28(last - 255, 0), 256 * 512, true).ok());
    // One past the end: IDNF, no host I/O.
    ops(d.disk());
    for o in [
        d.pio_in(0x20, &lba28(SECTORS, 1), 512, 512),
        d.pio_in(0x20, &lba28(last, 2), 512, 1024),
        d.pio_in(0x24, &lba48(last, 2), 512, 1024),
        d.dma(0x25, &lba48(SECTORS, 1), 512, true),
        d.dma(0xc8, &lba28(last - 254, 0), 256 * 512, true),
        d.pio_out(0x30, &lba28(SECTORS, 1), 512, &[0; 512]),
        d.non_data(0x40, &lba28(last, 2)),
        d.non_data(0x42, &lba48(1 << 40, 1)),
        d.non_data(0x70, &lba28(SECTORS, 1)),
    ] {
        assert_eq!(o.status, Status::DRDY | Status::ERR);
        assert_eq!(o.error, AtaError::IDNF);
        assert_eq!(o.irqs, 1);
    }
    assert!(ops(d.disk()).is_empty());
    // 48-bit LBA near 2^48 does not overflow.
    let o = d.dma(0x25, &lba48((1 << 48) - 1, 0), 4096, true);
    assert_eq!(o.error, AtaError::IDNF);
}

#[test]
fn lba28_limit_on_a_large_disk() {
    let sectors = (1u64 << 28) + 64;
    let f = SparseFile::new(sectors * 512);
    let disk = Disk::from_host_file(
        f.clone(),
        HostCaps::simulated(sectors * 512),
        Policy::default(),
        DiskOptions::default(),
    )
    .unwrap();
    let mut d = IdeDriver::new(Arc::new(disk));
    let data = pattern(512, 1);
    // LBA 0FFFFFFEh is the last 28-bit addressable sector (words 60-61).
    assert!(d.pio_out(0x30, &lba28(0x0fff_fffe, 1), 512, &data).ok());
    assert!(f.block(0x0fff_fffe) == data);
    let o = d.pio_out(0x30, &lba28(0x0fff_ffff, 1), 512, &data);
    assert_eq!(o.error, AtaError::IDNF);
    // The 48-bit command reaches beyond it.
    let data2 = pattern(1024, 2);
    assert!(d.pio_out(0x34, &lba48(0x0fff_ffff, 2), 512, &data2).ok());
    assert!(f.block(0x1000_0000) == data2[512..]);
    let o = d.pio_in(0x24, &lba48(sectors - 1, 1), 512, 512);
    assert!(o.ok());
    let o = d.pio_in(0x24, &lba48(sectors, 1), 512, 512);
    assert_eq!(o.error, AtaError::IDNF);
    // READ NATIVE MAX ADDRESS: 28-bit saturates, EXT gives the real one.
    assert!(d.non_data(0xf8, &lba28(0, 0)).ok());
    let lba = u64::from(d.inb(3))
        | u64::from(d.inb(4)) << 8
        | u64::from(d.inb(5)) << 16
        | u64::from(d.inb(6) & 0x0f) << 24;
    assert_eq!(lba, 0x0fff_ffff);
    assert!(d.non_data(0x27, &lba48(0, 0)).ok());
    let lo = u64::from(d.inb(3)) | u64::from(d.inb(4)) << 8 | u64::from(d.inb(5)) << 16;
    d.devctl(DeviceControl::HOB);
    let hi = u64::from(d.inb(3)) | u64::from(d.inb(4)) << 8 | u64::from(d.inb(5)) << 16;
    d.devctl(DeviceControl::empty());
    assert_eq!(lo | hi << 24, sectors - 1);
}

#[test]
fn host_read_error_is_unc_with_failed_lba() {
    let (f, mut d) = setup(CacheMode::Writeback);
    f.fail(FaultOp::Read, libc::EIO);
    for o in [
        d.dma(0x25, &lba48(77, 4), 2048, true),
        d.pio_in(0x24, &lba48(77, 4), 512, 2048),
        d.non_data(0x42, &lba48(77, 4)),
    ] {
        assert_eq!(o.status, Status::DRDY | Status::ERR, "{o:?}");
        assert_eq!(o.error, AtaError::UNC);
        assert!(o.data.is_empty() || o.data.iter().all(|b| *b == 0));
        let lba = u64::from(d.inb(3)) | u64::from(d.inb(4)) << 8;
        assert_eq!(lba, 77);
    }
    let r = GuestDriver::read(&mut d, 0, 1, &mut Vec::new()).unwrap();
    assert_eq!(r.status, GuestStatus::Error("ERR UNC".into()));
}

#[test]
fn host_write_flush_discard_errors_abort() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.errors.write = ErrorAction::Report;
    p.discard = vmstor_hostio::DiscardMode::Unmap;
    let (f, mut d) = setup_policy(p);
    f.fail(FaultOp::Write, libc::ENOSPC);
    d.fill_buffer(&pattern(1024, 1));
    abrt(&d.dma(0x35, &lba48(5, 2), 1024, false));
    abrt(&d.pio_out(0x30, &lba28(5, 2), 512, &[1; 1024]));
    f.clear_faults();
    f.fail(FaultOp::Discard, libc::EIO);
    let r = d.discard(0, 8).unwrap();
    assert_eq!(r.status, GuestStatus::Error("ERR ABRT".into()));
    f.clear_faults();
    // A failed fdatasync latches: later flushes and FUA writes fail too.
    d.fill_buffer(&pattern(512, 2));
    assert!(d.dma(0x35, &lba48(0, 1), 512, false).ok());
    f.fail(FaultOp::Fdatasync, libc::EIO);
    abrt(&d.non_data(0xea, &Tf::default()));
    f.clear_faults();
    abrt(&d.non_data(0xe7, &Tf::default()));
    abrt(&d.dma(0x3d, &lba48(0, 1), 512, false));
    let e = d.ctrl.device(0, 0).unwrap().last_host_error().unwrap();
    assert_eq!((e.errno, e.latched), (libc::EIO, true));
}

#[test]
fn stop_policy_holds_the_command_until_resume() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.errors.write = ErrorAction::Stop;
    let (f, mut d) = setup_policy(p);
    let data = pattern(2048, 4);
    d.fill_buffer(&data);
    f.fail(FaultOp::Write, libc::EIO);
    let o = d.dma(0x35, &lba48(10, 4), 2048, false);
    assert!(o.pending, "{o:?}");
    assert_eq!(o.guest_status(), GuestStatus::Pending);
    assert!(d.alt_status().contains(Status::BSY));
    assert!(!d.irq_line());
    // While BSY, commands and task-file writes are ignored.
    d.outb(2, 0x55);
    d.outb(7, 0xec);
    assert!(d.alt_status().contains(Status::BSY));
    assert_eq!(d.disk().held_count(), 1);
    // The VMM fixes the cause and resumes.
    f.clear_faults();
    assert_eq!(d.disk().resume_held(), 1);
    d.ctrl.poll();
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert!(d.irq_line());
    assert_eq!(
        d.bm_read(2) & 0x07,
        0x04,
        "DMA completed: inactive, interrupt"
    );
    assert!(f.contents()[10 * 512..14 * 512] == data[..]);
    assert_eq!(d.inb(2), 4, "ignored write did not reach the task file");
    // Same with a PIO write and a flush.
    f.fail(FaultOp::Write, libc::EIO);
    assert!(d.pio_out(0x30, &lba28(20, 1), 512, &data[..512]).pending);
    f.clear_faults();
    d.disk().resume_held();
    d.ctrl.poll();
    assert_eq!(d.inb(7), (Status::DRDY | Status::DSC).bits());
    assert!(f.contents()[20 * 512..21 * 512] == data[..512]);
}

#[test]
fn srst_drops_a_held_command() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.errors.write = ErrorAction::Stop;
    let (f, mut d) = setup_policy(p);
    d.fill_buffer(&pattern(512, 4));
    f.fail(FaultOp::Write, libc::EIO);
    assert!(d.dma(0x35, &lba48(10, 1), 512, false).pending);
    let r = GuestDriver::reset(&mut d).unwrap();
    assert!(r.status.is_ok());
    assert_eq!(d.disk().held_count(), 0);
    f.clear_faults();
    assert_eq!(d.disk().resume_held(), 0);
    assert!(f.contents()[10 * 512..11 * 512].iter().all(|b| *b == 0));
}

#[test]
fn enospc_is_held_by_the_default_policy() {
    let (f, mut d) = setup(CacheMode::Writeback);
    f.fail(FaultOp::Write, libc::ENOSPC);
    let w = GuestDriver::write(&mut d, 0, &pattern(512, 1), false).unwrap();
    assert_eq!(w.status, GuestStatus::Pending);
    f.clear_faults();
    d.disk().resume_held();
    d.ctrl.poll();
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
}

#[test]
fn commands_while_drq_are_ignored_and_srst_recovers() {
    let (f, mut d) = setup(CacheMode::Writeback);
    let data = pattern(4 * 512, 8);
    f.poke(0, &data);
    // PIO read in progress: DRQ set, half a block read.
    d.load_tf(&lba28(0, 4));
    d.outb(7, 0x20);
    assert!(d.alt_status().contains(Status::DRQ));
    let first = d.read_data(256);
    // Another command now is ignored; the data phase continues.
    d.outb(7, 0xec);
    let rest = d.read_data(256);
    assert!([first, rest].concat() == data[..512]);
    assert!(d.alt_status().contains(Status::DRQ));
    // SRST mid-transfer: back to the signature, no DRQ, next command works.
    d.devctl(DeviceControl::SRST);
    d.devctl(DeviceControl::empty());
    assert_eq!(d.alt_status(), Status::DRDY | Status::DSC);
    assert_eq!((d.inb(2), d.inb(3), d.inb(1)), (1, 1, 1));
    assert!(d.identify().ok());

    // SRST in the middle of a PIO write: nothing reaches the host.
    ops(d.disk());
    d.load_tf(&lba28(100, 4));
    d.outb(7, 0x30);
    d.write_data(&[0xee; 1024]);
    assert!(d.alt_status().contains(Status::DRQ));
    d.devctl(DeviceControl::SRST);
    d.devctl(DeviceControl::empty());
    assert!(writes(&ops(d.disk())).is_empty());
    assert!(f.contents()[100 * 512..104 * 512].iter().all(|b| *b == 0));
    assert!(d.pio_out(0x30, &lba28(100, 1), 512, &[0xab; 512]).ok());
}

#[test]
fn read_only_disk_refuses_writes_without_host_io() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.read_only = true;
    let (_f, mut d) = setup_policy(p);
    d.fill_buffer(&[1; 512]);
    abrt(&d.dma(0x35, &lba48(0, 1), 512, false));
    abrt(&d.pio_out(0x30, &lba28(0, 1), 512, &[1; 512]));
    abrt(&d.pio_out(0xce, &lba48(0, 1), 512, &[1; 512]));
    assert!(d.dma(0x25, &lba48(0, 1), 512, true).ok());
    assert!(d.non_data(0xe7, &Tf::default()).ok());
    assert!(writes(&ops(d.disk())).is_empty());
}

#[test]
fn sleep_until_reset_and_power_modes() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let power = |d: &mut IdeDriver| {
        assert!(d.non_data(0xe5, &Tf::default()).ok());
        d.inb(2)
    };
    assert_eq!(power(&mut d), 0xff);
    for (cmd, want) in [(0xe0, 0x00), (0xe1, 0x80), (0xe2, 0x00), (0xe3, 0x80)] {
        assert!(d.non_data(cmd, &lba28(0, 12)).ok());
        assert_eq!(power(&mut d), want, "{cmd:#x}");
    }
    // A media access makes the device active again.
    assert!(d.pio_in(0x20, &lba28(0, 1), 512, 512).ok());
    assert_eq!(power(&mut d), 0xff);
    assert!(d.non_data(0xe6, &Tf::default()).ok());
    abrt(&d.pio_in(0x20, &lba28(0, 1), 512, 512));
    abrt(&d.non_data(0xe5, &Tf::default()));
    d.devctl(DeviceControl::SRST);
    d.devctl(DeviceControl::empty());
    assert_eq!(power(&mut d), 0x00, "reset from sleep: standby");
    assert!(d.pio_in(0x20, &lba28(0, 1), 512, 512).ok());
}

#[test]
fn invalid_parameters_abort() {
    let mut p = Policy::from_mode(CacheMode::Writeback);
    p.discard = vmstor_hostio::DiscardMode::Unmap;
    let (_f, mut d) = setup_policy(p);
    let sf = |features: u16| Tf {
        features,
        ..Tf::default()
    };
    for code in [0x00, 0x05, 0x10, 0x85, 0x90, 0xff] {
        abrt(&d.non_data(0xef, &sf(code)));
    }
    // DATA SET MANAGEMENT: features other than TRIM, count 0 or > 8.
    ops(d.disk());
    d.fill_buffer(&[0; 8 * 512]);
    abrt(&d.dma(
        0x06,
        &Tf {
            features: 0,
            count: 1,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    ));
    abrt(&d.dma(
        0x06,
        &Tf {
            features: 3,
            count: 1,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    ));
    abrt(&d.dma(
        0x06,
        &Tf {
            features: 0x101,
            count: 1,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    ));
    abrt(&d.dma(
        0x06,
        &Tf {
            features: 1,
            count: 0,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    ));
    abrt(&d.dma(
        0x06,
        &Tf {
            features: 1,
            count: 9,
            lba48: true,
            ..Tf::default()
        },
        9 * 512,
        false,
    ));
    // A range past the end aborts before any discard.
    let mut payload = vec![0u8; 512];
    payload[..8].copy_from_slice(&(8u64 << 48).to_le_bytes());
    payload[8..16].copy_from_slice(&((SECTORS - 4) | 8 << 48).to_le_bytes());
    d.fill_buffer(&payload);
    abrt(&d.dma(
        0x06,
        &Tf {
            features: 1,
            count: 1,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    ));
    assert!(ops(d.disk()).is_empty());
    // Empty entries are skipped; a valid list succeeds.
    payload[8..16].copy_from_slice(&((SECTORS - 8) | 8 << 48).to_le_bytes());
    d.fill_buffer(&payload);
    let o = d.dma(
        0x06,
        &Tf {
            features: 1,
            count: 1,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    );
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.irqs, 1);
    let discards = ops(d.disk())
        .into_iter()
        .filter(|o| matches!(o, HostOp::PunchHole { .. }))
        .count();
    assert_eq!(discards, 2);
}

#[test]
fn dsm_is_gated_off_without_unmap() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let mut payload = vec![0u8; 512];
    payload[..8].copy_from_slice(&(8u64 << 48).to_le_bytes());
    d.fill_buffer(&payload);
    let o = d.dma(
        0x06,
        &Tf {
            features: 1,
            count: 1,
            lba48: true,
            ..Tf::default()
        },
        512,
        false,
    );
    abrt(&o);
    assert!(ops(d.disk()).is_empty());
}

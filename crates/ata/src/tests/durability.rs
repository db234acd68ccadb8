//! Durability: every claim asserted on hostio's trace of host operations.

use super::*;
use crate::regs::AtaError;
use crate::testing::FaultOp;
use vmstor_hostio::{DiskOptions, ExecutorKind, GuestDriver};

#[test]
fn write_cache_on_writes_are_volatile_and_flushes_fdatasync() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    d.fill_buffer(&pattern(8 * 512, 1));
    assert!(d.dma(0x35, &lba48(0, 8), 8 * 512, false).ok());
    assert!(d.dma(0xca, &lba28(8, 8), 8 * 512, false).ok());
    assert_eq!(
        writes(&ops(d.disk())),
        vec![(0, 4096, false), (4096, 4096, false)]
    );
    for flush in [0xe7, 0xea] {
        d.fill_buffer(&pattern(512, 2));
        assert!(d.dma(0xca, &lba28(0, 1), 512, false).ok());
        let o = d.non_data(flush, &Tf::default());
        assert!(o.ok());
        assert_eq!(o.irqs, 1);
        let ops = ops(d.disk());
        assert_eq!(fdatasyncs(&ops), 1, "{flush:#x}: {ops:?}");
        assert!(matches!(ops.last(), Some(HostOp::Fdatasync)));
    }
}

#[test]
fn wce_off_makes_every_write_durable_on_completion() {
    let (_f, mut d) = setup(CacheMode::Writethrough);
    let data = pattern(16 * 512, 3);
    d.fill_buffer(&data);
    assert!(d.dma(0x35, &lba48(100, 16), data.len(), false).ok());
    assert!(d.pio_out(0x30, &lba28(200, 16), 512, &data).ok());
    d.non_data(0xc6, &lba28(0, 8));
    assert!(d.pio_out(0xc5, &lba28(300, 16), 8 * 512, &data).ok());
    assert!(d.pio_out(0x34, &lba48(400, 16), 512, &data).ok());
    // Every write is RWF_DSYNC, and each PIO command is ONE host write
    // (QEMU issues one per DRQ block: 16 syncs for WRITE SECTORS here).
    assert_eq!(
        writes(&ops(d.disk())),
        vec![
            (100 * 512, 8192, true),
            (200 * 512, 8192, true),
            (300 * 512, 8192, true),
            (400 * 512, 8192, true),
        ]
    );
}

#[test]
fn fua_commands_map_to_rwf_dsync_with_cache_on() {
    let (f, mut d) = setup(CacheMode::Writeback);
    let data = pattern(4 * 512, 5);
    d.fill_buffer(&data);
    let o = d.dma(0x3d, &lba48(40, 4), data.len(), false);
    assert!(o.ok());
    let o = d.pio_out(0xce, &lba48(80, 4), 16 * 512, &data);
    assert!(o.ok());
    // A non-FUA write in between stays volatile.
    assert!(d.dma(0x35, &lba48(120, 4), data.len(), false).ok());
    let ops = ops(d.disk());
    assert_eq!(
        writes(&ops),
        vec![
            (40 * 512, 2048, true),
            (80 * 512, 2048, true),
            (120 * 512, 2048, false)
        ]
    );
    assert_eq!(
        fdatasyncs(&ops),
        0,
        "FUA is RWF_DSYNC, not write + fdatasync"
    );
    assert!(f.contents()[80 * 512..84 * 512] == data[..]);
}

#[test]
fn set_features_82h_flushes_before_completing() {
    let (f, mut d) = setup(CacheMode::Writeback);
    d.fill_buffer(&pattern(512, 6));
    assert!(d.dma(0x35, &lba48(0, 1), 512, false).ok());
    ops(d.disk());
    let off = Tf {
        features: 0x82,
        ..Tf::default()
    };
    let o = d.non_data(0xef, &off);
    assert!(o.ok());
    assert_eq!(o.irqs, 1);
    assert_eq!(fdatasyncs(&ops(d.disk())), 1, "82h issued the flush");
    assert!(!d.disk().write_cache());
    // Later writes are durable on completion.
    assert!(d.dma(0x35, &lba48(1, 1), 512, false).ok());
    assert_eq!(writes(&ops(d.disk())), vec![(512, 512, true)]);
    // The command's status is the flush's: a failing flush makes 82h fail
    // (so it cannot have completed before the flush), and the cache stays
    // off.
    assert!(d
        .non_data(
            0xef,
            &Tf {
                features: 0x02,
                ..off
            }
        )
        .ok());
    assert!(d.dma(0x35, &lba48(2, 1), 512, false).ok());
    f.fail(FaultOp::Fdatasync, libc::EIO);
    let o = d.non_data(0xef, &off);
    assert_eq!(o.error, AtaError::ABRT);
    assert!(!d.disk().write_cache());
    assert!(!d.write_cache().unwrap(), "IDENTIFY says off");
}

#[test]
fn set_features_02h_turns_the_cache_back_on() {
    let (_f, mut d) = setup(CacheMode::Writethrough);
    let on = Tf {
        features: 0x02,
        ..Tf::default()
    };
    assert!(d.non_data(0xef, &on).ok());
    assert_eq!(fdatasyncs(&ops(d.disk())), 0);
    d.fill_buffer(&pattern(512, 7));
    assert!(d.dma(0x35, &lba48(0, 1), 512, false).ok());
    assert_eq!(writes(&ops(d.disk())), vec![(0, 512, false)]);
}

#[test]
fn guest_driver_reports_commands_and_trace_agrees() {
    let (_f, mut d) = setup(CacheMode::Writeback);
    let w = GuestDriver::write(&mut d, 0, &pattern(4096, 1), true).unwrap();
    assert_eq!(w.commands, vec!["WRITE DMA FUA EXT"]);
    let w = GuestDriver::write(&mut d, 8, &pattern(4096, 2), false).unwrap();
    assert_eq!(w.commands, vec!["WRITE DMA EXT"]);
    let off = d.set_write_cache(false).unwrap();
    assert_eq!(off.commands, vec!["SET FEATURES 82h (disable write cache)"]);
    GuestDriver::write(&mut d, 16, &pattern(4096, 3), false).unwrap();
    let ops = ops(d.disk());
    assert_eq!(
        writes(&ops),
        vec![(0, 4096, true), (4096, 4096, false), (8192, 4096, true)]
    );
    // The volatile write is covered by the flush 82h issued, which comes
    // after it and before the next write.
    let pos = |p: &dyn Fn(&HostOp) -> bool| ops.iter().position(p).unwrap();
    let sync = pos(&|o| matches!(o, HostOp::Fdatasync));
    assert!(pos(&|o| matches!(o, HostOp::Write { offset: 4096, .. })) < sync);
    assert!(sync < pos(&|o| matches!(o, HostOp::Write { offset: 8192, .. })));
    assert_eq!(fdatasyncs(&ops), 1);
}

#[test]
fn real_file_writethrough_uses_rwf_dsync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let disk = Disk::open(
        &path,
        Policy::from_mode(CacheMode::Writethrough),
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut d = IdeDriver::new(Arc::new(disk));
    assert!(!d.write_cache().unwrap());
    let data = pattern(8192, 9);
    let w = GuestDriver::write(&mut d, 16, &data, false).unwrap();
    assert!(w.status.is_ok());
    let trace = d.disk().trace().take();
    let w: Vec<_> = trace
        .iter()
        .filter(|e| matches!(e.op, HostOp::Write { .. }))
        .collect();
    assert_eq!(w.len(), 1);
    assert!(matches!(
        w[0].op,
        HostOp::Write {
            dsync: true,
            offset: 8192,
            len: 8192,
            ..
        }
    ));
    assert!(w[0].result.is_ok());
    let file = std::fs::read(&path).unwrap();
    assert!(file[8192..16384] == data[..]);
}

#[test]
fn thread_pool_executor_completes_through_poll() {
    let (f, disk) = {
        let f = crate::testing::MemFile::new(DISK);
        let disk = Disk::from_host_file(
            f.clone(),
            vmstor_hostio::HostCaps::simulated(DISK as u64),
            Policy::from_mode(CacheMode::Writethrough),
            DiskOptions {
                executor: ExecutorKind::Threads(2),
                trace: true,
                ..Default::default()
            },
        )
        .unwrap();
        (f, Arc::new(disk))
    };
    let mut d = IdeDriver::new(disk);
    let data = pattern(64 << 10, 3);
    for (i, chunk) in data.chunks(8192).enumerate() {
        let w = GuestDriver::write(&mut d, i as u64 * 16, chunk, false).unwrap();
        assert!(w.status.is_ok());
    }
    assert!(d.pio_out(0x30, &lba28(1000, 2), 512, &data[..1024]).ok());
    assert!(GuestDriver::flush(&mut d).unwrap().status.is_ok());
    let mut out = Vec::new();
    GuestDriver::read(&mut d, 0, 128, &mut out).unwrap();
    assert!(out == data);
    let o = d.pio_in(0x20, &lba28(1000, 2), 512, 1024);
    assert!(o.ok() && o.data == data[..1024]);
    assert!(f.contents()[..data.len()] == data[..]);
    assert!(writes(&ops(d.disk())).iter().all(|w| w.2));
}

#[test]
fn srst_while_a_threaded_dma_is_in_flight() {
    let f = crate::testing::MemFile::new(DISK);
    let disk = Arc::new(
        Disk::from_host_file(
            f.clone(),
            vmstor_hostio::HostCaps::simulated(DISK as u64),
            Policy::from_mode(CacheMode::Writeback),
            DiskOptions {
                executor: ExecutorKind::Threads(1),
                trace: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut d = IdeDriver::new(disk);
    assert_eq!(d.ctrl.notify_fds().len(), 1);
    let data = pattern(256 * 512, 1);
    d.fill_buffer(&data);
    d.build_prd(data.len());
    d.bm_setup(crate::testing::PRD_TABLE as u32, false);
    d.load_tf(&lba48(0, 256));
    d.outb(7, 0x35);
    d.bm_write(0, 1, 1);
    // The write may still be running on the pool: SRST waits for it (it
    // cannot be cancelled) and leaves a ready device.
    d.devctl(crate::regs::DeviceControl::SRST);
    d.devctl(crate::regs::DeviceControl::empty());
    assert_eq!(
        d.alt_status(),
        crate::regs::Status::DRDY | crate::regs::Status::DSC
    );
    assert!(!d.ctrl.device(0, 0).unwrap().io_pending());
    d.bm_write(0, 1, 0);
    let o = d.dma(0x25, &lba48(0, 256), data.len(), true);
    assert!(o.ok(), "{o:?}");
    // Whether the abandoned write landed is not promised; the image holds
    // either the old or the new data, never a mix within a sector.
    for (s, got) in o.data.chunks(512).enumerate() {
        assert!(got == &data[s * 512..(s + 1) * 512] || got.iter().all(|b| *b == 0));
    }
}

//! Every request type in every cache preset with the write cache on and off,
//! asserted on hostio's recorded host ops; the write-cache rules (1→0
//! flush, drivers without FLUSH, reset default).

mod common;

use common::*;
use vmstor_hostio::{BufRef, CacheMode, GuestDriver, HostOp};
use vmstor_virtio_blk::spec::{BlkStatus, DWZ_FLAG_UNMAP};
use vmstor_virtio_blk::testing::{BlkReq, TestGuestOptions};
use vmstor_virtio_blk::{BlkOptions, Features};

fn write_op(offset: u64, len: u64, dsync: bool) -> HostOp {
    HostOp::Write {
        offset,
        len,
        from: BufRef::Request,
        dsync,
    }
}

#[test]
fn every_request_in_every_preset_with_wce_on_and_off() {
    for mode in CacheMode::ALL {
        for wce in [true, false] {
            let ctx = format!("{mode} wce={wce}");
            let opts = TestGuestOptions {
                device: BlkOptions {
                    serial: b"vmstor-disk-0".to_vec(),
                    ..Default::default()
                },
                ..Default::default()
            };
            let (mut g, disk, file) = guest_with(policy(mode), opts);
            let issued = g.set_write_cache(wce).unwrap();
            assert_eq!(
                issued.commands,
                [format!("config writeback={}", u8::from(wce))]
            );
            assert!(issued.status.is_ok(), "{ctx}");
            assert_eq!(g.write_cache().unwrap(), wce, "{ctx}");
            assert_eq!(disk.write_cache(), wce, "{ctx}");
            ops(&disk);
            // Durable on completion: write cache off, unless flushes are off.
            let durable = !wce && !mode.no_flush();

            // OUT: one write, RWF_DSYNC exactly when durable.
            let data = pattern(4096, 1);
            let r = g.run(0, &BlkReq::write(8, &data));
            assert_eq!((r.status, r.used_len), (Some(BlkStatus::Ok), 1), "{ctx}");
            assert_eq!(ops(&disk), [write_op(4096, 4096, durable)], "{ctx}");
            assert_eq!(&file.contents()[4096..8192], &data[..], "{ctx}");

            // IN: one read into guest memory; used len = data + status.
            let r = g.run(0, &BlkReq::read(8, 4096));
            assert_eq!((r.status, r.used_len), (Some(BlkStatus::Ok), 4097), "{ctx}");
            assert_eq!(r.data, data, "{ctx}");
            let t = disk.trace().snapshot();
            assert!(t.iter().all(|e| e.direct == mode.direct()), "{ctx}");
            assert_eq!(
                ops(&disk),
                [HostOp::Read {
                    offset: 4096,
                    len: 4096,
                    into: BufRef::Request
                }],
                "{ctx}"
            );

            // FLUSH: an fdatasync when a volatile write completed since the
            // last sync; nothing when writes were RWF_DSYNC or under unsafe.
            let r = g.run(0, &BlkReq::flush());
            assert_eq!((r.status, r.used_len), (Some(BlkStatus::Ok), 1), "{ctx}");
            let want: Vec<HostOp> = if wce && !mode.no_flush() {
                vec![HostOp::Fdatasync]
            } else {
                vec![]
            };
            assert_eq!(ops(&disk), want, "{ctx}");

            // GET_ID: no host I/O; NUL-padded serial.
            let r = g.run(0, &BlkReq::get_id());
            assert_eq!((r.status, r.used_len), (Some(BlkStatus::Ok), 21), "{ctx}");
            assert_eq!(&r.data[..13], b"vmstor-disk-0");
            assert!(r.data[13..].iter().all(|b| *b == 0));
            assert_eq!(ops(&disk), [], "{ctx}");

            // DISCARD (policy discard=unmap): a hole punch, never synced.
            let r = g.run(0, &BlkReq::ranges(true, &[(16, 8, 0), (32, 16, 0)]));
            assert_eq!(r.status, Some(BlkStatus::Ok), "{ctx}");
            assert_eq!(
                ops(&disk),
                [
                    HostOp::PunchHole {
                        offset: 8192,
                        len: 4096
                    },
                    HostOp::PunchHole {
                        offset: 16384,
                        len: 8192
                    }
                ],
                "{ctx}"
            );

            // WRITE_ZEROES: zero range (punch hole with UNMAP), synced when
            // durable.
            for (flags, op) in [
                (
                    0,
                    HostOp::ZeroRange {
                        offset: 8192,
                        len: 4096,
                    },
                ),
                (
                    DWZ_FLAG_UNMAP,
                    HostOp::PunchHole {
                        offset: 8192,
                        len: 4096,
                    },
                ),
            ] {
                let r = g.run(0, &BlkReq::ranges(false, &[(16, 8, flags)]));
                assert_eq!(r.status, Some(BlkStatus::Ok), "{ctx}");
                let mut want = vec![op];
                if durable {
                    want.push(HostOp::Fdatasync);
                }
                assert_eq!(ops(&disk), want, "{ctx} flags={flags}");
            }
            assert_eq!(file.violations(), 0);
        }
    }
}

#[test]
fn writeback_1_to_0_flushes_before_the_config_write_returns() {
    for mode in [CacheMode::Writeback, CacheMode::None] {
        let (mut g, disk, _) = guest(mode);
        assert!(g.write_cache().unwrap());
        assert!(g.write(0, &pattern(4096, 2), false).unwrap().status.is_ok());
        assert_eq!(ops(&disk), [write_op(0, 4096, false)]);
        // The completed volatile write becomes durable inside the config
        // write (QEMU issues no syscall here).
        g.set_write_cache(false).unwrap();
        assert_eq!(ops(&disk), [HostOp::Fdatasync], "{mode}");
        assert_eq!(g.config().writeback, 0);
        // From now on writes are durable on completion.
        g.write(8, &pattern(4096, 3), false).unwrap();
        assert_eq!(ops(&disk), [write_op(4096, 4096, true)]);
        // 0 → 1: no syscall; later writes are volatile again.
        g.set_write_cache(true).unwrap();
        assert_eq!(ops(&disk), []);
        g.write(8, &pattern(4096, 4), false).unwrap();
        assert_eq!(ops(&disk), [write_op(4096, 4096, false)]);
    }
}

#[test]
fn unsafe_never_syncs_even_on_writeback_1_to_0() {
    let (mut g, disk, _) = guest(CacheMode::Unsafe);
    g.write(0, &pattern(4096, 2), false).unwrap();
    g.set_write_cache(false).unwrap();
    g.write(0, &pattern(4096, 2), false).unwrap();
    g.flush().unwrap();
    assert_eq!(
        ops(&disk),
        [write_op(0, 4096, false), write_op(0, 4096, false)]
    );
}

fn legacy_accept() -> Features {
    Features::all() - Features::VERSION_1 - Features::FLUSH - Features::CONFIG_WCE
}

#[test]
fn driver_without_flush_gets_write_through() {
    for modern in [false, true] {
        let mut accept = legacy_accept();
        if modern {
            accept |= Features::VERSION_1;
        }
        let (mut g, disk, _) = guest_with(
            policy(CacheMode::Writeback),
            TestGuestOptions {
                accept,
                ..Default::default()
            },
        );
        assert!(!g.negotiated().contains(Features::FLUSH));
        assert!(!disk.write_cache());
        assert_eq!(g.config().writeback, 0);
        assert!(
            !g.write_cache().unwrap(),
            "neither FLUSH nor CONFIG_WCE: writethrough"
        );
        assert!(g.flush().is_err(), "the driver cannot express FLUSH");
        assert!(g.set_write_cache(true).is_err());
        g.write(0, &pattern(8192, 5), false).unwrap();
        assert_eq!(ops(&disk), [write_op(0, 8192, true)], "modern={modern}");
        // Writing writeback=1 without CONFIG_WCE negotiated does nothing.
        g.device_mut().write_config(32, &[1]);
        assert!(!disk.write_cache());
    }
}

#[test]
fn config_wce_without_flush_reads_0_and_refuses_writeback() {
    let (mut g, disk, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            accept: Features::all() - Features::FLUSH,
            ..Default::default()
        },
    );
    assert_eq!(g.config().writeback, 0);
    g.set_write_cache(true).unwrap();
    assert_eq!(g.config().writeback, 0, "a cache the driver cannot flush");
    assert!(!disk.write_cache());
}

#[test]
fn flush_without_config_wce_keeps_the_default_writeback_cache() {
    let (mut g, disk, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            accept: Features::all() - Features::CONFIG_WCE,
            ..Default::default()
        },
    );
    assert!(disk.write_cache());
    assert!(g.write_cache().unwrap());
    g.write(0, &pattern(512, 1), false).unwrap();
    g.flush().unwrap();
    assert_eq!(ops(&disk), [write_op(0, 512, false), HostOp::Fdatasync]);
}

#[test]
fn reset_restores_the_configured_default() {
    let (mut g, disk, _) = guest(CacheMode::Writeback);
    g.set_write_cache(false).unwrap();
    assert!(!disk.write_cache());
    let issued = g.reset().unwrap();
    assert!(issued.status.is_ok());
    assert!(disk.write_cache());
    assert!(g.write_cache().unwrap());

    let (mut g, disk, _) = guest(CacheMode::Writethrough);
    assert!(!g.write_cache().unwrap());
    g.set_write_cache(true).unwrap();
    g.write(0, &pattern(512, 1), false).unwrap();
    ops(&disk);
    g.reset().unwrap();
    // Restoring write-through flushes what the writeback period left.
    assert_eq!(ops(&disk), [HostOp::Fdatasync]);
    assert!(!g.write_cache().unwrap());
}

#[test]
fn config_space_reflects_disk_and_options() {
    let (g, _, _) = guest_with(
        policy(CacheMode::None),
        TestGuestOptions {
            device: BlkOptions {
                num_queues: 3,
                opt_io_size: 64,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let c = g.config();
    assert_eq!(c.capacity.get(), DISK_SIZE / 512);
    assert_eq!(c.blk_size.get(), 512);
    assert_eq!(c.physical_block_exp, 3, "4096 / 512");
    assert_eq!(c.min_io_size.get(), 8);
    assert_eq!(c.opt_io_size.get(), 64);
    assert_eq!(c.num_queues.get(), 3);
    assert_eq!(c.seg_max.get(), 254);
    assert_eq!(c.writeback, 1);
    assert_eq!(
        c.write_zeroes_may_unmap, 1,
        "discard=unmap on a host that can"
    );
    assert_eq!(c.discard_sector_alignment.get(), 8);
    assert_eq!(c.unused0, 0);
    assert_eq!(c.unused1, [0; 3]);
    assert!(g.negotiated().contains(Features::MQ));
    assert_eq!(g.num_queues(), 3);
    // Byte-granular, unaligned reads agree with the struct.
    let mut b = [0u8; 3];
    g.device().read_config(33, &mut b);
    assert_eq!(b, [0, 3, 0]);
    let mut past = [0xffu8; 8];
    g.device().read_config(200, &mut past);
    assert_eq!(past, [0; 8]);
}

#[test]
fn discard_ignored_by_policy_still_succeeds_and_may_unmap_is_clear() {
    let (mut g, disk, _) = guest_with(
        vmstor_hostio::Policy::from_mode(CacheMode::Writeback),
        TestGuestOptions::default(),
    );
    assert_eq!(g.config().write_zeroes_may_unmap, 0);
    let r = g.run(0, &BlkReq::ranges(true, &[(0, 8, 0)]));
    assert_eq!(r.status, Some(BlkStatus::Ok));
    // UNMAP on write-zeroes is not passed on: the range is zeroed in place.
    g.run(0, &BlkReq::ranges(false, &[(0, 8, DWZ_FLAG_UNMAP)]));
    assert_eq!(
        ops(&disk),
        [HostOp::ZeroRange {
            offset: 0,
            len: 4096
        }]
    );
}

#[test]
fn indirect_and_many_segment_requests() {
    for indirect in [false, true] {
        let (mut g, disk, file) = guest_with(
            policy(CacheMode::None),
            TestGuestOptions {
                indirect,
                data_seg: 512,
                ..Default::default()
            },
        );
        let data = pattern(16 * 512, 9);
        let r = g.run(0, &BlkReq::write(64, &data));
        assert_eq!(r.status, Some(BlkStatus::Ok), "indirect={indirect}");
        assert_eq!(&file.contents()[64 * 512..72 * 512], &data[..8 * 512]);
        let r = g.run(0, &BlkReq::read(64, data.len()));
        assert_eq!(r.data, data);
        assert_eq!(r.used_len as usize, data.len() + 1);
        assert_eq!(disk.trace().take().len(), 2);
    }
}

//! virtio-scsi behaviour end to end through the test initiator: responses,
//! residuals and sense lengths per spec, bad input, config space, TMFs,
//! events, and durability through the GuestDriver interface.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use vmstor_hostio::{ExecutorKind, GuestDriver, HostOp, Policy};
use vmstor_scsi::testing::{mem_disk, MemFile};
use vmstor_scsi::ScsiDiskConfig;
use vmstor_virtio_scsi::spec::{ctrl, event, response as resp, status as st, task_attr};
use vmstor_virtio_scsi::testing::{RawDesc, TestInitiator};
use vmstor_virtio_scsi::{ScsiOptions, OFFERED};

const SIZE: usize = 1 << 20;

fn setup(exec: ExecutorKind) -> (TestInitiator, Arc<vmstor_hostio::Disk>, Arc<MemFile>) {
    let (disk, file) = mem_disk(SIZE, Policy::default(), exec);
    let t = TestInitiator::with_disk(disk.clone());
    disk.trace().take();
    (t, disk, file)
}

fn rw10(op: u8, lba: u32, n: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![op, flags, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

#[test]
fn inquiry_read_write_residual_and_sense_len() {
    let (mut t, _, file) = setup(ExecutorKind::Inline);
    assert_eq!(t.capacity(), 2048);
    assert_eq!(t.block_size(), 512);
    // INQUIRY: 36 bytes into a 96-byte buffer: residual 60.
    let r = t.cmd(0, 0, &[0x12, 0, 0, 0, 96, 0], &[], 96, task_attr::SIMPLE);
    assert_eq!((r.response, r.status, r.residual), (resp::OK, 0, 60));
    assert_eq!(&r.datain[8..16], b"VMSTOR  ");
    assert_eq!(r.used_len, 12 + 96 + 36);
    // WRITE then READ.
    let data: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    let r = t.cmd(0, 0, &rw10(0x2a, 3, 2, 0), &data, 0, task_attr::SIMPLE);
    assert_eq!((r.response, r.status, r.residual), (resp::OK, 0, 0));
    assert_eq!(file.read_at(1536, 1024), data);
    let r = t.cmd(0, 0, &rw10(0x28, 3, 2, 0), &[], 1024, task_attr::SIMPLE);
    assert_eq!(r.datain, data);
    assert_eq!(r.residual, 0);
    // CHECK CONDITION: sense_len = 18 (fixed format), bytes as the unit
    // produced them.
    let r = t.cmd(0, 0, &[0xee, 0, 0, 0, 0, 0], &[], 0, task_attr::SIMPLE);
    assert_eq!((r.response, r.status), (resp::OK, 2));
    assert_eq!(
        r.sense,
        vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0xc0, 0, 0]
    );
    assert_eq!(r.used_len, 12 + 18);
}

#[test]
fn guest_driver_durability_on_the_trace() {
    let (mut t, disk, _) = setup(ExecutorKind::Inline);
    assert_eq!(t.controller(), "scsi");
    let i = t.write(0, &[1u8; 1024], true).unwrap();
    assert_eq!(i.commands, vec!["WRITE(10) FUA=1"]);
    assert!(i.status.is_ok());
    let ops: Vec<HostOp> = disk.trace().take().into_iter().map(|e| e.op).collect();
    assert!(
        matches!(
            ops[..],
            [HostOp::Write {
                dsync: true,
                len: 1024,
                ..
            }]
        ),
        "{ops:?}"
    );
    let i = t.write(8, &[2u8; 512], false).unwrap();
    assert_eq!(i.commands, vec!["WRITE(10)"]);
    let i = t.flush().unwrap();
    assert_eq!(i.commands, vec!["SYNCHRONIZE CACHE(10)"]);
    let ops: Vec<HostOp> = disk.trace().take().into_iter().map(|e| e.op).collect();
    assert!(
        matches!(
            ops[..],
            [HostOp::Write { dsync: false, .. }, HostOp::Fdatasync]
        ),
        "{ops:?}"
    );
    // Write cache off: MODE SENSE + MODE SELECT, the flush happens before
    // the MODE SELECT completes, later writes are RWF_DSYNC.
    assert!(t.write_cache().unwrap());
    t.write(9, &[3u8; 512], false).unwrap();
    disk.trace().take();
    let i = t.set_write_cache(false).unwrap();
    assert_eq!(i.commands, vec!["MODE SENSE(10)", "MODE SELECT(10) WCE=0"]);
    assert!(i.status.is_ok(), "{i:?}");
    let ops: Vec<HostOp> = disk.trace().take().into_iter().map(|e| e.op).collect();
    assert_eq!(ops, vec![HostOp::Fdatasync]);
    assert!(!t.write_cache().unwrap());
    assert!(!disk.write_cache());
    t.write(10, &[4u8; 512], false).unwrap();
    let ops: Vec<HostOp> = disk.trace().take().into_iter().map(|e| e.op).collect();
    assert!(matches!(ops[..], [HostOp::Write { dsync: true, .. }]));
    let i = t.set_write_cache(true).unwrap();
    assert!(i.status.is_ok());
    assert!(t.write_cache().unwrap());
    // Read back, discard, write zeroes.
    let mut out = Vec::new();
    assert!(t.read(0, 2, &mut out).unwrap().status.is_ok());
    assert_eq!(out, vec![1u8; 1024]);
    let i = t.discard(0, 2).unwrap();
    assert_eq!((i.commands[0].as_str(), i.status.is_ok()), ("UNMAP", true));
    let i = t.write_zeroes(0, 2, true).unwrap();
    assert_eq!(i.commands, vec!["WRITE SAME(16) UNMAP=1"]);
    t.read(0, 2, &mut out).unwrap();
    assert_eq!(out, vec![0u8; 1024]);
    // Reset: LU RESET TMF, the UA is cleared, the unit is ready.
    let i = t.reset().unwrap();
    assert_eq!(
        i.commands,
        vec!["LOGICAL UNIT RESET", "REQUEST SENSE", "TEST UNIT READY"]
    );
    assert!(i.status.is_ok());
    // The guest's WCE choice survived the reset.
    t.set_write_cache(false).unwrap();
    t.reset().unwrap();
    assert!(!t.write_cache().unwrap());
}

#[test]
fn host_errors_reach_the_guest_as_sense() {
    let mut p = Policy::default();
    p.errors.write = vmstor_hostio::ErrorAction::Report;
    let (disk, file) = mem_disk(SIZE, p, ExecutorKind::Inline);
    let mut t = TestInitiator::with_disk(disk);
    file.write_errno.store(libc::EIO, Ordering::SeqCst);
    let i = t.write(0, &[1u8; 512], true).unwrap();
    assert_eq!(
        i.status,
        vmstor_hostio::GuestStatus::Error("CHECK CONDITION MEDIUM ERROR 0C/00".into())
    );
    file.write_errno.store(0, Ordering::SeqCst);
    assert!(t.write(0, &[1u8; 512], false).unwrap().status.is_ok());
    file.sync_errno.store(libc::EIO, Ordering::SeqCst);
    let i = t.flush().unwrap();
    assert_eq!(
        i.status,
        vmstor_hostio::GuestStatus::Error("CHECK CONDITION MEDIUM ERROR 0C/00".into())
    );
}

#[test]
fn stop_policy_holds_until_resume() {
    let (disk, file) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let mut t = TestInitiator::with_disk(disk);
    file.write_errno.store(libc::ENOSPC, Ordering::SeqCst);
    let h = t.start_cmd(
        0,
        0,
        &rw10(0x2a, 0, 1, 0),
        &[6u8; 512],
        0,
        task_attr::SIMPLE,
    );
    assert!(t.wait(&h).is_none());
    file.write_errno.store(0, Ordering::SeqCst);
    assert_eq!(t.device_mut().resume_held(), 1);
    let r = t.reply(&h).expect("completed after resume");
    assert_eq!((r.response, r.status), (resp::OK, 0));
    assert_eq!(file.read_at(0, 512), vec![6u8; 512]);
}

#[test]
fn addressing_bad_target_and_absent_lun() {
    let (mut t, _, _) = setup(ExecutorKind::Inline);
    let r = t.cmd(5, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.response, resp::BAD_TARGET);
    // LUN 7 of target 0: the target answers.
    let r = t.cmd(0, 7, &[0x12, 0, 0, 0, 36, 0], &[], 36, task_attr::SIMPLE);
    assert_eq!((r.response, r.status, r.datain[0]), (resp::OK, 0, 0x7f));
    let r = t.cmd(
        0,
        7,
        &[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
        &[],
        64,
        task_attr::SIMPLE,
    );
    assert_eq!(&r.datain[..8], &[0, 0, 0, 8, 0, 0, 0, 0]);
    assert_eq!(r.residual, 64 - 16);
    let r = t.cmd(0, 7, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!((r.status, r.sense_code()), (2, Some((5, 0x25, 0))));
    let r = t.cmd(0, 7, &[0x03, 0, 0, 0, 18, 0], &[], 18, task_attr::SIMPLE);
    assert_eq!((r.status, r.datain[12]), (0, 0x25));
}

#[test]
fn overrun_failure_and_malformed_chains() {
    let (mut t, disk, _) = setup(ExecutorKind::Inline);
    // READ of 2 blocks into 512 bytes: OVERRUN, no host I/O.
    let r = t.cmd(0, 0, &rw10(0x28, 0, 2, 0), &[], 512, task_attr::SIMPLE);
    assert_eq!((r.response, r.residual), (resp::OVERRUN, 512));
    // WRITE with its data in the wrong direction (device-writable).
    let r = t.cmd(0, 0, &rw10(0x2a, 0, 1, 0), &[], 512, task_attr::SIMPLE);
    assert_eq!(r.response, resp::OVERRUN);
    assert!(disk.trace().take().is_empty());
    // Both data-out and data-in without INOUT: FAILURE.
    let r = t.cmd(
        0,
        0,
        &rw10(0x28, 0, 1, 0),
        &[1; 512],
        512,
        task_attr::SIMPLE,
    );
    assert_eq!(r.response, resp::FAILURE);
    // Header shorter than 19 + cdb_size: FAILURE.
    let hdr = t.alloc(16);
    let rsp = t.alloc(108);
    let h = t.submit_raw(
        2,
        &[
            RawDesc {
                addr: hdr,
                len: 16,
                write: false,
            },
            RawDesc {
                addr: rsp,
                len: 108,
                write: true,
            },
        ],
    );
    t.kick(2);
    assert_eq!(t.used(2, h), Some(12));
    let mut b = [0u8; 12];
    vm_memory::Bytes::read_slice(&**t.mem(), &mut b, vm_memory::GuestAddress(rsp)).unwrap();
    assert_eq!(b[11], resp::FAILURE);
    // No room for the response: DEVICE_NEEDS_RESET with a config interrupt.
    t.take_interrupts();
    let h = t.submit_raw(
        2,
        &[
            RawDesc {
                addr: hdr,
                len: 51,
                write: false,
            },
            RawDesc {
                addr: rsp,
                len: 8,
                write: true,
            },
        ],
    );
    t.kick(2);
    assert_eq!(t.used(2, h), None);
    assert!(t.device().status() & st::DEVICE_NEEDS_RESET != 0);
    assert!(t
        .take_interrupts()
        .contains(&vmstor_virtio_scsi::InterruptKind::Config));
    // Re-initialise; a readable descriptor after a writable one also
    // breaks the device, as does a descriptor outside guest memory.
    t.init(OFFERED).unwrap();
    t.submit_raw(
        2,
        &[
            RawDesc {
                addr: rsp,
                len: 108,
                write: true,
            },
            RawDesc {
                addr: hdr,
                len: 51,
                write: false,
            },
        ],
    );
    t.kick(2);
    assert!(t.device().error().is_some());
    t.init(OFFERED).unwrap();
    t.submit_raw(
        2,
        &[
            RawDesc {
                addr: hdr,
                len: 51,
                write: false,
            },
            RawDesc {
                addr: (64 << 20) - 4,
                len: 108,
                write: true,
            },
        ],
    );
    t.kick(2);
    assert!(t.device().error().is_some());
}

#[test]
fn config_space_sizes_are_writable_and_reset() {
    let (mut t, _, _) = setup(ExecutorKind::Inline);
    let c = t.device().config();
    assert_eq!(
        (
            c.num_queues.get(),
            c.sense_size.get(),
            c.cdb_size.get(),
            c.event_info_size.get()
        ),
        (1, 96, 32, 16)
    );
    assert_eq!(
        (c.max_target.get(), c.max_lun.get(), c.max_channel.get()),
        (255, 16383, 0)
    );
    // Read-only fields ignore writes.
    t.device_mut().write_config(0, &[9, 9, 9, 9]);
    assert_eq!(t.device().config().num_queues.get(), 1);
    // sense_size 8: sense truncated to 8 bytes.
    t.device_mut().write_config(20, &8u32.to_le_bytes());
    let r = t.cmd(0, 0, &[0xee, 0, 0, 0, 0, 0], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense.len(), 8);
    assert_eq!(r.sense[..3], [0x70, 0, 5]);
    // cdb_size 10: 10-byte CDBs work, a 16-byte CDB is cut short.
    t.device_mut().write_config(20, &96u32.to_le_bytes());
    t.device_mut().write_config(24, &10u32.to_le_bytes());
    let r = t.cmd(0, 0, &rw10(0x28, 0, 1, 0), &[], 512, task_attr::SIMPLE);
    assert_eq!((r.response, r.status), (resp::OK, 0));
    let mut c16 = [0u8; 16];
    c16[0] = 0x88;
    c16[13] = 1;
    let r = t.cmd(0, 0, &c16[..10], &[], 512, task_attr::SIMPLE);
    assert_eq!(
        (r.status, r.sense_code().map(|s| (s.0, s.1))),
        (2, Some((5, 0x20)))
    );
    let mut b = [0u8; 4];
    t.device().read_config(24, &mut b);
    assert_eq!(u32::from_le_bytes(b), 10);
    // Reset restores the defaults.
    t.init(OFFERED).unwrap();
    let c = t.device().config();
    assert_eq!((c.sense_size.get(), c.cdb_size.get()), (96, 32));
}

#[test]
fn tmfs_on_the_control_queue() {
    let (disk, file) = mem_disk(SIZE, Policy::default(), ExecutorKind::Threads(1));
    let mut t = TestInitiator::with_disk(disk);
    assert_eq!(t.tmf(4, 0, ctrl::LOGICAL_UNIT_RESET, 0), resp::BAD_TARGET);
    assert_eq!(
        t.tmf(0, 9, ctrl::LOGICAL_UNIT_RESET, 0),
        resp::INCORRECT_LUN
    );
    assert_eq!(t.tmf(0, 0, 42, 0), resp::FUNCTION_REJECTED);
    assert_eq!(t.tmf(0, 0, ctrl::CLEAR_ACA, 0), resp::FUNCTION_REJECTED);
    // A write stuck in the host; an ORDERED command behind it.
    file.set_gate(false);
    let w = t.start_cmd(0, 0, &rw10(0x2a, 0, 1, 0), &[5; 512], 0, task_attr::SIMPLE);
    let o = t.start_cmd(0, 0, &[0; 6], &[], 0, task_attr::ORDERED);
    assert!(t.reply(&o).is_none());
    assert_eq!(
        t.tmf(0, 0, ctrl::QUERY_TASK, w.id),
        resp::FUNCTION_SUCCEEDED
    );
    assert_eq!(t.tmf(0, 0, ctrl::QUERY_TASK, 999), resp::OK);
    assert_eq!(
        t.tmf(0, 0, ctrl::QUERY_TASK_SET, 0),
        resp::FUNCTION_SUCCEEDED
    );
    // ABORT TASK of the waiting ORDERED command: ABORTED before the TMF.
    assert_eq!(t.tmf(0, 0, ctrl::ABORT_TASK, o.id), resp::OK);
    let r = t.reply(&o).expect("aborted");
    assert_eq!(r.response, resp::ABORTED);
    // ABORT TASK SET with the gate open: the write ends (aborted) first.
    file.set_gate(true);
    assert_eq!(t.tmf(0, 0, ctrl::ABORT_TASK_SET, 0), resp::OK);
    assert_eq!(t.reply(&w).expect("ended").response, resp::ABORTED);
    // LOGICAL UNIT RESET: pending commands end with RESET; 29/03 next.
    file.set_gate(false);
    let a = t.start_cmd(0, 0, &rw10(0x2a, 0, 1, 0), &[5; 512], 0, task_attr::ORDERED);
    let b = t.start_cmd(0, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
    file.set_gate(true);
    assert_eq!(t.tmf(0, 0, ctrl::LOGICAL_UNIT_RESET, 0), resp::OK);
    assert_eq!(t.reply(&a).unwrap().response, resp::RESET);
    assert_eq!(t.reply(&b).unwrap().response, resp::RESET);
    let r = t.cmd(0, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense_code(), Some((6, 0x29, 3)));
    // CLEAR TASK SET, I_T NEXUS RESET.
    assert_eq!(t.tmf(0, 0, ctrl::CLEAR_TASK_SET, 0), resp::OK);
    assert_eq!(t.tmf(0, 0, ctrl::I_T_NEXUS_RESET, 0), resp::OK);
    let r = t.cmd(0, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense_code(), Some((6, 0x29, 7)));
    // Asynchronous notification: answered, no events supported.
    assert_eq!(t.an(ctrl::AN_QUERY, 0, 0, 0x7e), (0, resp::OK));
    assert_eq!(t.an(ctrl::AN_SUBSCRIBE, 0, 0, 0x10), (0, resp::OK));
    assert_eq!(t.an(ctrl::AN_QUERY, 3, 0, 0x10).1, resp::BAD_TARGET);
}

#[test]
fn ordered_drains_through_virtio() {
    let (disk, file) = mem_disk(SIZE, Policy::default(), ExecutorKind::Threads(2));
    let mut t = TestInitiator::with_disk(disk.clone());
    disk.trace().take();
    file.set_gate(false);
    let w = t.start_cmd(0, 0, &rw10(0x2a, 0, 1, 0), &[1; 512], 0, task_attr::SIMPLE);
    let f = t.start_cmd(0, 0, &rw10(0x35, 0, 0, 0), &[], 0, task_attr::ORDERED);
    let w2 = t.start_cmd(0, 0, &rw10(0x2a, 1, 1, 0), &[2; 512], 0, task_attr::SIMPLE);
    let hq = t.start_cmd(0, 0, &[0x12, 0, 0, 0, 36, 0], &[], 36, task_attr::HEAD);
    assert_eq!(t.reply(&hq).unwrap().status, 0);
    assert!(t.reply(&f).is_none() && t.reply(&w2).is_none());
    assert!(!disk
        .trace()
        .snapshot()
        .iter()
        .any(|e| e.op == HostOp::Fdatasync));
    file.set_gate(true);
    for h in [&w, &f, &w2] {
        let r = t.wait(h).expect("done");
        assert_eq!((r.response, r.status), (resp::OK, 0));
    }
    let ops: Vec<HostOp> = disk.trace().take().into_iter().map(|e| e.op).collect();
    let fl = ops.iter().position(|o| *o == HostOp::Fdatasync).unwrap();
    let w1 = ops
        .iter()
        .position(|o| matches!(o, HostOp::Write { offset: 0, .. }))
        .unwrap();
    let w3 = ops
        .iter()
        .position(|o| matches!(o, HostOp::Write { offset: 512, .. }))
        .unwrap();
    assert!(w1 < fl && fl < w3, "{ops:?}");
}

#[test]
fn hotplug_resize_and_events() {
    let (mut t, _, _) = setup(ExecutorKind::Inline);
    assert!(t.take_events().is_empty());
    let (d1, _) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    assert!(t
        .device_mut()
        .add_disk(0, 1, d1, ScsiDiskConfig::default())
        .is_some());
    let ev = t.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].event.get(), ev[0].lun, ev[0].reason.get()),
        (
            event::TRANSPORT_RESET,
            [1, 0, 0x40, 1, 0, 0, 0, 0],
            event::RESET_RESCAN
        )
    );
    // LUN 0 learns the inventory changed.
    let r = t.cmd(0, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense_code(), Some((6, 0x3f, 0x0e)));
    // Resize LUN 1: PARAM_CHANGE with ASC/ASCQ 2A/09, and the UA.
    let (bigger, _) = mem_disk(SIZE * 2, Policy::default(), ExecutorKind::Inline);
    assert!(t.device_mut().resize_disk(0, 1, bigger));
    let ev = t.take_events();
    assert_eq!(
        (ev[0].event.get(), ev[0].reason.get()),
        (event::PARAM_CHANGE, 0x092a)
    );
    let r = t.cmd(0, 1, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense_code(), Some((6, 0x29, 0))); // power-on first
    let r = t.cmd(0, 1, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense_code(), None);
    let r = t.cmd(
        0,
        1,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
        8,
        task_attr::SIMPLE,
    );
    assert_eq!(&r.datain[..4], &[0, 0, 0x0f, 0xff]);
    // Remove it: REMOVED event, then BAD... the target remains (LUN 0).
    t.device_mut().remove_disk(0, 1);
    let ev = t.take_events();
    assert_eq!(ev[0].reason.get(), event::RESET_REMOVED);
    let r = t.cmd(0, 1, &[0; 6], &[], 0, task_attr::SIMPLE);
    assert_eq!(r.sense_code(), Some((5, 0x25, 0)));
    // Without HOTPLUG negotiated no events are sent.
    t.init(OFFERED & !vmstor_virtio_scsi::spec::feature::HOTPLUG)
        .unwrap();
    t.post_event_buffers(2);
    let (d2, _) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    t.device_mut().add_disk(0, 2, d2, ScsiDiskConfig::default());
    assert!(t.take_events().is_empty());
}

#[test]
fn several_targets_and_queues() {
    let mut t = TestInitiator::new(ScsiOptions {
        num_queues: 2,
        ..Default::default()
    });
    let (a, fa) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let (b, fb) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    t.device_mut()
        .add_disk(0, 0, a, ScsiDiskConfig::default())
        .unwrap();
    t.device_mut()
        .add_disk(3, 5, b, ScsiDiskConfig::default())
        .unwrap();
    assert!(t
        .device_mut()
        .add_disk(
            3,
            5,
            mem_disk(SIZE, Policy::default(), ExecutorKind::Inline).0,
            ScsiDiskConfig::default()
        )
        .is_none());
    t.init(OFFERED).unwrap();
    assert_eq!(t.device().num_queues(), 4);
    for (tg, l, f) in [(0u8, 0u16, &fa), (3, 5, &fb)] {
        t.cmd(tg, l, &[0; 6], &[], 0, task_attr::SIMPLE);
        let r = t.cmd(
            tg,
            l,
            &rw10(0x2a, 1, 1, 0),
            &[tg + 1; 512],
            0,
            task_attr::SIMPLE,
        );
        assert_eq!(r.status, 0);
        assert_eq!(f.read_at(512, 512), vec![tg + 1; 512]);
    }
}

#[test]
fn fuzz_entry_survives_random_inputs() {
    let mut rng = vmstor_scsi::testing::Rng(0xf00d_5c51);
    for _ in 0..1500 {
        let n = (rng.next_u64() % 300) as usize;
        let input = rng.bytes(n);
        vmstor_virtio_scsi::testing::fuzz_entry(&input);
    }
}

#[test]
fn events_beyond_the_queue_limit_set_events_missed() {
    let (disk, _) = mem_disk(SIZE, Policy::default(), ExecutorKind::Inline);
    let mut t = TestInitiator::new(ScsiOptions::default());
    t.device_mut()
        .add_disk(0, 0, disk, ScsiDiskConfig::default())
        .unwrap();
    t.init(OFFERED).unwrap();
    // No eventq buffers: 70 hot-plugs, 64 are kept.
    for l in 1..=70u16 {
        let (d, _) = mem_disk(4096, Policy::default(), ExecutorKind::Inline);
        t.device_mut()
            .add_disk(1, l, d, ScsiDiskConfig::default())
            .unwrap();
    }
    t.post_event_buffers(1);
    let ev = t.take_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].event.get(),
        event::TRANSPORT_RESET | event::EVENTS_MISSED
    );
    assert_eq!(ev[0].lun, [1, 1, 0x40, 1, 0, 0, 0, 0]);
    // The rest arrive as buffers are posted (take_events reposts).
    let mut n = 1;
    for _ in 0..70 {
        let e = t.take_events();
        if e.is_empty() {
            break;
        }
        assert!(e.iter().all(|e| e.event.get() == event::TRANSPORT_RESET));
        n += e.len();
    }
    assert_eq!(n, 64);
}

#[test]
fn guest_driver_uses_16_byte_cdbs_beyond_32_bit_lbas() {
    // 2^32 + 16 blocks of 512 bytes: a sparse in-memory image would be too
    // big, so check the CDB choice on a small disk through the command
    // names instead: the largest 10-byte-addressable request stays 10.
    let (mut t, _, _) = setup(ExecutorKind::Inline);
    let i = t.write(2047, &[0u8; 512], false).unwrap();
    assert_eq!(i.commands, vec!["WRITE(10)"]);
    // Beyond the capacity the guest sees the device's answer.
    let i = t.write(1 << 33, &[0u8; 512], true).unwrap();
    assert_eq!(i.commands, vec!["WRITE(16) FUA=1"]);
    assert_eq!(
        i.status,
        vmstor_hostio::GuestStatus::Error("CHECK CONDITION ILLEGAL REQUEST 21/00".into())
    );
}

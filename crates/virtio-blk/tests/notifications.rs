//! Interrupt suppression (flags and EVENT_IDX), queue gating, thread safety.

mod common;

use common::*;
use vm_memory::{Bytes, GuestAddress};
use vmstor_hostio::CacheMode;
use vmstor_virtio_blk::spec::BlkStatus;
use vmstor_virtio_blk::testing::{BlkReq, TestGuestOptions};
use vmstor_virtio_blk::{BlockWorker, Features, InterruptKind, VirtioBlk};

#[test]
fn device_and_worker_can_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Send + Sync>() {}
    send::<VirtioBlk>();
    sync::<BlockWorker>();
}

#[test]
fn no_interrupt_flag_is_honoured_without_event_idx() {
    let (mut g, _, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            accept: Features::all() - Features::EVENT_IDX,
            ..Default::default()
        },
    );
    let (_, avail, used, _) = g.queue_rings(0);
    g.take_interrupts();
    assert_eq!(g.run(0, &BlkReq::flush()).status, Some(BlkStatus::Ok));
    assert_eq!(g.take_interrupts(), [InterruptKind::Queue(0)]);
    // VRING_AVAIL_F_NO_INTERRUPT.
    g.mem().write_obj(1u16, GuestAddress(avail)).unwrap();
    assert_eq!(g.run(0, &BlkReq::flush()).status, Some(BlkStatus::Ok));
    assert_eq!(g.take_interrupts(), []);
    // The device re-enabled notifications after processing.
    let flags: u16 = g.mem().read_obj(GuestAddress(used)).unwrap();
    assert_eq!(flags, 0);
}

#[test]
fn event_idx_suppresses_interrupts_and_publishes_avail_event() {
    let (mut g, _, _) = guest(CacheMode::Writeback);
    assert!(g.negotiated().contains(Features::EVENT_IDX));
    let (_, avail, used, size) = g.queue_rings(0);
    let used_event = GuestAddress(avail + 4 + 2 * u64::from(size));
    let avail_event = GuestAddress(used + 4 + 8 * u64::from(size));
    g.take_interrupts();
    // used_event = 0: interrupt when the used index passes 0.
    assert_eq!(g.run(0, &BlkReq::flush()).status, Some(BlkStatus::Ok));
    assert_eq!(g.take_interrupts(), [InterruptKind::Queue(0)]);
    let ae: u16 = g.mem().read_obj(avail_event).unwrap();
    assert_eq!(ae, 1, "device asks to be kicked for the next chain");
    // The driver wants an interrupt only after used index 10.
    g.mem().write_obj(10u16, used_event).unwrap();
    for _ in 0..3 {
        assert_eq!(g.run(0, &BlkReq::flush()).status, Some(BlkStatus::Ok));
    }
    assert_eq!(g.take_interrupts(), []);
}

#[test]
fn queues_beyond_the_first_need_mq() {
    let (mut g, disk, _) = guest_with(
        policy(CacheMode::Writeback),
        TestGuestOptions {
            device: vmstor_virtio_blk::BlkOptions {
                num_queues: 2,
                ..Default::default()
            },
            accept: Features::all() - Features::MQ,
            ..Default::default()
        },
    );
    assert_eq!(g.num_queues(), 1);
    // A driver without MQ sets up queue 1 anyway and kicks it: ignored.
    g.device_mut().notify(1);
    assert_eq!(ops(&disk), []);
    assert!(!g.device().needs_reset());
}

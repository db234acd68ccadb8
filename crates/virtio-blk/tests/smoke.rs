//! Smoke test: the test guest drives a device end to end.

use vmstor_hostio::{CacheMode, ExecutorKind, GuestDriver, Policy};
use vmstor_virtio_blk::testing::{mem_disk, TestGuest, TestGuestOptions};

#[test]
fn write_read_flush_round_trip() {
    let (disk, file) = mem_disk(
        1 << 20,
        Policy::from_mode(CacheMode::Writeback),
        ExecutorKind::Inline,
    );
    let mut g = TestGuest::new(disk, TestGuestOptions::default()).unwrap();
    assert_eq!(g.controller(), "virtio-blk");
    assert_eq!(g.block_size(), 512);
    assert_eq!(g.capacity(), 2048);
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    let w = g.write(3, &data, false).unwrap();
    assert_eq!(w.commands, ["VIRTIO_BLK_T_OUT"]);
    assert!(w.status.is_ok(), "{w:?}");
    let mut out = Vec::new();
    assert!(g.read(3, 16, &mut out).unwrap().status.is_ok());
    assert_eq!(out, data);
    assert_eq!(&file.contents()[3 * 512..3 * 512 + 8192], &data[..]);
    assert!(g.flush().unwrap().status.is_ok());
    assert!(g.write(0, &data, true).is_err(), "no FUA on virtio-blk");
    assert_eq!(file.violations(), 0);
}

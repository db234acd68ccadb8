//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use vmstor_hostio::{CacheMode, DiscardMode, Disk, ExecutorKind, HostOp, Policy};
use vmstor_virtio_blk::testing::{mem_disk, MemFile, TestGuest, TestGuestOptions};

pub const DISK_SIZE: u64 = 1 << 20;

pub fn policy(mode: CacheMode) -> Policy {
    let mut p = Policy::from_mode(mode);
    p.discard = DiscardMode::Unmap;
    p
}

pub fn guest_with(p: Policy, opts: TestGuestOptions) -> (TestGuest, Arc<Disk>, Arc<MemFile>) {
    let (disk, file) = mem_disk(DISK_SIZE, p, ExecutorKind::Inline);
    let g = TestGuest::new(disk.clone(), opts).expect("driver init");
    disk.trace().take();
    (g, disk, file)
}

pub fn guest(mode: CacheMode) -> (TestGuest, Arc<Disk>, Arc<MemFile>) {
    guest_with(policy(mode), TestGuestOptions::default())
}

/// The host syscalls recorded since the last call.
pub fn ops(disk: &Disk) -> Vec<HostOp> {
    disk.trace()
        .take()
        .into_iter()
        .map(|e| e.op)
        .filter(|o| o.is_syscall())
        .collect()
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

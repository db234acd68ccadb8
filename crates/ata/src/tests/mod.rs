//! Behaviour tests: every command, IDENTIFY field by field, durability
//! (asserted on hostio's trace), error mapping, PRD edge cases, resets,
//! the controller's register/PCI surface, docs and the fuzz entry points.

mod commands_all;
mod controller;
mod crash;
mod dma;
mod docs_check;
mod durability;
mod errors;
mod fuzzing;
mod identify_words;
mod transfers;

use std::sync::Arc;

use vmstor_hostio::{CacheMode, Disk, HostOp, Policy};

use crate::testing::{mem_disk, IdeDriver, MemFile, Tf};

/// 8 MiB: 16384 sectors.
pub(crate) const DISK: usize = 8 << 20;
pub(crate) const SECTORS: u64 = (DISK / 512) as u64;

pub(crate) fn setup(mode: CacheMode) -> (Arc<MemFile>, IdeDriver) {
    setup_policy(Policy::from_mode(mode))
}

pub(crate) fn setup_policy(policy: Policy) -> (Arc<MemFile>, IdeDriver) {
    let (f, disk) = mem_disk(DISK, policy);
    let d = IdeDriver::new(disk);
    d.disk().trace().take();
    (f, d)
}

/// Host ops recorded since the last call.
pub(crate) fn ops(disk: &Disk) -> Vec<HostOp> {
    disk.trace().take().into_iter().map(|e| e.op).collect()
}

/// (offset, len, dsync) of every host write since the last call.
pub(crate) fn writes(ops: &[HostOp]) -> Vec<(u64, u64, bool)> {
    ops.iter()
        .filter_map(|o| match *o {
            HostOp::Write {
                offset, len, dsync, ..
            } => Some((offset, len, dsync)),
            _ => None,
        })
        .collect()
}

pub(crate) fn fdatasyncs(ops: &[HostOp]) -> usize {
    ops.iter()
        .filter(|o| matches!(o, HostOp::Fdatasync))
        .count()
}

pub(crate) fn lba48(lba: u64, count: u16) -> Tf {
    Tf {
        lba,
        count,
        lba48: true,
        ..Tf::default()
    }
}

pub(crate) fn lba28(lba: u64, count: u16) -> Tf {
    Tf {
        lba,
        count,
        ..Tf::default()
    }
}

pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

//! Arbitrary requests (offsets, lengths, buffers, ops) against arbitrary
//! policies and host caps: validation never panics, and every planned host
//! op of a valid request stays inside the disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmstor_hostio::{
    plan, BufShape, CacheMode, DataBuf, DiscardMode, HostCaps, HostOp, Op, Policy, Request,
    RequestShape, StableWrites,
};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    op: u8,
    offset: u64,
    len: u64,
    size_sectors: u32,
    mode: u8,
    wce: bool,
    oa_shift: u8,
    aligned: bool,
    dsync: bool,
    stable: u8,
    unmap: bool,
}

fuzz_target!(|i: Input| {
    let size = u64::from(i.size_sectors.max(8)) * 4096;
    let op = match i.op % 7 {
        0 => Op::Read,
        1 => Op::Write { fua: false },
        2 => Op::Write { fua: true },
        3 => Op::Flush,
        4 => Op::Discard,
        5 => Op::WriteZeroes { may_unmap: false },
        _ => Op::WriteZeroes { may_unmap: true },
    };
    let req = Request { op, offset: i.offset, len: i.len, buf: DataBuf::None, tag: 0 };
    let valid = match req.validate(size, 512, false) {
        Ok(()) => true,
        Err(_) => false,
    };
    // Data ops need a buffer of the right length to validate; plan them on
    // the range check alone.
    let range_ok = i.offset.checked_add(i.len).is_some_and(|e| e <= size)
        && i.offset % 512 == 0
        && i.len % 512 == 0
        && (i.len > 0 || op == Op::Flush);
    if !(valid || (range_ok && matches!(op, Op::Read | Op::Write { .. }))) {
        return;
    }
    let mut caps = HostCaps::simulated(size);
    caps.dio_offset_align = 512 << (i.oa_shift % 4);
    caps.dio_mem_align = 512;
    caps.rwf_dsync = i.dsync;
    let mode = CacheMode::ALL[usize::from(i.mode) % 5];
    let policy = Policy {
        stable_writes: [StableWrites::Auto, StableWrites::Bounce, StableWrites::Trust][usize::from(i.stable) % 3],
        discard: if i.unmap { DiscardMode::Unmap } else { DiscardMode::Ignore },
        ..Policy::from_mode(mode)
    };
    let shape = RequestShape {
        op,
        offset: if op == Op::Flush { 0 } else { i.offset },
        len: if op == Op::Flush { 0 } else { i.len },
        buf: match op {
            Op::Read | Op::Write { .. } => BufShape::Guest { aligned: i.aligned },
            _ => BufShape::None,
        },
    };
    let p = plan(&shape, &policy, i.wce, &caps);
    let oa = u64::from(caps.dio_offset_align);
    let limit = size.div_ceil(oa) * oa;
    for o in &p.ops {
        if let HostOp::Read { offset, len, .. }
        | HostOp::Write { offset, len, .. }
        | HostOp::PunchHole { offset, len }
        | HostOp::ZeroRange { offset, len }
        | HostOp::BlkDiscard { offset, len }
        | HostOp::BlkZeroout { offset, len }
        | HostOp::WriteZeroBuf { offset, len, .. } = *o
        {
            assert!(offset.checked_add(len).is_some_and(|e| e <= limit), "{o:?} beyond {limit}");
        }
    }
});

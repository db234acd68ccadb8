//! virtio-blk: arbitrary descriptor chains, guest memory contents, negotiated
//! features, config accesses and resets. The device must never panic and
//! never touch host bytes outside the image (checked inside `fuzz_entry`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmstor_virtio_blk::fuzz::fuzz_entry(data);
});

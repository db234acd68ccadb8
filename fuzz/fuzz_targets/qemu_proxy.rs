//! QEMU PCI proxy remote: arbitrary mpqemu message streams (headers, payload
//! sizes, config/BAR accesses, guest RAM layouts with descriptors) played
//! against the remote with its test function. Never a panic; a RET exactly for
//! the commands that need one (checked inside `fuzz_entry`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmstor_qemu_proxy::fuzz::fuzz_entry(data);
});

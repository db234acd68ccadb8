//! Arbitrary ATA command blocks (task file with HOB, opcode, data phase,
//! PRD table and payload) driven through the registers. Logic:
//! `vmstor_ata::testing::fuzz::cmd`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmstor_ata::testing::fuzz::cmd(data);
});

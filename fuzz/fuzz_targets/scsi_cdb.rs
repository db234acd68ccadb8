//! SCSI disk: arbitrary CDB sequences with arbitrary data-out on a small
//! in-memory disk. The logical unit must never panic, never move more than
//! the buffer, and answer every bad field with sense data (checked inside
//! `fuzz_cdb`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmstor_scsi::testing::fuzz_cdb(data);
});

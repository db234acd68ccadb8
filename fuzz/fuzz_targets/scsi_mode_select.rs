//! SCSI disk: arbitrary MODE SELECT(6)/(10) parameter lists. Accepted lists
//! must leave MODE SENSE and the disk's live write cache agreeing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmstor_scsi::testing::fuzz_mode_select(data);
});

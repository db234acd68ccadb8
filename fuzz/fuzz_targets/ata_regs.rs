//! Arbitrary register-access sequences against the PIIX IDE controller with
//! arbitrary guest memory (PRD tables), PCI configuration cycles, host
//! faults and resumes. Logic: `vmstor_ata::testing::fuzz::regs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vmstor_ata::testing::fuzz::regs(data);
});

//! virtio-scsi: arbitrary requests on every queue, raw descriptor chains
//! (wrong order, outside guest memory, short headers), config writes, TMFs,
//! AN requests and resets against a device with two LUNs. The device must
//! never panic (checked inside `fuzz_entry`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmstor_virtio_scsi::testing::fuzz_entry(data);
});

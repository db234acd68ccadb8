//! The fuzz targets' logic over a few thousand random inputs (the
//! cargo-fuzz targets in `fuzz/` call the same entry points).

use vmstor_scsi::testing::{fuzz_cdb, fuzz_mode_select, Rng};

#[test]
fn random_cdbs_never_panic_and_keep_invariants() {
    let mut rng = Rng(0x5c51_d15c);
    for i in 0..3000 {
        let n = (rng.next_u64() % 400) as usize;
        let mut input = rng.bytes(n);
        if let Some(p) = input.first_mut() {
            *p = (i % 16) as u8;
        }
        fuzz_cdb(&input);
    }
}

#[test]
fn random_mode_select_lists_never_panic() {
    let mut rng = Rng(0x0de5_e1ec);
    for _ in 0..3000 {
        let n = (rng.next_u64() % 80) as usize;
        let mut input = rng.bytes(n);
        // Start from a valid header + caching page half the time so the
        // page checks are reached.
        if rng.next_u64() % 2 == 0 && input.len() > 1 {
            let mut l = vec![input[0] & !1, 0, 0, 0, 0, 0x08, 0x12];
            l.extend(std::iter::repeat_n(0, 18));
            for (i, b) in input.iter().enumerate().skip(1).take(24) {
                if b % 5 == 0 {
                    l[i] = *b;
                }
            }
            input = l;
        }
        fuzz_mode_select(&input);
    }
}

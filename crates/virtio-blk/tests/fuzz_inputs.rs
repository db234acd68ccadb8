//! Runs the fuzz target's logic over a few thousand pseudo-random inputs.

use vmstor_virtio_blk::fuzz::fuzz_entry;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn random_inputs_never_panic_or_escape_the_image() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut host_ops, mut rejected, mut needs_reset, mut with_io) = (0, 0, 0, 0);
    for _ in 0..5000 {
        let len = (rng.next() % 1536) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let s = fuzz_entry(&data);
        host_ops += s.host_ops;
        rejected += s.rejected;
        needs_reset += s.needs_reset;
        with_io += u64::from(s.host_ops > 0);
    }
    eprintln!("fuzz stats: io-inputs {with_io} host-ops {host_ops} rejected {rejected} needs-reset {needs_reset}");
    // The generator must reach every outcome, or this test proves little.
    assert!(with_io > 100, "inputs with host I/O: {with_io}");
    assert!(host_ops > 2000, "host ops: {host_ops}");
    assert!(rejected > 100, "rejected requests: {rejected}");
    assert!(needs_reset > 100, "NEEDS_RESET: {needs_reset}");
}

#[test]
fn empty_and_tiny_inputs() {
    fuzz_entry(&[]);
    for b in 0..=255u8 {
        fuzz_entry(&[b; 40]);
    }
}

#[test]
fn seed_corpus_runs() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/virtio_blk");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        fuzz_entry(&std::fs::read(e.path()).unwrap());
    }
}

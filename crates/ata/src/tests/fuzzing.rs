//! The fuzz entry points over a few thousand random and structured inputs
//! (the `fuzz/` targets run the same functions under libFuzzer).

use crate::testing::fuzz::{self, FuzzStats};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

#[test]
fn fuzz_regs_random_inputs() {
    let mut r = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut total = FuzzStats::default();
    for _ in 0..2000 {
        let n = (r.next() % 600) as usize;
        total += fuzz::regs(&r.bytes(n));
    }
    // Random register traffic rarely forms a full command; it must still
    // have reached the device sometimes.
    assert!(total.reads + total.writes + total.flushes > 0, "{total:?}");
}

/// A structured command block for `fuzz::cmd`.
fn command(r: &mut XorShift, out: &mut Vec<u8>) {
    let opcodes: Vec<u8> = crate::COMMANDS.iter().map(|c| c.opcode).collect();
    let op = if r.byte() < 230 {
        opcodes[r.next() as usize % opcodes.len()]
    } else {
        r.byte()
    };
    let features: u16 = match op {
        0xef => {
            u16::from([0x02, 0x82, 0x03, 0xaa, 0x55, 0x66, 0xcc, r.byte()][r.next() as usize % 8])
        }
        0x06 => 1,
        _ => u16::from(r.byte() % 4),
    };
    let count: u16 = u16::from(r.byte() % 20);
    let lba: u64 = if r.byte() < 200 {
        r.next() % 140
    } else {
        r.next()
    };
    out.extend_from_slice(&features.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&lba.to_le_bytes()[..6]);
    out.push(0xe0 | (r.byte() & 0x10));
    out.push(op);
    out.push(r.byte());
    let n = r.byte() % 4;
    out.push(n);
    for _ in 0..n {
        let base = (0x2000 + (r.next() % 0x3000)) as u16 & !7;
        let len = [512u16, 1024, 4096, 0, r.byte().into()][r.next() as usize % 5];
        out.extend_from_slice(&(base / 4).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    // Payload: TRIM-like range entries with small LBAs and lengths.
    let m = r.byte() % 4;
    out.push(m);
    for _ in 0..m {
        let e = (r.next() % 130) | (r.next() % 10) << 48;
        out.extend_from_slice(&e.to_le_bytes());
    }
}

#[test]
fn fuzz_cmd_structured_and_random_inputs() {
    let mut r = XorShift(0x1234_5678_9abc_def1);
    let mut total = FuzzStats::default();
    for i in 0..2000 {
        let data = if i % 4 == 3 {
            let n = (r.next() % 400) as usize;
            r.bytes(n)
        } else {
            let mut v = vec![r.byte()];
            for _ in 0..(r.next() % 12) {
                command(&mut r, &mut v);
            }
            v
        };
        total += fuzz::cmd(&data);
    }
    // The structured inputs reach every kind of host request.
    assert!(total.reads > 100, "{total:?}");
    assert!(total.writes > 100, "{total:?}");
    assert!(total.fua_writes > 0, "{total:?}");
    assert!(total.flushes > 0, "{total:?}");
    assert!(total.discards > 0, "{total:?}");
    assert!(total.held > 0, "{total:?}");
}

#[test]
fn fuzz_seed_corpus_runs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut ran = 0;
    for (target, f) in [
        ("ata_regs", fuzz::regs as fn(&[u8]) -> FuzzStats),
        ("ata_cmd", fuzz::cmd),
    ] {
        let Ok(rd) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            let st = f(&std::fs::read(e.path()).unwrap());
            ran += 1;
            if e.file_name() == "dma_fua_trim_flush" {
                assert_eq!(
                    (st.reads, st.fua_writes, st.discards, st.flushes),
                    (1, 1, 1, 1),
                    "{st:?}"
                );
            }
            if e.file_name() == "pio_wce_off_stop" {
                assert!(st.held >= 1 && st.writes >= 2, "{st:?}");
            }
        }
    }
    assert!(ran >= 5, "seed corpus present");
}

//! Engine overhead per request: the planner alone, and 4 KiB requests through
//! the inline executor on a real file (buffered page-cache hits and O_DIRECT),
//! so the cost vmstor adds on top of the syscall is visible.
//!
//! `cargo bench -p vmstor-hostio --bench engine`; figures in docs/performance.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstor_hostio::*;

fn bench(c: &mut Criterion) {
    let caps = HostCaps::simulated(1 << 30);
    let policy = Policy::from_mode(CacheMode::None);
    let shape = RequestShape {
        op: Op::Write { fua: true },
        offset: 8192,
        len: 4096,
        buf: BufShape::Guest { aligned: true },
    };
    c.bench_function("plan/write-fua-4k", |b| {
        b.iter(|| black_box(plan(black_box(&shape), &policy, true, &caps)))
    });

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    // Allocate the blocks so writes are overwrites.
    std::fs::write(&path, vec![1u8; 64 << 20]).unwrap();
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    let buf = || DataBuf::Guest(GuestBufs::new(mem.clone(), vec![(GuestAddress(0), 4096)]));
    // Baselines: the bare syscalls on the same file.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut b4 = vec![0u8; 4096];
        let mut i = 0u64;
        c.bench_function("baseline/pread-4k", |b| {
            b.iter(|| {
                i = (i + 1) % 16384;
                black_box(f.read_at(&mut b4, i * 4096).unwrap());
            })
        });
        c.bench_function("baseline/pwrite-4k", |b| {
            b.iter(|| {
                i = (i + 1) % 16384;
                black_box(f.write_at(&b4, i * 4096).unwrap());
            })
        });
    }
    for (name, mode) in [
        ("writeback", CacheMode::Writeback),
        ("none", CacheMode::None),
    ] {
        let disk = Disk::open(&path, Policy::from_mode(mode), DiskOptions::default()).unwrap();
        let mut i = 0u64;
        c.bench_function(&format!("{name}/read-4k"), |b| {
            b.iter(|| {
                i = (i + 1) % 16384;
                let r = disk.execute(Request::read(i * 4096, buf(), 0)).unwrap();
                black_box(r);
            })
        });
        c.bench_function(&format!("{name}/write-4k"), |b| {
            b.iter(|| {
                i = (i + 1) % 16384;
                let r = disk
                    .execute(Request::write(i * 4096, buf(), false, 0))
                    .unwrap();
                black_box(r);
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);

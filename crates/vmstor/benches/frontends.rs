//! Model overhead per request: a 4 KiB read through each front end's real
//! device model (descriptor-chain walk and request parsing for virtio-blk,
//! CDB decode and the SCSI task set behind virtio-scsi, task-file, bus-master
//! and PRD walk for IDE) on hostio's inline executor over a
//! [`vmstor_hostio::NullFile`], which completes at once and touches no data.
//! What is left is the cost of the models and the engine.
//!
//! Each benchmark drives the device the way a guest does, through its test
//! driver's public register/ring methods, but keeps the request layout in
//! guest memory from one iteration to the next (as a guest's driver reuses
//! its rings and buffers): per request it rewrites the header/CDB/task file,
//! makes the chain available (or starts the bus master), notifies, and reaps
//! the completion. The drivers' convenience methods (`TestGuest::run`,
//! `IdeDriver::dma`, ...) also copy the data out into a fresh `Vec`, which is
//! test-driver cost, not device cost; the `driver/*` rows show them for
//! scale.
//!
//! `engine/read-4k` is `Disk::execute` alone on the same backend, so the
//! front end's share is the difference.
//!
//! `cargo bench -p vmstor --bench frontends`; `tests/perf/run.sh` runs it
//! and docs/performance.md has the figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_ata::testing::{IdeDriver, Tf, DATA_BUF, PRD_TABLE};
use vmstor_ata::Status;
use vmstor_hostio::{
    CacheMode, DataBuf, Disk, DiskOptions, ExecutorKind, Fact, GuestBufs, GuestDriver, HostCaps,
    NullFile, Outcome, Policy, Request,
};
use vmstor_virtio_blk::testing::{RawDesc as BlkDesc, TestGuest, TestGuestOptions};
use vmstor_virtio_scsi::spec::{lun_address, task_attr, CmdReqHeader, CmdRespHeader};
use vmstor_virtio_scsi::testing::{RawDesc as ScsiDesc, TestInitiator};
use zerocopy::{FromBytes, IntoBytes};

const DISK_SIZE: u64 = 1 << 30;
/// Requests rotate over this many 4 KiB blocks.
const BLOCKS: u64 = 4096;

/// A `cache=none` disk over the null backend, inline executor, no trace.
fn null_disk() -> Arc<Disk> {
    let mut caps = HostCaps::simulated(DISK_SIZE);
    caps.stable_pages = Fact::Known(false, "null backend");
    Arc::new(
        Disk::from_host_file(
            Arc::new(NullFile::new()),
            caps,
            Policy::from_mode(CacheMode::None),
            DiskOptions {
                executor: ExecutorKind::Inline,
                ..Default::default()
            },
        )
        .expect("null disk"),
    )
}

fn engine(c: &mut Criterion) {
    let disk = null_disk();
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    let mut i = 0u64;
    c.bench_function("engine/read-4k", |b| {
        b.iter(|| {
            i = (i + 1) % BLOCKS;
            let buf = DataBuf::Guest(GuestBufs::new(mem.clone(), vec![(GuestAddress(0), 4096)]));
            let r = disk.execute(Request::read(i * 4096, buf, i)).unwrap();
            black_box(matches!(r, Outcome::Done(_)));
        })
    });
}

fn virtio_blk(c: &mut Criterion) {
    let disk = null_disk();
    let mut g = TestGuest::new(disk.clone(), TestGuestOptions::default()).expect("guest");
    let hdr = g.alloc(16, 16);
    let data = g.alloc(4096, 4096);
    let status = g.alloc(1, 1);
    let mem = g.mem().clone();
    mem.write_obj(
        virtio_bindings::virtio_blk::VIRTIO_BLK_T_IN.to_le(),
        GuestAddress(hdr),
    )
    .unwrap();
    mem.write_obj(0u64, GuestAddress(hdr + 8)).unwrap();
    let (next, write) = (
        virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16,
        virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16,
    );
    let chain = [
        (
            0u16,
            BlkDesc {
                addr: hdr,
                len: 16,
                flags: next,
                next: 1,
            },
        ),
        (
            1,
            BlkDesc {
                addr: data,
                len: 4096,
                flags: next | write,
                next: 2,
            },
        ),
        (
            2,
            BlkDesc {
                addr: status,
                len: 1,
                flags: write,
                next: 0,
            },
        ),
    ];
    // Lay the chain out once (descriptors 0..3 leave the driver's free
    // list for good) and check that it really reads.
    g.submit_raw(0, &chain, 0);
    g.kick(0);
    let used = g.poll_used(0);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].len, 4097, "4 KiB + status");
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(status)).unwrap(),
        0,
        "VIRTIO_BLK_S_OK"
    );
    let reads0 = disk.counters().reads;
    let mut i = 0u64;
    // Requests the benchmark ran: none when criterion's filter skips it.
    let mut ran = 0u64;
    let mut used = Vec::new();
    c.bench_function("model/virtio-blk-in-4k", |b| {
        b.iter(|| {
            ran += 1;
            i = (i + 1) % BLOCKS;
            // Sector of the next request, then make head 0 available again.
            mem.write_obj((i * 8).to_le(), GuestAddress(hdr + 8))
                .unwrap();
            g.submit_raw(0, &[], 0);
            g.kick(0);
            used.clear();
            g.poll_used_into(0, &mut used);
            black_box(&used);
        })
    });
    let st = mem.read_obj::<u8>(GuestAddress(status)).unwrap();
    assert_eq!(st, 0);
    assert_eq!(disk.counters().reads - reads0, ran);
    assert_eq!(disk.counters().bytes_bounced, 0);

    let mut out = Vec::new();
    c.bench_function("driver/virtio-blk-read-4k", |b| {
        b.iter(|| {
            i = (i + 1) % BLOCKS;
            let r = g.read(i, 8, &mut out).unwrap();
            black_box(r);
        })
    });
}

fn virtio_scsi(c: &mut Criterion) {
    let disk = null_disk();
    let mut t = TestInitiator::with_disk(disk.clone());
    let cdb_size = t.device().config().cdb_size.get() as usize;
    let sense_size = t.device().config().sense_size.get() as usize;
    let hdr_len = std::mem::size_of::<CmdReqHeader>();
    let req = t.alloc(hdr_len + cdb_size);
    let resp_len = std::mem::size_of::<CmdRespHeader>() + sense_size;
    let resp = t.alloc(resp_len);
    let data = t.alloc(4096);
    let mem = t.mem().clone();
    let h = CmdReqHeader {
        lun: lun_address(0, 0),
        id: 1.into(),
        task_attr: task_attr::SIMPLE,
        ..Default::default()
    };
    let mut bytes = h.as_bytes().to_vec();
    let bs = t.block_size() as u64;
    let mut cdb = vec![0u8; cdb_size];
    cdb[0] = 0x28; // READ(10)
    cdb[7..9].copy_from_slice(&((4096 / bs) as u16).to_be_bytes());
    bytes.extend_from_slice(&cdb);
    mem.write_slice(&bytes, GuestAddress(req)).unwrap();
    let descs = [
        ScsiDesc {
            addr: req,
            len: bytes.len() as u32,
            write: false,
        },
        ScsiDesc {
            addr: resp,
            len: resp_len as u32,
            write: true,
        },
        ScsiDesc {
            addr: data,
            len: 4096,
            write: true,
        },
    ];
    let lba_at = GuestAddress(req + hdr_len as u64 + 2);
    let id_at = GuestAddress(req + 8);
    // Laid out once, then re-posted per request (as the virtio-blk bench
    // does), so the driver's descriptor writes are not in the figure.
    let head = t.submit_pinned(2, &descs);
    t.kick(2);
    let used = t.used(2, head).expect("READ(10) completes inline");
    let run = |t: &mut TestInitiator, i: u64| {
        mem.write_obj(i.to_le(), id_at).unwrap();
        mem.write_obj(((i * 4096 / bs) as u32).to_be(), lba_at)
            .unwrap();
        t.repost(2, head);
        t.kick(2);
        t.used(2, head)
    };
    let mut rh = [0u8; 12];
    mem.read_slice(&mut rh, GuestAddress(resp)).unwrap();
    let r = CmdRespHeader::read_from_bytes(&rh).unwrap();
    assert_eq!((r.response, r.status, used), (0, 0, resp_len as u32 + 4096));
    let mut i = 2u64;
    c.bench_function("model/virtio-scsi-read10-4k", |b| {
        b.iter(|| {
            i += 1;
            black_box(run(&mut t, i % BLOCKS + 16));
        })
    });
    mem.read_slice(&mut rh, GuestAddress(resp)).unwrap();
    assert_eq!(CmdRespHeader::read_from_bytes(&rh).unwrap().status, 0);
    assert_eq!(disk.counters().bytes_bounced, 0);

    let mut out = Vec::new();
    let spb = 4096 / bs;
    c.bench_function("driver/virtio-scsi-read-4k", |b| {
        b.iter(|| {
            i += 1;
            black_box(t.read((i % BLOCKS) * spb, spb as u32, &mut out).unwrap());
        })
    });
}

fn ide(c: &mut Criterion) {
    let disk = null_disk();
    let mut d = IdeDriver::new(disk.clone());
    let bs = d.block_size() as u64;
    let n = 4096 / bs;
    // READ DMA EXT as libata issues it: PRD table, bus-master setup, task
    // file, command, start; the event loop's poll while BSY; stop the bus
    // master, clear its interrupt bit, read Status (acknowledges INTRQ).
    let read = |d: &mut IdeDriver, lba: u64| {
        d.build_prd(4096);
        d.bm_setup(PRD_TABLE as u32, true);
        d.load_tf(&Tf {
            count: n as u16,
            lba,
            lba48: true,
            ..Tf::default()
        });
        d.outb(7, 0x25);
        let c = d.bm_read(0);
        d.bm_write(0, 1, u32::from(c | 0x01));
        let s = d.wait();
        let bm = d.bm_read(2);
        let c = d.bm_read(0);
        d.bm_write(0, 1, u32::from(c & !0x01));
        d.bm_write(2, 1, u32::from(bm & !0x01));
        (s, Status::from_bits_retain(d.inb(7)), bm)
    };
    let (s, st, bm) = read(&mut d, 8);
    assert!(
        s.is_some() && !st.intersects(Status::ERR | Status::BSY),
        "{st:?}"
    );
    assert_eq!(bm & 0x02, 0, "no bus-master error");
    let _ = DATA_BUF;
    let mut i = 0u64;
    c.bench_function("model/ide-read-dma-ext-4k", |b| {
        b.iter(|| {
            i = (i + 1) % BLOCKS;
            black_box(read(&mut d, i * n));
        })
    });
    assert_eq!(disk.counters().bytes_bounced, 0);

    let mut out = Vec::new();
    c.bench_function("driver/ide-read-4k", |b| {
        b.iter(|| {
            i = (i + 1) % BLOCKS;
            black_box(d.read(i * n, n as u32, &mut out).unwrap());
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = engine, virtio_blk, virtio_scsi, ide
}
criterion_main!(benches);

//! Test support (feature `test-utils`): [`TestGuest`], a guest driver that
//! speaks to [`VirtioBlk`] only through its transport edge and split
//! virtqueues it lays out in guest memory, and [`MemFile`], an in-memory
//! host file that records any access outside the image.
//!
//! [`TestGuest`] implements [`vmstor_hostio::GuestDriver`], so the crash
//! model, fault injection and the CLI drive virtio-blk like every other
//! controller. VMM authors can use it to test their wiring: everything it
//! does goes through public device methods.
//!
//! Guest memory layout: queue `q`'s rings at `q * 64 KiB` (descriptor table,
//! then avail ring, then used ring at +32 KiB); request buffers are bump
//! allocated from 1 MiB upwards and recycled when no request is pending.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_blk as blk;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmstor_hostio::{
    CannotExpress, Disk, DiskOptions, ExecutorKind, Fact, GuestDriver, GuestStatus, HostCaps,
    HostFile, IoVec, Issued, Policy,
};
use zerocopy::IntoBytes;

use crate::config::BlkOptions;
use crate::device::{InterruptKind, QueueConfig, VirtioBlk};
use crate::features::Features;
use crate::spec::{
    device_status as st, BlkStatus, VirtioBlkConfig, VirtioBlkDiscardWriteZeroes, DWZ_FLAG_UNMAP,
    SECTOR_SIZE,
};

const QUEUE_STRIDE: u64 = 0x1_0000;
const USED_OFFSET: u64 = 0x8000;
const AVAIL_OFFSET: u64 = 0x4000;
/// Where request buffers start in guest memory.
pub const HEAP_START: u64 = 0x10_0000;

/// An in-memory image implementing [`HostFile`] that counts every access
/// reaching outside `[0, size)` (and refuses it), for the fuzz target and
/// tests that must prove no host byte outside the image is touched.
#[derive(Debug)]
pub struct MemFile {
    data: Mutex<Vec<u8>>,
    violations: AtomicU64,
}

impl MemFile {
    /// An image of `size` zero bytes.
    pub fn new(size: usize) -> MemFile {
        MemFile {
            data: Mutex::new(vec![0; size]),
            violations: AtomicU64::new(0),
        }
    }

    /// Accesses that reached outside the image.
    pub fn violations(&self) -> u64 {
        self.violations.load(Ordering::Relaxed)
    }

    /// A copy of the image.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range(&self, d: &[u8], offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        match offset.checked_add(len) {
            Some(end) if end <= d.len() as u64 => Ok(offset as usize..end as usize),
            _ => {
                self.violations.fetch_add(1, Ordering::Relaxed);
                Err(io::Error::from_raw_os_error(libc::EFBIG))
            }
        }
    }
}

fn iov_len(iov: &[IoVec]) -> u64 {
    iov.iter().map(|v| v.len() as u64).sum()
}

impl HostFile for MemFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        let d = self.lock();
        let r = self.range(&d, offset, iov_len(iov))?;
        let mut at = r.start;
        for v in iov {
            v.copy_from(0, &d[at..at + v.len()]);
            at += v.len();
        }
        Ok(r.len())
    }

    fn pwritev(&self, iov: &[IoVec], offset: u64, _dsync: bool) -> io::Result<usize> {
        let mut d = self.lock();
        let r = self.range(&d, offset, iov_len(iov))?;
        let mut at = r.start;
        for v in iov {
            v.copy_to(0, &mut d[at..at + v.len()]);
            at += v.len();
        }
        Ok(r.len())
    }

    fn fdatasync(&self) -> io::Result<()> {
        Ok(())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut d = self.lock();
        let r = self.range(&d, offset, len)?;
        d[r].fill(0);
        Ok(())
    }

    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }

    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }
}

/// Caps for simulated disks in tests: [`HostCaps::simulated`] with stable
/// pages known not to be needed (so `O_DIRECT` writes use guest memory).
pub fn test_caps(size: u64) -> HostCaps {
    let mut caps = HostCaps::simulated(size);
    caps.stable_pages = Fact::Known(false, "test");
    caps
}

/// A traced disk of `size` bytes over a [`MemFile`].
pub fn mem_disk(size: u64, policy: Policy, executor: ExecutorKind) -> (Arc<Disk>, Arc<MemFile>) {
    let file = Arc::new(MemFile::new(size as usize));
    let disk = Disk::from_host_file(
        file.clone(),
        test_caps(size),
        policy,
        DiskOptions {
            executor,
            trace: true,
            ..Default::default()
        },
    )
    .expect("in-memory disk");
    (Arc::new(disk), file)
}

/// How the [`TestGuest`] behaves.
#[derive(Debug, Clone)]
pub struct TestGuestOptions {
    /// Device options.
    pub device: BlkOptions,
    /// Features the driver accepts (intersected with the offer). Default:
    /// all. A legacy driver: drop `VERSION_1`, `FLUSH`, `CONFIG_WCE`.
    pub accept: Features,
    /// Guest memory size (at least 2 MiB).
    pub mem_size: usize,
    /// Put each request in an indirect table (when negotiated).
    pub indirect: bool,
    /// Split data into descriptors of at most this many bytes.
    pub data_seg: usize,
    /// Queue size the driver programs (default: the device maximum).
    pub queue_size: Option<u16>,
}

impl Default for TestGuestOptions {
    fn default() -> Self {
        TestGuestOptions {
            device: BlkOptions::default(),
            accept: Features::all(),
            mem_size: 8 << 20,
            indirect: false,
            data_seg: 4096,
            queue_size: None,
        }
    }
}

/// One descriptor as the guest writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawDesc {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `VRING_DESC_F_*`.
    pub flags: u16,
    /// Next index when `NEXT` is set.
    pub next: u16,
}

impl RawDesc {
    fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// A request as the driver builds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkReq {
    /// `type`.
    pub ty: u32,
    /// `sector`.
    pub sector: u64,
    /// Device-readable data after the header.
    pub out: Vec<u8>,
    /// Device-writable data length before the status byte.
    pub in_len: usize,
}

impl BlkReq {
    /// VIRTIO_BLK_T_IN of `len` bytes at `sector`.
    pub fn read(sector: u64, len: usize) -> BlkReq {
        BlkReq {
            ty: blk::VIRTIO_BLK_T_IN,
            sector,
            in_len: len,
            ..Default::default()
        }
    }

    /// VIRTIO_BLK_T_OUT of `data` at `sector`.
    pub fn write(sector: u64, data: &[u8]) -> BlkReq {
        BlkReq {
            ty: blk::VIRTIO_BLK_T_OUT,
            sector,
            out: data.to_vec(),
            ..Default::default()
        }
    }

    /// VIRTIO_BLK_T_FLUSH.
    pub fn flush() -> BlkReq {
        BlkReq {
            ty: blk::VIRTIO_BLK_T_FLUSH,
            ..Default::default()
        }
    }

    /// VIRTIO_BLK_T_GET_ID with a 20-byte buffer.
    pub fn get_id() -> BlkReq {
        BlkReq {
            ty: blk::VIRTIO_BLK_T_GET_ID,
            in_len: 20,
            ..Default::default()
        }
    }

    /// DISCARD (`discard`) or WRITE_ZEROES with these `(sector, sectors,
    /// flags)` segments.
    pub fn ranges(discard: bool, segs: &[(u64, u32, u32)]) -> BlkReq {
        let mut out = Vec::new();
        for &(sector, n, flags) in segs {
            let s = VirtioBlkDiscardWriteZeroes {
                sector: sector.into(),
                num_sectors: n.into(),
                flags: flags.into(),
            };
            out.extend_from_slice(s.as_bytes());
        }
        BlkReq {
            ty: if discard {
                blk::VIRTIO_BLK_T_DISCARD
            } else {
                blk::VIRTIO_BLK_T_WRITE_ZEROES
            },
            out,
            ..Default::default()
        }
    }
}

/// A used-ring entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// Head index.
    pub head: u16,
    /// Bytes the device says it wrote.
    pub len: u32,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status byte, or `None` if the request has not completed (held by
    /// the `stop` policy, or dropped by a device that needs reset).
    pub status: Option<BlkStatus>,
    /// Used length.
    pub used_len: u32,
    /// The device-writable data.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Pending {
    descs: Vec<u16>,
    status_addr: u64,
    in_addr: u64,
    in_len: usize,
}

#[derive(Debug)]
struct GuestQueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    free: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
    pending: HashMap<u16, Pending>,
    done: HashMap<u16, u32>,
}

/// A virtio-blk guest driver over a [`VirtioBlk`]. See the module docs.
pub struct TestGuest {
    dev: VirtioBlk,
    mem: Arc<GuestMemoryMmap>,
    opts: TestGuestOptions,
    queues: Vec<GuestQueue>,
    heap: u64,
    irqs: Arc<Mutex<Vec<InterruptKind>>>,
}

impl std::fmt::Debug for TestGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGuest").field("dev", &self.dev).finish()
    }
}

const CONTROLLER: &str = "virtio-blk";

fn cannot(what: &str, why: &str) -> CannotExpress {
    CannotExpress {
        controller: CONTROLLER,
        what: what.to_string(),
        why: why.to_string(),
    }
}

impl TestGuest {
    /// A device over `disk` with a driver initialised as `opts` says.
    pub fn new(disk: Arc<Disk>, opts: TestGuestOptions) -> Result<TestGuest, String> {
        let mem = Arc::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), opts.mem_size.max(2 << 20))])
                .map_err(|e| format!("guest memory: {e}"))?,
        );
        let dev =
            VirtioBlk::new(disk, mem.clone(), opts.device.clone()).map_err(|e| e.to_string())?;
        let mut g = TestGuest {
            dev,
            mem,
            opts,
            queues: Vec::new(),
            heap: HEAP_START,
            irqs: Arc::default(),
        };
        let irqs = g.irqs.clone();
        g.dev.set_interrupt(Arc::new(move |k| {
            irqs.lock().unwrap_or_else(|e| e.into_inner()).push(k)
        }));
        g.init()?;
        Ok(g)
    }

    /// Feature negotiation and queue setup, as a driver does after reset.
    pub fn init(&mut self) -> Result<(), String> {
        let d = &mut self.dev;
        d.set_status(st::ACKNOWLEDGE);
        d.set_status(st::ACKNOWLEDGE | st::DRIVER);
        let want = self.opts.accept.bits() & d.device_features();
        d.set_driver_features(want);
        let modern = want & Features::VERSION_1.bits() != 0;
        if modern {
            d.set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK);
            if d.status() & st::FEATURES_OK == 0 {
                return Err("device refused FEATURES_OK".into());
            }
        }
        let nq = if want & Features::MQ.bits() != 0 {
            self.config().num_queues.get()
        } else {
            1
        };
        let size = self
            .opts
            .queue_size
            .unwrap_or(self.dev.queue_max_size())
            .min(self.dev.queue_max_size());
        self.queues.clear();
        for q in 0..nq {
            let base = u64::from(q) * QUEUE_STRIDE;
            self.mem
                .write_slice(&vec![0u8; QUEUE_STRIDE as usize], GuestAddress(base))
                .map_err(|e| e.to_string())?;
            let gq = GuestQueue {
                size,
                desc: base,
                avail: base + AVAIL_OFFSET,
                used: base + USED_OFFSET,
                free: (0..size).rev().collect(),
                avail_idx: 0,
                last_used: 0,
                pending: HashMap::new(),
                done: HashMap::new(),
            };
            self.dev
                .set_queue(
                    q,
                    QueueConfig {
                        size,
                        desc_table: GuestAddress(gq.desc),
                        avail_ring: GuestAddress(gq.avail),
                        used_ring: GuestAddress(gq.used),
                    },
                )
                .map_err(|e| e.to_string())?;
            self.dev
                .set_queue_ready(q, true)
                .map_err(|e| e.to_string())?;
            self.queues.push(gq);
        }
        let s = self.dev.status() | st::DRIVER_OK;
        self.dev.set_status(s);
        self.heap = HEAP_START;
        Ok(())
    }

    /// The device.
    pub fn device(&self) -> &VirtioBlk {
        &self.dev
    }

    /// The device, mutably (to poke the transport directly).
    pub fn device_mut(&mut self) -> &mut VirtioBlk {
        &mut self.dev
    }

    /// Guest memory.
    pub fn mem(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// Negotiated features.
    pub fn negotiated(&self) -> Features {
        self.dev.negotiated()
    }

    /// Interrupts raised since the last call.
    pub fn take_interrupts(&self) -> Vec<InterruptKind> {
        std::mem::take(&mut *self.irqs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The config space as the guest reads it.
    pub fn config(&self) -> VirtioBlkConfig {
        let mut c = VirtioBlkConfig::default();
        self.dev.read_config(0, c.as_mut_bytes());
        c
    }

    /// Number of queues set up.
    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// Queue `q`'s ring addresses and size: (descriptor table, avail ring,
    /// used ring, size).
    pub fn queue_rings(&self, q: u16) -> (u64, u64, u64, u16) {
        let gq = &self.queues[usize::from(q)];
        (gq.desc, gq.avail, gq.used, gq.size)
    }

    /// Allocates `len` bytes of guest memory aligned to `align`.
    pub fn alloc(&mut self, len: usize, align: u64) -> u64 {
        let a = self.heap.div_ceil(align.max(1)) * align.max(1);
        self.heap = a + len as u64;
        assert!(
            self.heap <= self.mem.last_addr().0 + 1,
            "test guest heap exhausted"
        );
        a
    }

    fn maybe_recycle_heap(&mut self) {
        if self.queues.iter().all(|q| q.pending.is_empty()) {
            self.heap = HEAP_START;
        }
    }

    fn write_desc(&self, table: u64, i: u16, d: RawDesc) {
        let _ = self
            .mem
            .write_slice(&d.bytes(), GuestAddress(table + u64::from(i) * 16));
    }

    fn publish(&mut self, q: u16, head: u16) {
        let gq = &mut self.queues[usize::from(q)];
        let slot = gq.avail + 4 + u64::from(gq.avail_idx % gq.size) * 2;
        let _ = self.mem.write_obj(head.to_le(), GuestAddress(slot));
        gq.avail_idx = gq.avail_idx.wrapping_add(1);
        let _ = self.mem.store(
            gq.avail_idx.to_le(),
            GuestAddress(gq.avail + 2),
            Ordering::Release,
        );
    }

    /// Places `req` on queue `q` (without notifying). Returns the head.
    pub fn submit(&mut self, q: u16, req: &BlkReq) -> u16 {
        let hdr = self.alloc(16, 16);
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&req.ty.to_le_bytes());
        h[8..].copy_from_slice(&req.sector.to_le_bytes());
        let _ = self.mem.write_slice(&h, GuestAddress(hdr));
        let seg = self.opts.data_seg.max(1);
        let mut parts: Vec<(u64, u32, bool)> = vec![(hdr, 16, false)];
        if !req.out.is_empty() {
            let a = self.alloc(req.out.len(), 4096);
            let _ = self.mem.write_slice(&req.out, GuestAddress(a));
            for (i, c) in req.out.chunks(seg).enumerate() {
                parts.push((a + (i * seg) as u64, c.len() as u32, false));
            }
        }
        let in_addr = self.alloc(req.in_len, 4096);
        let _ = self
            .mem
            .write_slice(&vec![0xa5; req.in_len], GuestAddress(in_addr));
        let mut off = 0;
        while off < req.in_len {
            let n = seg.min(req.in_len - off);
            parts.push((in_addr + off as u64, n as u32, true));
            off += n;
        }
        let status = self.alloc(1, 1);
        let _ = self.mem.write_obj(0xffu8, GuestAddress(status));
        parts.push((status, 1, true));
        let chain = |parts: &[(u64, u32, bool)], idx: &dyn Fn(usize) -> u16| {
            parts
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, w))| {
                    let last = i + 1 == parts.len();
                    let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
                    if !last {
                        flags |= VRING_DESC_F_NEXT as u16;
                    }
                    RawDesc {
                        addr,
                        len,
                        flags,
                        next: if last { 0 } else { idx(i + 1) },
                    }
                })
                .collect::<Vec<_>>()
        };
        let indirect = self.opts.indirect && self.negotiated().contains(Features::INDIRECT_DESC);
        let descs: Vec<u16>;
        if indirect {
            let table = self.alloc(parts.len() * 16, 16);
            for (i, d) in chain(&parts, &|i| i as u16).into_iter().enumerate() {
                self.write_desc(table, i as u16, d);
            }
            let head = self.take_free(q, 1)[0];
            let desc_table = self.queues[usize::from(q)].desc;
            self.write_desc(
                desc_table,
                head,
                RawDesc {
                    addr: table,
                    len: (parts.len() * 16) as u32,
                    flags: VRING_DESC_F_INDIRECT as u16,
                    next: 0,
                },
            );
            descs = vec![head];
        } else {
            descs = self.take_free(q, parts.len());
            let desc_table = self.queues[usize::from(q)].desc;
            let ids = descs.clone();
            for (i, d) in chain(&parts, &|i| ids[i]).into_iter().enumerate() {
                self.write_desc(desc_table, descs[i], d);
            }
        }
        let head = descs[0];
        self.queues[usize::from(q)].pending.insert(
            head,
            Pending {
                descs,
                status_addr: status,
                in_addr,
                in_len: req.in_len,
            },
        );
        self.publish(q, head);
        head
    }

    fn take_free(&mut self, q: u16, n: usize) -> Vec<u16> {
        let gq = &mut self.queues[usize::from(q)];
        assert!(gq.free.len() >= n, "test guest out of descriptors");
        (0..n).filter_map(|_| gq.free.pop()).collect()
    }

    /// Writes `descs` (index, descriptor) into queue `q`'s descriptor table
    /// and makes `head` available — any chain at all, for bad-input tests.
    /// The indices are taken out of the driver's free list for good.
    pub fn submit_raw(&mut self, q: u16, descs: &[(u16, RawDesc)], head: u16) {
        let table = self.queues[usize::from(q)].desc;
        for &(i, d) in descs {
            self.queues[usize::from(q)].free.retain(|f| *f != i);
            self.write_desc(table, i, d);
        }
        self.publish(q, head);
    }

    /// Sets queue `q`'s avail index to `idx` (bad-input tests).
    pub fn set_avail_idx(&mut self, q: u16, idx: u16) {
        let gq = &mut self.queues[usize::from(q)];
        gq.avail_idx = idx;
        let _ = self
            .mem
            .store(idx.to_le(), GuestAddress(gq.avail + 2), Ordering::Release);
    }

    /// Notifies queue `q` until the device has no more to do (bounded).
    pub fn kick(&mut self, q: u16) {
        for _ in 0..64 {
            if !self.dev.notify(q) {
                break;
            }
        }
    }

    /// Reads queue `q`'s new used entries (and frees their descriptors).
    pub fn poll_used(&mut self, q: u16) -> Vec<Used> {
        let mut out = Vec::new();
        self.poll_used_into(q, &mut out);
        out
    }

    /// [`TestGuest::poll_used`] appending to `out` (benchmarks reuse one
    /// vector).
    pub fn poll_used_into(&mut self, q: u16, out: &mut Vec<Used>) {
        let gq = &mut self.queues[usize::from(q)];
        let idx: u16 = self
            .mem
            .load(GuestAddress(gq.used + 2), Ordering::Acquire)
            .map(u16::from_le)
            .unwrap_or(gq.last_used);
        // A device can never be more than `size` entries ahead.
        for _ in 0..gq.size {
            if gq.last_used == idx {
                break;
            }
            let e = gq.used + 4 + u64::from(gq.last_used % gq.size) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap_or(u32::MAX);
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap_or(0);
            gq.last_used = gq.last_used.wrapping_add(1);
            let head = id as u16;
            out.push(Used { head, len });
            gq.done.insert(head, len);
        }
    }

    /// Collects the reply for `head` on queue `q` if it is on the used ring.
    pub fn take_reply(&mut self, q: u16, head: u16) -> Option<Reply> {
        self.poll_used(q);
        let gq = &mut self.queues[usize::from(q)];
        let used_len = gq.done.remove(&head)?;
        let p = gq.pending.remove(&head)?;
        gq.free.extend(p.descs.iter().rev());
        let status: u8 = self
            .mem
            .read_obj(GuestAddress(p.status_addr))
            .unwrap_or(0xff);
        let mut data = vec![0u8; p.in_len];
        let _ = self.mem.read_slice(&mut data, GuestAddress(p.in_addr));
        self.maybe_recycle_heap();
        Some(Reply {
            status: BlkStatus::from_byte(status),
            used_len,
            data,
        })
    }

    /// Waits for `head` on queue `q`: processes completions until it is
    /// used, or nothing more can complete (then `status` is `None`).
    pub fn wait_reply(&mut self, q: u16, head: u16) -> Reply {
        loop {
            if let Some(r) = self.take_reply(q, head) {
                return r;
            }
            if self.dev.wait_completions() == 0 {
                if let Some(r) = self.take_reply(q, head) {
                    return r;
                }
                return Reply {
                    status: None,
                    used_len: 0,
                    data: Vec::new(),
                };
            }
        }
    }

    /// Submits `req` on queue `q`, notifies, and waits for the reply.
    pub fn run(&mut self, q: u16, req: &BlkReq) -> Reply {
        let head = self.submit(q, req);
        self.kick(q);
        self.wait_reply(q, head)
    }

    /// Forgets requests that will never complete (after a reset).
    fn forget_pending(&mut self) {
        for q in &mut self.queues {
            q.pending.clear();
            q.done.clear();
        }
        self.heap = HEAP_START;
    }

    fn guest_status(&self, r: &Reply) -> GuestStatus {
        match r.status {
            Some(BlkStatus::Ok) => GuestStatus::Ok,
            Some(s) => GuestStatus::Error(s.name().to_string()),
            None if self.dev.needs_reset() => GuestStatus::Error("DEVICE_NEEDS_RESET".into()),
            None => GuestStatus::Pending,
        }
    }

    fn sectors_per_block(&self) -> u64 {
        u64::from(self.block_size()) / SECTOR_SIZE
    }

    fn ranges_cmd(&mut self, discard: bool, lba: u64, count: u32, flags: u32) -> Issued {
        let c = self.config();
        let (max_sectors, max_seg) = if discard {
            (c.max_discard_sectors.get(), c.max_discard_seg.get())
        } else {
            (
                c.max_write_zeroes_sectors.get(),
                c.max_write_zeroes_seg.get(),
            )
        };
        let spb = self.sectors_per_block();
        let mut segs = Vec::new();
        let (mut sector, mut left) = (lba * spb, u64::from(count) * spb);
        while left > 0 {
            let n = left.min(u64::from(max_sectors.max(1)));
            segs.push((sector, n as u32, flags));
            sector += n;
            left -= n;
        }
        let name = if discard {
            "VIRTIO_BLK_T_DISCARD"
        } else {
            "VIRTIO_BLK_T_WRITE_ZEROES"
        };
        let mut issued = Issued {
            commands: Vec::new(),
            status: GuestStatus::Ok,
        };
        for chunk in segs.chunks(max_seg.max(1) as usize) {
            let r = self.run(0, &BlkReq::ranges(discard, chunk));
            issued.commands.push(name.to_string());
            issued.status = self.guest_status(&r);
            if !issued.status.is_ok() {
                break;
            }
        }
        issued
    }
}

impl GuestDriver for TestGuest {
    fn controller(&self) -> &'static str {
        CONTROLLER
    }

    fn block_size(&self) -> u32 {
        if self.negotiated().contains(Features::BLK_SIZE) {
            self.config().blk_size.get()
        } else {
            SECTOR_SIZE as u32
        }
    }

    fn capacity(&self) -> u64 {
        self.config().capacity.get() / (u64::from(self.block_size()) / SECTOR_SIZE).max(1)
    }

    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<Issued, CannotExpress> {
        if fua {
            return Err(cannot(
                "a FUA write",
                "virtio-blk has no per-request FUA (use writeback=0 or FLUSH)",
            ));
        }
        let r = self.run(0, &BlkReq::write(lba * self.sectors_per_block(), data));
        Ok(Issued::one("VIRTIO_BLK_T_OUT", self.guest_status(&r)))
    }

    fn read(&mut self, lba: u64, count: u32, out: &mut Vec<u8>) -> Result<Issued, CannotExpress> {
        let len = count as usize * self.block_size() as usize;
        let r = self.run(0, &BlkReq::read(lba * self.sectors_per_block(), len));
        let status = self.guest_status(&r);
        *out = r.data;
        Ok(Issued::one("VIRTIO_BLK_T_IN", status))
    }

    fn flush(&mut self) -> Result<Issued, CannotExpress> {
        if !self.negotiated().contains(Features::FLUSH) {
            return Err(cannot("FLUSH", "VIRTIO_BLK_F_FLUSH was not negotiated"));
        }
        let r = self.run(0, &BlkReq::flush());
        Ok(Issued::one("VIRTIO_BLK_T_FLUSH", self.guest_status(&r)))
    }

    fn set_write_cache(&mut self, on: bool) -> Result<Issued, CannotExpress> {
        if !self.negotiated().contains(Features::CONFIG_WCE) {
            return Err(cannot(
                "a write-cache change",
                "VIRTIO_BLK_F_CONFIG_WCE was not negotiated",
            ));
        }
        let off = std::mem::offset_of!(VirtioBlkConfig, writeback) as u64;
        self.dev.write_config(off, &[u8::from(on)]);
        let status = if self.dev.needs_reset() {
            GuestStatus::Error("DEVICE_NEEDS_RESET".into())
        } else {
            GuestStatus::Ok
        };
        Ok(Issued::one(
            format!("config writeback={}", u8::from(on)),
            status,
        ))
    }

    fn write_cache(&mut self) -> Result<bool, CannotExpress> {
        let f = self.negotiated();
        Ok(if f.contains(Features::CONFIG_WCE) {
            self.config().writeback != 0
        } else {
            // Spec §5.2.5.1: FLUSH without CONFIG_WCE ⇒ assume writeback;
            // neither ⇒ writethrough.
            f.contains(Features::FLUSH)
        })
    }

    fn discard(&mut self, lba: u64, count: u32) -> Result<Issued, CannotExpress> {
        if !self.negotiated().contains(Features::DISCARD) {
            return Err(cannot("DISCARD", "VIRTIO_BLK_F_DISCARD was not negotiated"));
        }
        Ok(self.ranges_cmd(true, lba, count, 0))
    }

    fn write_zeroes(&mut self, lba: u64, count: u32, unmap: bool) -> Result<Issued, CannotExpress> {
        if !self.negotiated().contains(Features::WRITE_ZEROES) {
            return Err(cannot(
                "WRITE_ZEROES",
                "VIRTIO_BLK_F_WRITE_ZEROES was not negotiated",
            ));
        }
        let flags = if unmap { DWZ_FLAG_UNMAP } else { 0 };
        Ok(self.ranges_cmd(false, lba, count, flags))
    }

    fn reset(&mut self) -> Result<Issued, CannotExpress> {
        self.dev.set_status(0);
        self.forget_pending();
        let status = match self.init() {
            Ok(()) if !self.dev.needs_reset() => GuestStatus::Ok,
            Ok(()) => GuestStatus::Error("DEVICE_NEEDS_RESET".into()),
            Err(e) => GuestStatus::Error(e),
        };
        Ok(Issued {
            commands: vec![
                "status=0 (reset)".into(),
                "FEATURES_OK".into(),
                "DRIVER_OK".into(),
            ],
            status,
        })
    }
}

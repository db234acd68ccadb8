//! Test support (feature `test-utils`): [`TestInitiator`], a virtio-scsi
//! guest driver that lays out split virtqueues in guest memory, builds
//! requests exactly as a guest would, and implements
//! [`vmstor_hostio::GuestDriver`] with real SCSI commands; and the fuzz
//! entry [`fuzz_entry`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{CannotExpress, Disk, GuestDriver, GuestStatus, Issued};
use vmstor_scsi::{ScsiDiskConfig, Sense};
use zerocopy::{FromBytes, IntoBytes};

use crate::device::{InterruptKind, QueueConfig, ScsiOptions, VirtioScsi, OFFERED};
use crate::spec::{
    ctrl, lun_address, response as resp, status as st, task_attr, CmdReqHeader, CmdRespHeader,
    CtrlAnReq, CtrlAnResp, CtrlTmfReq, VirtioScsiEvent,
};

const MEM_SIZE: usize = 64 << 20;
const RING_AREA: u64 = 0x10_0000;
const QSIZE: u16 = 256;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// The driver side of one split virtqueue in guest memory.
#[derive(Debug)]
struct GuestQueue {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    done: HashMap<u16, u32>,
}

impl GuestQueue {
    fn new(base: u64) -> GuestQueue {
        GuestQueue {
            desc: base,
            avail: base + 16 * u64::from(QSIZE),
            used: base + 0x2000,
            avail_idx: 0,
            used_seen: 0,
            free: (0..QSIZE).rev().collect(),
            chains: HashMap::new(),
            done: HashMap::new(),
        }
    }
}

/// One descriptor a test places: address, length, device-writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// A command in flight.
#[derive(Debug, Clone, Copy)]
pub struct CmdHandle {
    /// The command's tag (`id`), for ABORT TASK / QUERY TASK.
    pub id: u64,
    queue: u16,
    head: u16,
    resp: u64,
    sense_size: u32,
    datain: u64,
    datain_len: usize,
}

/// What the guest reads back from a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdReply {
    /// virtio-scsi response.
    pub response: u8,
    /// SCSI status.
    pub status: u8,
    /// Sense bytes (`sense_len` of them).
    pub sense: Vec<u8>,
    /// Residual.
    pub residual: u32,
    /// The data-in buffer.
    pub datain: Vec<u8>,
    /// Used length the device reported.
    pub used_len: u32,
}

impl CmdReply {
    /// `(key, asc, ascq)` of the sense data.
    pub fn sense_code(&self) -> Option<(u8, u8, u8)> {
        Sense::parse(&self.sense).map(|(_, k, a, q)| (k, a, q))
    }

    /// The guest-visible status.
    pub fn guest_status(&self) -> GuestStatus {
        if self.response != resp::OK {
            return GuestStatus::Error(format!("VIRTIO_SCSI_S response {}", self.response));
        }
        match (self.status, self.sense_code()) {
            (0, _) => GuestStatus::Ok,
            (2, Some((k, a, q))) => {
                GuestStatus::Error(format!("CHECK CONDITION {}", Sense::describe(k, a, q)))
            }
            (s, _) => GuestStatus::Error(format!("STATUS {s:02X}h")),
        }
    }
}

/// A virtio-scsi guest driver over a [`VirtioScsi`] in its own guest
/// memory. The [`GuestDriver`] methods address target 0, LUN 0.
pub struct TestInitiator {
    dev: VirtioScsi,
    mem: Arc<GuestMemoryMmap>,
    queues: Vec<GuestQueue>,
    bump: u64,
    irqs: Arc<Mutex<Vec<InterruptKind>>>,
    events: Vec<VirtioScsiEvent>,
    block_size: u32,
    capacity: u64,
    next_id: u64,
}

impl std::fmt::Debug for TestInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestInitiator")
            .field("dev", &self.dev)
            .finish()
    }
}

impl TestInitiator {
    /// A driver over a new device with `opts` and no logical units (not yet
    /// initialised).
    pub fn new(opts: ScsiOptions) -> TestInitiator {
        let mem = Arc::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
                .expect("guest memory"),
        );
        let mut dev = VirtioScsi::new(opts, mem.clone());
        let irqs = Arc::new(Mutex::new(Vec::new()));
        let i2 = irqs.clone();
        dev.set_interrupt(Arc::new(move |k| i2.lock().unwrap().push(k)));
        let n = dev.num_queues();
        TestInitiator {
            dev,
            mem,
            queues: (0..n)
                .map(|i| GuestQueue::new(u64::from(i) * 0x4000))
                .collect(),
            bump: RING_AREA,
            irqs,
            events: Vec::new(),
            block_size: 512,
            capacity: 0,
            next_id: 0,
        }
    }

    /// A driver with `disk` at target 0 LUN 0, initialised with every
    /// offered feature, the power-on unit attention consumed and the
    /// capacity read (TEST UNIT READY, READ CAPACITY(16)).
    pub fn with_disk(disk: Arc<Disk>) -> TestInitiator {
        let mut t = TestInitiator::new(ScsiOptions::default());
        t.dev
            .add_disk(0, 0, disk, ScsiDiskConfig::default())
            .expect("lun 0");
        t.init(OFFERED).expect("init");
        t.post_event_buffers(8);
        let r = t.cmd(0, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
        debug_assert_eq!(
            r.sense_code().map(|s| s.0),
            Some(6),
            "{r:?} {:?}",
            t.dev.error()
        );
        t.read_capacity();
        t
    }

    fn read_capacity(&mut self) {
        let mut c = [0u8; 16];
        c[0] = 0x9e;
        c[1] = 0x10;
        c[13] = 32;
        let r = self.cmd(0, 0, &c, &[], 32, task_attr::SIMPLE);
        if r.status == 0 && r.datain.len() >= 12 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r.datain[..8]);
            self.capacity = u64::from_be_bytes(b) + 1;
            self.block_size =
                u32::from_be_bytes([r.datain[8], r.datain[9], r.datain[10], r.datain[11]]);
        }
    }

    /// The device.
    pub fn device(&self) -> &VirtioScsi {
        &self.dev
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut VirtioScsi {
        &mut self.dev
    }

    /// Guest memory.
    pub fn mem(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// Interrupts raised so far (taken).
    pub fn take_interrupts(&self) -> Vec<InterruptKind> {
        std::mem::take(&mut *self.irqs.lock().unwrap())
    }

    /// The virtio initialisation sequence, accepting `features`.
    pub fn init(&mut self, features: u64) -> Result<(), String> {
        self.dev.set_status(0);
        self.dev.set_status(st::ACKNOWLEDGE | st::DRIVER);
        self.dev
            .set_driver_features(features & self.dev.device_features());
        self.dev
            .set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK);
        if self.dev.status() & st::FEATURES_OK == 0 {
            return Err("FEATURES_OK refused".into());
        }
        for (i, q) in self.queues.iter_mut().enumerate() {
            *q = GuestQueue::new(i as u64 * 0x4000);
            self.dev
                .set_queue(
                    i as u16,
                    QueueConfig {
                        size: QSIZE,
                        desc_table: GuestAddress(q.desc),
                        avail_ring: GuestAddress(q.avail),
                        used_ring: GuestAddress(q.used),
                    },
                )
                .map_err(|e| e.to_string())?;
            self.dev
                .set_queue_ready(i as u16, true)
                .map_err(|e| e.to_string())?;
            let _ = self.mem.write_obj(0u16, GuestAddress(q.avail));
            let _ = self.mem.write_obj(0u16, GuestAddress(q.avail + 2));
            let _ = self.mem.write_obj(0u32, GuestAddress(q.used));
        }
        self.dev
            .set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK | st::DRIVER_OK);
        self.bump = RING_AREA;
        Ok(())
    }

    /// Reuses the data area when no command is outstanding.
    fn recycle(&mut self) {
        // Event buffers (queue 1) live in their own area and stay posted.
        let busy = self
            .queues
            .iter()
            .enumerate()
            .any(|(i, q)| i != 1 && (!q.chains.is_empty() || !q.done.is_empty()));
        if !busy {
            self.bump = RING_AREA;
        }
    }

    /// Allocates `len` bytes of guest memory (bump allocator, recycled
    /// between commands when nothing is outstanding). Data-sized buffers
    /// (512 bytes or more) are page-aligned, as a guest's bio pages are, so
    /// O_DIRECT can use them without bouncing; headers are 64-byte aligned.
    pub fn alloc(&mut self, len: usize) -> u64 {
        let align: u64 = if len >= 512 { 4096 } else { 64 };
        let a = (self.bump + align - 1) & !(align - 1);
        if a + len as u64 > MEM_SIZE as u64 {
            self.bump = RING_AREA;
            return RING_AREA;
        }
        self.bump = a + len as u64;
        a
    }

    /// Places a chain on queue `q` and makes it available (no kick).
    pub fn submit_raw(&mut self, q: u16, descs: &[RawDesc]) -> u16 {
        let mem = self.mem.clone();
        let gq = &mut self.queues[usize::from(q)];
        let idx: Vec<u16> = (0..descs.len())
            .map(|_| gq.free.pop().expect("free descriptors"))
            .collect();
        for (i, d) in descs.iter().enumerate() {
            let mut flags = if d.write { WRITE } else { 0 };
            let next = if i + 1 < descs.len() {
                flags |= NEXT;
                idx[i + 1]
            } else {
                0
            };
            let a = gq.desc + 16 * u64::from(idx[i]);
            let _ = mem.write_obj(d.addr.to_le(), GuestAddress(a));
            let _ = mem.write_obj(d.len.to_le(), GuestAddress(a + 8));
            let _ = mem.write_obj(flags.to_le(), GuestAddress(a + 12));
            let _ = mem.write_obj(next.to_le(), GuestAddress(a + 14));
        }
        let head = idx[0];
        let slot = gq.avail + 4 + 2 * u64::from(gq.avail_idx % QSIZE);
        let _ = mem.write_obj(head.to_le(), GuestAddress(slot));
        gq.avail_idx = gq.avail_idx.wrapping_add(1);
        let _ = mem.write_obj(gq.avail_idx.to_le(), GuestAddress(gq.avail + 2));
        gq.chains.insert(head, idx);
        head
    }

    /// Lays out a chain like [`TestInitiator::submit_raw`] whose descriptors
    /// stay allocated for good: [`TestInitiator::repost`] makes it
    /// available again without rewriting them (how a driver re-posting a
    /// request slot costs least; benchmarks use it).
    pub fn submit_pinned(&mut self, q: u16, descs: &[RawDesc]) -> u16 {
        let head = self.submit_raw(q, descs);
        self.queues[usize::from(q)].chains.remove(&head);
        head
    }

    /// Puts pinned chain `head` on queue `q`'s avail ring again.
    pub fn repost(&mut self, q: u16, head: u16) {
        let gq = &mut self.queues[usize::from(q)];
        let slot = gq.avail + 4 + 2 * u64::from(gq.avail_idx % QSIZE);
        let _ = self.mem.write_obj(head.to_le(), GuestAddress(slot));
        gq.avail_idx = gq.avail_idx.wrapping_add(1);
        let _ = self
            .mem
            .write_obj(gq.avail_idx.to_le(), GuestAddress(gq.avail + 2));
    }

    /// Kicks queue `q` (until the device says nothing more is pending).
    pub fn kick(&mut self, q: u16) {
        for _ in 0..4 {
            if !self.dev.notify(q) {
                break;
            }
        }
    }

    fn reap(&mut self, q: u16) {
        let gq = &mut self.queues[usize::from(q)];
        let idx: u16 = self.mem.read_obj(GuestAddress(gq.used + 2)).unwrap_or(0);
        while gq.used_seen != idx {
            let e = gq.used + 4 + 8 * u64::from(gq.used_seen % QSIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap_or(0);
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap_or(0);
            let head = id as u16;
            if let Some(descs) = gq.chains.remove(&head) {
                gq.free.extend(descs);
            }
            gq.done.insert(head, len);
            gq.used_seen = gq.used_seen.wrapping_add(1);
        }
    }

    /// The used length of chain `head` on `q`, once the device returned it.
    pub fn used(&mut self, q: u16, head: u16) -> Option<u32> {
        self.reap(q);
        self.queues[usize::from(q)].done.remove(&head)
    }

    /// Starts a command on request queue 0 (virtqueue 2) without waiting.
    pub fn start_cmd(
        &mut self,
        target: u8,
        lun: u16,
        cdb: &[u8],
        dataout: &[u8],
        datain_len: usize,
        attr: u8,
    ) -> CmdHandle {
        self.recycle();
        self.next_id += 1;
        let id = self.next_id;
        let cfg = self.dev.config();
        // A driver never programs absurd sizes; cap what this one lays out
        // (the device then sees a short header or response area).
        let (cdb_size, sense_size) = (
            (cfg.cdb_size.get() as usize).min(4096),
            cfg.sense_size.get().min(4096),
        );
        let mut req = CmdReqHeader {
            lun: lun_address(target, lun),
            id: id.into(),
            task_attr: attr,
            ..Default::default()
        }
        .as_bytes()
        .to_vec();
        let mut c = cdb.to_vec();
        c.resize(cdb_size, 0);
        req.extend(c);
        let ra = self.alloc(req.len());
        let _ = self.mem.write_slice(&req, GuestAddress(ra));
        let mut descs = vec![RawDesc {
            addr: ra,
            len: req.len() as u32,
            write: false,
        }];
        if !dataout.is_empty() {
            let a = self.alloc(dataout.len());
            let _ = self.mem.write_slice(dataout, GuestAddress(a));
            descs.push(RawDesc {
                addr: a,
                len: dataout.len() as u32,
                write: false,
            });
        }
        let rl = 12 + sense_size as usize;
        let resp_a = self.alloc(rl);
        let _ = self.mem.write_slice(&vec![0xa5; rl], GuestAddress(resp_a));
        descs.push(RawDesc {
            addr: resp_a,
            len: rl as u32,
            write: true,
        });
        let din = if datain_len > 0 {
            let a = self.alloc(datain_len);
            let _ = self
                .mem
                .write_slice(&vec![0u8; datain_len], GuestAddress(a));
            descs.push(RawDesc {
                addr: a,
                len: datain_len as u32,
                write: true,
            });
            a
        } else {
            0
        };
        let head = self.submit_raw(2, &descs);
        self.kick(2);
        CmdHandle {
            id,
            queue: 2,
            head,
            resp: resp_a,
            sense_size,
            datain: din,
            datain_len,
        }
    }

    /// The reply of a command, if it finished.
    pub fn reply(&mut self, h: &CmdHandle) -> Option<CmdReply> {
        self.dev.process_completions();
        let used_len = self.used(h.queue, h.head)?;
        let mut b = [0u8; 12];
        let _ = self.mem.read_slice(&mut b, GuestAddress(h.resp));
        let r = CmdRespHeader::read_from_bytes(&b).expect("12 bytes");
        let n = (r.sense_len.get().min(h.sense_size)) as usize;
        let mut sense = vec![0u8; n];
        let _ = self.mem.read_slice(&mut sense, GuestAddress(h.resp + 12));
        let mut datain = vec![0u8; h.datain_len];
        if h.datain_len > 0 {
            let _ = self.mem.read_slice(&mut datain, GuestAddress(h.datain));
        }
        Some(CmdReply {
            response: r.response,
            status: r.status,
            sense,
            residual: r.residual.get(),
            datain,
            used_len,
        })
    }

    /// Waits for a command (process completions, block on host I/O);
    /// `None` if it cannot finish (held by the `stop` error policy).
    pub fn wait(&mut self, h: &CmdHandle) -> Option<CmdReply> {
        loop {
            if let Some(r) = self.reply(h) {
                return Some(r);
            }
            if self.dev.wait_completions() == 0 {
                return self.reply(h);
            }
        }
    }

    /// Runs one command to completion (see [`TestInitiator::start_cmd`]).
    /// A held command returns a reply with response 0xff.
    pub fn cmd(
        &mut self,
        target: u8,
        lun: u16,
        cdb: &[u8],
        dataout: &[u8],
        datain_len: usize,
        attr: u8,
    ) -> CmdReply {
        let h = self.start_cmd(target, lun, cdb, dataout, datain_len, attr);
        self.wait(&h).unwrap_or(CmdReply {
            response: 0xff,
            status: 0,
            sense: Vec::new(),
            residual: 0,
            datain: Vec::new(),
            used_len: 0,
        })
    }

    /// A task management function on the control queue; the response byte.
    pub fn tmf(&mut self, target: u8, lun: u16, subtype: u32, id: u64) -> u8 {
        self.recycle();
        let req = CtrlTmfReq {
            type_: ctrl::TMF.into(),
            subtype: subtype.into(),
            lun: lun_address(target, lun),
            id: id.into(),
        };
        let a = self.alloc(24);
        let _ = self.mem.write_slice(req.as_bytes(), GuestAddress(a));
        let r = self.alloc(1);
        let _ = self.mem.write_obj(0xffu8, GuestAddress(r));
        let head = self.submit_raw(
            0,
            &[
                RawDesc {
                    addr: a,
                    len: 24,
                    write: false,
                },
                RawDesc {
                    addr: r,
                    len: 1,
                    write: true,
                },
            ],
        );
        self.kick(0);
        self.used(0, head);
        self.mem.read_obj(GuestAddress(r)).unwrap_or(0xff)
    }

    /// An asynchronous-notification query or subscribe: `(event_actual,
    /// response)`.
    pub fn an(&mut self, type_: u32, target: u8, lun: u16, requested: u32) -> (u32, u8) {
        self.recycle();
        let req = CtrlAnReq {
            type_: type_.into(),
            lun: lun_address(target, lun),
            event_requested: requested.into(),
        };
        let a = self.alloc(16);
        let _ = self.mem.write_slice(req.as_bytes(), GuestAddress(a));
        let r = self.alloc(5);
        let _ = self.mem.write_slice(&[0xff; 5], GuestAddress(r));
        let head = self.submit_raw(
            0,
            &[
                RawDesc {
                    addr: a,
                    len: 16,
                    write: false,
                },
                RawDesc {
                    addr: r,
                    len: 5,
                    write: true,
                },
            ],
        );
        self.kick(0);
        self.used(0, head);
        let mut b = [0u8; 5];
        let _ = self.mem.read_slice(&mut b, GuestAddress(r));
        let resp = CtrlAnResp::read_from_bytes(&b).expect("5 bytes");
        (resp.event_actual.get(), resp.response)
    }

    /// Makes `n` 16-byte event buffers available on the eventq.
    pub fn post_event_buffers(&mut self, n: usize) {
        for _ in 0..n {
            let a = self.alloc_event();
            self.submit_raw(
                1,
                &[RawDesc {
                    addr: a,
                    len: 16,
                    write: true,
                }],
            );
        }
        self.kick(1);
    }

    fn alloc_event(&mut self) -> u64 {
        // Event buffers outlive commands: a fixed area below the data area.
        0xc_0000 + 16 * u64::from(self.queues[1].avail_idx % QSIZE)
    }

    /// Events the device delivered so far (taken); each used buffer is
    /// posted again.
    pub fn take_events(&mut self) -> Vec<VirtioScsiEvent> {
        self.reap(1);
        let done: Vec<(u16, u32)> = self.queues[1].done.drain().collect();
        let mut heads: Vec<(u16, u32)> = done;
        heads.sort_unstable();
        let mut evs = std::mem::take(&mut self.events);
        for (head, len) in heads {
            let a = self.queues[1].desc + 16 * u64::from(head);
            let addr: u64 = self.mem.read_obj(GuestAddress(a)).unwrap_or(0);
            if len >= 16 {
                let mut b = [0u8; 16];
                let _ = self.mem.read_slice(&mut b, GuestAddress(addr));
                evs.push(VirtioScsiEvent::read_from_bytes(&b).expect("16 bytes"));
            }
        }
        if !evs.is_empty() {
            self.post_event_buffers(evs.len());
        }
        evs
    }

    fn run(
        &mut self,
        name: String,
        cdb: &[u8],
        dataout: &[u8],
        datain: usize,
    ) -> (Issued, CmdReply) {
        let mut commands = vec![name.clone()];
        let mut r = self.cmd(0, 0, cdb, dataout, datain, task_attr::SIMPLE);
        // A unit attention is reported once; a guest retries the command.
        if r.response == resp::OK && r.status == 2 && r.sense_code().map(|s| s.0) == Some(6) {
            commands.push(name);
            r = self.cmd(0, 0, cdb, dataout, datain, task_attr::SIMPLE);
        }
        let status = if r.response == 0xff {
            GuestStatus::Pending
        } else {
            r.guest_status()
        };
        (Issued { commands, status }, r)
    }

    fn mode_sense_caching(&mut self) -> (Issued, CmdReply) {
        self.run(
            "MODE SENSE(10)".into(),
            &[0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 0xff, 0],
            &[],
            0xff,
        )
    }

    fn cannot(what: &str, why: &str) -> CannotExpress {
        CannotExpress {
            controller: "scsi",
            what: what.into(),
            why: why.into(),
        }
    }
}

fn cdb_rw(op10: u8, op16: u8, lba: u64, count: u32, fua: bool) -> (Vec<u8>, &'static str) {
    let flags = if fua { 0x08 } else { 0 };
    if count <= 0xffff
        && lba
            .checked_add(u64::from(count))
            .is_some_and(|e| e <= 1 << 32)
    {
        let mut c = vec![op10, flags, 0, 0, 0, 0, 0, 0, 0, 0];
        c[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
        c[7..9].copy_from_slice(&(count as u16).to_be_bytes());
        (c, "10")
    } else {
        let mut c = vec![0u8; 16];
        c[0] = op16;
        c[1] = flags;
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&count.to_be_bytes());
        (c, "16")
    }
}

impl GuestDriver for TestInitiator {
    fn controller(&self) -> &'static str {
        "scsi"
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<Issued, CannotExpress> {
        let bs = self.block_size as usize;
        if data.is_empty() || data.len() % bs != 0 {
            return Err(Self::cannot("write", "not a whole number of blocks"));
        }
        let count =
            u32::try_from(data.len() / bs).map_err(|_| Self::cannot("write", "too long"))?;
        let (cdb, form) = cdb_rw(0x2a, 0x8a, lba, count, fua);
        let name = format!("WRITE({form}){}", if fua { " FUA=1" } else { "" });
        Ok(self.run(name, &cdb, data, 0).0)
    }

    fn read(&mut self, lba: u64, count: u32, out: &mut Vec<u8>) -> Result<Issued, CannotExpress> {
        let (cdb, form) = cdb_rw(0x28, 0x88, lba, count, false);
        let len = count as usize * self.block_size as usize;
        let (i, r) = self.run(format!("READ({form})"), &cdb, &[], len);
        *out = r.datain;
        Ok(i)
    }

    fn flush(&mut self) -> Result<Issued, CannotExpress> {
        Ok(self
            .run(
                "SYNCHRONIZE CACHE(10)".into(),
                &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &[],
                0,
            )
            .0)
    }

    fn set_write_cache(&mut self, on: bool) -> Result<Issued, CannotExpress> {
        let (mut issued, r) = self.mode_sense_caching();
        if !issued.status.is_ok() {
            return Ok(issued);
        }
        // Header (8) + block descriptor + caching page as returned; the mode
        // data length is reserved in MODE SELECT, so it is zeroed.
        let bdl = usize::from(u16::from_be_bytes([r.datain[6], r.datain[7]]));
        let end = 8 + bdl + 20;
        let mut list = r.datain[..end].to_vec();
        list[0] = 0;
        list[1] = 0;
        list[3] = 0;
        let p = 8 + bdl;
        list[p] &= 0x3f; // PS is reserved in MODE SELECT
        list[p + 2] = (list[p + 2] & !0x04) | if on { 0x04 } else { 0 };
        let l = (list.len() as u16).to_be_bytes();
        let cdb = [0x55, 0x10, 0, 0, 0, 0, 0, l[0], l[1], 0];
        let (sel, _) = self.run(
            format!("MODE SELECT(10) WCE={}", u8::from(on)),
            &cdb,
            &list,
            0,
        );
        issued.commands.extend(sel.commands);
        issued.status = sel.status;
        Ok(issued)
    }

    fn write_cache(&mut self) -> Result<bool, CannotExpress> {
        let (i, r) = self.mode_sense_caching();
        if !i.status.is_ok() {
            return Err(Self::cannot("write_cache", &i.status.to_string()));
        }
        let bdl = usize::from(u16::from_be_bytes([r.datain[6], r.datain[7]]));
        Ok(r.datain[8 + bdl + 2] & 0x04 != 0)
    }

    fn discard(&mut self, lba: u64, count: u32) -> Result<Issued, CannotExpress> {
        let mut l = vec![0, 22, 0, 16, 0, 0, 0, 0];
        l.extend_from_slice(&lba.to_be_bytes());
        l.extend_from_slice(&count.to_be_bytes());
        l.extend_from_slice(&[0; 4]);
        Ok(self
            .run("UNMAP".into(), &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &l, 0)
            .0)
    }

    fn write_zeroes(&mut self, lba: u64, count: u32, unmap: bool) -> Result<Issued, CannotExpress> {
        let mut c = vec![0u8; 16];
        c[0] = 0x93;
        c[1] = if unmap { 0x08 } else { 0 };
        c[2..10].copy_from_slice(&lba.to_be_bytes());
        c[10..14].copy_from_slice(&count.to_be_bytes());
        let zero = vec![0u8; self.block_size as usize];
        let name = format!("WRITE SAME(16){}", if unmap { " UNMAP=1" } else { "" });
        Ok(self.run(name, &c, &zero, 0).0)
    }

    fn reset(&mut self) -> Result<Issued, CannotExpress> {
        let r = self.tmf(0, 0, ctrl::LOGICAL_UNIT_RESET, 0);
        let mut commands = vec!["LOGICAL UNIT RESET".to_string()];
        if r != resp::OK {
            return Ok(Issued {
                commands,
                status: GuestStatus::Error(format!("TMF response {r}")),
            });
        }
        // The reset unit attention is reported by REQUEST SENSE (and
        // cleared), then the unit is ready.
        let rs = self.cmd(0, 0, &[0x03, 0, 0, 0, 18, 0], &[], 18, task_attr::SIMPLE);
        commands.push("REQUEST SENSE".into());
        let t = self.cmd(0, 0, &[0; 6], &[], 0, task_attr::SIMPLE);
        commands.push("TEST UNIT READY".into());
        let status = if rs.guest_status().is_ok() {
            t.guest_status()
        } else {
            rs.guest_status()
        };
        Ok(Issued { commands, status })
    }
}

/// Fuzz entry: arbitrary requests on every queue, arbitrary descriptor
/// chains, config writes, TMFs and resets against a device with two LUNs.
/// Must never panic.
pub fn fuzz_entry(data: &[u8]) {
    use vmstor_hostio::{ErrorAction, ExecutorKind, Policy};
    let mut policy = Policy::default();
    policy.errors.write = ErrorAction::Report;
    let (d0, f0) = vmstor_scsi::testing::mem_disk(64 << 10, policy, ExecutorKind::Inline);
    let (d1, f1) = vmstor_scsi::testing::mem_disk(64 << 10, policy, ExecutorKind::Inline);
    let mut t = TestInitiator::new(ScsiOptions::default());
    t.dev.add_disk(0, 0, d0, ScsiDiskConfig::default());
    t.dev.add_disk(0, 3, d1, ScsiDiskConfig::default());
    if t.init(OFFERED).is_err() {
        return;
    }
    t.post_event_buffers(2);
    let mut rest = data;
    let mut steps = 0;
    while let Some((&op, r)) = rest.split_first() {
        steps += 1;
        if steps > 32 {
            break;
        }
        rest = r;
        let take = |rest: &mut &[u8], n: usize| -> Vec<u8> {
            let n = n.min(rest.len());
            let (a, b) = rest.split_at(n);
            *rest = b;
            a.to_vec()
        };
        match op % 8 {
            0..=2 => {
                // A well-formed request with arbitrary header, CDB and data.
                let h = take(&mut rest, 8);
                let target = h.first().copied().unwrap_or(0) % 2;
                let lun = u16::from(h.get(1).copied().unwrap_or(0) % 5);
                let cdb_len = usize::from(h.get(2).copied().unwrap_or(0) % 17);
                let cdb = take(&mut rest, cdb_len);
                let out_len = usize::from(h.get(3).copied().unwrap_or(0)) * 8;
                let dataout = if op % 3 == 1 {
                    take(&mut rest, out_len)
                } else {
                    Vec::new()
                };
                let din = if op % 3 == 2 {
                    usize::from(h.get(4).copied().unwrap_or(0)) * 16
                } else {
                    0
                };
                let attr = h.get(5).copied().unwrap_or(0) % 4;
                let hd = t.start_cmd(target, lun, &cdb, &dataout, din, attr);
                let _ = t.wait(&hd);
            }
            3 => {
                // A raw chain with arbitrary descriptors in guest memory
                // (and some outside it).
                let n = usize::from(take(&mut rest, 1).first().copied().unwrap_or(1) % 6) + 1;
                let q = 2 - u16::from(op & 0x10 != 0) * 2;
                let mut descs = Vec::new();
                for _ in 0..n {
                    let b = take(&mut rest, 5);
                    let base = t.alloc(64);
                    let off = u64::from(b.first().copied().unwrap_or(0));
                    let addr = if b.get(1).copied().unwrap_or(0) == 0xff {
                        (MEM_SIZE as u64) - 8
                    } else {
                        base + off
                    };
                    let len = u32::from(u16::from_le_bytes([
                        b.get(2).copied().unwrap_or(0),
                        b.get(3).copied().unwrap_or(0) % 2,
                    ]));
                    let _ = t.mem.write_slice(&b, GuestAddress(base));
                    descs.push(RawDesc {
                        addr,
                        len,
                        write: b.get(4).copied().unwrap_or(0) & 1 != 0,
                    });
                }
                t.submit_raw(q, &descs);
                t.kick(q);
                t.dev.process_completions();
            }
            4 => {
                let b = take(&mut rest, 4);
                let sub = u32::from(b.first().copied().unwrap_or(0) % 9);
                let _ = t.tmf(
                    b.get(1).copied().unwrap_or(0) % 2,
                    u16::from(b.get(2).copied().unwrap_or(0) % 5),
                    sub,
                    u64::from(b.get(3).copied().unwrap_or(0)),
                );
            }
            5 => {
                let b = take(&mut rest, 3);
                let off = u64::from(b.first().copied().unwrap_or(0) % 40);
                t.dev.write_config(off, &b[1.min(b.len())..]);
            }
            6 => {
                let b = take(&mut rest, 2);
                let _ = t.an(u32::from(b.first().copied().unwrap_or(0) % 4), 0, 0, 0xff);
                let _ = t.take_events();
            }
            _ => {
                if op & 0x80 != 0 {
                    let _ = t.init(OFFERED);
                    t.post_event_buffers(2);
                }
            }
        }
        if t.dev.error().is_some() {
            let _ = t.init(OFFERED);
            t.post_event_buffers(2);
        }
        for f in [&f0, &f1] {
            assert_eq!(f.violations(), 0, "host access outside the image");
        }
    }
}

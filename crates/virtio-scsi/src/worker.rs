//! [`ScsiWorker`]: queue-agnostic virtio-scsi request processing. It takes
//! descriptor chains (from any virtqueue implementation, e.g. the device
//! here or a vhost-user backend over `GuestMemoryAtomic`), parses them,
//! routes commands to the addressed [`ScsiDisk`], and writes responses.
//!
//! Contract: every length and address comes from the guest. A chain is
//! split into its device-readable part (which must come first) and its
//! device-writable part; every descriptor must lie in guest memory. A chain
//! whose writable part cannot hold the response header is unanswerable
//! ([`ChainError`], the device sets `DEVICE_NEEDS_RESET`); every other
//! malformation gets a response code (§5.6.6.1): a short header or
//! bidirectional data without INOUT → `VIRTIO_SCSI_S_FAILURE`, an unknown
//! target → `BAD_TARGET`, data buffers smaller than the CDB's transfer →
//! `OVERRUN`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use smallvec::SmallVec;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmstor_hostio::{DataBuf, GuestBufs};
use vmstor_scsi::{
    inquiry, report, Asc, Done, NexusId, Outcome, ScsiDisk, Sense, SenseKey, Status, TaskAttr,
    TaskRef, Tmf, TmfResponse, Transfer,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::spec::{
    ctrl, event, feature, parse_lun, response as resp, task_attr, CmdReqHeader, CmdRespHeader,
    CtrlAnReq, CtrlAnResp, CtrlTmfReq, LunAddr, VirtioScsiEvent, DEFAULT_CDB_SIZE,
    DEFAULT_SENSE_SIZE,
};

/// The single I_T nexus of a virtio-scsi device: one initiator (the
/// driver) per target port.
pub const NEXUS: NexusId = NexusId(0);

/// Largest CDB read from a request (SPC-5 variable-length CDBs stop at 260).
const MAX_CDB: usize = 260;
/// Events kept while the driver has no eventq buffer.
const MAX_EVENTS: usize = 64;

/// Why a chain cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A device-readable descriptor follows a device-writable one.
    #[error("readable descriptor after a writable one")]
    Order,
    /// A descriptor lies (partly) outside guest memory.
    #[error("descriptor outside guest memory")]
    OutsideMemory,
    /// The writable part cannot hold the response.
    #[error("no room for the response ({0} writable bytes)")]
    NoResponse(u64),
}

/// A finished chain: put `head` on `queue`'s used ring with `used_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Queue index.
    pub queue: u16,
    /// Chain head.
    pub head: u16,
    /// Bytes written into the chain.
    pub used_len: u32,
}

type Segs = Vec<(GuestAddress, usize)>;

/// The response area of a command: one or two segments in practice, kept
/// inline while the command is in flight.
type RespSegs = SmallVec<[(GuestAddress, usize); 2]>;

struct Pending {
    queue: u16,
    head: u16,
    resp: RespSegs,
    data_len: u64,
    data_in: bool,
    resp_len: u64,
}

fn total(s: &[(GuestAddress, usize)]) -> u64 {
    s.iter().map(|(_, l)| *l as u64).sum()
}

/// The segments of `s` from byte `off` on (at most `len` bytes).
fn slice(
    s: &[(GuestAddress, usize)],
    mut off: u64,
    mut len: u64,
) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
    s.iter()
        .map_while(move |&(a, l)| {
            let l = l as u64;
            if off >= l {
                off -= l;
                return Some(None);
            }
            if len == 0 {
                return None;
            }
            let n = (l - off).min(len);
            // In range: the whole descriptor was checked against guest memory.
            let seg = (a.unchecked_add(off), n as usize);
            len -= n;
            off = 0;
            Some(Some(seg))
        })
        .flatten()
}

/// Segment count and byte count of `slice(s, off, u64::MAX)`.
fn tail_shape(s: &[(GuestAddress, usize)], off: u64) -> (usize, u64) {
    slice(s, off, u64::MAX).fold((0, 0), |(n, t), (_, l)| (n + 1, t + l as u64))
}

fn read(mem: &GuestMemoryMmap, s: &[(GuestAddress, usize)], off: u64, dst: &mut [u8]) {
    let mut done = 0;
    for (a, l) in slice(s, off, dst.len() as u64) {
        let _ = mem.read_slice(&mut dst[done..done + l], a);
        done += l;
    }
}

fn write(mem: &GuestMemoryMmap, s: &[(GuestAddress, usize)], off: u64, src: &[u8]) -> u64 {
    let mut done = 0;
    for (a, l) in slice(s, off, src.len() as u64) {
        if mem.write_slice(&src[done..done + l], a).is_err() {
            break;
        }
        done += l;
    }
    done as u64
}

/// Splits a chain into readable and writable segments (see the module
/// contract).
pub fn split_chain<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
) -> Result<(Segs, Segs), ChainError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let (mut r, mut w) = (Vec::new(), Vec::new());
    split_into(chain, mem, &mut r, &mut w)?;
    Ok((r, w))
}

/// [`split_chain`] into the caller's (cleared) vectors.
fn split_into<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemoryMmap,
    r: &mut Segs,
    w: &mut Segs,
) -> Result<(), ChainError>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    r.clear();
    w.clear();
    for d in chain {
        let len = d.len() as usize;
        if len > 0 && !mem.check_range(d.addr(), len) {
            return Err(ChainError::OutsideMemory);
        }
        if d.is_write_only() {
            w.push((d.addr(), len));
        } else {
            if !w.is_empty() {
                return Err(ChainError::Order);
            }
            r.push((d.addr(), len));
        }
    }
    Ok(())
}

/// Hashes the worker's own command tokens (sequential, never chosen by the
/// guest) with one multiplication instead of SipHash.
#[derive(Default)]
struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Targets, LUNs, sizes and in-flight commands. See the module docs.
pub struct ScsiWorker {
    luns: BTreeMap<(u8, u16), Arc<ScsiDisk>>,
    sense_size: u32,
    cdb_size: u32,
    seg_max: u32,
    features: u64,
    pending: HashMap<u64, Pending, BuildHasherDefault<TokenHasher>>,
    next_token: u64,
    events: VecDeque<VirtioScsiEvent>,
    missed: bool,
    /// Scratch for `process_request_into`, kept to reuse the allocations:
    /// the chain's readable and writable segments and finished tasks.
    readable: Segs,
    writable: Segs,
    done: Vec<Done>,
}

impl std::fmt::Debug for ScsiWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScsiWorker")
            .field("luns", &self.luns.keys().collect::<Vec<_>>())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl ScsiWorker {
    /// An empty worker; `seg_max` bounds data segments per command.
    pub fn new(seg_max: u32) -> ScsiWorker {
        ScsiWorker {
            luns: BTreeMap::new(),
            sense_size: DEFAULT_SENSE_SIZE,
            cdb_size: DEFAULT_CDB_SIZE,
            seg_max,
            features: 0,
            pending: HashMap::default(),
            next_token: 0,
            events: VecDeque::new(),
            missed: false,
            readable: Vec::new(),
            writable: Vec::new(),
            done: Vec::new(),
        }
    }

    /// The driver-programmed `sense_size` and `cdb_size`.
    pub fn sizes(&self) -> (u32, u32) {
        (self.sense_size, self.cdb_size)
    }

    /// Sets `sense_size` and `cdb_size` (config space writes).
    pub fn set_sizes(&mut self, sense_size: u32, cdb_size: u32) {
        self.sense_size = sense_size;
        self.cdb_size = cdb_size;
    }

    /// Sets the negotiated features (event gating).
    pub fn set_features(&mut self, f: u64) {
        self.features = f;
    }

    /// The logical unit at `target`/`lun`.
    pub fn lun(&self, target: u8, lun: u16) -> Option<&Arc<ScsiDisk>> {
        self.luns.get(&(target, lun))
    }

    /// Every `(target, lun)`.
    pub fn luns(&self) -> Vec<(u8, u16)> {
        self.luns.keys().copied().collect()
    }

    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn has_target(&self, target: u8) -> bool {
        self.luns
            .range((target, 0)..=(target, u16::MAX))
            .next()
            .is_some()
    }

    fn target_luns(&self, target: u8) -> Vec<u16> {
        self.luns
            .range((target, 0)..=(target, u16::MAX))
            .map(|((_, l), _)| *l)
            .collect()
    }

    fn refresh_report_luns(&self, target: u8) {
        let luns = self.target_luns(target);
        for l in &luns {
            if let Some(lu) = self.luns.get(&(target, *l)) {
                lu.set_report_luns(luns.clone());
            }
        }
    }

    /// Adds (hot-plugs) a logical unit. With HOTPLUG negotiated a rescan
    /// event is queued; the target's other units get REPORTED LUNS DATA HAS
    /// CHANGED. Returns `false` if the address is taken or beyond 16383.
    pub fn add_lun(&mut self, target: u8, lun: u16, lu: Arc<ScsiDisk>) -> bool {
        if lun > 0x3fff || self.luns.contains_key(&(target, lun)) {
            return false;
        }
        lu.set_report_luns(self.target_luns(target));
        self.luns.insert((target, lun), lu);
        self.refresh_report_luns(target);
        if self.features & feature::HOTPLUG != 0 {
            self.push_event(event::TRANSPORT_RESET, target, lun, event::RESET_RESCAN);
        }
        true
    }

    /// Removes (hot-unplugs) a logical unit: its tasks end with
    /// `VIRTIO_SCSI_S_RESET`; with HOTPLUG negotiated a removal event is
    /// queued. Returns the finished chains.
    pub fn remove_lun(&mut self, target: u8, lun: u16, mem: &GuestMemoryMmap) -> Vec<Finished> {
        let Some(lu) = self.luns.remove(&(target, lun)) else {
            return Vec::new();
        };
        let done = lu.reset();
        let out = done
            .into_iter()
            .filter_map(|d| self.complete(d, mem))
            .collect();
        self.refresh_report_luns(target);
        if self.features & feature::HOTPLUG != 0 {
            self.push_event(event::TRANSPORT_RESET, target, lun, event::RESET_REMOVED);
        }
        out
    }

    /// Replaces the disk under a logical unit (after a resize). The unit
    /// must be idle. With CHANGE negotiated a PARAM_CHANGE event (CAPACITY
    /// DATA HAS CHANGED) is queued; the unit raises the unit attention.
    pub fn resize_lun(&mut self, target: u8, lun: u16, disk: Arc<vmstor_hostio::Disk>) -> bool {
        let Some(lu) = self.luns.get(&(target, lun)) else {
            return false;
        };
        let before = lu.blocks();
        if !lu.replace_disk(disk) {
            return false;
        }
        if lu.blocks() != before && self.features & feature::CHANGE != 0 {
            let a = Asc::CAPACITY_DATA_CHANGED;
            self.push_event(
                event::PARAM_CHANGE,
                target,
                lun,
                u32::from(a.0) | (u32::from(a.1) << 8),
            );
        }
        true
    }

    fn push_event(&mut self, ev: u32, target: u8, lun: u16, reason: u32) {
        if self.events.len() >= MAX_EVENTS {
            self.missed = true;
            return;
        }
        self.events.push_back(VirtioScsiEvent {
            event: ev.into(),
            lun: crate::spec::lun_address(target, lun),
            reason: reason.into(),
        });
    }

    /// The next event to deliver (EVENTS_MISSED folded in), if any.
    pub fn next_event(&mut self) -> Option<VirtioScsiEvent> {
        let mut e = match self.events.pop_front() {
            Some(e) => e,
            None if self.missed => VirtioScsiEvent::default(),
            None => return None,
        };
        if self.missed {
            e.event = (e.event.get() | event::EVENTS_MISSED).into();
            self.missed = false;
        }
        Some(e)
    }

    /// Whether an event waits for an eventq buffer.
    pub fn has_event(&self) -> bool {
        self.missed || !self.events.is_empty()
    }

    /// Processes one request-queue chain. Returns the chains that finished
    /// (this one if it completed at once, possibly others).
    pub fn process_request<M>(
        &mut self,
        queue: u16,
        chain: DescriptorChain<M>,
        mem: &Arc<GuestMemoryMmap>,
    ) -> Result<Vec<Finished>, ChainError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let mut out = Vec::new();
        self.process_request_into(queue, chain, mem, &mut out)?;
        Ok(out)
    }

    /// [`ScsiWorker::process_request`] appending the finished chains to
    /// `out` (nothing is appended on error). With `out` reused, a command
    /// that completes at once allocates only its data buffer's segment list.
    pub fn process_request_into<M>(
        &mut self,
        queue: u16,
        chain: DescriptorChain<M>,
        mem: &Arc<GuestMemoryMmap>,
        out: &mut Vec<Finished>,
    ) -> Result<(), ChainError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let head = chain.head_index();
        let (mut r, mut w) = (
            std::mem::take(&mut self.readable),
            std::mem::take(&mut self.writable),
        );
        let res = split_into(chain, mem, &mut r, &mut w)
            .and_then(|()| self.request(queue, head, &r, &w, mem, out));
        self.readable = r;
        self.writable = w;
        res
    }

    fn request(
        &mut self,
        queue: u16,
        head: u16,
        r: &[(GuestAddress, usize)],
        w: &[(GuestAddress, usize)],
        mem: &Arc<GuestMemoryMmap>,
        out: &mut Vec<Finished>,
    ) -> Result<(), ChainError> {
        let (rtot, wtot) = (total(r), total(w));
        if wtot < 12 {
            return Err(ChainError::NoResponse(wtot));
        }
        let hdr_len = 19 + u64::from(self.cdb_size);
        let resp_len = 12 + u64::from(self.sense_size);
        let mut quick = |response: u8| {
            let h = CmdRespHeader {
                response,
                ..Default::default()
            };
            write(mem, w, 0, h.as_bytes());
            out.push(Finished {
                queue,
                head,
                used_len: 12,
            });
            Ok(())
        };
        if rtot < hdr_len {
            return quick(resp::FAILURE);
        }
        // Header and CDB in one guest-memory read.
        let mut hc = [0u8; 19 + MAX_CDB];
        let hc = &mut hc[..19 + (self.cdb_size as usize).min(MAX_CDB)];
        read(mem, r, 0, hc);
        let (hb, cdb) = hc.split_at(19);
        let Ok(h) = CmdReqHeader::read_from_bytes(hb) else {
            return quick(resp::FAILURE);
        };
        let (out_segs, out_len) = tail_shape(r, hdr_len);
        let (in_segs, in_len) = tail_shape(w, resp_len);
        if out_len > 0 && in_len > 0 {
            // Bidirectional without VIRTIO_SCSI_F_INOUT (§5.6.6.1.1).
            return quick(resp::FAILURE);
        }
        if out_segs.max(in_segs) as u64 > u64::from(self.seg_max) {
            return quick(resp::FAILURE);
        }
        let resp_segs: RespSegs = slice(w, 0, resp_len).collect();
        let (target, lun) = match parse_lun(&h.lun) {
            LunAddr::NoTarget => return quick(resp::BAD_TARGET),
            LunAddr::BadLun { target } => (target, None),
            LunAddr::Lun { target, lun } => (target, Some(lun)),
        };
        if !self.has_target(target) {
            return quick(resp::BAD_TARGET);
        }
        let Some(lu) = lun.and_then(|l| self.luns.get(&(target, l))) else {
            // The target answers for a LUN with no logical unit.
            let (status, sense, data) = self.absent_lun(target, cdb);
            let moved = write(mem, w, resp_len, &data);
            let p = Pending {
                queue,
                head,
                resp: resp_segs,
                data_len: in_len.max(out_len),
                data_in: in_len > 0,
                resp_len,
            };
            out.push(self.respond(&p, resp::OK, status, &sense, moved, mem));
            return Ok(());
        };
        let (data_len, data_in) = if in_len > 0 {
            (in_len, true)
        } else {
            (out_len, false)
        };
        let p = Pending {
            queue,
            head,
            resp: resp_segs,
            data_len,
            data_in,
            resp_len,
        };
        let overrun = match lu.transfer(cdb) {
            Transfer::Out(n) => n > out_len,
            Transfer::In(n) => n > in_len,
            Transfer::None => false,
        };
        if overrun {
            out.push(self.respond(&p, resp::OVERRUN, Status::Good, &[], 0, mem));
            return Ok(());
        }
        let segs: Segs = if data_in {
            slice(w, resp_len, u64::MAX).collect()
        } else {
            slice(r, hdr_len, u64::MAX).collect()
        };
        let buf = if segs.is_empty() {
            DataBuf::None
        } else {
            DataBuf::Guest(GuestBufs::new(mem.clone(), segs))
        };
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1) & !(1 << 63);
        self.pending.insert(token, p);
        let attr = match h.task_attr {
            task_attr::ORDERED => TaskAttr::Ordered,
            task_attr::HEAD => TaskAttr::HeadOfQueue,
            task_attr::ACA => TaskAttr::Aca,
            _ => TaskAttr::Simple,
        };
        let mut done = std::mem::take(&mut self.done);
        lu.submit_ref(
            TaskRef {
                token,
                nexus: NEXUS,
                tag: h.id.get(),
                attr,
                cdb,
                buf,
            },
            &mut done,
        );
        out.extend(done.drain(..).filter_map(|d| self.complete(d, mem)));
        self.done = done;
        Ok(())
    }

    /// What the target returns for a LUN without a logical unit (SPC-5
    /// §4.6.5): INQUIRY with peripheral qualifier 011b, REPORT LUNS, REQUEST
    /// SENSE with LOGICAL UNIT NOT SUPPORTED; everything else CHECK
    /// CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
    fn absent_lun(&self, target: u8, cdb: &[u8]) -> (Status, Vec<u8>, Vec<u8>) {
        let nolun = Sense::new(SenseKey::IllegalRequest, Asc::LUN_NOT_SUPPORTED);
        let alloc16 = |i: usize| usize::from(u16::from_be_bytes([cdb[i], cdb[i + 1]]));
        match cdb.first() {
            Some(0x12) if cdb.len() >= 6 && cdb[1] & 1 == 0 => {
                let mut d = inquiry::absent_lun();
                d.truncate(alloc16(3));
                (Status::Good, Vec::new(), d)
            }
            Some(0xa0) if cdb.len() >= 12 => {
                match report::report_luns(cdb[2], &self.target_luns(target)) {
                    Ok(mut d) => {
                        let alloc = u32::from_be_bytes([cdb[6], cdb[7], cdb[8], cdb[9]]) as usize;
                        d.truncate(alloc);
                        (Status::Good, Vec::new(), d)
                    }
                    Err(s) => (Status::CheckCondition, s.fixed().to_vec(), Vec::new()),
                }
            }
            Some(0x03) if cdb.len() >= 6 => {
                let mut d = nolun.to_bytes(cdb[1] & 1 != 0);
                d.truncate(usize::from(cdb[4]));
                (Status::Good, Vec::new(), d)
            }
            _ => (Status::CheckCondition, nolun.fixed().to_vec(), Vec::new()),
        }
    }

    fn respond(
        &self,
        p: &Pending,
        response: u8,
        status: Status,
        sense: &[u8],
        moved: u64,
        mem: &GuestMemoryMmap,
    ) -> Finished {
        let room = total(&p.resp).saturating_sub(12);
        let n = sense.len().min(self.sense_size as usize).min(room as usize);
        let h = CmdRespHeader {
            sense_len: (n as u32).into(),
            residual: (p.data_len.saturating_sub(moved).min(u64::from(u32::MAX)) as u32).into(),
            status_qualifier: 0.into(),
            status: if response == resp::OK {
                status as u8
            } else {
                0
            },
            response,
        };
        write(mem, &p.resp, 0, h.as_bytes());
        write(mem, &p.resp, 12, &sense[..n]);
        let used = if p.data_in && moved > 0 {
            p.resp_len + moved
        } else {
            12 + n as u64
        };
        Finished {
            queue: p.queue,
            head: p.head,
            used_len: used.min(u64::from(u32::MAX)) as u32,
        }
    }

    /// Writes the response of a finished task; `None` for tokens this
    /// worker does not know (already answered).
    pub fn complete(&mut self, d: Done, mem: &GuestMemoryMmap) -> Option<Finished> {
        let p = self.pending.remove(&d.token)?;
        Some(match d.outcome {
            Outcome::Complete(r) => {
                self.respond(&p, resp::OK, r.status, &r.sense, r.transferred, mem)
            }
            Outcome::Aborted => self.respond(&p, resp::ABORTED, Status::Good, &[], 0, mem),
            Outcome::Reset => self.respond(&p, resp::RESET, Status::Good, &[], 0, mem),
            Outcome::Overrun => self.respond(&p, resp::OVERRUN, Status::Good, &[], 0, mem),
        })
    }

    /// Collects finished commands of every logical unit (never blocks).
    pub fn poll(&mut self, mem: &GuestMemoryMmap) -> Vec<Finished> {
        let done: Vec<Done> = self.luns.values().flat_map(|lu| lu.poll()).collect();
        done.into_iter()
            .filter_map(|d| self.complete(d, mem))
            .collect()
    }

    /// Blocks until some logical unit with tasks completes host I/O (or
    /// none has I/O in flight), then collects.
    pub fn wait(&mut self, mem: &GuestMemoryMmap) -> Vec<Finished> {
        let mut done = Vec::new();
        for lu in self.luns.values() {
            if lu.tasks() > 0 {
                done.extend(lu.wait());
                if !done.is_empty() {
                    break;
                }
            }
        }
        let mut out: Vec<Finished> = done
            .into_iter()
            .filter_map(|d| self.complete(d, mem))
            .collect();
        out.extend(self.poll(mem));
        out
    }

    /// Processes one control-queue chain (TMF, AN query/subscribe).
    pub fn process_control<M>(
        &mut self,
        queue: u16,
        chain: DescriptorChain<M>,
        mem: &Arc<GuestMemoryMmap>,
    ) -> Result<Vec<Finished>, ChainError>
    where
        M: Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let head = chain.head_index();
        let (r, w) = split_chain(chain, mem)?;
        let (rtot, wtot) = (total(&r), total(&w));
        if wtot < 1 {
            return Err(ChainError::NoResponse(wtot));
        }
        let mut out = Vec::new();
        let one = |response: u8, out: &mut Vec<Finished>| {
            write(mem, &w, 0, &[response]);
            out.push(Finished {
                queue,
                head,
                used_len: 1,
            });
        };
        if rtot < 4 {
            one(resp::FAILURE, &mut out);
            return Ok(out);
        }
        let mut t = [0u8; 4];
        read(mem, &r, 0, &mut t);
        match u32::from_le_bytes(t) {
            ctrl::TMF if rtot >= 24 => {
                let mut b = [0u8; 24];
                read(mem, &r, 0, &mut b);
                let req = CtrlTmfReq::read_from_bytes(&b).expect("24 bytes");
                let code = self.tmf(&req, mem, &mut out);
                one(code, &mut out);
            }
            ctrl::AN_QUERY | ctrl::AN_SUBSCRIBE if rtot >= 16 && wtot >= 5 => {
                let mut b = [0u8; 16];
                read(mem, &r, 0, &mut b);
                let req = CtrlAnReq::read_from_bytes(&b).expect("16 bytes");
                let response = match parse_lun(&req.lun) {
                    LunAddr::Lun { target, .. } | LunAddr::BadLun { target }
                        if self.has_target(target) =>
                    {
                        resp::OK
                    }
                    _ => resp::BAD_TARGET,
                };
                // Disks report no asynchronous events (those are MMC's).
                let a = CtrlAnResp {
                    event_actual: 0.into(),
                    response,
                };
                write(mem, &w, 0, a.as_bytes());
                out.push(Finished {
                    queue,
                    head,
                    used_len: 5,
                });
            }
            _ => one(resp::FAILURE, &mut out),
        }
        Ok(out)
    }

    fn tmf(&mut self, req: &CtrlTmfReq, mem: &GuestMemoryMmap, out: &mut Vec<Finished>) -> u8 {
        let (target, lun) = match parse_lun(&req.lun) {
            LunAddr::NoTarget => return resp::BAD_TARGET,
            LunAddr::BadLun { target } => (target, None),
            LunAddr::Lun { target, lun } => (target, Some(lun)),
        };
        let luns = self.target_luns(target);
        if luns.is_empty() {
            return resp::BAD_TARGET;
        }
        let sub = req.subtype.get();
        if sub == ctrl::I_T_NEXUS_RESET {
            // The whole I_T nexus: every unit of the target.
            for l in luns {
                if let Some(lu) = self.luns.get(&(target, l)).cloned() {
                    let (_, done) = lu.task_management(NEXUS, Tmf::ItNexusReset);
                    out.extend(done.into_iter().filter_map(|d| self.complete(d, mem)));
                }
            }
            return resp::OK;
        }
        let Some(lu) = lun.and_then(|l| self.luns.get(&(target, l))).cloned() else {
            return resp::INCORRECT_LUN;
        };
        let id = req.id.get();
        let tmf = match sub {
            ctrl::ABORT_TASK => Tmf::AbortTask { tag: id },
            ctrl::ABORT_TASK_SET => Tmf::AbortTaskSet,
            ctrl::CLEAR_ACA => Tmf::ClearAca,
            ctrl::CLEAR_TASK_SET => Tmf::ClearTaskSet,
            ctrl::LOGICAL_UNIT_RESET => Tmf::LogicalUnitReset,
            ctrl::QUERY_TASK => Tmf::QueryTask { tag: id },
            ctrl::QUERY_TASK_SET => Tmf::QueryTaskSet,
            _ => return resp::FUNCTION_REJECTED,
        };
        let (r, done) = lu.task_management(NEXUS, tmf);
        out.extend(done.into_iter().filter_map(|d| self.complete(d, mem)));
        match r {
            TmfResponse::Complete => resp::OK,
            TmfResponse::Succeeded => resp::FUNCTION_SUCCEEDED,
            TmfResponse::Rejected => resp::FUNCTION_REJECTED,
        }
    }

    /// Device reset: every unit's tasks end (their chains are forgotten:
    /// the rings are being reset), events are dropped and the sizes return
    /// to their defaults.
    pub fn reset(&mut self) {
        for lu in self.luns.values() {
            let _ = lu.reset();
        }
        self.pending.clear();
        self.events.clear();
        self.missed = false;
        self.sense_size = DEFAULT_SENSE_SIZE;
        self.cdb_size = DEFAULT_CDB_SIZE;
        self.features = 0;
    }
}

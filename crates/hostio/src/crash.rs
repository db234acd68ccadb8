//! The crash model: a simulated Linux host behind the [`HostFile`] seam, an
//! oracle of what the guest was promised, and a harness that crashes between
//! every two host ops and checks the reopened image through a front end.
//!
//! ## Simulated host ([`SimFile`])
//! Per 512-byte sector: stable media, the disk's volatile write cache (values
//! the device accepted but has not destaged; lost on power loss) and the page
//! cache (buffered writes not yet written back; lost on a host crash). Ops
//! follow Linux:
//! - buffered `pwritev`: value enters the page cache;
//! - `O_DIRECT` `pwritev`: the range's dirty pages are written back first,
//!   then the value enters the disk cache (not stable: "O_DIRECT is not
//!   durable");
//! - `RWF_DSYNC`: the range is written back, and the device cache is flushed
//!   (a FLUSH empties the whole device cache onto media);
//! - `fdatasync`: every dirty page is written back, then the device cache is
//!   flushed; allocation metadata (fallocate) becomes stable with it;
//! - `fallocate` punch/zero: dirty pages of the range are written back, then
//!   zeroes enter the page cache (metadata is volatile until `fdatasync`);
//! - a failed `fdatasync` (injected) drops the dirty pages it could not
//!   write: their data is lost, yet reads keep returning it from the cache —
//!   exactly what the kernel does (`host-facts.md` §4).
//!
//! A crash yields any image these rules allow, chosen adversarially per
//! sector ([`Strategy`]): under [`CrashKind::PowerLoss`] a sector holds its
//! media value or any value in either cache; under [`CrashKind::HostCrash`]
//! the device still destages its cache, so a sector holds its newest device
//! value or any page-cache value. Never bytes nobody wrote; torn only at
//! sector granularity.
//!
//! ## Oracle ([`Oracle`])
//! An append-only, timestamped log of guest write events. A value written by
//! event E (or the original contents) is *excluded* at time t iff some event
//! D on the same sector was promised durable by t and E completed before D
//! began. Everything else is allowed. Durability is promised by a FUA write,
//! a write completed while the guest-visible write cache was off, or by a
//! flush (or write-cache disable) that completed successfully for every write
//! completed before it was submitted. Discards are never durable.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use crate::caps::HostCaps;
use crate::disk::{Disk, DiskOptions};
use crate::driver::{GuestDriver, GuestStatus};
use crate::exec::ExecutorKind;
use crate::file::{HostFile, IoVec};
use crate::policy::Policy;

/// Simulation sector size (torn writes happen at this granularity).
pub const SECTOR: usize = 512;

type Val = u32;

#[derive(Debug, Clone, Default)]
struct SectorState {
    media: Val,
    dev: Vec<Val>,
    page: Vec<Val>,
    /// Page-cache value that was lost by a failed writeback but is still
    /// what reads return (kernel keeps the clean page).
    stale_read: Option<Val>,
}

/// A snapshot of the simulated host (cheap to clone: value ids only).
#[derive(Debug, Clone)]
pub struct SimState {
    sectors: Vec<SectorState>,
}

/// What fails in an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `EIO`.
    Eio,
    /// `ENOSPC`.
    Enospc,
    /// `EINTR` (nothing done).
    Eintr,
    /// A short transfer: half the bytes (rounded to sectors, at least one
    /// sector short), then success for the rest on retry.
    Short,
}

impl FaultKind {
    fn errno(self) -> i32 {
        match self {
            FaultKind::Eio => libc::EIO,
            FaultKind::Enospc => libc::ENOSPC,
            FaultKind::Eintr => libc::EINTR,
            FaultKind::Short => 0,
        }
    }
}

/// A hook called after every host op with the post-op state.
pub type OpHook = Box<dyn FnMut(&SimState) + Send>;

struct Sim {
    state: SimState,
    values: Vec<[u8; SECTOR]>,
    index: HashMap<[u8; SECTOR], Val>,
    ops: u64,
    fault: Option<(u64, FaultKind)>,
    hook: Option<OpHook>,
}

impl Sim {
    fn intern(&mut self, data: &[u8]) -> Val {
        let mut b = [0u8; SECTOR];
        b.copy_from_slice(data);
        if let Some(&v) = self.index.get(&b) {
            return v;
        }
        let v = self.values.len() as Val;
        self.values.push(b);
        self.index.insert(b, v);
        v
    }

    fn current(&self, s: usize) -> Val {
        let st = &self.state.sectors[s];
        st.page
            .last()
            .or(st.stale_read.as_ref())
            .or(st.dev.last())
            .copied()
            .unwrap_or(st.media)
    }

    fn writeback(&mut self, s: usize) {
        let st = &mut self.state.sectors[s];
        let pages = std::mem::take(&mut st.page);
        st.dev.extend(pages);
        st.stale_read = None;
    }

    /// Writeback failed: the kernel marks the dirty pages clean without
    /// writing them. Their data is lost for good, though reads keep
    /// returning it from the page cache.
    fn drop_dirty(&mut self) {
        for st in &mut self.state.sectors {
            if let Some(v) = st.page.last().copied() {
                st.page.clear();
                st.stale_read = Some(v);
            }
        }
    }

    fn device_flush(&mut self) {
        for st in &mut self.state.sectors {
            if let Some(&v) = st.dev.last() {
                st.media = v;
                st.dev.clear();
            }
        }
    }

    fn range(&self, offset: u64, len: u64) -> io::Result<std::ops::Range<usize>> {
        let n = self.state.sectors.len() as u64;
        if offset % SECTOR as u64 != 0 || len % SECTOR as u64 != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let (a, b) = (offset / SECTOR as u64, (offset + len) / SECTOR as u64);
        if b > n {
            // A simulated file never grows: writing past the end would be an
            // engine bug (the harness treats it as one).
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        Ok(a as usize..b as usize)
    }

    /// Applies the fault planned for this op, if any.
    fn fault_now(&mut self) -> Option<FaultKind> {
        self.ops += 1;
        match self.fault {
            Some((n, k)) if n == self.ops => Some(k),
            _ => None,
        }
    }

    fn after(&mut self) {
        if let Some(mut h) = self.hook.take() {
            h(&self.state);
            self.hook = Some(h);
        }
    }
}

/// A one-shot gate holding the next `fdatasync` open: it captures the dirty
/// set when it starts, waits until opened, then writes back only that set.
#[derive(Debug, Default)]
pub struct SyncGate {
    state: Mutex<(bool, bool, bool)>, // (armed, entered, open)
    cv: std::sync::Condvar,
}

impl SyncGate {
    /// Arms the gate for the next `fdatasync`.
    pub fn arm(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (true, false, false);
    }
    /// Blocks until an armed sync is waiting at the gate.
    pub fn wait_entered(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !g.1 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
    /// Lets the held sync finish.
    pub fn open(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).2 = true;
        self.cv.notify_all();
    }
    /// Disarms the gate if it was armed (this sync is the held one); the
    /// caller signals [`SyncGate::enter`] once it captured the dirty set.
    fn take(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut g.0, false)
    }
    fn enter(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }
    fn wait_open(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !g.2 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The simulated host file. Clones share the same simulated host.
#[derive(Clone)]
pub struct SimFile {
    sim: Arc<Mutex<Sim>>,
    direct: bool,
    gate: Arc<SyncGate>,
}

impl SimFile {
    /// A simulated image holding `image` (length a multiple of
    /// [`SECTOR`]), all of it stable. `direct` selects `O_DIRECT` semantics.
    pub fn new(image: &[u8], direct: bool) -> SimFile {
        let mut sim = Sim {
            state: SimState {
                sectors: Vec::new(),
            },
            values: Vec::new(),
            index: HashMap::new(),
            ops: 0,
            fault: None,
            hook: None,
        };
        let sectors = image
            .chunks(SECTOR)
            .map(|c| {
                let mut b = [0u8; SECTOR];
                b[..c.len()].copy_from_slice(c);
                SectorState {
                    media: sim.intern(&b),
                    ..Default::default()
                }
            })
            .collect();
        sim.state.sectors = sectors;
        SimFile {
            sim: Arc::new(Mutex::new(sim)),
            direct,
            gate: Arc::default(),
        }
    }

    /// The sync gate (see [`SyncGate`]).
    pub fn gate(&self) -> &SyncGate {
        &self.gate
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.sim.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.lock().state.sectors.len() * SECTOR) as u64
    }

    /// Fails the `n`th host op from now (1 = the next one) with `kind`.
    pub fn inject(&self, n: u64, kind: FaultKind) {
        let mut s = self.lock();
        let at = s.ops + n;
        s.fault = Some((at, kind));
    }

    /// Number of host ops performed so far.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Installs a hook called after every host op.
    pub fn set_hook(&self, hook: Option<OpHook>) {
        self.lock().hook = hook;
    }

    /// The current state.
    pub fn state(&self) -> SimState {
        self.lock().state.clone()
    }

    /// What reads return now (no crash).
    pub fn contents(&self) -> Vec<u8> {
        let s = self.lock();
        let mut out = Vec::with_capacity(s.state.sectors.len() * SECTOR);
        for i in 0..s.state.sectors.len() {
            out.extend_from_slice(&s.values[s.current(i) as usize][..]);
        }
        out
    }

    /// The image after a crash of `kind` in `state`, choosing per sector
    /// with `strategy`.
    pub fn crash_image(&self, state: &SimState, kind: CrashKind, strategy: Strategy) -> Vec<u8> {
        let s = self.lock();
        let mut rng = match strategy {
            Strategy::Random(seed) => seed | 1,
            _ => 1,
        };
        let mut out = Vec::with_capacity(state.sectors.len() * SECTOR);
        for st in &state.sectors {
            let mut cands: Vec<Val> = match kind {
                CrashKind::PowerLoss => std::iter::once(st.media)
                    .chain(st.dev.iter().copied())
                    .collect(),
                CrashKind::HostCrash => vec![st.dev.last().copied().unwrap_or(st.media)],
            };
            cands.extend(st.page.iter().copied());
            let v = match strategy {
                Strategy::Oldest => cands[0],
                Strategy::Newest => *cands.last().unwrap_or(&st.media),
                Strategy::Random(_) => {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    cands[(rng % cands.len() as u64) as usize]
                }
            };
            out.extend_from_slice(&s.values[v as usize][..]);
        }
        out
    }
}

/// Which crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashKind {
    /// Power loss: page cache and device cache both lost.
    PowerLoss,
    /// Host kernel crash: page cache lost, the device keeps power and
    /// destages its cache.
    HostCrash,
}

/// How each sector's post-crash value is chosen among the allowed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The oldest value still possible (the adversary's usual best move).
    Oldest,
    /// The newest value.
    Newest,
    /// A seeded random choice per sector.
    Random(u64),
}

fn copy_in_iov(iov: &[IoVec], data: &[u8]) {
    let mut at = 0;
    for v in iov {
        if at >= data.len() {
            break;
        }
        let n = v.len().min(data.len() - at);
        v.copy_from(0, &data[at..at + n]);
        at += n;
    }
}

fn gather(iov: &[IoVec], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut at = 0;
    for v in iov {
        if at >= len {
            break;
        }
        let n = v.len().min(len - at);
        v.copy_to(0, &mut out[at..at + n]);
        at += n;
    }
    out
}

fn iov_len(iov: &[IoVec]) -> usize {
    iov.iter().map(|v| v.len()).sum()
}

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl HostFile for SimFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        let mut s = self.lock();
        let fault = s.fault_now();
        let len = iov_len(iov) as u64;
        let r = (|| {
            if let Some(k) = fault.filter(|k| *k != FaultKind::Short) {
                return Err(err(k.errno()));
            }
            let range = s.range(offset, len)?;
            let mut data = Vec::with_capacity(len as usize);
            for i in range {
                if self.direct {
                    // O_DIRECT reads write back dirty pages first.
                    s.writeback(i);
                }
                let v = s.current(i);
                data.extend_from_slice(&s.values[v as usize][..]);
            }
            if fault == Some(FaultKind::Short) {
                data.truncate(data.len() / 2);
            }
            copy_in_iov(iov, &data);
            Ok(data.len())
        })();
        s.after();
        r
    }

    fn pwritev(&self, iov: &[IoVec], offset: u64, dsync: bool) -> io::Result<usize> {
        let mut s = self.lock();
        let fault = s.fault_now();
        let mut len = iov_len(iov) as u64;
        let r = (|| {
            match fault {
                Some(FaultKind::Short) => {
                    len = len / 2 / SECTOR as u64 * SECTOR as u64;
                }
                Some(FaultKind::Eio | FaultKind::Enospc) if dsync => {
                    // Worst case: the sync half failed writeback of every
                    // dirty page (dropping them) and reported it here.
                    s.drop_dirty();
                    return Err(err(fault.map_or(libc::EIO, |k| k.errno())));
                }
                Some(k) => return Err(err(k.errno())),
                None => {}
            }
            let range = s.range(offset, len)?;
            let data = gather(iov, len as usize);
            for (k, i) in range.clone().enumerate() {
                let v = s.intern(&data[k * SECTOR..(k + 1) * SECTOR]);
                if self.direct {
                    s.writeback(i);
                    s.state.sectors[i].dev.push(v);
                } else {
                    s.state.sectors[i].stale_read = None;
                    s.state.sectors[i].page.push(v);
                }
            }
            if dsync {
                for i in range {
                    s.writeback(i);
                }
                s.device_flush();
            }
            Ok(len as usize)
        })();
        s.after();
        r
    }

    fn fdatasync(&self) -> io::Result<()> {
        if self.gate.take() {
            // Capture what is dirty now; only that is written back.
            let captured: Vec<usize> = self
                .lock()
                .state
                .sectors
                .iter()
                .map(|st| st.page.len())
                .collect();
            // Only now may the test go on (e.g. write more): a write that
            // completes after `wait_entered` must not be in the capture.
            self.gate.enter();
            self.gate.wait_open();
            let mut s = self.lock();
            s.ops += 1;
            for (i, n) in captured.into_iter().enumerate() {
                let st = &mut s.state.sectors[i];
                let n = n.min(st.page.len());
                let moved: Vec<Val> = st.page.drain(..n).collect();
                st.dev.extend(moved);
            }
            s.device_flush();
            s.after();
            return Ok(());
        }
        let mut s = self.lock();
        let fault = s.fault_now();
        let r = match fault {
            Some(FaultKind::Eintr) | Some(FaultKind::Short) | None => {
                for i in 0..s.state.sectors.len() {
                    s.writeback(i);
                }
                s.device_flush();
                if fault == Some(FaultKind::Eintr) {
                    Err(err(libc::EINTR))
                } else {
                    Ok(())
                }
            }
            Some(k) => {
                s.drop_dirty();
                Err(err(k.errno()))
            }
        };
        s.after();
        r
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)
    }

    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)
    }

    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)
    }
}

impl SimFile {
    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        let fault = s.fault_now();
        let r = (|| {
            if let Some(k) = fault {
                return Err(err(if k == FaultKind::Short {
                    libc::EIO
                } else {
                    k.errno()
                }));
            }
            let range = s.range(offset, len)?;
            let z = s.intern(&[0u8; SECTOR]);
            for i in range {
                s.writeback(i);
                s.state.sectors[i].page.push(z);
            }
            Ok(())
        })();
        s.after();
        r
    }
}

/// One guest write event in the oracle.
#[derive(Debug, Clone)]
struct Event {
    first_sector: u64,
    data: Vec<u8>,
    begun: u64,
    completed: Option<u64>,
    durable: Option<u64>,
    can_be_durable: bool,
}

/// What the guest was promised. See the module docs.
#[derive(Debug, Clone)]
pub struct Oracle {
    clock: u64,
    original: Vec<u8>,
    events: Vec<Event>,
}

/// Identifies an event in the oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId(usize);

/// A broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Sector (512-byte units).
    pub sector: u64,
    /// What was found, described.
    pub found: String,
    /// Why it is not allowed.
    pub why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sector {}: found {}; {}",
            self.sector, self.found, self.why
        )
    }
}

impl Oracle {
    /// An oracle for a disk whose original contents are `original`.
    pub fn new(original: Vec<u8>) -> Oracle {
        Oracle {
            clock: 0,
            original,
            events: Vec::new(),
        }
    }

    /// The current logical time.
    pub fn now(&self) -> u64 {
        self.clock
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A write (or zeroing, or discard) of `data` at byte `offset` begins.
    /// Discards pass `can_be_durable = false`.
    pub fn begin(&mut self, offset: u64, data: Vec<u8>, can_be_durable: bool) -> EventId {
        let t = self.tick();
        self.events.push(Event {
            first_sector: offset / SECTOR as u64,
            data,
            begun: t,
            completed: None,
            durable: None,
            can_be_durable,
        });
        EventId(self.events.len() - 1)
    }

    /// The event completed; `ok` = the guest saw success; `durable` = the
    /// guest was promised durability on completion (FUA / write cache off).
    pub fn complete(&mut self, id: EventId, ok: bool, durable: bool) {
        let t = self.tick();
        let e = &mut self.events[id.0];
        if ok {
            e.completed = Some(t);
            if durable && e.can_be_durable {
                e.durable = Some(t);
            }
        }
    }

    /// A flush (or write-cache disable) that was submitted at `submitted`
    /// completed successfully now.
    pub fn flushed(&mut self, submitted: u64) {
        let t = self.tick();
        for e in &mut self.events {
            if e.can_be_durable
                && e.durable.is_none()
                && e.completed.is_some_and(|c| c <= submitted)
            {
                e.durable = Some(t);
            }
        }
    }

    /// The value reads should return now for `sector`, if determined (the
    /// latest completed event, with no failed or in-flight event after it).
    pub fn expected(&self, sector: u64) -> Option<&[u8]> {
        let mut cur: Option<&[u8]> = Some(self.sector_of_original(sector));
        for e in &self.events {
            if let Some(d) = e.sector_data(sector) {
                cur = if e.completed.is_some() && e.can_be_durable {
                    Some(d)
                } else {
                    None
                };
            }
        }
        cur
    }

    fn sector_of_original(&self, s: u64) -> &[u8] {
        let a = s as usize * SECTOR;
        &self.original[a..a + SECTOR]
    }

    /// Checks a post-crash `image` against the promises made by time `at`.
    /// `consistency_only` checks only "every sector holds a value someone
    /// wrote there, or its original" (the `unsafe` mode).
    pub fn check(&self, at: u64, image: &[u8], consistency_only: bool) -> Result<(), Violation> {
        let sectors = image.len() / SECTOR;
        for s in 0..sectors as u64 {
            let got = &image[s as usize * SECTOR..(s as usize + 1) * SECTOR];
            let evs: Vec<&Event> = self
                .events
                .iter()
                .filter(|e| e.begun <= at && e.sector_data(s).is_some())
                .collect();
            let durable: Vec<&&Event> = evs
                .iter()
                .filter(|e| !consistency_only && e.durable.is_some_and(|d| d <= at))
                .collect();
            // A value is excluded if it completed before a durable event began.
            let excluded_by = |completed: u64| durable.iter().find(|d| completed < d.begun);
            let mut allowed = false;
            let mut wrote_it = false;
            if got == self.sector_of_original(s) {
                wrote_it = true;
                if excluded_by(0).is_none() {
                    allowed = true;
                }
            }
            for e in &evs {
                if e.sector_data(s) == Some(got) {
                    wrote_it = true;
                    let c = e.completed.filter(|&c| c <= at).unwrap_or(u64::MAX);
                    if excluded_by(c).is_none() {
                        allowed = true;
                    }
                }
            }
            if !allowed {
                let found = describe(got, &evs, self.sector_of_original(s));
                let why = if !wrote_it {
                    "nobody ever wrote these bytes there".to_string()
                } else {
                    let d = durable
                        .iter()
                        .max_by_key(|d| d.begun)
                        .map(|d| d.describe(s))
                        .unwrap_or_default();
                    format!("a later write was promised durable: {d}")
                };
                return Err(Violation {
                    sector: s,
                    found,
                    why,
                });
            }
        }
        Ok(())
    }
}

fn describe(got: &[u8], evs: &[&Event], original: &[u8]) -> String {
    if got == original {
        return "the original contents".into();
    }
    for e in evs {
        if e.sector_data_for_value(got) {
            return format!("data of write begun at t={}", e.begun);
        }
    }
    format!("unknown bytes {:02x?}..", &got[..8])
}

impl Event {
    fn sector_data(&self, s: u64) -> Option<&[u8]> {
        let n = (self.data.len() / SECTOR) as u64;
        if s >= self.first_sector && s < self.first_sector + n {
            let a = (s - self.first_sector) as usize * SECTOR;
            Some(&self.data[a..a + SECTOR])
        } else {
            None
        }
    }

    fn sector_data_for_value(&self, v: &[u8]) -> bool {
        self.data.chunks(SECTOR).any(|c| c == v)
    }

    fn describe(&self, s: u64) -> String {
        format!(
            "write begun at t={} (sector {s}), durable at t={}",
            self.begun,
            self.durable.unwrap_or(0)
        )
    }
}

/// A guest-level operation in a generated sequence (LBAs in the disk's
/// logical blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestOp {
    /// Write `count` blocks at `lba`, with FUA if asked.
    Write {
        /// First block.
        lba: u64,
        /// Blocks.
        count: u32,
        /// FUA.
        fua: bool,
    },
    /// Read `count` blocks at `lba` and compare with the model.
    Read {
        /// First block.
        lba: u64,
        /// Blocks.
        count: u32,
    },
    /// Flush.
    Flush,
    /// Turn the write cache on or off.
    WriteCache(bool),
    /// Discard.
    Discard {
        /// First block.
        lba: u64,
        /// Blocks.
        count: u32,
    },
    /// Write zeroes.
    Zero {
        /// First block.
        lba: u64,
        /// Blocks.
        count: u32,
        /// Deallocation allowed.
        unmap: bool,
    },
    /// Device reset.
    Reset,
}

impl std::fmt::Display for GuestOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            GuestOp::Write { lba, count, fua } => {
                write!(f, "write {lba} {count}{}", if fua { " fua" } else { "" })
            }
            GuestOp::Read { lba, count } => write!(f, "read {lba} {count}"),
            GuestOp::Flush => f.write_str("flush"),
            GuestOp::WriteCache(on) => write!(f, "wce {}", if on { "on" } else { "off" }),
            GuestOp::Discard { lba, count } => write!(f, "discard {lba} {count}"),
            GuestOp::Zero { lba, count, unmap } => {
                write!(f, "zero {lba} {count}{}", if unmap { " unmap" } else { "" })
            }
            GuestOp::Reset => f.write_str("reset"),
        }
    }
}

/// Builds a guest driver for a freshly opened disk (one per front end).
pub type DriverFactory<'a> = &'a dyn Fn(Arc<Disk>) -> Box<dyn GuestDriver>;

/// Configuration of one crash-checked run.
#[derive(Debug, Clone)]
pub struct CaseConfig {
    /// The disk's policy (cache mode etc.).
    pub policy: Policy,
    /// The capabilities the simulated host presents to the planner.
    pub host: SimHost,
    /// Disk size in bytes (a multiple of 4096).
    pub size: u64,
    /// Known-bad behaviours to switch on.
    pub sabotage: crate::flush::Sabotage,
    /// Inject this fault at this host op (1-based), if any.
    pub fault: Option<(u64, FaultKind)>,
    /// Random crash strategies per crash point, besides oldest and newest.
    pub random_crashes: u32,
}

/// The host capabilities a crash run presents. Each one sends some requests
/// down other planner paths, which the crash model must then also prove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SimHost {
    /// Everything: `RWF_DSYNC`, 512-byte `O_DIRECT` alignment, discard and
    /// fast zeroing.
    #[default]
    Full,
    /// `pwritev2(RWF_DSYNC)` refused: a FUA write becomes write + `fdatasync`
    /// (the write-generation ordering trap of an emulated FUA).
    NoRwfDsync,
    /// `O_DIRECT` offset alignment 4096 over 512-byte logical blocks: smaller
    /// or unaligned writes under `O_DIRECT` become read-modify-write.
    Align4k,
    /// No discard and no fast zeroing: write-zeroes become explicit writes
    /// of zeroes, discards are dropped.
    NoFastZero,
}

impl SimHost {
    /// Every variant.
    pub const ALL: [SimHost; 4] = [
        SimHost::Full,
        SimHost::NoRwfDsync,
        SimHost::Align4k,
        SimHost::NoFastZero,
    ];

    /// The caps of a simulated disk of `size` bytes on this host.
    pub fn caps(self, size: u64) -> HostCaps {
        let mut caps = HostCaps::simulated(size);
        caps.stable_pages = crate::caps::Fact::Known(false, "simulated");
        match self {
            SimHost::Full => {}
            SimHost::NoRwfDsync => caps.rwf_dsync = false,
            SimHost::Align4k => {
                caps.dio_offset_align = 4096;
                caps.dio_mem_align = 4096;
            }
            SimHost::NoFastZero => {
                caps.discard = false;
                caps.write_zeroes = false;
            }
        }
        caps
    }
}

impl std::fmt::Display for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SimHost::Full => "full",
            SimHost::NoRwfDsync => "no-rwf-dsync",
            SimHost::Align4k => "align-4k",
            SimHost::NoFastZero => "no-fast-zero",
        })
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct CaseReport {
    /// Crash points examined (host-op boundaries).
    pub crash_points: u64,
    /// Post-crash images checked.
    pub images_checked: u64,
    /// Guest commands that failed (fault injection).
    pub guest_errors: u64,
    /// Ops the controller could not express (skipped).
    pub inexpressible: u64,
}

/// A failed check.
#[derive(Debug, Clone)]
pub struct CaseFailure {
    /// After how many guest ops (crash point inside op `after_ops`).
    pub after_ops: usize,
    /// The host op count at the crash point (0 = final state, no crash).
    pub host_op: u64,
    /// Crash kind and strategy, if a crash.
    pub crash: Option<(CrashKind, Strategy)>,
    /// What was wrong.
    pub what: String,
}

impl std::fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.crash {
            Some((k, s)) => write!(
                f,
                "crash ({k:?}, {s:?}) after host op {} during guest op #{}: {}",
                self.host_op, self.after_ops, self.what
            ),
            None => write!(f, "after guest op #{}: {}", self.after_ops, self.what),
        }
    }
}

/// The unique pattern written by event `n` to sector `s`.
fn pattern(n: u64, s: u64) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    for (i, c) in b.chunks_mut(16).enumerate() {
        c[..8].copy_from_slice(&n.to_le_bytes());
        c[8..16].copy_from_slice(&(s ^ ((i as u64) << 48)).to_le_bytes());
    }
    b
}

fn original_image(size: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(size as usize);
    for s in 0..size / SECTOR as u64 {
        v.extend_from_slice(&pattern(u64::MAX, s));
    }
    v
}

fn open_sim(sim: &SimFile, cfg: &CaseConfig, executor: ExecutorKind) -> Arc<Disk> {
    let caps = cfg.host.caps(sim.size());
    let opts = DiskOptions {
        sabotage: cfg.sabotage,
        executor,
        ..Default::default()
    };
    let open = |opts| Disk::from_host_file(Arc::new(sim.clone()), caps.clone(), cfg.policy, opts);
    // Should the executor not start (no thread), run inline: the harness
    // must not panic on a host resource limit.
    Arc::new(open(opts).unwrap_or_else(|_| {
        open(DiskOptions {
            executor: ExecutorKind::Inline,
            ..opts
        })
        .expect("inline executor always starts")
    }))
}

/// Runs `ops` through a fresh driver over a simulated host, crashing after
/// every host op (in every crash kind, oldest/newest/random per sector),
/// reopening each crashed image through a fresh driver of the same front end
/// and checking it against the oracle.
pub fn run_case(
    make: DriverFactory<'_>,
    cfg: &CaseConfig,
    ops: &[GuestOp],
) -> Result<CaseReport, CaseFailure> {
    run_case_with(make, cfg, ops, ExecutorKind::Inline)
}

/// [`run_case`] with the disks run by `executor` (e.g. the io_uring
/// executor's emulated ring over the simulated host).
pub fn run_case_with(
    make: DriverFactory<'_>,
    cfg: &CaseConfig,
    ops: &[GuestOp],
    executor: ExecutorKind,
) -> Result<CaseReport, CaseFailure> {
    let original = original_image(cfg.size);
    let sim = SimFile::new(&original, cfg.policy.direct);
    let snaps: Arc<Mutex<Vec<(u64, SimState)>>> = Arc::default();
    let oracle = Arc::new(Mutex::new(Oracle::new(original.clone())));
    {
        let (snaps, oracle) = (snaps.clone(), oracle.clone());
        sim.set_hook(Some(Box::new(move |st: &SimState| {
            let t = oracle.lock().unwrap_or_else(|e| e.into_inner()).now();
            snaps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((t, st.clone()));
        })));
    }
    if let Some((n, k)) = cfg.fault {
        sim.inject(n, k);
    }
    let disk = open_sim(&sim, cfg, executor);
    let mut drv = make(disk.clone());
    let bs = u64::from(drv.block_size());
    let cap = drv.capacity();
    let no_flush = cfg.policy.no_flush;
    let mut report = CaseReport::default();
    let fail = |i: usize, what: String| CaseFailure {
        after_ops: i,
        host_op: 0,
        crash: None,
        what,
    };
    let mut guest_wce = drv
        .write_cache()
        .map_err(|e| fail(0, format!("cannot read write cache state: {e}")))?;
    let mut marks: Vec<(usize, u64)> = Vec::new(); // (guest op index, oracle time at its start)
    let mut event_no = 0u64;
    for (i, op) in ops.iter().enumerate() {
        marks.push((i, oracle.lock().unwrap_or_else(|e| e.into_inner()).now()));
        let clamp = |lba: u64, count: u32| -> Option<(u64, u32)> {
            if lba >= cap {
                return None;
            }
            Some((lba, (count as u64).min(cap - lba).max(1) as u32))
        };
        let status_ok = |s: &GuestStatus| s.is_ok();
        match *op {
            GuestOp::Write { lba, count, fua } => {
                let Some((lba, count)) = clamp(lba, count) else {
                    continue;
                };
                event_no += 1;
                let mut data = Vec::with_capacity(count as usize * bs as usize);
                for s in lba * bs / SECTOR as u64..(lba + u64::from(count)) * bs / SECTOR as u64 {
                    data.extend_from_slice(&pattern(event_no, s));
                }
                let id = oracle.lock().unwrap_or_else(|e| e.into_inner()).begin(
                    lba * bs,
                    data.clone(),
                    true,
                );
                match drv.write(lba, &data, fua) {
                    Ok(r) => {
                        let ok = status_ok(&r.status);
                        if !ok {
                            report.guest_errors += 1;
                        }
                        let durable = !no_flush && (fua || !guest_wce);
                        oracle
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .complete(id, ok, durable);
                    }
                    Err(_) => {
                        report.inexpressible += 1;
                        // Never reached the device: an event that nobody
                        // wrote is harmless (it only widens what is allowed).
                        oracle
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .complete(id, false, false);
                    }
                }
            }
            GuestOp::Read { lba, count } => {
                let Some((lba, count)) = clamp(lba, count) else {
                    continue;
                };
                let mut buf = Vec::new();
                match drv.read(lba, count, &mut buf) {
                    Ok(r) if r.status.is_ok() => {
                        let orc = oracle.lock().unwrap_or_else(|e| e.into_inner());
                        let first = lba * bs / SECTOR as u64;
                        for (k, chunk) in buf.chunks(SECTOR).enumerate() {
                            if let Some(exp) = orc.expected(first + k as u64) {
                                if exp != chunk {
                                    return Err(fail(
                                        i,
                                        format!(
                                            "read of sector {} returned stale or wrong data",
                                            first + k as u64
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                    Ok(_) => report.guest_errors += 1,
                    Err(_) => report.inexpressible += 1,
                }
            }
            GuestOp::Flush => {
                let submitted = oracle.lock().unwrap_or_else(|e| e.into_inner()).now();
                match drv.flush() {
                    Ok(r) if r.status.is_ok() => {
                        if !no_flush {
                            oracle
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .flushed(submitted);
                        }
                    }
                    Ok(_) => report.guest_errors += 1,
                    Err(_) => report.inexpressible += 1,
                }
            }
            GuestOp::WriteCache(on) => {
                let submitted = oracle.lock().unwrap_or_else(|e| e.into_inner()).now();
                match drv.set_write_cache(on) {
                    Ok(r) if r.status.is_ok() => {
                        if !on && !no_flush {
                            oracle
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .flushed(submitted);
                        }
                    }
                    Ok(_) => report.guest_errors += 1,
                    Err(_) => report.inexpressible += 1,
                }
                guest_wce = drv
                    .write_cache()
                    .map_err(|e| fail(i, format!("cannot read write cache state: {e}")))?;
            }
            GuestOp::Discard { lba, count } | GuestOp::Zero { lba, count, .. } => {
                let Some((lba, count)) = clamp(lba, count) else {
                    continue;
                };
                let zero = matches!(op, GuestOp::Zero { .. });
                let id = oracle.lock().unwrap_or_else(|e| e.into_inner()).begin(
                    lba * bs,
                    vec![0u8; count as usize * bs as usize],
                    zero,
                );
                let r = match *op {
                    GuestOp::Zero { unmap, .. } => drv.write_zeroes(lba, count, unmap),
                    _ => drv.discard(lba, count),
                };
                match r {
                    Ok(r) => {
                        let ok = r.status.is_ok();
                        if !ok {
                            report.guest_errors += 1;
                        }
                        oracle.lock().unwrap_or_else(|e| e.into_inner()).complete(
                            id,
                            ok,
                            zero && !no_flush && !guest_wce,
                        );
                    }
                    Err(_) => {
                        report.inexpressible += 1;
                        oracle
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .complete(id, false, false);
                    }
                }
            }
            GuestOp::Reset => {
                let submitted = oracle.lock().unwrap_or_else(|e| e.into_inner()).now();
                let was = guest_wce;
                let ok = match drv.reset() {
                    Ok(r) if r.status.is_ok() => true,
                    Ok(_) => {
                        report.guest_errors += 1;
                        false
                    }
                    Err(_) => {
                        report.inexpressible += 1;
                        false
                    }
                };
                guest_wce = drv
                    .write_cache()
                    .map_err(|e| fail(i, format!("cannot read write cache state: {e}")))?;
                // A successful reset that turned the cache off (virtio-blk
                // restores its default) promised the same flush as an
                // explicit disable; a failed one promised nothing.
                if ok && was && !guest_wce && !no_flush {
                    oracle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .flushed(submitted);
                }
            }
        }
    }
    sim.set_hook(None);
    drop(drv);
    let orc = oracle.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // One more crash point: after the last guest op completed.
    snaps
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((orc.now(), sim.state()));
    let consistency_only = no_flush;
    let snaps = std::mem::take(&mut *snaps.lock().unwrap_or_else(|e| e.into_inner()));
    let op_of = |t: u64| {
        marks
            .iter()
            .rev()
            .find(|(_, m)| *m <= t)
            .map(|(i, _)| *i)
            .unwrap_or(0)
    };
    let mut strategies = vec![Strategy::Oldest, Strategy::Newest];
    for k in 0..cfg.random_crashes {
        strategies.push(Strategy::Random(0x9e37_79b9_7f4a_7c15 ^ u64::from(k)));
    }
    for (n, (t, st)) in snaps.iter().enumerate() {
        report.crash_points += 1;
        let here = |kind, strat, what: String| CaseFailure {
            after_ops: op_of(*t),
            host_op: n as u64 + 1,
            crash: Some((kind, strat)),
            what,
        };
        for kind in [CrashKind::PowerLoss, CrashKind::HostCrash] {
            for &strat in &strategies {
                let img = sim.crash_image(st, kind, strat);
                // The adversary's main move is reopened through the same
                // front end and read back as the guest would; the other
                // images are checked directly (the read path is the same).
                let back = if kind == CrashKind::PowerLoss && strat == Strategy::Oldest {
                    let sim2 = SimFile::new(&img, cfg.policy.direct);
                    let clean = CaseConfig {
                        sabotage: Default::default(),
                        fault: None,
                        ..cfg.clone()
                    };
                    let mut d2 = make(open_sim(&sim2, &clean, executor));
                    let back = read_all(&mut *d2, cap).map_err(|e| {
                        here(
                            kind,
                            strat,
                            format!("reading the reopened image failed: {e}"),
                        )
                    })?;
                    if back != img {
                        return Err(here(
                            kind,
                            strat,
                            "the front end read back other bytes than the image holds".into(),
                        ));
                    }
                    back
                } else {
                    img
                };
                report.images_checked += 1;
                orc.check(*t, &back, consistency_only)
                    .map_err(|v| here(kind, strat, v.to_string()))?;
            }
        }
    }
    Ok(report)
}

/// Reads the whole disk through a driver, in chunks a controller can take.
pub fn read_all(d: &mut dyn GuestDriver, cap: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut lba = 0;
    while lba < cap {
        let n = (cap - lba).min(64) as u32;
        let mut buf = Vec::new();
        let r = d.read(lba, n, &mut buf).map_err(|e| e.to_string())?;
        if !r.status.is_ok() {
            return Err(format!("{} at block {lba}", r.status));
        }
        out.extend_from_slice(&buf);
        lba += u64::from(n);
    }
    Ok(out)
}

/// Shrinks a failing sequence: removes ops one at a time (and halves
/// counts) while `fails` still holds. Returns a locally minimal sequence.
pub fn shrink(mut ops: Vec<GuestOp>, fails: &mut dyn FnMut(&[GuestOp]) -> bool) -> Vec<GuestOp> {
    let mut changed = true;
    while changed {
        changed = false;
        let mut i = 0;
        while i < ops.len() {
            let mut cand = ops.clone();
            cand.remove(i);
            if fails(&cand) {
                ops = cand;
                changed = true;
            } else {
                i += 1;
            }
        }
        for i in 0..ops.len() {
            let smaller = match ops[i] {
                GuestOp::Write { lba, count, fua } if count > 1 => Some(GuestOp::Write {
                    lba,
                    count: count / 2,
                    fua,
                }),
                GuestOp::Write {
                    lba,
                    count,
                    fua: true,
                } => Some(GuestOp::Write {
                    lba,
                    count,
                    fua: false,
                }),
                GuestOp::Zero { lba, count, unmap } if count > 1 => Some(GuestOp::Zero {
                    lba,
                    count: count / 2,
                    unmap,
                }),
                GuestOp::Write { lba, count, fua } if lba > 0 => Some(GuestOp::Write {
                    lba: lba / 2,
                    count,
                    fua,
                }),
                _ => None,
            };
            if let Some(s) = smaller {
                let mut cand = ops.clone();
                cand[i] = s;
                if fails(&cand) {
                    ops = cand;
                    changed = true;
                }
            }
        }
    }
    ops
}

/// A [`GuestDriver`] with no controller in between: guest operations map
/// one-to-one onto engine requests. Used to test the engine and the crash
/// model themselves, and as the `engine` controller of the CLI.
pub struct EngineDriver {
    disk: Arc<Disk>,
}

impl EngineDriver {
    /// A driver over `disk`.
    pub fn new(disk: Arc<Disk>) -> EngineDriver {
        EngineDriver { disk }
    }

    fn run(&self, name: &str, req: crate::Request) -> crate::Issued {
        use crate::disk::Outcome;
        let status = match self.disk.execute(req) {
            Ok(Outcome::Done(c)) => match c.result {
                Ok(_) => GuestStatus::Ok,
                Err(e) => GuestStatus::Error(e.to_string()),
            },
            Ok(Outcome::Held) => GuestStatus::Pending,
            Err(e) => GuestStatus::Error(e.to_string()),
        };
        crate::Issued::one(name, status)
    }
}

impl GuestDriver for EngineDriver {
    fn controller(&self) -> &'static str {
        "engine"
    }
    fn block_size(&self) -> u32 {
        self.disk.logical_block_size()
    }
    fn capacity(&self) -> u64 {
        self.disk.size() / u64::from(self.block_size())
    }
    fn write(
        &mut self,
        lba: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<crate::Issued, crate::CannotExpress> {
        let bs = u64::from(self.block_size());
        let buf = crate::DataBuf::Owned(crate::AlignedBuf::from_slice(data));
        Ok(self.run(
            if fua { "write fua" } else { "write" },
            crate::Request::write(lba.saturating_mul(bs), buf, fua, 0),
        ))
    }
    fn read(
        &mut self,
        lba: u64,
        count: u32,
        out: &mut Vec<u8>,
    ) -> Result<crate::Issued, crate::CannotExpress> {
        use crate::disk::Outcome;
        let bs = u64::from(self.block_size());
        let buf = crate::DataBuf::Owned(crate::AlignedBuf::new(count as usize * bs as usize));
        let req = crate::Request::read(lba.saturating_mul(bs), buf, 0);
        let status = match self.disk.execute(req) {
            Ok(Outcome::Done(c)) => match (c.result, c.buf) {
                (Ok(_), crate::DataBuf::Owned(b)) => {
                    out.clear();
                    out.extend_from_slice(b.as_slice());
                    GuestStatus::Ok
                }
                (Err(e), _) => GuestStatus::Error(e.to_string()),
                (Ok(_), _) => GuestStatus::Error("no data".into()),
            },
            Ok(Outcome::Held) => GuestStatus::Pending,
            Err(e) => GuestStatus::Error(e.to_string()),
        };
        Ok(crate::Issued::one("read", status))
    }
    fn flush(&mut self) -> Result<crate::Issued, crate::CannotExpress> {
        Ok(self.run("flush", crate::Request::flush(0)))
    }
    fn set_write_cache(&mut self, on: bool) -> Result<crate::Issued, crate::CannotExpress> {
        let status = match self.disk.set_write_cache(on) {
            Ok(()) => GuestStatus::Ok,
            Err(e) => GuestStatus::Error(e.to_string()),
        };
        Ok(crate::Issued::one(
            format!("write cache {}", if on { "on" } else { "off" }),
            status,
        ))
    }
    fn write_cache(&mut self) -> Result<bool, crate::CannotExpress> {
        Ok(self.disk.write_cache())
    }
    fn discard(&mut self, lba: u64, count: u32) -> Result<crate::Issued, crate::CannotExpress> {
        let bs = u64::from(self.block_size());
        Ok(self.run(
            "discard",
            crate::Request::discard(lba * bs, u64::from(count) * bs, 0),
        ))
    }
    fn write_zeroes(
        &mut self,
        lba: u64,
        count: u32,
        unmap: bool,
    ) -> Result<crate::Issued, crate::CannotExpress> {
        let bs = u64::from(self.block_size());
        Ok(self.run(
            "write zeroes",
            crate::Request::write_zeroes(lba * bs, u64::from(count) * bs, unmap, 0),
        ))
    }
    fn reset(&mut self) -> Result<crate::Issued, crate::CannotExpress> {
        Ok(crate::Issued::one("reset", GuestStatus::Ok))
    }
}

/// Random guest-op sequences for property tests and `vmstor crashcheck`
/// (a small deterministic generator, so the CLI needs no test framework).
pub fn random_ops(seed: u64, len: usize, blocks: u64) -> Vec<GuestOp> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let blocks = blocks.max(1);
    (0..len)
        .map(|_| {
            let lba = next() % blocks;
            let count = (next() % 8 + 1) as u32;
            match next() % 16 {
                0..=5 => GuestOp::Write {
                    lba,
                    count,
                    fua: next() % 4 == 0,
                },
                6 | 7 => GuestOp::Flush,
                8 => GuestOp::WriteCache(next() % 2 == 0),
                9 | 10 => GuestOp::Read { lba, count },
                11 => GuestOp::Discard { lba, count },
                12 => GuestOp::Zero {
                    lba,
                    count,
                    unmap: next() % 2 == 0,
                },
                13 => GuestOp::Reset,
                _ => GuestOp::Write {
                    lba,
                    count,
                    fua: false,
                },
            }
        })
        .collect()
}

//! [`ScsiDisk`]: one SCSI logical unit (a direct-access block device) over
//! a hostio [`Disk`], with its task set, unit attentions and task
//! management.
//!
//! ## I/O model
//! A transport hands in [`Task`]s (CDB, task attribute, nexus, a
//! transport-unique token and the data buffer) with [`ScsiDisk::submit`]
//! and collects [`Done`]s from `submit`, [`ScsiDisk::poll`] (call it when
//! [`Disk::notify_fd`] fires) or [`ScsiDisk::wait`]. Emulated commands
//! (INQUIRY, MODE SENSE, ...) finish inside `submit`; media commands become
//! hostio requests tagged with the task's token and finish when hostio
//! completes them, so several can be in flight. A command that needs
//! several host requests (UNMAP, WRITE SAME with a pattern) issues them one
//! after the other, each bounded in size.
//!
//! The logical unit owns its disk's completion stream: nothing else may
//! call `submit`/`poll`/`wait`/`drain` on that [`Disk`].
//!
//! ## Task set (SAM-5 §8.6)
//! Tasks are kept in arrival order. A SIMPLE task is enabled once every
//! older ORDERED and HEAD OF QUEUE task has completed; an ORDERED task once
//! every older task has completed; a HEAD OF QUEUE task at once. ACA is
//! treated as SIMPLE (virtio-scsi allows mapping every attribute to
//! SIMPLE). At most [`ScsiDiskConfig::max_tasks`] tasks are held; more get
//! TASK SET FULL.
//!
//! ## Buffers
//! The data buffer is the data-out buffer for commands that move data to
//! the device and the data-in buffer otherwise. It must hold at least the
//! bytes the CDB asks to move ([`ScsiDisk::transfer`]); a shorter one makes
//! the task finish with [`Outcome::Overrun`] before anything runs. READ and
//! WRITE move data between guest memory and the image without a copy
//! (hostio `DataBuf::Guest`); emulated data-in is copied into the buffer.
//!
//! ## Errors
//! Every CDB field is validated before any host I/O (usage mask, ranges,
//! limits). Host failures map to sense data per [`host_sense`]; a failure
//! the disk's error policy holds (`stop`) leaves the task running until the
//! VMM resumes the disk.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use vmstor_hostio::{AlignedBuf, Completion, DataBuf, Disk, IoError, Op, Request, RequestError};

use crate::cdb::{self, check_usage, CommandDesc, DataPhase, Handler, LbaFormat, Lookup};
use crate::data::{io_buffer, read_prefix, write_prefix};
use crate::inquiry::{self, InquiryFacts};
use crate::mode::{self, MediumFacts, ModeSenseCdb, ModeValues};
use crate::report;
use crate::sense::{Asc, Sense, SenseKey, Status};

/// An I_T nexus (initiator port + target port) as the transport numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexusId(pub u64);

/// SAM task attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskAttr {
    /// SIMPLE.
    Simple,
    /// ORDERED.
    Ordered,
    /// HEAD OF QUEUE.
    HeadOfQueue,
    /// ACA (handled as SIMPLE).
    Aca,
}

/// One command.
#[derive(Debug)]
pub struct Task {
    /// Transport-chosen identifier, unique among this unit's tasks in
    /// flight. Tokens with bit 63 set are reserved for [`ScsiDisk::execute`].
    pub token: u64,
    /// The I_T nexus it came from.
    pub nexus: NexusId,
    /// The initiator's task tag (ABORT TASK / QUERY TASK match on it).
    pub tag: u64,
    /// Task attribute.
    pub attr: TaskAttr,
    /// The CDB (trailing bytes beyond the command's CDB length are ignored).
    pub cdb: Vec<u8>,
    /// Data-out or data-in buffer.
    pub buf: DataBuf,
}

/// A [`Task`] with a borrowed CDB, for [`ScsiDisk::submit_ref`].
#[derive(Debug)]
pub struct TaskRef<'a> {
    /// See [`Task::token`].
    pub token: u64,
    /// See [`Task::nexus`].
    pub nexus: NexusId,
    /// See [`Task::tag`].
    pub tag: u64,
    /// See [`Task::attr`].
    pub attr: TaskAttr,
    /// See [`Task::cdb`].
    pub cdb: &'a [u8],
    /// See [`Task::buf`].
    pub buf: DataBuf,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran: a status (and sense data for CHECK CONDITION).
    Complete(ScsiResult),
    /// Aborted by ABORT TASK, ABORT TASK SET or CLEAR TASK SET.
    Aborted,
    /// Ended by a logical unit reset, I_T nexus reset or device reset.
    Reset,
    /// The buffer is shorter than the CDB's transfer; nothing ran.
    Overrun,
}

/// Status, sense data and bytes moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResult {
    /// SCSI status.
    pub status: Status,
    /// Sense data (empty unless CHECK CONDITION), in the format D_SENSE
    /// selects.
    pub sense: Vec<u8>,
    /// Bytes moved through the data buffer.
    pub transferred: u64,
}

impl ScsiResult {
    fn good(transferred: u64) -> ScsiResult {
        ScsiResult {
            status: Status::Good,
            sense: Vec::new(),
            transferred,
        }
    }
}

/// A finished task.
#[derive(Debug)]
pub struct Done {
    /// The task's token.
    pub token: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The caller's buffer, returned (read data for owned buffers).
    pub buf: DataBuf,
}

/// Data transfer a CDB implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// No data (or an invalid CDB: the command fails before any transfer).
    None,
    /// Up to this many bytes to the initiator.
    In(u64),
    /// This many bytes from the initiator.
    Out(u64),
}

impl Transfer {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match *self {
            Transfer::None => 0,
            Transfer::In(n) | Transfer::Out(n) => n,
        }
    }

    /// Whether nothing moves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Task management functions (SAM-5 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmf {
    /// ABORT TASK.
    AbortTask {
        /// Task tag.
        tag: u64,
    },
    /// ABORT TASK SET (this nexus's tasks).
    AbortTaskSet,
    /// CLEAR ACA (not supported: no ACA).
    ClearAca,
    /// CLEAR TASK SET (every nexus's tasks).
    ClearTaskSet,
    /// LOGICAL UNIT RESET.
    LogicalUnitReset,
    /// I_T NEXUS RESET (this nexus, this unit's part of it).
    ItNexusReset,
    /// QUERY TASK.
    QueryTask {
        /// Task tag.
        tag: u64,
    },
    /// QUERY TASK SET.
    QueryTaskSet,
}

/// Task management service responses (SAM-5 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfResponse {
    /// FUNCTION COMPLETE.
    Complete,
    /// FUNCTION SUCCEEDED (a QUERY found a task).
    Succeeded,
    /// FUNCTION REJECTED.
    Rejected,
}

/// Identity and limits of a logical unit.
#[derive(Debug, Clone)]
pub struct ScsiDiskConfig {
    /// T10 vendor (≤ 8 ASCII characters).
    pub vendor: String,
    /// Product (≤ 16).
    pub product: String,
    /// Revision (≤ 4).
    pub revision: String,
    /// Unit serial number (VPD 80h, ≤ 64 ASCII characters).
    pub serial: String,
    /// NAA designator for VPD 83h; `None` derives a locally assigned (NAA
    /// 3h) one from the serial.
    pub naa: Option<u64>,
    /// MAXIMUM TRANSFER LENGTH in bytes (READ/WRITE beyond it: INVALID
    /// FIELD IN CDB).
    pub max_transfer_bytes: u32,
    /// MAXIMUM UNMAP LBA COUNT, in bytes.
    pub max_unmap_bytes: u64,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH, in bytes.
    pub max_write_same_bytes: u64,
    /// Largest single host write a WRITE SAME pattern becomes.
    pub write_same_chunk: usize,
    /// Task set size.
    pub max_tasks: usize,
}

impl Default for ScsiDiskConfig {
    fn default() -> Self {
        ScsiDiskConfig {
            vendor: "VMSTOR".into(),
            product: "VIRTUAL DISK".into(),
            revision: env!("CARGO_PKG_VERSION").chars().take(4).collect(),
            serial: "VMSTOR0001".into(),
            naa: None,
            max_transfer_bytes: 32 << 20,
            max_unmap_bytes: 1 << 30,
            max_unmap_descriptors: 256,
            max_write_same_bytes: 1 << 30,
            write_same_chunk: 1 << 20,
            max_tasks: 256,
        }
    }
}

const MAX_NEXUSES: usize = 64;
const MAX_UAS: usize = 8;

/// What runs after the last host op of a task succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Stop,
}

/// Host ops still to issue for a running task.
enum Next {
    Ops(VecDeque<Request>),
    Pattern {
        block: Vec<u8>,
        next: u64,
        end: u64,
        chunk: u64,
    },
}

struct Run {
    next: Next,
    transferred: u64,
    count_bytes: bool,
    /// The caller's buffer when it does not travel in the request.
    keep: Option<DataBuf>,
    /// Copy read data from the request buffer into `keep`.
    copy_back: bool,
    after: After,
    /// The command's starting LBA, reported in the INFORMATION field of a
    /// MEDIUM ERROR when its host I/O fails ([`host_sense`]); `None` for
    /// commands without one LBA (SYNCHRONIZE CACHE, UNMAP, START STOP UNIT).
    lba: Option<u64>,
}

impl Run {
    fn new(count_bytes: bool) -> Run {
        Run {
            next: Next::Ops(VecDeque::new()),
            transferred: 0,
            count_bytes,
            keep: None,
            copy_back: false,
            after: After::Nothing,
            lba: None,
        }
    }
}

/// `len` bytes of `block` repeated.
fn pattern(block: &[u8], len: usize) -> AlignedBuf {
    let mut b = AlignedBuf::new(len);
    for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
        *x = block[i % block.len()];
    }
    b
}

/// Bytes of a CDB kept with a waiting task: more than the longest command
/// of [`cdb::COMMANDS`] (16), so keeping only this prefix of a longer CDB
/// changes nothing (trailing bytes are ignored).
const KEPT_CDB: usize = 32;

/// A task not yet started: its CDB (the first [`KEPT_CDB`] bytes, inline)
/// and buffer.
struct Queued {
    cdb: [u8; KEPT_CDB],
    cdb_len: u8,
    buf: DataBuf,
}

impl Queued {
    fn new(cdb: &[u8], buf: DataBuf) -> Queued {
        let n = cdb.len().min(KEPT_CDB);
        let mut c = [0u8; KEPT_CDB];
        c[..n].copy_from_slice(&cdb[..n]);
        Queued {
            cdb: c,
            cdb_len: n as u8,
            buf,
        }
    }
}

enum State {
    Waiting(Queued),
    Running(Run),
}

struct Entry {
    token: u64,
    nexus: NexusId,
    tag: u64,
    attr: TaskAttr,
    state: State,
    abort: Option<Outcome>,
}

struct LuState {
    disk: Arc<Disk>,
    d_sense: bool,
    stopped: bool,
    prevent: u8,
    blocks: u64,
    nexuses: Vec<(NexusId, VecDeque<Asc>)>,
    tasks: VecDeque<Entry>,
    luns: Vec<u16>,
    stash: Vec<Done>,
    next_token: u64,
}

/// One SCSI disk logical unit. See the module docs.
pub struct ScsiDisk {
    cfg: ScsiDiskConfig,
    facts: InquiryFacts,
    default_wce: bool,
    st: Mutex<LuState>,
}

impl std::fmt::Debug for ScsiDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScsiDisk")
            .field("serial", &self.cfg.serial)
            .finish()
    }
}

/// Sense for a host error on `op` (the sense table in `docs/scsi.md`).
///
/// `lba` is the first logical block the failed command addressed: hostio
/// reports no partial offset, so the command's starting LBA is the first
/// block known to have failed. A MEDIUM ERROR carries it in the
/// INFORMATION field (SBC-4: the LBA of the first failed block, VALID set);
/// [`Sense::fixed`] leaves VALID clear when it does not fit 32 bits, the
/// descriptor format carries all 64. DATA PROTECT conditions carry none.
pub fn host_sense(op: Op, e: IoError, lba: Option<u64>) -> Sense {
    if e.is_nospace() {
        return Sense::new(SenseKey::DataProtect, Asc::SPACE_ALLOCATION_FAILED);
    }
    if e.errno == libc::EROFS {
        return Sense::new(SenseKey::DataProtect, Asc::WRITE_PROTECTED);
    }
    let asc = match op {
        Op::Read => Asc::UNRECOVERED_READ_ERROR,
        _ => Asc::WRITE_ERROR,
    };
    Sense {
        info: lba,
        ..Sense::new(SenseKey::MediumError, asc)
    }
}

fn request_sense(e: &RequestError) -> Sense {
    match e {
        RequestError::OutOfRange { .. } | RequestError::Overflow => Sense::lba_out_of_range(),
        RequestError::ReadOnly => Sense::new(SenseKey::DataProtect, Asc::WRITE_PROTECTED),
        _ => Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE),
    }
}

fn fnv(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

enum Step {
    Done(Outcome, DataBuf),
    Io(Request, Run),
}

fn be16(c: &[u8], i: usize) -> u64 {
    u64::from(u16::from_be_bytes([c[i], c[i + 1]]))
}

fn be32(c: &[u8], i: usize) -> u64 {
    u64::from(u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]))
}

impl ScsiDisk {
    /// A logical unit over `disk`. Every nexus starts with a POWER ON,
    /// RESET unit attention.
    pub fn new(disk: Arc<Disk>, cfg: ScsiDiskConfig) -> ScsiDisk {
        let lbs = disk.logical_block_size().max(1);
        let blocks = disk.size() / u64::from(lbs);
        let caps = disk.caps();
        let pbs = caps.physical_block_size.max(lbs);
        let phys_exp = if pbs.is_power_of_two() && lbs.is_power_of_two() {
            (pbs / lbs).trailing_zeros() as u8
        } else {
            0
        };
        let unmap = disk.policy().discard == vmstor_hostio::DiscardMode::Unmap && caps.discard;
        let serial: Vec<u8> = cfg
            .serial
            .bytes()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        let naa = cfg
            .naa
            .unwrap_or_else(|| (0x3 << 60) | (fnv(&serial) & 0x0fff_ffff_ffff_ffff));
        let blk = |bytes: u64| (bytes / u64::from(lbs)).min(u64::from(u32::MAX)) as u32;
        let facts = InquiryFacts {
            vendor: inquiry::ascii(&cfg.vendor),
            product: inquiry::ascii(&cfg.product),
            revision: inquiry::ascii(&cfg.revision),
            serial,
            naa,
            blocks,
            block_len: lbs,
            phys_exp,
            max_transfer: blk(u64::from(cfg.max_transfer_bytes)).max(1),
            unmap,
            lbprz: unmap && caps.kind == vmstor_hostio::BackingKind::File,
            max_unmap_blocks: blk(cfg.max_unmap_bytes),
            max_unmap_descriptors: cfg.max_unmap_descriptors,
            max_write_same: (cfg.max_write_same_bytes / u64::from(lbs)).max(1),
            rotation_rate: match caps.rotational.get() {
                Some(false) => 1,
                _ => 0,
            },
        };
        let default_wce = disk.policy().write_cache;
        ScsiDisk {
            cfg,
            facts,
            default_wce,
            st: Mutex::new(LuState {
                disk,
                d_sense: false,
                stopped: false,
                prevent: 0,
                blocks,
                nexuses: Vec::new(),
                tasks: VecDeque::new(),
                luns: vec![0],
                stash: Vec::new(),
                next_token: 1 << 63,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LuState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The disk.
    pub fn disk(&self) -> Arc<Disk> {
        self.lock().disk.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &ScsiDiskConfig {
        &self.cfg
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.facts.block_len
    }

    /// Capacity in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.lock().blocks
    }

    /// Sets the LUN list REPORT LUNS returns (the transport's view of the
    /// target). Raises REPORTED LUNS DATA HAS CHANGED when it changes.
    pub fn set_report_luns(&self, mut luns: Vec<u16>) {
        luns.sort_unstable();
        luns.dedup();
        let mut st = self.lock();
        if st.luns != luns {
            st.luns = luns;
            if !st.nexuses.is_empty() {
                st.raise(Asc::REPORTED_LUNS_DATA_CHANGED, None);
            }
        }
    }

    /// Establishes a unit attention for every nexus (e.g. a VMM event).
    pub fn raise_unit_attention(&self, asc: Asc) {
        self.lock().raise(asc, None);
    }

    /// Replaces the disk (e.g. after the image was resized). Allowed only
    /// with an empty task set; returns `false` otherwise. A different
    /// capacity raises CAPACITY DATA HAS CHANGED.
    pub fn replace_disk(&self, disk: Arc<Disk>) -> bool {
        let mut st = self.lock();
        if !st.tasks.is_empty() || disk.logical_block_size() != self.facts.block_len {
            return false;
        }
        let blocks = disk.size() / u64::from(self.facts.block_len);
        st.disk = disk;
        if blocks != st.blocks {
            st.blocks = blocks;
            st.raise(Asc::CAPACITY_DATA_CHANGED, None);
        }
        true
    }

    /// Number of tasks in the task set (waiting, running or held).
    pub fn tasks(&self) -> usize {
        self.lock().tasks.len()
    }

    /// The data transfer `cdb` implies on this unit (what a transport
    /// checks its buffers against before submitting).
    pub fn transfer(&self, cdb: &[u8]) -> Transfer {
        match cdb::lookup(cdb) {
            Ok(d) if cdb.len() >= d.cdb_len() && check_usage(d, cdb).is_none() => {
                let n = transfer_len(d, cdb, self.facts.block_len);
                match (d.data, n) {
                    (_, 0) | (DataPhase::None, _) => Transfer::None,
                    (DataPhase::In, n) => Transfer::In(n),
                    (DataPhase::Out, n) => Transfer::Out(n),
                }
            }
            _ => Transfer::None,
        }
    }

    /// Queues `task` and runs whatever can run; returns every task that
    /// finished (this one or others).
    pub fn submit(&self, task: Task) -> Vec<Done> {
        let mut out = Vec::new();
        self.submit_ref(
            TaskRef {
                token: task.token,
                nexus: task.nexus,
                tag: task.tag,
                attr: task.attr,
                cdb: &task.cdb,
                buf: task.buf,
            },
            &mut out,
        );
        out
    }

    /// [`ScsiDisk::submit`] for a transport's hot path: the CDB is borrowed
    /// (copied into the task set) and the finished tasks are appended to
    /// `out`, so a caller that reuses `out` allocates nothing here.
    pub fn submit_ref(&self, task: TaskRef<'_>, out: &mut Vec<Done>) {
        let mut st = self.lock();
        out.append(&mut st.stash);
        if st.tasks.len() >= self.cfg.max_tasks || st.tasks.iter().any(|e| e.token == task.token) {
            out.push(Done {
                token: task.token,
                outcome: Outcome::Complete(ScsiResult {
                    status: Status::TaskSetFull,
                    sense: Vec::new(),
                    transferred: 0,
                }),
                buf: task.buf,
            });
            return;
        }
        st.tasks.push_back(Entry {
            token: task.token,
            nexus: task.nexus,
            tag: task.tag,
            attr: task.attr,
            state: State::Waiting(Queued::new(task.cdb, task.buf)),
            abort: None,
        });
        self.pump(&mut st, out);
    }

    /// Collects finished tasks without blocking.
    pub fn poll(&self) -> Vec<Done> {
        let mut st = self.lock();
        let mut out = std::mem::take(&mut st.stash);
        self.pump(&mut st, &mut out);
        out
    }

    /// Blocks until some host I/O completes (or none is in flight), then
    /// collects finished tasks.
    pub fn wait(&self) -> Vec<Done> {
        let disk = self.disk();
        let cs = disk.wait();
        let mut st = self.lock();
        let mut out = std::mem::take(&mut st.stash);
        for c in cs {
            self.on_completion(&mut st, c, &mut out);
        }
        self.pump(&mut st, &mut out);
        out
    }

    /// Runs one SIMPLE command to completion on this thread: the
    /// synchronous convenience for tests and simple transports. Returns
    /// `None` when the task is held by the disk's `stop` error policy (it
    /// stays in the task set; its [`Done`] comes from a later `poll`).
    /// Other tasks finishing meanwhile are kept for the next `poll`.
    pub fn execute(&self, nexus: NexusId, cdb: &[u8], buf: DataBuf) -> Option<Done> {
        let token = {
            let mut st = self.lock();
            st.next_token = st.next_token.wrapping_add(1) | (1 << 63);
            st.next_token
        };
        let mut got = Vec::new();
        self.submit_ref(
            TaskRef {
                token,
                nexus,
                tag: token,
                attr: TaskAttr::Simple,
                cdb,
                buf,
            },
            &mut got,
        );
        loop {
            if let Some(i) = got.iter().position(|d| d.token == token) {
                let d = got.swap_remove(i);
                self.lock().stash.extend(got);
                return Some(d);
            }
            self.lock().stash.extend(got);
            let disk = self.disk();
            let cs = disk.wait();
            let mut st = self.lock();
            let mut out = std::mem::take(&mut st.stash);
            let empty = cs.is_empty();
            for c in cs {
                self.on_completion(&mut st, c, &mut out);
            }
            self.pump(&mut st, &mut out);
            if empty && !out.iter().any(|d| d.token == token) {
                // Nothing was in flight: the task is held (or waits behind
                // a held task).
                st.stash.extend(out);
                return None;
            }
            got = out;
        }
    }

    /// Runs a task management function for `nexus`. Tasks it ends are
    /// returned (before the TMF completes, as the transport must report
    /// them first).
    pub fn task_management(&self, nexus: NexusId, tmf: Tmf) -> (TmfResponse, Vec<Done>) {
        let mut st = self.lock();
        let mut out = std::mem::take(&mut st.stash);
        let resp = match tmf {
            Tmf::QueryTask { tag } => {
                if st.tasks.iter().any(|e| e.nexus == nexus && e.tag == tag) {
                    TmfResponse::Succeeded
                } else {
                    TmfResponse::Complete
                }
            }
            Tmf::QueryTaskSet => {
                if st.tasks.iter().any(|e| e.nexus == nexus) {
                    TmfResponse::Succeeded
                } else {
                    TmfResponse::Complete
                }
            }
            Tmf::ClearAca => TmfResponse::Rejected,
            Tmf::AbortTask { tag } => self.abort(
                &mut st,
                &mut out,
                |e| e.nexus == nexus && e.tag == tag,
                Outcome::Aborted,
            ),
            Tmf::AbortTaskSet => {
                self.abort(&mut st, &mut out, |e| e.nexus == nexus, Outcome::Aborted)
            }
            Tmf::ClearTaskSet => {
                let others: Vec<NexusId> = st
                    .tasks
                    .iter()
                    .filter(|e| e.nexus != nexus)
                    .map(|e| e.nexus)
                    .collect();
                let r = self.abort(&mut st, &mut out, |_| true, Outcome::Aborted);
                for n in others {
                    st.push_ua(n, Asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR);
                }
                r
            }
            Tmf::LogicalUnitReset => {
                let r = self.abort(&mut st, &mut out, |_| true, Outcome::Reset);
                st.reset_state();
                st.raise(Asc::BUS_DEVICE_RESET, None);
                r
            }
            Tmf::ItNexusReset => {
                let r = self.abort(&mut st, &mut out, |e| e.nexus == nexus, Outcome::Reset);
                st.push_ua(nexus, Asc::IT_NEXUS_LOSS);
                r
            }
        };
        self.pump(&mut st, &mut out);
        (resp, out)
    }

    /// Device reset (e.g. virtio reset): every task ends with
    /// [`Outcome::Reset`], held requests are dropped, the unit returns to
    /// the started state and every nexus gets POWER ON, RESET. Mode
    /// parameters (WCE, D_SENSE) are kept, as QEMU's scsi-disk does: a guest
    /// that turned its cache off must not find it silently back on.
    pub fn reset(&self) -> Vec<Done> {
        let mut st = self.lock();
        let mut out = std::mem::take(&mut st.stash);
        self.abort(&mut st, &mut out, |_| true, Outcome::Reset);
        st.reset_state();
        st.raise(Asc::POWER_ON_RESET, None);
        out
    }

    /// Ends the tasks `sel` picks. Waiting ones end at once; running ones
    /// end when their host request completes (drained here); held ones are
    /// dropped from the disk if every held request belongs to them, else
    /// the function is rejected (they end with `kind` when resumed).
    fn abort(
        &self,
        st: &mut LuState,
        out: &mut Vec<Done>,
        sel: impl Fn(&Entry) -> bool,
        kind: Outcome,
    ) -> TmfResponse {
        let mut i = 0;
        while i < st.tasks.len() {
            if !sel(&st.tasks[i]) {
                i += 1;
                continue;
            }
            if matches!(st.tasks[i].state, State::Waiting(_)) {
                let e = st.tasks.remove(i).expect("index checked");
                if let State::Waiting(t) = e.state {
                    out.push(Done {
                        token: e.token,
                        outcome: kind.clone(),
                        buf: t.buf,
                    });
                }
            } else {
                st.tasks[i].abort = Some(kind.clone());
                i += 1;
            }
        }
        // Let in-flight host requests finish; aborted tasks end as such.
        // (hostio cannot cancel a request already handed to the host.)
        let running = |st: &LuState| {
            st.tasks
                .iter()
                .any(|e| e.abort.is_some() && matches!(e.state, State::Running(_)))
        };
        while running(st) {
            let cs = st.disk.drain();
            if cs.is_empty() {
                break;
            }
            for c in cs {
                self.on_completion(st, c, out);
            }
        }
        let held: Vec<u64> = st
            .tasks
            .iter()
            .filter(|e| e.abort.is_some() && matches!(e.state, State::Running(_)))
            .map(|e| e.token)
            .collect();
        if held.is_empty() {
            return TmfResponse::Complete;
        }
        if st.disk.held_count() > held.len() {
            return TmfResponse::Rejected;
        }
        st.disk.cancel_held();
        for token in held {
            if let Some(pos) = st.tasks.iter().position(|e| e.token == token) {
                let e = st.tasks.remove(pos).expect("index checked");
                let buf = match e.state {
                    State::Running(r) => r.keep.unwrap_or_default(),
                    State::Waiting(t) => t.buf,
                };
                out.push(Done {
                    token,
                    outcome: e.abort.unwrap_or(Outcome::Aborted),
                    buf,
                });
            }
        }
        TmfResponse::Complete
    }

    fn pump(&self, st: &mut LuState, out: &mut Vec<Done>) {
        loop {
            let mut progress = false;
            for c in st.disk.poll() {
                progress = true;
                self.on_completion(st, c, out);
            }
            progress |= self.start_ready(st, out);
            if !progress {
                break;
            }
        }
    }

    fn blocked(st: &LuState, i: usize) -> bool {
        sam_blocked(st.tasks.iter().map(|e| e.attr), i)
    }

    fn start_ready(&self, st: &mut LuState, out: &mut Vec<Done>) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < st.tasks.len() {
            if !matches!(st.tasks[i].state, State::Waiting(_)) || Self::blocked(st, i) {
                i += 1;
                continue;
            }
            any = true;
            let placeholder = State::Running(Run::new(false));
            let State::Waiting(task) = std::mem::replace(&mut st.tasks[i].state, placeholder)
            else {
                unreachable!("checked above")
            };
            let (token, nexus) = (st.tasks[i].token, st.tasks[i].nexus);
            match self.run(st, token, nexus, task) {
                Step::Done(outcome, buf) => {
                    st.tasks.remove(i);
                    out.push(Done {
                        token,
                        outcome,
                        buf,
                    });
                }
                Step::Io(req, run) => {
                    st.tasks[i].state = State::Running(run);
                    if let Err(e) = st.disk.submit(req) {
                        let s = request_sense(&e);
                        self.finish_sense(st, token, s, out);
                        continue;
                    }
                    i += 1;
                }
            }
        }
        any
    }

    fn finish(
        &self,
        st: &mut LuState,
        token: u64,
        outcome: Outcome,
        buf: Option<DataBuf>,
        out: &mut Vec<Done>,
    ) {
        if let Some(pos) = st.tasks.iter().position(|e| e.token == token) {
            let e = st.tasks.remove(pos).expect("index checked");
            let keep = match e.state {
                State::Running(r) => r.keep,
                State::Waiting(t) => Some(t.buf),
            };
            let outcome = e.abort.unwrap_or(outcome);
            out.push(Done {
                token,
                outcome,
                buf: keep.or(buf).unwrap_or_default(),
            });
        }
    }

    fn finish_sense(&self, st: &mut LuState, token: u64, s: Sense, out: &mut Vec<Done>) {
        let r = ScsiResult {
            status: Status::CheckCondition,
            sense: s.to_bytes(st.d_sense),
            transferred: 0,
        };
        self.finish(st, token, Outcome::Complete(r), None, out);
    }

    fn on_completion(&self, st: &mut LuState, c: Completion, out: &mut Vec<Done>) {
        let Some(pos) = st.tasks.iter().position(|e| e.token == c.tag) else {
            return;
        };
        let aborted = st.tasks[pos].abort.is_some();
        let State::Running(run) = &mut st.tasks[pos].state else {
            return;
        };
        let n = match c.result {
            Err(e) => {
                let transferred = run.transferred;
                let s = host_sense(c.op, e, run.lba);
                let r = ScsiResult {
                    status: Status::CheckCondition,
                    sense: s.to_bytes(st.d_sense),
                    transferred,
                };
                self.finish(st, c.tag, Outcome::Complete(r), Some(c.buf), out);
                return;
            }
            Ok(n) => n,
        };
        if run.count_bytes {
            run.transferred += n;
        }
        if run.copy_back {
            if let (Some(keep), DataBuf::Owned(b)) = (&mut run.keep, &c.buf) {
                let _ = write_prefix(keep, b.as_slice());
            }
        }
        let next = if aborted {
            None
        } else {
            match &mut run.next {
                Next::Ops(q) => q.pop_front(),
                Next::Pattern {
                    block,
                    next,
                    end,
                    chunk,
                } => (*next < *end).then(|| {
                    let len = (*end - *next).min(*chunk);
                    let b = pattern(block, len as usize);
                    let r = Request::write(*next, DataBuf::Owned(b), false, c.tag);
                    *next += len;
                    r
                }),
            }
        };
        match next {
            Some(req) => {
                if let Err(e) = st.disk.submit(req) {
                    self.finish_sense(st, c.tag, request_sense(&e), out);
                }
            }
            None => {
                let r = ScsiResult::good(run.transferred);
                if run.after == After::Stop && !aborted {
                    st.stopped = true;
                }
                self.finish(st, c.tag, Outcome::Complete(r), Some(c.buf), out);
            }
        }
    }

    /// Decodes and runs one enabled task.
    fn run(&self, st: &mut LuState, token: u64, nexus: NexusId, task: Queued) -> Step {
        let Queued {
            cdb,
            cdb_len,
            mut buf,
        } = task;
        let cdb = &cdb[..usize::from(cdb_len)];
        st.nexus(nexus);
        let fail = |st: &LuState, s: Sense, buf: DataBuf| {
            Step::Done(
                Outcome::Complete(ScsiResult {
                    status: Status::CheckCondition,
                    sense: s.to_bytes(st.d_sense),
                    transferred: 0,
                }),
                buf,
            )
        };
        let d = match cdb::lookup(cdb) {
            Ok(d) if cdb.len() >= d.cdb_len() => d,
            Ok(_) | Err(Lookup::Short) => {
                return fail(st, Sense::invalid_opcode(0), buf);
            }
            Err(Lookup::InvalidOpcode { byte }) => {
                if let Some(ua) = st.take_ua(nexus) {
                    return fail(st, Sense::new(SenseKey::UnitAttention, ua), buf);
                }
                return fail(st, Sense::invalid_opcode(byte), buf);
            }
        };
        let cdb = &cdb[..d.cdb_len()];
        if let Some((byte, bit)) = check_usage(d, cdb) {
            return fail(st, Sense::invalid_cdb_field(byte, Some(bit)), buf);
        }
        let need = transfer_len(d, cdb, self.facts.block_len);
        if buf.len() < need {
            return Step::Done(Outcome::Overrun, buf);
        }
        let exempt = matches!(
            d.handler,
            Handler::Inquiry | Handler::ReportLuns | Handler::RequestSense
        );
        if !exempt {
            if let Some(ua) = st.take_ua(nexus) {
                return fail(st, Sense::new(SenseKey::UnitAttention, ua), buf);
            }
        }
        let media = matches!(
            d.handler,
            Handler::TestUnitReady
                | Handler::Read(_)
                | Handler::Write(_)
                | Handler::WriteAndVerify(_)
                | Handler::Verify(_)
                | Handler::SyncCache(_)
                | Handler::WriteSame(_)
                | Handler::Unmap
        );
        if media && st.stopped {
            return fail(
                st,
                Sense::new(SenseKey::NotReady, Asc::NOT_READY_INIT_REQUIRED),
                buf,
            );
        }
        match self.dispatch(st, d, cdb, nexus, token, &mut buf) {
            Ok(Action::DataIn(data, alloc)) => {
                let n = data.len().min(alloc as usize);
                match write_prefix(&mut buf, &data[..n]) {
                    Ok(w) => Step::Done(Outcome::Complete(ScsiResult::good(w as u64)), buf),
                    Err(()) => fail(
                        st,
                        Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE),
                        buf,
                    ),
                }
            }
            Ok(Action::Good(n)) => Step::Done(Outcome::Complete(ScsiResult::good(n)), buf),
            Ok(Action::Io(req, mut run)) => {
                if run.keep.is_none() && matches!(req.buf, DataBuf::None) {
                    run.keep = Some(buf);
                }
                Step::Io(req, run)
            }
            Err(s) => fail(st, s, buf),
        }
    }

    fn range(&self, st: &LuState, lba: u64, n: u64) -> Result<(), Sense> {
        match lba.checked_add(n) {
            Some(end) if end <= st.blocks => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    fn writable(&self, st: &LuState) -> Result<(), Sense> {
        if st.disk.read_only() {
            Err(Sense::new(SenseKey::DataProtect, Asc::WRITE_PROTECTED))
        } else {
            Ok(())
        }
    }

    fn medium(&self, st: &LuState) -> MediumFacts {
        MediumFacts {
            blocks: st.blocks,
            block_len: self.facts.block_len,
            write_protected: st.disk.read_only(),
        }
    }

    fn dispatch(
        &self,
        st: &mut LuState,
        d: &CommandDesc,
        cdb: &[u8],
        nexus: NexusId,
        token: u64,
        buf: &mut DataBuf,
    ) -> Result<Action, Sense> {
        let lbs = u64::from(self.facts.block_len);
        match d.handler {
            Handler::TestUnitReady => Ok(Action::Good(0)),
            Handler::RequestSense => {
                let desc = cdb[1] & 1 != 0;
                let s = match st.take_ua(nexus) {
                    Some(ua) => Sense::new(SenseKey::UnitAttention, ua),
                    None if st.stopped => {
                        Sense::new(SenseKey::NotReady, Asc::NOT_READY_INIT_REQUIRED)
                    }
                    None => Sense::new(SenseKey::NoSense, Asc::NO_ADDITIONAL_SENSE),
                };
                Ok(Action::DataIn(s.to_bytes(desc), u64::from(cdb[4])))
            }
            Handler::Inquiry => {
                let mut f = self.facts.clone();
                f.blocks = st.blocks;
                Ok(Action::DataIn(inquiry::inquiry(cdb, &f)?, be16(cdb, 3)))
            }
            Handler::ModeSense { ten } => {
                let c = ModeSenseCdb::decode(cdb, ten);
                let cur = st.mode_values();
                let def = ModeValues {
                    wce: self.default_wce,
                    d_sense: false,
                };
                let data = mode::mode_sense(&c, &cur, &def, &self.medium(st))?;
                let alloc = if ten { be16(cdb, 7) } else { u64::from(cdb[4]) };
                Ok(Action::DataIn(data, alloc))
            }
            Handler::ModeSelect { ten } => {
                let len = if ten { be16(cdb, 7) } else { u64::from(cdb[4]) };
                if len > 0 && cdb[1] & 0x10 == 0 {
                    return Err(Sense::invalid_cdb_field(1, Some(4)));
                }
                if cdb[1] & 0x01 != 0 {
                    return Err(Sense::invalid_cdb_field(1, Some(0)));
                }
                if len == 0 {
                    return Ok(Action::Good(0));
                }
                let mut list = vec![0u8; len as usize];
                read_prefix(buf, &mut list).map_err(|()| Sense::param_list_length())?;
                let cur = st.mode_values();
                let sel = mode::mode_select(&list, ten, &cur, &self.medium(st))?;
                st.d_sense = sel.values.d_sense;
                if sel.caching && !sel.values.wce {
                    // The cache goes off: everything acknowledged so far must
                    // be durable before GOOD (hostio flushes inside).
                    st.disk
                        .set_write_cache(false)
                        .map_err(|e| host_sense(Op::Flush, e, None))?;
                } else if sel.values.wce && !cur.wce {
                    let _ = st.disk.set_write_cache(true);
                }
                if sel.values != cur {
                    st.raise(Asc::MODE_PARAMETERS_CHANGED, Some(nexus));
                }
                Ok(Action::Good(len))
            }
            Handler::StartStopUnit => {
                if cdb[4] & 0xf0 != 0 {
                    return Err(Sense::invalid_cdb_field(4, Some(7)));
                }
                if cdb[4] & 0x01 != 0 {
                    st.stopped = false;
                    return Ok(Action::Good(0));
                }
                // Stop: flush first (even with NO_FLUSH=1: a flush is never
                // wrong), then enter the stopped state on success.
                let mut run = Run::new(false);
                run.after = After::Stop;
                Ok(Action::Io(Request::flush(token), run))
            }
            Handler::PreventAllow => {
                if cdb[4] & 0x02 != 0 {
                    return Err(Sense::invalid_cdb_field(4, Some(1)));
                }
                st.prevent = cdb[4] & 1;
                Ok(Action::Good(0))
            }
            Handler::ReadCapacity10 => {
                let last = st.blocks.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut d = last.to_be_bytes().to_vec();
                d.extend_from_slice(&self.facts.block_len.to_be_bytes());
                Ok(Action::DataIn(d, 8))
            }
            Handler::ReadCapacity16 => {
                let mut d = vec![0u8; 32];
                d[..8].copy_from_slice(&st.blocks.saturating_sub(1).to_be_bytes());
                d[8..12].copy_from_slice(&self.facts.block_len.to_be_bytes());
                d[13] = self.facts.phys_exp & 0x0f;
                if self.facts.unmap {
                    d[14] = 0x80 | if self.facts.lbprz { 0x40 } else { 0 };
                }
                Ok(Action::DataIn(d, be32(cdb, 10)))
            }
            Handler::Read(f) | Handler::Write(f) | Handler::WriteAndVerify(f) => {
                let write = !matches!(d.handler, Handler::Read(_));
                let (lba, n) = f.decode(cdb);
                if n > self.facts.max_transfer {
                    return Err(Sense::invalid_cdb_field(f.length_byte(), None));
                }
                if write {
                    self.writable(st)?;
                }
                self.range(st, lba, u64::from(n))?;
                if n == 0 {
                    return Ok(Action::Good(0));
                }
                let len = u64::from(n) * lbs;
                let fua = matches!(d.handler, Handler::WriteAndVerify(_))
                    || (f != LbaFormat::Cdb6 && cdb[1] & 0x08 != 0);
                let owned = std::mem::take(buf);
                let Some((rb, keep)) = io_buffer(owned, len, write) else {
                    return Err(Sense::new(
                        SenseKey::HardwareError,
                        Asc::INTERNAL_TARGET_FAILURE,
                    ));
                };
                let copy_back = !write && matches!(keep, Some(DataBuf::Owned(_)));
                let req = if write {
                    Request::write(lba * lbs, rb, fua, token)
                } else {
                    Request::read(lba * lbs, rb, token)
                };
                let mut run = Run::new(true);
                run.keep = keep;
                run.copy_back = copy_back;
                run.lba = Some(lba);
                Ok(Action::Io(req, run))
            }
            Handler::Verify(f) => {
                let (lba, n) = f.decode(cdb);
                self.range(st, lba, u64::from(n))?;
                Ok(Action::Good(0))
            }
            Handler::SyncCache(f) => {
                let (lba, n) = f.decode(cdb);
                self.range(st, lba, u64::from(n))?;
                Ok(Action::Io(Request::flush(token), Run::new(false)))
            }
            Handler::WriteSame(f) => {
                let (lba, n) = f.decode(cdb);
                let lb = f.length_byte();
                if n == 0 || u64::from(n) > self.facts.max_write_same {
                    return Err(Sense::invalid_cdb_field(lb, None));
                }
                self.writable(st)?;
                self.range(st, lba, u64::from(n))?;
                let unmap = cdb[1] & 0x08 != 0;
                let ndob = f == LbaFormat::Cdb16 && cdb[1] & 0x01 != 0;
                let mut block = vec![0u8; lbs as usize];
                if !ndob {
                    read_prefix(buf, &mut block).map_err(|()| Sense::param_list_length())?;
                }
                let moved = if ndob { 0 } else { lbs };
                let (off, len) = (lba * lbs, u64::from(n) * lbs);
                let mut run = Run::new(false);
                let req = if block.iter().all(|b| *b == 0) {
                    Request::write_zeroes(off, len, unmap, token)
                } else {
                    // A non-zero pattern is written as it is (even with
                    // UNMAP=1, which SBC-4 allows), in bounded chunks.
                    let chunk = (self.cfg.write_same_chunk as u64 / lbs).max(1) * lbs;
                    let first = len.min(chunk);
                    let b = pattern(&block, first as usize);
                    run.next = Next::Pattern {
                        block,
                        next: off + first,
                        end: off + len,
                        chunk,
                    };
                    Request::write(off, DataBuf::Owned(b), false, token)
                };
                run.transferred = moved;
                run.keep = Some(std::mem::take(buf));
                run.lba = Some(lba);
                Ok(Action::Io(req, run))
            }
            Handler::Unmap => {
                self.writable(st)?;
                let plen = be16(cdb, 7) as usize;
                if plen == 0 {
                    return Ok(Action::Good(0));
                }
                if plen < 8 {
                    return Err(Sense::param_list_length());
                }
                let mut p = vec![0u8; plen];
                read_prefix(buf, &mut p).map_err(|()| Sense::param_list_length())?;
                let data_len = be16(&p, 0) as usize;
                let desc_len = be16(&p, 2) as usize;
                if data_len + 2 > plen || desc_len + 8 > plen {
                    return Err(Sense::param_list_length());
                }
                let count = desc_len / 16;
                if count as u64 > u64::from(self.facts.max_unmap_descriptors) {
                    return Err(Sense::invalid_param_field(2, None));
                }
                let mut ops = VecDeque::new();
                let mut total = 0u64;
                for i in 0..count {
                    let at = 8 + 16 * i;
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&p[at..at + 8]);
                    let lba = u64::from_be_bytes(l);
                    let n = be32(&p, at + 8);
                    self.range(st, lba, n)?;
                    total += n;
                    if total > u64::from(self.facts.max_unmap_blocks) {
                        return Err(Sense::invalid_param_field(at + 8, None));
                    }
                    if n > 0 {
                        ops.push_back(Request::discard(lba * lbs, n * lbs, token));
                    }
                }
                let Some(first) = ops.pop_front() else {
                    return Ok(Action::Good(plen as u64));
                };
                let mut run = Run::new(false);
                run.next = Next::Ops(ops);
                run.transferred = plen as u64;
                run.keep = Some(std::mem::take(buf));
                Ok(Action::Io(first, run))
            }
            Handler::ReportLuns => {
                let data = report::report_luns(cdb[2], &st.luns)?;
                if let Some((_, q)) = st.nexuses.iter_mut().find(|(n, _)| *n == nexus) {
                    q.retain(|a| *a != Asc::REPORTED_LUNS_DATA_CHANGED);
                }
                Ok(Action::DataIn(data, be32(cdb, 6)))
            }
            Handler::ReportOpcodes => Ok(Action::DataIn(
                report::supported_opcodes(cdb)?,
                be32(cdb, 6),
            )),
        }
    }
}

enum Action {
    /// Emulated data-in, truncated to the allocation length.
    DataIn(Vec<u8>, u64),
    /// Done, with this many data-out bytes consumed.
    Good(u64),
    /// Host I/O.
    Io(Request, Run),
}

/// Bytes the CDB asks to move (allocation length, parameter list length or
/// blocks × block size).
fn transfer_len(d: &CommandDesc, cdb: &[u8], lbs: u32) -> u64 {
    let lbs = u64::from(lbs);
    match d.handler {
        Handler::Read(f) | Handler::Write(f) | Handler::WriteAndVerify(f) => {
            u64::from(f.decode(cdb).1) * lbs
        }
        Handler::WriteSame(f) => {
            if f == LbaFormat::Cdb16 && cdb[1] & 1 != 0 {
                0
            } else {
                lbs
            }
        }
        Handler::Unmap => be16(cdb, 7),
        Handler::ModeSelect { ten: true } | Handler::ModeSense { ten: true } => be16(cdb, 7),
        Handler::ModeSelect { ten: false } | Handler::ModeSense { ten: false } => u64::from(cdb[4]),
        Handler::RequestSense => u64::from(cdb[4]),
        Handler::Inquiry => be16(cdb, 3),
        Handler::ReadCapacity10 => 8,
        Handler::ReadCapacity16 => be32(cdb, 10),
        Handler::ReportLuns | Handler::ReportOpcodes => be32(cdb, 6),
        Handler::TestUnitReady
        | Handler::StartStopUnit
        | Handler::PreventAllow
        | Handler::Verify(_)
        | Handler::SyncCache(_) => 0,
    }
}

impl LuState {
    fn mode_values(&self) -> ModeValues {
        ModeValues {
            wce: self.disk.write_cache(),
            d_sense: self.d_sense,
        }
    }

    /// The UA queue of `n`, registering a new nexus with POWER ON, RESET.
    fn nexus(&mut self, n: NexusId) -> Option<&mut VecDeque<Asc>> {
        if let Some(i) = self.nexuses.iter().position(|(x, _)| *x == n) {
            return Some(&mut self.nexuses[i].1);
        }
        if self.nexuses.len() >= MAX_NEXUSES {
            return None;
        }
        self.nexuses
            .push((n, VecDeque::from([Asc::POWER_ON_RESET])));
        self.nexuses.last_mut().map(|(_, q)| q)
    }

    fn take_ua(&mut self, n: NexusId) -> Option<Asc> {
        self.nexus(n)?.pop_front()
    }

    fn push_ua(&mut self, n: NexusId, asc: Asc) {
        if let Some(q) = self.nexus(n) {
            push(q, asc);
        }
    }

    /// Establishes `asc` for every known nexus except `except`.
    fn raise(&mut self, asc: Asc, except: Option<NexusId>) {
        for (n, q) in &mut self.nexuses {
            if Some(*n) != except {
                push(q, asc);
            }
        }
    }

    fn reset_state(&mut self) {
        self.stopped = false;
        self.prevent = 0;
    }
}

/// Adds a unit attention: a reset supersedes every other condition
/// (SAM-5 §5.14); duplicates are dropped; the queue is bounded.
fn push(q: &mut VecDeque<Asc>, asc: Asc) {
    if asc.0 == 0x29 {
        q.clear();
        q.push_back(asc);
    } else if !q.contains(&asc) && q.len() < MAX_UAS {
        q.push_back(asc);
    }
}

/// Whether the waiting task at index `i` of a task set (attributes in
/// arrival order) must stay dormant (SAM-5 task attributes):
/// - HEAD OF QUEUE is enabled at once;
/// - ORDERED waits for every older task and every HEAD OF QUEUE task;
/// - SIMPLE (and ACA, handled as SIMPLE) waits for every older ORDERED task
///   and every HEAD OF QUEUE task — also one that arrived after it, so a
///   HEAD OF QUEUE task admitted while a SIMPLE task waited behind an
///   ORDERED one still runs first.
fn sam_blocked(attrs: impl Iterator<Item = TaskAttr>, i: usize) -> bool {
    let mut me = None;
    let (mut older, mut older_ordered, mut head_of_queue) = (false, false, false);
    for (j, a) in attrs.enumerate() {
        if j == i {
            me = Some(a);
            continue;
        }
        head_of_queue |= a == TaskAttr::HeadOfQueue;
        if j < i {
            older = true;
            older_ordered |= a == TaskAttr::Ordered;
        }
    }
    match me {
        None | Some(TaskAttr::HeadOfQueue) => false,
        Some(TaskAttr::Ordered) => older || head_of_queue,
        Some(TaskAttr::Simple | TaskAttr::Aca) => older_ordered || head_of_queue,
    }
}

#[cfg(test)]
mod sam_tests {
    use super::sam_blocked;
    use super::TaskAttr::{self, Aca, HeadOfQueue as Hoq, Ordered, Simple};

    fn blocked(set: &[TaskAttr], i: usize) -> bool {
        sam_blocked(set.iter().copied(), i)
    }

    #[test]
    fn kept_cdb_prefix_holds_every_command() {
        assert!(crate::cdb::COMMANDS
            .iter()
            .all(|d| d.cdb_len() <= super::KEPT_CDB));
    }

    #[test]
    fn task_attribute_rules() {
        // (task set in arrival order, index, dormant?)
        let cases: &[(&[TaskAttr], usize, bool)] = &[
            (&[Simple, Simple], 1, false),
            (&[Ordered, Simple], 1, true),
            (&[Simple, Ordered], 1, true),
            (&[Ordered], 0, false),
            (&[Simple, Ordered, Simple], 2, true),
            (&[Hoq, Simple], 1, true),
            (&[Simple, Hoq], 1, false),
            (&[Ordered, Hoq], 1, false),
            // A HEAD OF QUEUE task that arrived later still goes first.
            (&[Ordered, Simple, Hoq], 1, true),
            (&[Simple, Hoq], 0, true),
            (&[Ordered, Hoq], 0, true),
            (&[Aca, Hoq], 0, true),
            (&[Simple, Simple, Aca], 2, false),
        ];
        for (set, i, want) in cases {
            assert_eq!(blocked(set, *i), *want, "{set:?} task {i}");
        }
    }
}

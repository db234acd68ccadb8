//! The vhost-user-scsi back end: `vmstor-virtio-scsi`'s [`ScsiWorker`] (SCSI
//! disks from `vmstor-scsi`, one per `--lun`) behind rust-vmm's
//! `vhost-user-backend`.
//!
//! [`ScsiService`] is the export: the LUNs' disks, outliving connections.
//! Each connection gets a fresh [`ScsiConn`] with its own worker and fresh
//! logical units over the same disks (a new front end is a power-on: every
//! unit reports POWER ON, RESET once; the write cache lives in the disk and
//! is kept, as SCSI wants).
//!
//! ## Queues and threads
//! Queue 0 is the control queue (task management, asynchronous
//! notification), queue 1 the event queue, 2.. the request queues
//! (virtio 1.2 §5.6.2); each has its own epoll thread. Every LUN's hostio
//! completion eventfd is registered (`EPOLLEXCLUSIVE`) with every thread;
//! whichever wakes reaps ([`ScsiWorker::poll`]) and publishes each finished
//! chain on its own queue. The worker is behind one mutex.
//!
//! ## Features
//! Offered: [`vmstor_virtio_scsi::OFFERED`] (VERSION_1, INDIRECT_DESC,
//! EVENT_IDX, HOTPLUG, CHANGE). QEMU's vhost-user-scsi passes the guest's
//! whole feature set to `SET_FEATURES`, including `VIRTIO_SCSI_F_CHANGE`
//! (its `param_change` property, on by default) whether or not the back
//! end offered it, and the library refuses bits it did not offer — so
//! CHANGE must be offered. QEMU computes the config space itself (no
//! `GET_CONFIG` for vhost-user-scsi); its defaults (`sense_size` 96,
//! `cdb_size` 32, `seg_max` = queue size - 2) are what the worker expects.
//!
//! ## Stopping
//! As for vhost-user-blk (`super::blk`): `GET_VRING_BASE` and shutdown
//! complete every in-flight command on its ring first; commands held by the
//! `stop` error policy (and commands queued behind them) end with
//! `VIRTIO_SCSI_S_RESET` by a logical-unit reset (counted in
//! `held_failed`; Linux retries them). `VHOST_USER_RESET_DEVICE` (a guest
//! reset; offered so QEMU sends it) resets the worker. A disconnect waits
//! for host I/O, publishes nothing and flushes.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{json, Value};
use tracing::{debug, error, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmstor_hostio::Disk;
use vmstor_scsi::{ScsiDisk, ScsiDiskConfig};
use vmstor_virtio_scsi::worker::split_chain;
use vmstor_virtio_scsi::{Finished, ScsiWorker, OFFERED};
use zerocopy::IntoBytes;

use super::counters::{disk_json, disk_line, ExportStats};
use super::vring::{exit_event, io_err, one_queue_per_thread, publish, Mem, Vring, VringTable};

/// The control queue.
const CONTROL_QUEUE: u16 = 0;
/// The event queue.
const EVENT_QUEUE: u16 = 1;
/// Control and event queues come before the request queues.
const FIXED_QUEUES: u16 = 2;
/// Size of one `virtio_scsi_event`.
const EVENT_SIZE: usize = 16;

/// vhost-user protocol features offered: several queues, acknowledged
/// requests, memory-slot messages, and device reset (QEMU then forwards a
/// guest's virtio reset).
pub(crate) fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// One LUN of an export.
pub(crate) struct Lun {
    /// Its disk.
    pub disk: Arc<Disk>,
    /// The image path (for reports).
    pub image: PathBuf,
    /// Its SCSI identity.
    pub config: ScsiDiskConfig,
}

/// One vhost-user-scsi export. See the module docs.
pub(crate) struct ScsiService {
    luns: Vec<Lun>,
    request_queues: u16,
    queue_size: u16,
    stats: ExportStats,
    current: RwLock<Option<ScsiConn>>,
}

impl ScsiService {
    /// An export of `luns` (LUN 0, 1, ... of target 0) with
    /// `request_queues` request queues of at most `queue_size` entries.
    pub(crate) fn new(luns: Vec<Lun>, request_queues: u16, queue_size: u16) -> ScsiService {
        ScsiService {
            luns,
            request_queues: request_queues.max(1),
            queue_size,
            stats: ExportStats::default(),
            current: RwLock::new(None),
        }
    }

    fn num_queues(&self) -> u16 {
        FIXED_QUEUES + self.request_queues
    }

    /// A backend for a new connection over guest memory `mem`.
    pub(crate) fn connect(self: &Arc<Self>, mem: Mem) -> ScsiConn {
        self.stats.connections.fetch_add(1, SeqCst);
        // QEMU advertises seg_max = virtqueue_size - 2: accept whatever the
        // largest queue allows.
        let mut worker = ScsiWorker::new(u32::from(self.queue_size).saturating_sub(2).max(1));
        for (i, l) in self.luns.iter().enumerate() {
            let lu = Arc::new(ScsiDisk::new(l.disk.clone(), l.config.clone()));
            // Indices are below 256 (checked on the command line).
            if !worker.add_lun(0, i as u16, lu) {
                error!(lun = i, "cannot add the LUN");
            }
        }
        let n = usize::from(self.num_queues());
        let conn = ScsiConn(Arc::new(ConnState {
            svc: self.clone(),
            mem,
            worker: Mutex::new(worker),
            vrings: VringTable::new(n),
            broken: (0..n).map(|_| AtomicBool::new(false)).collect(),
            gate: RwLock::new(()),
            closed: AtomicBool::new(false),
            detached: AtomicBool::new(false),
        }));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        conn
    }

    /// Retries held requests on every LUN.
    pub(crate) fn resume_held(&self) -> usize {
        let cur = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _g = cur
            .as_ref()
            .map(|c| c.0.gate.read().unwrap_or_else(|e| e.into_inner()));
        self.luns.iter().map(|l| l.disk.resume_held()).sum()
    }

    /// Counters as JSON.
    pub(crate) fn report(&self) -> Value {
        let mut m = self.stats.json();
        let disks: Vec<Value> = self
            .luns
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut d = disk_json(&l.disk, &l.image);
                if let Value::Object(o) = &mut d {
                    o.insert("lun".into(), json!(i));
                }
                d
            })
            .collect();
        m.insert("disks".into(), Value::Array(disks));
        Value::Object(m)
    }

    /// Counters on one line.
    pub(crate) fn report_line(&self) -> String {
        let mut s = self.stats.line();
        for (i, l) in self.luns.iter().enumerate() {
            s.push_str(&format!(" | lun{i}: {}", disk_line(&l.disk)));
        }
        s
    }
}

/// Per-connection state behind [`ScsiConn`].
pub(crate) struct ConnState {
    svc: Arc<ScsiService>,
    mem: Mem,
    worker: Mutex<ScsiWorker>,
    vrings: VringTable,
    broken: Vec<AtomicBool>,
    /// Queue processing and reaping hold it shared; settling exclusively.
    gate: RwLock<()>,
    closed: AtomicBool,
    detached: AtomicBool,
}

/// The `VhostUserBackend` of one connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ScsiConn(Arc<ConnState>);

impl ConnState {
    fn worker(&self) -> std::sync::MutexGuard<'_, ScsiWorker> {
        self.worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn completion_event(&self) -> u16 {
        self.svc.num_queues() + 1
    }

    fn fail_queue(&self, q: u16, why: &str) {
        error!(
            queue = q,
            "queue stopped until the front end resets it: {why}"
        );
        self.svc.stats.bad_chains.fetch_add(1, SeqCst);
        if let Some(b) = self.broken.get(usize::from(q)) {
            b.store(true, SeqCst);
        }
    }

    /// Publishes finished chains on their queues (unless detached).
    fn publish_all(&self, fin: Vec<Finished>, mem: &GuestMemoryMmap) {
        if fin.is_empty() || self.detached.load(SeqCst) {
            return;
        }
        let mut per_queue: Vec<Vec<(u16, u32)>> = vec![Vec::new(); self.broken.len()];
        for f in fin {
            if let Some(v) = per_queue.get_mut(usize::from(f.queue)) {
                v.push((f.head, f.used_len));
            }
        }
        for (q, used) in per_queue.into_iter().enumerate() {
            if used.is_empty() {
                continue;
            }
            match self.vrings.get(q) {
                Some(v) => {
                    if !publish(&v, mem, &used) {
                        self.fail_queue(q as u16, "used ring not writable");
                    }
                }
                None => warn!(queue = q, "completion for a queue never kicked"),
            }
        }
    }

    fn reap(&self) {
        let mem = self.mem.memory().into_inner();
        let fin = self.worker().poll(&mem);
        self.publish_all(fin, &mem);
    }

    /// Pops and starts every available chain of queue `q`.
    fn process_queue(&self, q: u16, vring: &Vring, event_idx: bool) {
        let mem = self.mem.memory().into_inner();
        loop {
            if event_idx {
                let _ = vring.disable_notification();
            }
            let mut fin = Vec::new();
            let mut fatal = None;
            {
                let mut worker = self.worker();
                let mut st = vring.get_mut();
                let iter = match st.get_queue_mut().iter(mem.clone()) {
                    Ok(it) => it,
                    Err(virtio_queue::Error::QueueNotReady) => return,
                    Err(e) => {
                        drop(st);
                        drop(worker);
                        self.fail_queue(q, &e.to_string());
                        return;
                    }
                };
                for chain in iter {
                    self.svc.stats.chains.fetch_add(1, SeqCst);
                    let r = if q == CONTROL_QUEUE {
                        worker.process_control(q, chain, &mem)
                    } else {
                        worker.process_request(q, chain, &mem)
                    };
                    match r {
                        Ok(f) => fin.extend(f),
                        Err(e) => {
                            fatal = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            self.publish_all(fin, &mem);
            if let Some(why) = fatal {
                self.fail_queue(q, &why);
                return;
            }
            if !event_idx {
                return;
            }
            match vring.enable_notification() {
                Ok(true) => continue,
                _ => return,
            }
        }
    }

    /// Writes queued events into the event queue's buffers.
    fn deliver_events(&self, vring: &Vring) {
        let mem = self.mem.memory().into_inner();
        let mut used = Vec::new();
        let mut worker = self.worker();
        while worker.has_event() {
            let chain = {
                let mut st = vring.get_mut();
                match st.get_queue_mut().pop_descriptor_chain(mem.clone()) {
                    Some(c) => c,
                    None => break,
                }
            };
            let head = chain.head_index();
            let w = match split_chain(chain, &mem) {
                Ok((_, w)) => w,
                Err(e) => {
                    drop(worker);
                    self.fail_queue(EVENT_QUEUE, &e.to_string());
                    return;
                }
            };
            let room: usize = w.iter().map(|(_, l)| *l).sum();
            let mut len = 0;
            if room >= EVENT_SIZE {
                if let Some(ev) = worker.next_event() {
                    let b = ev.as_bytes();
                    let mut done = 0;
                    for (a, l) in w {
                        let n = l.min(EVENT_SIZE - done);
                        let _ = mem.write_slice(&b[done..done + n], a);
                        done += n;
                        if done == EVENT_SIZE {
                            break;
                        }
                    }
                    len = EVENT_SIZE as u32;
                }
            }
            used.push(Finished {
                queue: EVENT_QUEUE,
                head,
                used_len: len,
            });
        }
        drop(worker);
        self.publish_all(used, &mem);
    }

    /// Waits for every command in flight and publishes it (`answer`), then
    /// ends what cannot complete (held by the error policy, or queued
    /// behind a held command) with a logical-unit reset. Caller holds the
    /// gate exclusively.
    fn settle(&self, answer: bool) {
        let mem = self.mem.memory().into_inner();
        let mut fin = Vec::new();
        let mut worker = self.worker();
        while worker.in_flight() > 0 {
            let f = worker.wait(&mem);
            if f.is_empty() {
                break;
            }
            fin.extend(f);
        }
        let stuck = worker.in_flight();
        if stuck > 0 {
            warn!(
                count = stuck,
                "ending held commands with a LUN reset: the queues stop before an operator resumed them (SIGUSR2)"
            );
            self.svc.stats.held_failed.fetch_add(stuck as u64, SeqCst);
            for (t, l) in worker.luns() {
                let Some(lu) = worker.lun(t, l).cloned() else {
                    continue;
                };
                for d in lu.reset() {
                    fin.extend(worker.complete(d, &mem));
                }
            }
        }
        drop(worker);
        if answer {
            self.publish_all(fin, &mem);
        }
    }
}

impl ScsiConn {
    fn listeners(&self) -> Vec<(i32, EventSet, u64)> {
        let id = u64::from(self.0.completion_event());
        self.0
            .svc
            .luns
            .iter()
            .filter_map(|l| l.disk.notify_fd())
            .map(|fd| (fd, EventSet::IN | EventSet::EXCLUSIVE, id))
            .collect()
    }

    fn quiesce(&self, connected: bool) -> Result<(), String> {
        let s = &self.0;
        if !connected {
            s.detached.store(true, SeqCst);
        }
        s.closed.store(true, SeqCst);
        let _g = s.gate.write().unwrap_or_else(|e| e.into_inner());
        s.settle(connected);
        flush_all(&s.svc)
    }
}

fn flush_all(svc: &ScsiService) -> Result<(), String> {
    let mut errs = Vec::new();
    for (i, l) in svc.luns.iter().enumerate() {
        if let Err(e) = l.disk.sync_now() {
            errs.push(format!("lun {i}: {e}"));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

impl VhostUserBackend for ScsiConn {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.0.svc.num_queues())
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.0.svc.queue_size)
    }

    fn features(&self) -> u64 {
        OFFERED | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        debug!(
            features = format_args!("{features:#x}"),
            "features acknowledged"
        );
        self.0.worker().set_features(features & OFFERED);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn reset_device(&self) {
        let s = &self.0;
        let _g = s.gate.write().unwrap_or_else(|e| e.into_inner());
        s.settle(false);
        s.worker().reset();
        for b in &s.broken {
            b.store(false, SeqCst);
        }
        debug!("device reset");
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        one_queue_per_thread(self.num_queues())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        exit_event()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let s = &self.0;
        let _g = s.gate.write().unwrap_or_else(|e| e.into_inner());
        s.settle(true);
        if let Some(b) = s.broken.get(queue_index as usize) {
            b.store(false, SeqCst);
        }
        debug!(queue = queue_index, "queue stopped");
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        let s = &self.0;
        let _g = s.gate.read().unwrap_or_else(|e| e.into_inner());
        if device_event == s.completion_event() {
            s.reap();
            return Ok(());
        }
        let (Some(vring), Ok(q)) = (vrings.first(), u16::try_from(thread_id)) else {
            return Err(io_err(format!("unexpected event {device_event}")));
        };
        s.vrings.record(thread_id, vring);
        if s.closed.load(SeqCst) || s.broken.get(thread_id).is_none_or(|b| b.load(SeqCst)) {
            return Ok(());
        }
        if q == EVENT_QUEUE {
            s.deliver_events(vring);
            return Ok(());
        }
        let event_idx = vring.get_ref().get_queue().event_idx_enabled();
        s.process_queue(q, vring, event_idx);
        Ok(())
    }
}

impl super::daemon::Conn for ScsiConn {
    fn listeners(&self) -> Vec<(i32, EventSet, u64)> {
        ScsiConn::listeners(self)
    }

    fn quiesce(&self, connected: bool) -> Result<(), String> {
        ScsiConn::quiesce(self, connected)
    }

    fn retire(&self) {
        let svc = &self.0.svc;
        let mut cur = svc.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(&c.0, &self.0)) {
            *cur = None;
        }
    }
}

impl super::daemon::Service for ScsiService {
    type Conn = ScsiConn;

    fn connect(self: &Arc<Self>, mem: Mem) -> ScsiConn {
        ScsiService::connect(self, mem)
    }

    fn resume_held(&self) -> usize {
        ScsiService::resume_held(self)
    }

    fn report(&self) -> Value {
        ScsiService::report(self)
    }

    fn report_line(&self) -> String {
        ScsiService::report_line(self)
    }

    fn flush(&self) -> Result<(), String> {
        flush_all(self)
    }
}

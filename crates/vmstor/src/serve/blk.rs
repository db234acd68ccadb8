//! The vhost-user-blk back end: `vmstor-virtio-blk`'s [`BlockWorker`] behind
//! rust-vmm's `vhost-user-backend`.
//!
//! [`BlkService`] is the export: its disk, options and the write-cache
//! state the front end believes in; it outlives connections. Each front-end
//! connection gets a fresh [`BlkConn`] (the `VhostUserBackend`), with its own
//! worker, negotiated features and vring table.
//!
//! ## Request flow
//! A kick on queue `q` wakes the queue's epoll thread, which pops chains
//! under the vring lock and hands each to [`BlockWorker::process_chain`];
//! immediate answers go on the used ring at once. The disk is plugged
//! ([`Disk::plug`]) while a pass pops chains, so the io_uring executor
//! submits that pass's requests with one `io_uring_enter` (a no-op on the
//! thread pool). hostio completions are
//! signalled on the disk's eventfd, registered (`EPOLLEXCLUSIVE`) with every
//! vring thread: whichever wakes reaps them ([`BlockWorker::complete`]) and
//! publishes each on its own queue's used ring.
//!
//! ## Write cache (the `writeback` config byte)
//! QEMU reads the config space once (at realize) and caches it; a guest
//! write to `writeback` is forwarded as `SET_CONFIG` only when it changes
//! QEMU's cached value, and a guest reset does not restore it. So the
//! export keeps `guest_wce` = what the front end shows the guest: it
//! starts at the cache mode's default, changes only on `SET_CONFIG`, and is
//! what `GET_CONFIG` reports, across connections. The disk's write cache is
//! `guest_wce && FLUSH negotiated` (a driver that cannot flush gets
//! write-through). Turning it off flushes before `SET_CONFIG` is answered
//! ([`Disk::set_write_cache`]); if that flush fails the answer is an error
//! and the cache stays off.
//!
//! ## Stopping
//! - `GET_VRING_BASE` ([`VhostUserBackend::stop_vring`]): waits for every
//!   in-flight request and puts it on its used ring, so the returned base is
//!   exact. Requests held by the `stop` error policy cannot survive a
//!   stopped queue: they are failed with IOERR (counted in `held_failed`).
//! - Daemon shutdown: [`BlkConn::quiesce`]`(true)` stops taking requests,
//!   completes in-flight ones on the rings, fails held ones, flushes.
//! - Disconnect: [`BlkConn::quiesce`]`(false)`: the rings belong to nobody
//!   any more; in-flight host I/O is waited for (their data reaches the
//!   image) but nothing is published; held requests are dropped (the guest
//!   never saw them complete); then the disk is flushed.
//!
//! ## Bad chains
//! A chain that cannot carry a status byte has no answer in vhost-user (no
//! `DEVICE_NEEDS_RESET` without the STATUS protocol feature): the queue
//! stops taking requests until the front end stops and restarts it
//! (`GET_VRING_BASE`), and the error is logged and counted.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};
use tracing::{debug, error, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_queue::QueueOwnedT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmstor_hostio::{Completion, DataBuf, Disk, IoError, Op};
use vmstor_virtio_blk::config::build_config;
use vmstor_virtio_blk::features::offered_features;
use vmstor_virtio_blk::spec::VirtioBlkConfig;
use vmstor_virtio_blk::{BlkOptions, BlkStatus, BlockWorker, Features, Processed, Reject};
use zerocopy::IntoBytes;

use super::counters::{disk_json, disk_line, ExportStats};
use super::vring::{exit_event, io_err, one_queue_per_thread, publish, Mem, Vring, VringTable};

/// vhost-user protocol features offered: the config space (QEMU requires
/// it for vhost-user-blk), several queues, acknowledged requests and
/// memory-slot messages (all handled by `vhost-user-backend`).
pub(crate) fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
}

/// One vhost-user-blk export. See the module docs.
pub(crate) struct BlkService {
    disk: Arc<Disk>,
    image: PathBuf,
    opts: BlkOptions,
    offered: Features,
    /// The `writeback` value the front end shows the guest.
    guest_wce: AtomicBool,
    stats: ExportStats,
    /// Rejects (IOERR, UNSUPP) of finished connections' workers.
    past_rejects: [AtomicU64; 2],
    current: RwLock<Option<BlkConn>>,
}

impl BlkService {
    /// An export of `disk` (the service must be its only submitter).
    pub(crate) fn new(
        disk: Arc<Disk>,
        image: PathBuf,
        opts: BlkOptions,
    ) -> Result<BlkService, String> {
        opts.validate(disk.logical_block_size())
            .map_err(|e| e.to_string())?;
        let offered = offered_features(opts.features, disk.read_only(), opts.num_queues);
        Ok(BlkService {
            guest_wce: AtomicBool::new(disk.write_cache()),
            disk,
            image,
            opts,
            offered,
            stats: ExportStats::default(),
            past_rejects: [AtomicU64::new(0), AtomicU64::new(0)],
            current: RwLock::new(None),
        })
    }

    /// Virtio feature bits offered to the front end.
    pub(crate) fn virtio_features(&self) -> u64 {
        self.offered.bits() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    /// A backend for a new connection over guest memory `mem`.
    pub(crate) fn connect(self: &Arc<Self>, mem: Mem) -> BlkConn {
        self.stats.connections.fetch_add(1, SeqCst);
        let n = usize::from(self.opts.num_queues);
        let conn = BlkConn(Arc::new(ConnState {
            svc: self.clone(),
            mem,
            worker: RwLock::new(BlockWorker::new(
                self.disk.clone(),
                self.opts.limits(&self.disk, Features::empty()),
            )),
            negotiated: RwLock::new(None),
            vrings: VringTable::new(n),
            broken: (0..n).map(|_| AtomicBool::new(false)).collect(),
            gate: RwLock::new(()),
            closed: AtomicBool::new(false),
            detached: AtomicBool::new(false),
        }));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        conn
    }

    /// Retries requests held by the `stop` error policy; their completions
    /// reach the guest through the completion event.
    pub(crate) fn resume_held(&self) -> usize {
        // Not while a connection settles (its drain must see them all).
        let cur = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match cur {
            Some(c) => {
                let _g = c.0.gate.read().unwrap_or_else(|e| e.into_inner());
                self.disk.resume_held()
            }
            None => self.disk.resume_held(),
        }
    }

    fn rejects(&self) -> (u64, u64) {
        let mut r = (
            self.past_rejects[0].load(SeqCst),
            self.past_rejects[1].load(SeqCst),
        );
        if let Some(c) = &*self.current.read().unwrap_or_else(|e| e.into_inner()) {
            let (i, u) = c.0.worker_rejects();
            r.0 += i;
            r.1 += u;
        }
        r
    }

    /// Counters as JSON (see [`super::counters`]).
    pub(crate) fn report(&self) -> Value {
        let mut m = self.stats.json();
        let (ioerr, unsupp) = self.rejects();
        m.insert(
            "status_ioerr".into(),
            json!(self.stats.status_ioerr.load(SeqCst) + ioerr),
        );
        m.insert(
            "status_unsupp".into(),
            json!(self.stats.status_unsupp.load(SeqCst) + unsupp),
        );
        m.insert("disks".into(), json!([disk_json(&self.disk, &self.image)]));
        Value::Object(m)
    }

    /// Counters on one line.
    pub(crate) fn report_line(&self) -> String {
        format!("{} | {}", self.stats.line(), disk_line(&self.disk))
    }

    /// The config space as the front end shows it.
    fn config(&self) -> VirtioBlkConfig {
        let mut c = build_config(&self.opts, &self.disk);
        c.writeback = u8::from(self.guest_wce.load(SeqCst));
        c
    }
}

/// [`Disk::plug`] until dropped ([`Disk::unplug`]), so every early return
/// submits what was batched.
struct Plug<'a>(&'a Disk);

impl<'a> Plug<'a> {
    fn new(disk: &'a Disk) -> Plug<'a> {
        disk.plug();
        Plug(disk)
    }
}

impl Drop for Plug<'_> {
    fn drop(&mut self) {
        self.0.unplug();
    }
}

/// Per-connection state behind [`BlkConn`].
pub(crate) struct ConnState {
    svc: Arc<BlkService>,
    mem: Mem,
    worker: RwLock<BlockWorker>,
    /// Features acknowledged by `SET_FEATURES`, once it came.
    negotiated: RwLock<Option<Features>>,
    vrings: VringTable,
    /// Queues that met a chain they cannot answer.
    broken: Vec<AtomicBool>,
    /// Queue processing holds it shared; stopping takes it exclusively to
    /// wait for processing in progress.
    gate: RwLock<()>,
    /// No more requests are taken.
    closed: AtomicBool,
    /// The connection is gone: the rings must not be touched.
    detached: AtomicBool,
}

/// The `VhostUserBackend` of one connection. Cheap to clone.
#[derive(Clone)]
pub(crate) struct BlkConn(Arc<ConnState>);

impl BlkConn {
    /// The event id of the completion eventfd in the vring threads' epolls
    /// (ids up to the queue count are the library's).
    pub(crate) fn completion_event(&self) -> u16 {
        self.0.svc.opts.num_queues + 1
    }

    /// The fds the vring threads must watch besides the kicks, with their
    /// event ids and epoll flags.
    pub(crate) fn listeners(&self) -> Vec<(i32, EventSet, u64)> {
        self.0
            .svc
            .disk
            .notify_fd()
            .map(|fd| {
                (
                    fd,
                    EventSet::IN | EventSet::EXCLUSIVE,
                    u64::from(self.completion_event()),
                )
            })
            .into_iter()
            .collect()
    }

    /// Stops taking requests and settles everything in flight: with
    /// `connected`, completions go on the used rings and held requests are
    /// failed; without, nothing is published and held requests are
    /// dropped. Then flushes the disk. Idempotent.
    pub(crate) fn quiesce(&self, connected: bool) -> Result<(), IoError> {
        let s = &self.0;
        if !connected {
            s.detached.store(true, SeqCst);
        }
        s.closed.store(true, SeqCst);
        let _g = s.gate.write().unwrap_or_else(|e| e.into_inner());
        s.settle(connected);
        s.svc.disk.sync_now()
    }

    /// Folds this connection's reject counts into the export's history.
    pub(crate) fn retire(&self) {
        let svc = &self.0.svc;
        let mut cur = svc.current.write().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(&c.0, &self.0)) {
            let (i, u) = self.0.worker_rejects();
            svc.past_rejects[0].fetch_add(i, SeqCst);
            svc.past_rejects[1].fetch_add(u, SeqCst);
            *cur = None;
        }
    }
}

impl ConnState {
    fn worker(&self) -> std::sync::RwLockReadGuard<'_, BlockWorker> {
        self.worker.read().unwrap_or_else(|e| e.into_inner())
    }

    fn worker_rejects(&self) -> (u64, u64) {
        let w = self.worker();
        let mut r = (0, 0);
        for reason in Reject::ALL {
            let n = w.rejects(reason);
            match reason.status() {
                BlkStatus::IoErr => r.0 += n,
                BlkStatus::Unsupp => r.1 += n,
                BlkStatus::Ok => {}
            }
        }
        r
    }

    fn negotiated(&self) -> Option<Features> {
        *self.negotiated.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the disk's write cache where the guest's view and the
    /// negotiated features say it must be.
    fn apply_write_cache(&self) -> Result<(), IoError> {
        let flush_ok = self
            .negotiated()
            .is_none_or(|f| f.contains(Features::FLUSH));
        let want = self.svc.guest_wce.load(SeqCst) && flush_ok;
        let disk = &self.svc.disk;
        if want == disk.write_cache() {
            return Ok(());
        }
        let before = disk.counters().fdatasyncs;
        let r = disk.set_write_cache(want);
        info!(
            write_cache = want,
            fdatasyncs = disk.counters().fdatasyncs - before,
            "write cache switched"
        );
        r
    }

    /// Pops and starts every available chain of queue `q`.
    fn process_queue(&self, q: u16, vring: &Vring) {
        let mem = self.mem.memory().into_inner();
        let event_idx = self
            .negotiated()
            .is_some_and(|f| f.contains(Features::EVENT_IDX));
        loop {
            if event_idx {
                let _ = vring.disable_notification();
            }
            let mut done = Vec::new();
            let mut fatal = None;
            {
                let worker = self.worker();
                let mut st = vring.get_mut();
                // One io_uring_enter for every request this pass submits
                // (a no-op on the thread pool). Nothing below waits for
                // host I/O, so nothing waits on what the plug holds back.
                let _plug = Plug::new(&self.svc.disk);
                let iter = match st.get_queue_mut().iter(mem.clone()) {
                    Ok(it) => it,
                    // Stopped under us (GET_VRING_BASE): nothing to do.
                    Err(virtio_queue::Error::QueueNotReady) => return,
                    Err(e) => {
                        self.svc.stats.bad_chains.fetch_add(1, SeqCst);
                        self.fail_queue(q, &e.to_string());
                        return;
                    }
                };
                for chain in iter {
                    let head = chain.head_index();
                    self.svc.stats.chains.fetch_add(1, SeqCst);
                    match worker.process_chain(q, chain, &mem) {
                        Ok(Processed::Done(len)) => done.push((head, len)),
                        Ok(Processed::Pending) => {}
                        Err(e) => {
                            fatal = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
            if !publish(vring, &mem, &done) {
                fatal.get_or_insert_with(|| "used ring not writable".into());
            }
            if let Some(why) = fatal {
                self.svc.stats.bad_chains.fetch_add(1, SeqCst);
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

    fn fail_queue(&self, q: u16, why: &str) {
        error!(
            queue = q,
            "queue stopped until the front end resets it: {why}"
        );
        if let Some(b) = self.broken.get(usize::from(q)) {
            b.store(true, SeqCst);
        }
    }

    /// Takes ready completions and publishes them.
    fn reap(&self) {
        let comps = self.svc.disk.poll();
        self.deliver(comps);
    }

    /// Accounts for hostio completions; publishes finished chains unless
    /// the connection is detached.
    fn deliver(&self, comps: Vec<Completion>) {
        if comps.is_empty() {
            return;
        }
        let mut per_queue: Vec<Vec<(u16, u32)>> = vec![Vec::new(); self.broken.len()];
        {
            let worker = self.worker();
            for c in comps {
                let Some(f) = worker.complete(c) else {
                    continue;
                };
                match f.status {
                    BlkStatus::IoErr => self.svc.stats.status_ioerr.fetch_add(1, SeqCst),
                    BlkStatus::Unsupp => self.svc.stats.status_unsupp.fetch_add(1, SeqCst),
                    BlkStatus::Ok => 0,
                };
                if let Some(v) = per_queue.get_mut(usize::from(f.queue)) {
                    v.push((f.head, f.used_len));
                }
            }
        }
        if self.detached.load(SeqCst) {
            return;
        }
        let mem = self.mem.memory().into_inner();
        for (q, used) in per_queue.into_iter().enumerate() {
            if used.is_empty() {
                continue;
            }
            match self.vrings.get(q) {
                Some(v) => {
                    if !publish(&v, &mem, &used) {
                        self.fail_queue(q as u16, "used ring not writable");
                    }
                }
                None => warn!(queue = q, "completion for a queue never kicked"),
            }
        }
    }

    /// Waits for every in-flight request and accounts for it; then fails
    /// (`answer`) or drops held requests. Caller holds the gate exclusively,
    /// so no other thread takes completions meanwhile and the drain is
    /// complete.
    fn settle(&self, answer: bool) {
        loop {
            let comps = self.svc.disk.drain();
            if comps.is_empty() {
                break;
            }
            self.deliver(comps);
        }
        let held = self.svc.disk.cancel_held();
        if held.is_empty() {
            return;
        }
        if answer {
            warn!(
                count = held.len(),
                "failing held requests with IOERR: the queues stop before an operator resumed them (SIGUSR2)"
            );
            self.svc
                .stats
                .held_failed
                .fetch_add(held.len() as u64, SeqCst);
            let fails = held
                .into_iter()
                .map(|tag| Completion {
                    tag,
                    op: Op::Flush,
                    result: Err(IoError::new(libc::EIO)),
                    buf: DataBuf::None,
                })
                .collect();
            self.deliver(fails);
        } else {
            warn!(
                count = held.len(),
                "dropping held requests of a gone front end"
            );
            self.worker().cancel(&held);
        }
    }
}

impl VhostUserBackend for BlkConn {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.0.svc.opts.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.0.svc.opts.queue_size)
    }

    fn features(&self) -> u64 {
        self.0.svc.virtio_features()
    }

    fn acked_features(&self, features: u64) {
        let s = &self.0;
        let negotiated = Features::from_bits_truncate(features) & s.svc.offered;
        debug!(?negotiated, "features acknowledged");
        *s.negotiated.write().unwrap_or_else(|e| e.into_inner()) = Some(negotiated);
        s.worker
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .set_limits(s.svc.opts.limits(&s.svc.disk, negotiated));
        if let Err(e) = s.apply_write_cache() {
            error!("flush for a driver without FLUSH failed: {e}");
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        protocol_features()
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The handler sets it on every vring; `acked_features` records it.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.0.svc.config();
        let bytes = cfg.as_bytes();
        // The library bounds `size` by the message size; bytes past the
        // structure read as zero.
        (0..size.min(4096))
            .map(|i| {
                usize::try_from(u64::from(offset) + u64::from(i))
                    .ok()
                    .and_then(|o| bytes.get(o))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        let s = &self.0;
        let wb = std::mem::offset_of!(VirtioBlkConfig, writeback) as u64;
        let Some(v) = wb
            .checked_sub(u64::from(offset))
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| buf.get(i))
        else {
            // Only `writeback` is writable; other bytes are ignored.
            return Ok(());
        };
        let on = *v != 0;
        if let Some(f) = s.negotiated() {
            // Turning the cache on needs CONFIG_WCE and FLUSH; turning it off
            // is always honoured (the safe direction).
            if on && !f.contains(Features::CONFIG_WCE | Features::FLUSH) {
                debug!("writeback=1 ignored: CONFIG_WCE or FLUSH not negotiated");
                return Ok(());
            }
        }
        s.svc.guest_wce.store(on, SeqCst);
        s.apply_write_cache().map_err(|e| {
            error!("write-cache flush failed: {e}; the cache stays off");
            io::Error::from_raw_os_error(e.errno)
        })
    }

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        // The same atomic the connection holds; requests in flight keep the
        // mapping they started with.
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
        if device_event == self.completion_event() {
            // Shared with queue processing, exclusive with settling: a
            // settle that drains the disk must see every completion itself.
            let _g = s.gate.read().unwrap_or_else(|e| e.into_inner());
            s.reap();
            return Ok(());
        }
        // One queue per thread: the thread id is the queue index.
        let (Some(vring), Ok(q)) = (vrings.first(), u16::try_from(thread_id)) else {
            return Err(io_err(format!("unexpected event {device_event}")));
        };
        s.vrings.record(thread_id, vring);
        let _g = s.gate.read().unwrap_or_else(|e| e.into_inner());
        if s.closed.load(SeqCst) || s.broken.get(thread_id).is_none_or(|b| b.load(SeqCst)) {
            return Ok(());
        }
        s.process_queue(q, vring);
        Ok(())
    }
}

impl super::daemon::Conn for BlkConn {
    fn listeners(&self) -> Vec<(i32, EventSet, u64)> {
        BlkConn::listeners(self)
    }

    fn quiesce(&self, connected: bool) -> Result<(), String> {
        BlkConn::quiesce(self, connected).map_err(|e| e.to_string())
    }

    fn retire(&self) {
        BlkConn::retire(self)
    }
}

impl super::daemon::Service for BlkService {
    type Conn = BlkConn;

    fn connect(self: &Arc<Self>, mem: Mem) -> BlkConn {
        BlkService::connect(self, mem)
    }

    fn resume_held(&self) -> usize {
        BlkService::resume_held(self)
    }

    fn report(&self) -> Value {
        BlkService::report(self)
    }

    fn report_line(&self) -> String {
        BlkService::report_line(self)
    }

    fn flush(&self) -> Result<(), String> {
        self.disk.sync_now().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
    use vmstor_hostio::{CacheMode, ExecutorKind, HostOp, Policy};
    use vmstor_virtio_blk::testing::mem_disk;

    fn conn(mode: CacheMode) -> (BlkConn, Arc<Disk>) {
        let (disk, _) = mem_disk(1 << 20, Policy::from_mode(mode), ExecutorKind::Inline);
        let svc =
            Arc::new(BlkService::new(disk.clone(), "mem".into(), BlkOptions::default()).unwrap());
        (
            svc.connect(GuestMemoryAtomic::new(GuestMemoryMmap::new())),
            disk,
        )
    }

    const WB: u32 = std::mem::offset_of!(VirtioBlkConfig, writeback) as u32;

    #[test]
    fn config_reads_any_window_without_panicking() {
        let (c, _) = conn(CacheMode::Writeback);
        let full = c.get_config(0, 96);
        assert_eq!(&full[..8], &(2048u64).to_le_bytes(), "capacity in sectors");
        assert_eq!(full[WB as usize], 1);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let offset =
                ((x >> 32) as u32 % 300).wrapping_add(if x & 1 == 0 { u32::MAX - 200 } else { 0 });
            let size = (x & 0x1fff) as u32;
            let got = c.get_config(offset, size);
            assert_eq!(got.len(), size.min(4096) as usize);
            for (i, b) in got.iter().enumerate() {
                let o = u64::from(offset) + i as u64;
                assert_eq!(*b, full.get(o as usize).copied().unwrap_or(0), "offset {o}");
            }
        }
    }

    #[test]
    fn writeback_off_flushes_and_is_remembered_for_the_front_end() {
        let (c, disk) = conn(CacheMode::Writeback);
        c.acked_features((Features::FLUSH | Features::CONFIG_WCE | Features::VERSION_1).bits());
        assert!(disk.write_cache());
        disk.trace().take();
        // A write to a byte other than `writeback` changes nothing.
        c.set_config(0, &[0; 8]).unwrap();
        assert!(disk.write_cache());
        // A write covering `writeback` among other bytes.
        c.set_config(WB - 2, &[9, 9, 0, 9]).unwrap();
        assert!(!disk.write_cache());
        assert_eq!(c.get_config(WB, 1), vec![0]);
        // Nothing was written, so the switch's flush may be elided; never a write.
        assert!(disk
            .trace()
            .take()
            .iter()
            .all(|e| matches!(e.op, HostOp::Fdatasync)));
        c.set_config(WB, &[1]).unwrap();
        assert!(disk.write_cache());
        assert_eq!(c.get_config(WB, 1), vec![1]);
    }

    #[test]
    fn without_flush_the_cache_stays_off_but_the_guest_view_is_kept() {
        let (c, disk) = conn(CacheMode::Writeback);
        c.acked_features(Features::VERSION_1.bits());
        assert!(
            !disk.write_cache(),
            "a driver without FLUSH gets write-through"
        );
        // Turning it on is refused without FLUSH / CONFIG_WCE.
        c.set_config(WB, &[1]).unwrap();
        assert!(!disk.write_cache());
        // A later driver that negotiates FLUSH gets the cache back, as the
        // front end still shows writeback=1.
        c.acked_features((Features::FLUSH | Features::CONFIG_WCE | Features::VERSION_1).bits());
        assert!(disk.write_cache());
    }

    #[test]
    fn writethrough_preset_starts_with_writeback_0() {
        let (c, disk) = conn(CacheMode::Writethrough);
        assert_eq!(c.get_config(WB, 1), vec![0]);
        c.acked_features((Features::FLUSH | Features::CONFIG_WCE | Features::VERSION_1).bits());
        assert!(!disk.write_cache());
        c.set_config(WB, &[1]).unwrap();
        assert!(disk.write_cache(), "the guest may turn the cache on");
    }

    #[test]
    fn unoffered_feature_bits_are_ignored() {
        let (c, _) = conn(CacheMode::Writeback);
        c.acked_features(u64::MAX);
        let n = c.0.negotiated().unwrap();
        assert_eq!(n, n & c.0.svc.offered);
        assert!(c.features() & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0);
        assert!(c
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG));
        assert_eq!(c.queues_per_thread(), vec![1]);
    }
}

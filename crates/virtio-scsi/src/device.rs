//! [`VirtioScsi`]: the transport-facing virtio SCSI host device: feature
//! negotiation, status, config space, queue setup, notifications,
//! interrupts and reset. Request processing is the [`ScsiWorker`]'s.
//!
//! Queues: 0 control, 1 event, 2.. request queues (§5.6.2). Completions
//! of commands that wait for host I/O are collected by
//! [`VirtioScsi::process_completions`] (call it when any unit's
//! `Disk::notify_fd` fires) or [`VirtioScsi::wait_completions`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::Disk;
use vmstor_scsi::{ScsiDisk, ScsiDiskConfig};
use zerocopy::IntoBytes;

use crate::spec::{feature, status as st, VirtioScsiConfig};
use crate::worker::{ChainError, Finished, ScsiWorker};

/// Which interrupt the device raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterruptKind {
    /// Used buffers on this queue.
    Queue(u16),
    /// Configuration change (including `DEVICE_NEEDS_RESET`).
    Config,
}

/// The interrupt callback.
pub type InterruptFn = Arc<dyn Fn(InterruptKind) + Send + Sync>;

/// One queue's driver-programmed setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Queue size (power of two, at most the maximum).
    pub size: u16,
    /// Descriptor table.
    pub desc_table: GuestAddress,
    /// Available ring.
    pub avail_ring: GuestAddress,
    /// Used ring.
    pub used_ring: GuestAddress,
}

/// The driver programmed something invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No such queue.
    #[error("queue {0} does not exist")]
    NoQueue(u16),
    /// Bad size.
    #[error("queue size {0} is invalid")]
    QueueSize(u16),
    /// Misaligned ring.
    #[error("queue ring address is misaligned")]
    Alignment,
    /// Queue setup after DRIVER_OK.
    #[error("queue setup after DRIVER_OK")]
    Running,
}

/// Why the device set `DEVICE_NEEDS_RESET`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// An unanswerable chain.
    #[error("queue {queue}: {err}")]
    Chain {
        /// Queue.
        queue: u16,
        /// What.
        err: ChainError,
    },
    /// A ring could not be accessed or its avail index is bogus.
    #[error("queue {queue}: {what}")]
    Ring {
        /// Queue.
        queue: u16,
        /// What.
        what: String,
    },
}

/// Device options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiOptions {
    /// Request queues (`num_queues`).
    pub num_queues: u16,
    /// Maximum queue size.
    pub queue_size: u16,
    /// `seg_max`.
    pub seg_max: u32,
    /// `max_sectors` (512-byte units).
    pub max_sectors: u32,
    /// `cmd_per_lun`.
    pub cmd_per_lun: u32,
    /// `max_target`.
    pub max_target: u16,
    /// `max_lun`.
    pub max_lun: u32,
}

impl Default for ScsiOptions {
    fn default() -> Self {
        ScsiOptions {
            num_queues: 1,
            queue_size: 256,
            seg_max: 254,
            max_sectors: 0xffff,
            cmd_per_lun: 128,
            max_target: 255,
            max_lun: 16383,
        }
    }
}

/// Features the device offers: VERSION_1, INDIRECT_DESC, EVENT_IDX, HOTPLUG,
/// CHANGE (QEMU's vhost-user-scsi offers CHANGE too). Not INOUT (no
/// bidirectional commands) nor T10_PI.
pub const OFFERED: u64 = feature::VERSION_1
    | feature::INDIRECT_DESC
    | feature::EVENT_IDX
    | feature::HOTPLUG
    | feature::CHANGE;

/// The device. See the module docs.
pub struct VirtioScsi {
    opts: ScsiOptions,
    worker: ScsiWorker,
    driver_features: u64,
    status: u8,
    queues: Vec<Queue>,
    mem: Arc<GuestMemoryMmap>,
    interrupt: Option<InterruptFn>,
    error: Option<DeviceError>,
    /// Finished chains of one `notify` (kept to reuse the allocation).
    finished: Vec<Finished>,
}

impl std::fmt::Debug for VirtioScsi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioScsi")
            .field("opts", &self.opts)
            .field("status", &self.status)
            .field("worker", &self.worker)
            .finish()
    }
}

impl VirtioScsi {
    /// A device with no logical units over guest memory `mem`.
    pub fn new(opts: ScsiOptions, mem: Arc<GuestMemoryMmap>) -> VirtioScsi {
        let n = 2 + usize::from(opts.num_queues.max(1));
        let qs = opts.queue_size.clamp(1, 32768).next_power_of_two();
        VirtioScsi {
            opts,
            worker: ScsiWorker::new(opts.seg_max),
            driver_features: 0,
            status: 0,
            queues: (0..n)
                .map(|_| Queue::new(qs).expect("power-of-two queue size"))
                .collect(),
            mem,
            interrupt: None,
            error: None,
            finished: Vec::new(),
        }
    }

    /// Adds a SCSI disk over `disk` at `target`/`lun` (hot-plug once the
    /// driver runs). Returns the logical unit, or `None` if the address is
    /// taken or beyond `max_target`/`max_lun`.
    pub fn add_disk(
        &mut self,
        target: u8,
        lun: u16,
        disk: Arc<Disk>,
        cfg: ScsiDiskConfig,
    ) -> Option<Arc<ScsiDisk>> {
        if u16::from(target) > self.opts.max_target || u32::from(lun) > self.opts.max_lun {
            return None;
        }
        let lu = Arc::new(ScsiDisk::new(disk, cfg));
        if !self.worker.add_lun(target, lun, lu.clone()) {
            return None;
        }
        self.deliver_events();
        Some(lu)
    }

    /// Hot-unplugs a logical unit (its commands end with
    /// `VIRTIO_SCSI_S_RESET`).
    pub fn remove_disk(&mut self, target: u8, lun: u16) {
        let mem = self.mem.clone();
        let f = self.worker.remove_lun(target, lun, &mem);
        self.put_used(&f);
        self.deliver_events();
    }

    /// Replaces the disk of an idle logical unit (resize); `false` if busy
    /// or absent.
    pub fn resize_disk(&mut self, target: u8, lun: u16, disk: Arc<Disk>) -> bool {
        let ok = self.worker.resize_lun(target, lun, disk);
        self.deliver_events();
        ok
    }

    /// The worker (logical units, in-flight state).
    pub fn worker(&self) -> &ScsiWorker {
        &self.worker
    }

    /// Sets the interrupt callback.
    pub fn set_interrupt(&mut self, f: InterruptFn) {
        self.interrupt = Some(f);
    }

    /// Replaces guest memory (memory hot-plug; before DRIVER_OK).
    pub fn set_memory(&mut self, mem: Arc<GuestMemoryMmap>) {
        self.mem = mem;
    }

    /// Device ID (8).
    pub fn device_id(&self) -> u32 {
        crate::spec::DEVICE_ID
    }

    /// Offered features.
    pub fn device_features(&self) -> u64 {
        OFFERED
    }

    /// Features the driver wrote.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The driver writes its features (before FEATURES_OK).
    pub fn set_driver_features(&mut self, f: u64) {
        if self.status & st::FEATURES_OK == 0 {
            self.driver_features = f;
        }
    }

    /// Negotiated features.
    pub fn negotiated(&self) -> u64 {
        self.driver_features & OFFERED
    }

    /// The status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Number of queues (2 + request queues).
    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// Maximum queue size.
    pub fn queue_max_size(&self) -> u16 {
        self.queues[0].max_size()
    }

    /// Why the device needs a reset, if it does.
    pub fn error(&self) -> Option<&DeviceError> {
        self.error.as_ref()
    }

    fn running(&self) -> bool {
        self.status & st::DRIVER_OK != 0 && self.status & st::DEVICE_NEEDS_RESET == 0
    }

    fn raise(&self, k: InterruptKind) {
        if let Some(f) = &self.interrupt {
            f(k);
        }
    }

    fn fail(&mut self, e: DeviceError) {
        self.error.get_or_insert(e);
        if self.status & st::DEVICE_NEEDS_RESET == 0 {
            self.status |= st::DEVICE_NEEDS_RESET;
            if self.status & st::DRIVER_OK != 0 {
                self.raise(InterruptKind::Config);
            }
        }
    }

    /// The driver writes the status register; 0 resets the device.
    pub fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut new = (value & !st::DEVICE_NEEDS_RESET) | (old & st::DEVICE_NEEDS_RESET);
        if new & st::FEATURES_OK != 0
            && old & st::FEATURES_OK == 0
            && self.driver_features & !OFFERED != 0
        {
            new &= !st::FEATURES_OK;
        }
        self.status = new;
        self.worker.set_features(self.negotiated());
        if new & st::DRIVER_OK != 0 && old & st::DRIVER_OK == 0 {
            let event_idx = self.negotiated() & feature::EVENT_IDX != 0;
            for i in 0..self.queues.len() {
                self.queues[i].set_event_idx(event_idx);
                if self.queues[i].ready() && !self.queues[i].is_valid(&*self.mem) {
                    self.fail(DeviceError::Ring {
                        queue: i as u16,
                        what: "rings lie outside guest memory".into(),
                    });
                }
            }
        }
    }

    /// Programs queue `index` (before DRIVER_OK).
    pub fn set_queue(&mut self, index: u16, cfg: QueueConfig) -> Result<(), TransportError> {
        if self.status & st::DRIVER_OK != 0 {
            return Err(TransportError::Running);
        }
        let q = self
            .queues
            .get_mut(usize::from(index))
            .ok_or(TransportError::NoQueue(index))?;
        q.try_set_size(cfg.size)
            .map_err(|_| TransportError::QueueSize(cfg.size))?;
        q.try_set_desc_table_address(cfg.desc_table)
            .map_err(|_| TransportError::Alignment)?;
        q.try_set_avail_ring_address(cfg.avail_ring)
            .map_err(|_| TransportError::Alignment)?;
        q.try_set_used_ring_address(cfg.used_ring)
            .map_err(|_| TransportError::Alignment)?;
        Ok(())
    }

    /// Marks queue `index` ready (or not).
    pub fn set_queue_ready(&mut self, index: u16, ready: bool) -> Result<(), TransportError> {
        self.queues
            .get_mut(usize::from(index))
            .ok_or(TransportError::NoQueue(index))?
            .set_ready(ready);
        Ok(())
    }

    /// The config structure as the driver sees it.
    pub fn config(&self) -> VirtioScsiConfig {
        let (sense, cdb) = self.worker.sizes();
        VirtioScsiConfig {
            num_queues: u32::from(self.opts.num_queues.max(1)).into(),
            seg_max: self.opts.seg_max.into(),
            max_sectors: self.opts.max_sectors.into(),
            cmd_per_lun: self.opts.cmd_per_lun.into(),
            event_info_size: 16.into(),
            sense_size: sense.into(),
            cdb_size: cdb.into(),
            max_channel: 0.into(),
            max_target: self.opts.max_target.into(),
            max_lun: self.opts.max_lun.into(),
        }
    }

    /// Reads config bytes (any width; bytes past the structure read 0).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.config();
        let bytes = cfg.as_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| bytes.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Writes config bytes: only `sense_size` (offset 20) and `cdb_size`
    /// (offset 24) are writable (§5.6.4); other bytes are ignored.
    pub fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut cfg = self.config();
        let bytes = cfg.as_mut_bytes();
        for (i, v) in data.iter().enumerate() {
            if let Some(o) = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|o| (20..28).contains(o))
            {
                bytes[o] = *v;
            }
        }
        self.worker
            .set_sizes(cfg.sense_size.get(), cfg.cdb_size.get());
    }

    /// Handles a notification of queue `index`. Returns `true` if more
    /// chains became available meanwhile (call again).
    pub fn notify(&mut self, index: u16) -> bool {
        if !self.running()
            || !self
                .queues
                .get(usize::from(index))
                .is_some_and(|q| q.ready())
        {
            return false;
        }
        if index == 1 {
            self.deliver_events();
            return false;
        }
        let mem = self.mem.clone();
        let q = &mut self.queues[usize::from(index)];
        let mut fatal = None;
        if let Err(e) = q.disable_notification(&*mem) {
            fatal = Some(ring_error(index, e));
        }
        let mut finished = std::mem::take(&mut self.finished);
        match q.iter(&*mem) {
            Err(e) => fatal = Some(ring_error(index, e)),
            Ok(it) => {
                let mut broken = false;
                // Every available chain is taken off the ring, as before
                // the first unanswerable one stops processing.
                for chain in it {
                    if broken {
                        continue;
                    }
                    let r = if index == 0 {
                        self.worker
                            .process_control(index, chain, &mem)
                            .map(|f| finished.extend(f))
                    } else {
                        self.worker
                            .process_request_into(index, chain, &mem, &mut finished)
                    };
                    if let Err(err) = r {
                        fatal.get_or_insert(DeviceError::Chain { queue: index, err });
                        broken = true;
                    }
                }
            }
        }
        let more = match self.queues[usize::from(index)].enable_notification(&*mem) {
            Ok(m) => m,
            Err(e) => {
                fatal.get_or_insert(ring_error(index, e));
                false
            }
        };
        self.put_used(&finished);
        finished.clear();
        self.finished = finished;
        if let Some(e) = fatal {
            self.fail(e);
            return false;
        }
        self.process_completions();
        more
    }

    fn put_used(&mut self, fin: &[Finished]) {
        if fin.is_empty() {
            return;
        }
        let mem = self.mem.clone();
        // Queues given used entries, signalled in queue order.
        let mut touched: SmallVec<[u16; 4]> = SmallVec::new();
        let mut fatal = None;
        for f in fin {
            let Some(q) = self.queues.get_mut(usize::from(f.queue)) else {
                continue;
            };
            match q.add_used(&*mem, f.head, f.used_len) {
                Ok(()) => {
                    if !touched.contains(&f.queue) {
                        touched.push(f.queue);
                    }
                }
                Err(e) => {
                    fatal.get_or_insert(ring_error(f.queue, e));
                }
            }
        }
        touched.sort_unstable();
        for i in touched {
            if should_signal(&mut self.queues[usize::from(i)], &mem) {
                self.raise(InterruptKind::Queue(i));
            }
        }
        if let Some(e) = fatal {
            self.fail(e);
        }
    }

    /// Writes queued events into eventq buffers the driver made available.
    pub fn deliver_events(&mut self) {
        if !self.running() || !self.queues[1].ready() {
            return;
        }
        let mem = self.mem.clone();
        let mut fin = Vec::new();
        while self.worker.has_event() {
            let q = &mut self.queues[1];
            let chain = match q.pop_descriptor_chain(&*mem) {
                Some(c) => c,
                None => break,
            };
            let head = chain.head_index();
            let w = match crate::worker::split_chain(chain, &mem) {
                Ok((_, w)) => w,
                Err(err) => {
                    self.fail(DeviceError::Chain { queue: 1, err });
                    return;
                }
            };
            let room: u64 = w.iter().map(|(_, l)| *l as u64).sum();
            let mut used = 0;
            if room >= 16 {
                let ev = self.worker.next_event().expect("has_event");
                let b = ev.as_bytes();
                let mut done = 0;
                for (a, l) in w {
                    let n = l.min(16 - done);
                    let _ = mem.write_slice(&b[done..done + n], a);
                    done += n;
                    if done == 16 {
                        break;
                    }
                }
                used = 16;
            }
            fin.push(Finished {
                queue: 1,
                head,
                used_len: used,
            });
        }
        self.put_used(&fin);
    }

    /// Puts finished commands on their used rings (never blocks). Returns
    /// how many.
    pub fn process_completions(&mut self) -> usize {
        let mem = self.mem.clone();
        let f = self.worker.poll(&mem);
        let n = f.len();
        self.put_used(&f);
        n
    }

    /// Blocks until some host I/O completes (or none is in flight), then
    /// processes completions.
    pub fn wait_completions(&mut self) -> usize {
        let mem = self.mem.clone();
        let f = self.worker.wait(&mem);
        let n = f.len();
        self.put_used(&f);
        n
    }

    /// Resumes requests held by the `stop` error policy on every unit.
    pub fn resume_held(&mut self) -> usize {
        let mut n = 0;
        for (t, l) in self.worker.luns() {
            if let Some(lu) = self.worker.lun(t, l) {
                n += lu.disk().resume_held();
            }
        }
        self.process_completions();
        n
    }

    /// Device reset: in-flight commands end (host I/O is waited for, held
    /// requests are dropped), the queues, status, features, events and the
    /// writable config fields return to their defaults. Each logical unit
    /// gets a POWER ON, RESET unit attention; WCE is kept (SCSI semantics).
    pub fn reset(&mut self) {
        self.worker.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.error = None;
    }
}

/// Interrupt after adding used entries: `used_event` with EVENT_IDX, else
/// unless the driver set VRING_AVAIL_F_NO_INTERRUPT.
fn should_signal(q: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    if q.event_idx_enabled() {
        return q.needs_notification(mem).unwrap_or(true);
    }
    let flags: u16 = mem
        .load(GuestAddress(q.avail_ring()), Ordering::Acquire)
        .map(u16::from_le)
        .unwrap_or(0);
    flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
}

fn ring_error(queue: u16, e: virtio_queue::Error) -> DeviceError {
    DeviceError::Ring {
        queue,
        what: e.to_string(),
    }
}

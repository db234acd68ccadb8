//! [`VirtioBlk`]: the transport-agnostic virtio-blk device.
//!
//! A VMM's transport (virtio-pci, virtio-mmio) forwards to it: feature words,
//! the device status register, config-space accesses, per-queue setup
//! (size, ring addresses, ready), queue notifications, and reset. The device
//! raises interrupts through a callback ([`InterruptKind`]); the transport
//! turns them into MSI-X vectors or ISR bits.
//!
//! ## Event loop contract
//! - [`VirtioBlk::notify`] on a queue kick: pops at most one queue's worth of
//!   chains, submits their host I/O, and returns `true` if more chains were
//!   made available meanwhile (call it again: work per call is bounded).
//! - [`VirtioBlk::process_completions`] when [`VirtioBlk::completion_fd`] is
//!   readable (thread-pool executor), or [`VirtioBlk::wait_completions`] to
//!   block. With the inline executor, `notify` completes everything itself.
//! - [`VirtioBlk::resume_held`] after the VMM fixed the cause of an error the
//!   `stop` policy held.
//!
//! ## Write cache
//! The `writeback` field shows hostio's live write-cache state. A driver
//! that did not accept `FLUSH` gets write-through at `FEATURES_OK` (or
//! `DRIVER_OK` for legacy drivers). Writing `writeback` 1→0 calls
//! [`Disk::set_write_cache`]`(false)`, which flushes every completed write
//! *before* the config write returns (QEMU does not). Writing 1 is ignored
//! unless FLUSH was negotiated (a writeback cache the driver cannot flush
//! would make every write volatile forever). Reset restores the configured
//! default ([`Disk::restore_default_write_cache`]). If one of these flushes
//! fails, acknowledged writes may be lost and the guest cannot be told
//! through a status byte: the device sets `DEVICE_NEEDS_RESET`.
//!
//! ## Errors the guest cannot be answered for
//! A chain without a writable status byte, a looping or over-long chain, a
//! bad head index, an impossible avail index or unusable rings set
//! `DEVICE_NEEDS_RESET` and raise a config interrupt; the device then ignores
//! notifications until reset. Requests already in flight still complete.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use vm_memory::Bytes;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{Disk, IoError};
use zerocopy::IntoBytes;

use crate::config::{build_config, BlkOptions, OptionsError};
use crate::features::{offered_features, Features};
use crate::request::ChainError;
use crate::spec::device_status as st;
use crate::worker::{BlockWorker, Processed};

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
    /// Queue size (power of two, at most the device's maximum).
    pub size: u16,
    /// Descriptor table (16-byte aligned).
    pub desc_table: GuestAddress,
    /// Available ring (2-byte aligned).
    pub avail_ring: GuestAddress,
    /// Used ring (4-byte aligned).
    pub used_ring: GuestAddress,
}

/// A transport error: the driver programmed something invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No such queue.
    #[error("queue {0} does not exist")]
    NoQueue(u16),
    /// Size not a power of two or above the maximum.
    #[error("queue size {0} is invalid")]
    QueueSize(u16),
    /// A ring address breaks its alignment.
    #[error("queue ring address is misaligned")]
    Alignment,
    /// Queue setup after `DRIVER_OK`.
    #[error("queue setup after DRIVER_OK")]
    Running,
}

/// Why the device set `DEVICE_NEEDS_RESET`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// A chain that cannot be answered.
    #[error("queue {queue}: {err}")]
    Chain {
        /// Queue index.
        queue: u16,
        /// What was wrong.
        err: ChainError,
    },
    /// The avail ring index jumped by more than the queue size, or a ring
    /// could not be accessed.
    #[error("queue {queue}: {what}")]
    Ring {
        /// Queue index.
        queue: u16,
        /// What was wrong.
        what: String,
    },
    /// A flush the device owed the guest (write cache turned off) failed.
    #[error("write-cache flush failed: {0}")]
    Flush(IoError),
}

/// The device. See the module docs.
pub struct VirtioBlk {
    disk: Arc<Disk>,
    opts: BlkOptions,
    offered: Features,
    driver_features: u64,
    status: u8,
    queues: Vec<Queue>,
    mem: Arc<GuestMemoryMmap>,
    worker: BlockWorker,
    interrupt: Option<InterruptFn>,
    error: Option<DeviceError>,
    /// Reused between completion batches (no allocation per batch).
    comps: Vec<vmstor_hostio::Completion>,
}

impl std::fmt::Debug for VirtioBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("disk", &self.disk)
            .field("offered", &self.offered)
            .field("driver_features", &self.driver_features)
            .field("status", &self.status)
            .field("error", &self.error)
            .finish()
    }
}

impl VirtioBlk {
    /// A device over `disk` (built by the caller; the device must be its only
    /// submitter) and guest memory `mem`.
    pub fn new(
        disk: Arc<Disk>,
        mem: Arc<GuestMemoryMmap>,
        opts: BlkOptions,
    ) -> Result<VirtioBlk, OptionsError> {
        opts.validate(disk.logical_block_size())?;
        let offered = offered_features(opts.features, disk.read_only(), opts.num_queues);
        let queues = (0..opts.num_queues)
            .map(|_| Queue::new(opts.queue_size))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| OptionsError::Invalid {
                field: "queue_size",
                value: u64::from(opts.queue_size),
                why: "refused by virtio-queue",
            })?;
        let limits = opts.limits(&disk, Features::empty());
        Ok(VirtioBlk {
            worker: BlockWorker::new(disk.clone(), limits),
            disk,
            opts,
            offered,
            driver_features: 0,
            status: 0,
            queues,
            comps: Vec::new(),
            mem,
            interrupt: None,
            error: None,
        })
    }

    /// Sets the interrupt callback.
    pub fn set_interrupt(&mut self, f: InterruptFn) {
        self.interrupt = Some(f);
    }

    /// Replaces guest memory (hot-plug). In-flight requests keep the memory
    /// they started with.
    pub fn set_memory(&mut self, mem: Arc<GuestMemoryMmap>) {
        self.mem = mem;
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The options.
    pub fn options(&self) -> &BlkOptions {
        &self.opts
    }

    /// The request processor (limits, reject counters, in-flight count).
    pub fn worker(&self) -> &BlockWorker {
        &self.worker
    }

    /// The virtio device ID (2 = block).
    pub fn device_id(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK
    }

    /// Feature bits offered.
    pub fn device_features(&self) -> u64 {
        self.offered.bits()
    }

    /// Feature bits the driver wrote.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The negotiated features (driver's, restricted to what was offered).
    pub fn negotiated(&self) -> Features {
        Features::from_bits_truncate(self.driver_features) & self.offered
    }

    /// The driver writes its feature bits. Ignored once `FEATURES_OK` is set
    /// (the spec forbids changing them afterwards).
    pub fn set_driver_features(&mut self, features: u64) {
        if self.status & st::FEATURES_OK == 0 {
            self.driver_features = features;
        }
    }

    /// The device status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Number of request queues.
    pub fn num_queues(&self) -> u16 {
        self.opts.num_queues
    }

    /// Maximum queue size.
    pub fn queue_max_size(&self) -> u16 {
        self.opts.queue_size
    }

    /// Why the device needs a reset, if it does.
    pub fn error(&self) -> Option<&DeviceError> {
        self.error.as_ref()
    }

    /// Whether `DEVICE_NEEDS_RESET` is set.
    pub fn needs_reset(&self) -> bool {
        self.status & st::DEVICE_NEEDS_RESET != 0
    }

    fn running(&self) -> bool {
        self.status & st::DRIVER_OK != 0 && !self.needs_reset()
    }

    fn raise(&self, k: InterruptKind) {
        if let Some(f) = &self.interrupt {
            f(k);
        }
    }

    fn fail(&mut self, e: DeviceError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        if !self.needs_reset() {
            self.status |= st::DEVICE_NEEDS_RESET;
            // Spec §2.1.2: NEEDS_RESET comes with a config change notification
            // (only once the driver is there to receive it).
            if self.status & st::DRIVER_OK != 0 {
                self.raise(InterruptKind::Config);
            }
        }
    }

    /// The driver writes the status register. Writing 0 resets the device.
    pub fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The device owns NEEDS_RESET; the driver cannot set or clear it.
        let mut new = (value & !st::DEVICE_NEEDS_RESET) | (old & st::DEVICE_NEEDS_RESET);
        if new & st::FEATURES_OK != 0 && old & st::FEATURES_OK == 0 {
            if self.driver_features & !self.offered.bits() != 0 {
                // Accepting an unoffered feature: refuse FEATURES_OK, the
                // driver sees the bit clear and gives up (spec §3.1.1).
                new &= !st::FEATURES_OK;
            } else {
                self.status = new;
                self.worker
                    .set_limits(self.opts.limits(&self.disk, self.negotiated()));
                self.apply_flush_rule();
                new |= self.status & st::DEVICE_NEEDS_RESET;
            }
        }
        if new & st::DRIVER_OK != 0 && old & st::DRIVER_OK == 0 {
            self.status = new;
            // Legacy drivers have no FEATURES_OK: features are final now.
            self.worker
                .set_limits(self.opts.limits(&self.disk, self.negotiated()));
            self.apply_flush_rule();
            self.activate();
            return;
        }
        self.status = new;
    }

    /// A driver that did not accept FLUSH cannot make writes durable: give
    /// it write-through (spec §5.2.6.2 case 1; and `writeback` must read 0
    /// when CONFIG_WCE is negotiated without FLUSH).
    fn apply_flush_rule(&mut self) {
        if !self.negotiated().contains(Features::FLUSH) && self.disk.write_cache() {
            if let Err(e) = self.disk.set_write_cache(false) {
                self.fail(DeviceError::Flush(e));
            }
        }
    }

    fn activate(&mut self) {
        let event_idx = self.negotiated().contains(Features::EVENT_IDX);
        for i in 0..self.queues.len() {
            let q = &mut self.queues[i];
            q.set_event_idx(event_idx);
            if q.ready() && !q.is_valid(&*self.mem) {
                self.fail(DeviceError::Ring {
                    queue: i as u16,
                    what: "rings lie outside guest memory".into(),
                });
            }
        }
    }

    /// Programs queue `index` (before `DRIVER_OK`).
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
        let q = self
            .queues
            .get_mut(usize::from(index))
            .ok_or(TransportError::NoQueue(index))?;
        q.set_ready(ready);
        Ok(())
    }

    /// Whether queue `index` is ready.
    pub fn queue_ready(&self, index: u16) -> bool {
        self.queues
            .get(usize::from(index))
            .is_some_and(|q| q.ready())
    }

    /// Reads `data.len()` config bytes at `offset` (any width, any
    /// alignment; bytes past the structure read as 0).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = build_config(&self.opts, &self.disk);
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

    /// Writes config bytes at `offset`. Only `writeback` is writable (with
    /// CONFIG_WCE negotiated); other bytes are ignored.
    pub fn write_config(&mut self, offset: u64, data: &[u8]) {
        let wb = std::mem::offset_of!(crate::spec::VirtioBlkConfig, writeback) as u64;
        let Some(i) = wb.checked_sub(offset) else {
            return;
        };
        if let Some(&v) = usize::try_from(i).ok().and_then(|i| data.get(i)) {
            self.write_writeback(v);
        }
    }

    fn write_writeback(&mut self, v: u8) {
        let f = self.negotiated();
        if !f.contains(Features::CONFIG_WCE) {
            return;
        }
        let on = v != 0;
        if on == self.disk.write_cache() || (on && !f.contains(Features::FLUSH)) {
            return;
        }
        // Turning the cache off flushes before returning: the config write
        // completes only once every write the guest saw complete is durable.
        if let Err(e) = self.disk.set_write_cache(on) {
            self.fail(DeviceError::Flush(e));
        }
    }

    /// Handles a notification (kick) of queue `index`. Returns `true` if
    /// more chains became available while processing: call again.
    pub fn notify(&mut self, index: u16) -> bool {
        // Without MQ the device has exactly one request queue (§5.2.2).
        if !self.running() || (index > 0 && !self.negotiated().contains(Features::MQ)) {
            return false;
        }
        let mem = self.mem.clone();
        let Some(q) = self.queues.get_mut(usize::from(index)) else {
            return false;
        };
        if !q.ready() {
            return false;
        }
        let mut done = Vec::new();
        let mut fatal = None;
        if let Err(e) = q.disable_notification(&*mem) {
            fatal = Some(ring_error(index, e));
        }
        // One io_uring_enter for the whole notification.
        self.disk.plug();
        match q.iter(&*mem) {
            Err(e) => fatal = Some(ring_error(index, e)),
            Ok(iter) => {
                // At most `size` chains: AvailIter stops at the avail index it
                // read on creation, which it checked is < size ahead.
                for chain in iter {
                    let head = chain.head_index();
                    match self.worker.process_chain(index, chain, &mem) {
                        Ok(Processed::Done(len)) => done.push((head, len)),
                        Ok(Processed::Pending) => {}
                        Err(err) => {
                            fatal = Some(DeviceError::Chain { queue: index, err });
                            break;
                        }
                    }
                }
            }
        }
        self.disk.unplug();
        let q = &mut self.queues[usize::from(index)];
        let mut more = false;
        for (head, len) in done.iter().copied() {
            if let Err(e) = q.add_used(&*mem, head, len) {
                fatal.get_or_insert(ring_error(index, e));
                break;
            }
        }
        match q.enable_notification(&*mem) {
            Ok(m) => more = m,
            Err(e) => {
                fatal.get_or_insert(ring_error(index, e));
            }
        }
        let signal = !done.is_empty() && should_signal(q, &mem);
        if signal {
            self.raise(InterruptKind::Queue(index));
        }
        if let Some(e) = fatal {
            self.fail(e);
            more = false;
        }
        self.process_completions();
        more
    }

    /// Puts finished requests on their used rings and raises interrupts.
    /// Never blocks. Returns how many chains finished.
    pub fn process_completions(&mut self) -> usize {
        let mut comps = std::mem::take(&mut self.comps);
        self.disk.poll_into(&mut comps);
        self.finish(comps)
    }

    /// Blocks until at least one hostio request completes (or none is in
    /// flight), then does [`VirtioBlk::process_completions`].
    pub fn wait_completions(&mut self) -> usize {
        let mut comps = std::mem::take(&mut self.comps);
        self.disk.wait_into(&mut comps);
        self.finish(comps)
    }

    /// Publishes `comps` (emptied and kept for the next batch).
    fn finish(&mut self, mut comps: Vec<vmstor_hostio::Completion>) -> usize {
        let mem = self.mem.clone();
        let mut touched: smallvec::SmallVec<[bool; 8]> =
            smallvec::smallvec![false; self.queues.len()];
        let mut n = 0;
        let mut fatal = None;
        for c in comps.drain(..) {
            let Some(f) = self.worker.complete(c) else {
                continue;
            };
            n += 1;
            let Some(q) = self.queues.get_mut(usize::from(f.queue)) else {
                continue;
            };
            match q.add_used(&*mem, f.head, f.used_len) {
                Ok(()) => touched[usize::from(f.queue)] = true,
                Err(e) => {
                    fatal.get_or_insert(ring_error(f.queue, e));
                }
            }
        }
        self.comps = comps;
        for (i, t) in touched.into_iter().enumerate() {
            if t && should_signal(&mut self.queues[i], &mem) {
                self.raise(InterruptKind::Queue(i as u16));
            }
        }
        if let Some(e) = fatal {
            self.fail(e);
        }
        n
    }

    /// The eventfd that becomes readable when completions are ready
    /// (thread-pool executor only).
    pub fn completion_fd(&self) -> Option<RawFd> {
        self.disk.notify_fd()
    }

    /// Resubmits requests held by the `stop` error policy and processes
    /// whatever completed. Returns how many were resubmitted.
    pub fn resume_held(&mut self) -> usize {
        let n = self.disk.resume_held();
        self.process_completions();
        n
    }

    /// Device reset: waits for in-flight host I/O (it may still write guest
    /// memory), drops held requests, forgets every chain, resets the queues
    /// and the status, and restores the default write cache.
    pub fn reset(&mut self) {
        let _ = self.disk.drain();
        let held = self.disk.cancel_held();
        self.worker.cancel(&held);
        self.worker.clear();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.error = None;
        self.worker
            .set_limits(self.opts.limits(&self.disk, Features::empty()));
        if let Err(e) = self.disk.restore_default_write_cache() {
            // Restoring write-through flushes; if that fails the next driver
            // must not start on a disk that silently lost writes.
            self.fail(DeviceError::Flush(e));
        }
    }
}

/// Whether to interrupt after adding used entries: `used_event` with
/// EVENT_IDX (virtio-queue), else the avail ring's NO_INTERRUPT flag, which
/// virtio-queue does not look at (spec §2.7.7.2: SHOULD NOT notify). An
/// unreadable ring errs on the side of interrupting.
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

//! Pieces every vhost-user back end here shares: the guest-memory and vring
//! types, the per-connection table of vrings (so completions can be put on
//! any queue's used ring from whichever thread reaps them), interrupt
//! suppression, and the worker-thread layout.
//!
//! Threading contract: `vhost-user-backend` runs one epoll thread per entry
//! of `queues_per_thread()`; we give every queue its own thread
//! ([`one_queue_per_thread`]), so a thread's id is its queue index. A
//! vring's state is behind its own lock; used-ring updates from a reaping
//! thread and chain popping on the queue's thread serialise there.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use vhost_user_backend::{VringRwLock, VringT};
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// Guest memory as the vhost-user handler keeps it (replaced on
/// `SET_MEM_TABLE`, shared with every vring).
pub(crate) type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
/// A vring.
pub(crate) type Vring = VringRwLock<Mem>;

/// The vrings of one connection, learnt as their threads first report an
/// event (the handler does not hand them to the back end otherwise).
pub(crate) struct VringTable(Mutex<Vec<Option<Vring>>>);

impl VringTable {
    /// A table for `n` queues.
    pub(crate) fn new(n: usize) -> VringTable {
        VringTable(Mutex::new(vec![None; n]))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Vring>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers queue `q`'s vring.
    pub(crate) fn record(&self, q: usize, v: &Vring) {
        if let Some(slot) = self.lock().get_mut(q) {
            if slot.is_none() {
                *slot = Some(v.clone());
            }
        }
    }

    /// Queue `q`'s vring, if its thread has reported.
    pub(crate) fn get(&self, q: usize) -> Option<Vring> {
        self.lock().get(q).cloned().flatten()
    }
}

/// Whether to interrupt the guest after adding used entries: `used_event`
/// with EVENT_IDX, else the avail ring's NO_INTERRUPT flag (virtio 1.2
/// §2.7.7.2; virtio-queue does not look at it). An unreadable ring errs on
/// the side of interrupting.
pub(crate) fn should_signal(vring: &Vring, mem: &GuestMemoryMmap) -> bool {
    let mut st = vring.get_mut();
    let q = st.get_queue_mut();
    if q.event_idx_enabled() {
        return q.needs_notification(mem).unwrap_or(true);
    }
    let flags: u16 = mem
        .load(GuestAddress(q.avail_ring()), Ordering::Acquire)
        .map(u16::from_le)
        .unwrap_or(0);
    flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
}

/// Puts `(head, len)` entries on `vring`'s used ring and interrupts the
/// guest if it asked for it. Returns false if the ring could not be
/// written (the queue is then unusable until the front end resets it).
pub(crate) fn publish(vring: &Vring, mem: &GuestMemoryMmap, used: &[(u16, u32)]) -> bool {
    if used.is_empty() {
        return true;
    }
    let mut ok = true;
    for &(head, len) in used {
        if let Err(e) = vring.add_used(head, len) {
            tracing::error!("cannot write the used ring: {e}");
            ok = false;
            break;
        }
    }
    if should_signal(vring, mem) {
        if let Err(e) = vring.signal_used_queue() {
            tracing::debug!("cannot signal the guest: {e}");
        }
    }
    ok
}

/// Worker layout: one epoll thread per queue (bit `q` of entry `q`).
pub(crate) fn one_queue_per_thread(queues: usize) -> Vec<u64> {
    (0..queues.min(64)).map(|q| 1u64 << q).collect()
}

/// A fresh exit event for one worker thread (the handler signals it when
/// the connection's handler is dropped, and joins the thread).
pub(crate) fn exit_event() -> Option<(EventConsumer, EventNotifier)> {
    new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
}

/// An `io::Error` with a message, for back-end callbacks.
pub(crate) fn io_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

//! [`BlockWorker`]: request processing, independent of queues and
//! transports.
//!
//! The worker takes a popped [`DescriptorChain`], parses it
//! ([`crate::request`]), writes the status byte itself for requests it can
//! answer at once, and otherwise submits hostio requests tagged so that each
//! completion maps back to `(queue, head index)`. Whoever owns the queues
//! (this crate's [`crate::VirtioBlk`], or a vhost-user-blk backend built on
//! rust-vmm's `vhost-user-backend`) pops chains, calls
//! [`BlockWorker::process_chain`], feeds [`vmstor_hostio::Disk::poll`]
//! completions to [`BlockWorker::complete`], and puts what comes back on the
//! used ring of the right queue.
//!
//! Contracts:
//! - The worker must be the only submitter on its [`Disk`]: it claims every
//!   completion's tag.
//! - A [`Processed::Done`] or [`Finished`] means the status byte is already
//!   in guest memory; its `used_len` is the exact number of bytes the device
//!   wrote (data-in + status on success, the status byte alone on error).
//! - A request held by hostio's `stop` error policy stays in flight (no
//!   completion) until [`Disk::resume_held`]; [`BlockWorker::cancel`] forgets
//!   requests whose tags [`Disk::cancel_held`] returned.
//! - Multi-segment DISCARD / WRITE_ZEROES become one hostio request per
//!   segment under one tag; the chain completes when all have, with IOERR if
//!   any failed (the spec leaves the other segments' fate open).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{Completion, DataBuf, Disk, GuestBufs, Request};

use crate::config::RequestLimits;
use crate::request::{chain_layout, parse, write_segs, Action, ChainError, DiskGeometry, Reject};
use crate::spec::{BlkStatus, ID_BYTES};

/// What [`BlockWorker::process_chain`] did with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Answered: the status byte is written; put the head on the used ring
    /// with this length.
    Done(u32),
    /// Submitted to hostio; [`BlockWorker::complete`] will finish it.
    Pending,
}

/// A request whose hostio work has all completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// The queue the chain came from.
    pub queue: u16,
    /// The chain's head index.
    pub head: u16,
    /// Bytes written to guest memory (for the used ring).
    pub used_len: u32,
    /// The status written.
    pub status: BlkStatus,
}

#[derive(Debug)]
struct InFlight {
    queue: u16,
    head: u16,
    mem: Arc<GuestMemoryMmap>,
    status_addr: GuestAddress,
    success_len: u32,
    remaining: usize,
    status: BlkStatus,
}

/// Hasher for the in-flight map. Its keys are tags this worker hands out
/// itself (a counter, never guest-chosen), so SipHash's flooding resistance
/// buys nothing and cost a tenth of a request's device time; a multiplicative
/// hash spreads sequential tags over the buckets.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type TagMap = HashMap<u64, InFlight, BuildHasherDefault<TagHasher>>;

/// Request processing for one device. See the module docs.
#[derive(Debug)]
pub struct BlockWorker {
    disk: Arc<Disk>,
    limits: RequestLimits,
    inflight: Mutex<TagMap>,
    next_tag: AtomicU64,
    rejects: [AtomicU64; Reject::ALL.len()],
}

fn write_status(mem: &GuestMemoryMmap, at: GuestAddress, s: BlkStatus) {
    // The address was checked when the chain was parsed; a failure here
    // means memory was unplugged under an in-flight request, and there is
    // nobody left to tell.
    let _ = mem.write_obj(s as u8, at);
}

impl BlockWorker {
    /// A worker over `disk` enforcing `limits` (see
    /// [`crate::BlkOptions::limits`]).
    pub fn new(disk: Arc<Disk>, limits: RequestLimits) -> BlockWorker {
        BlockWorker {
            disk,
            limits,
            inflight: Mutex::new(TagMap::default()),
            next_tag: AtomicU64::new(1),
            rejects: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The disk.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The limits in force.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// Replaces the limits (after feature negotiation). Requests in flight
    /// are unaffected.
    pub fn set_limits(&mut self, limits: RequestLimits) {
        self.limits = limits;
    }

    fn map(&self) -> std::sync::MutexGuard<'_, TagMap> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of chains submitted and not yet finished (including held
    /// ones).
    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    /// How many requests were rejected for `reason` so far.
    pub fn rejects(&self, reason: Reject) -> u64 {
        Reject::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.rejects[i].load(Ordering::Relaxed))
    }

    fn reject(&self, mem: &GuestMemoryMmap, status_addr: GuestAddress, r: Reject) -> Processed {
        if let Some(i) = Reject::ALL.iter().position(|x| *x == r) {
            self.rejects[i].fetch_add(1, Ordering::Relaxed);
        }
        write_status(mem, status_addr, r.status());
        Processed::Done(1)
    }

    /// Parses and starts one chain popped from queue `queue`. `mem` must be
    /// the memory the chain reads from (hostio keeps it alive while I/O is in
    /// flight). An `Err` means no status byte could be written: the caller
    /// must not put the chain on the used ring and should set
    /// `DEVICE_NEEDS_RESET`.
    pub fn process_chain<M>(
        &self,
        queue: u16,
        chain: DescriptorChain<M>,
        mem: &Arc<GuestMemoryMmap>,
    ) -> Result<Processed, ChainError>
    where
        M: Deref<Target = GuestMemoryMmap>,
    {
        let head = chain.head_index();
        let layout = chain_layout(chain, mem)?;
        let geometry = DiskGeometry {
            size: self.disk.size(),
            lbs: self.disk.logical_block_size(),
        };
        let action = match parse(&layout, mem, &self.limits, geometry) {
            Ok(a) => a,
            Err(r) => return Ok(self.reject(mem, layout.status, r)),
        };
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let guest = |segs| DataBuf::Guest(GuestBufs::new(mem.clone(), segs));
        let (reqs, success_len): (smallvec::SmallVec<[Request; 1]>, u64) = match action {
            Action::GetId { segs } => {
                let n = segs.iter().map(|s| s.1).sum::<usize>().min(ID_BYTES);
                if write_segs(mem, &segs, &self.limits.id[..n]).is_none() {
                    return Ok(self.reject(mem, layout.status, Reject::BadAddress));
                }
                write_status(mem, layout.status, BlkStatus::Ok);
                return Ok(Processed::Done(n as u32 + 1));
            }
            Action::Read { offset, segs, len } => (
                smallvec::smallvec![Request::read(offset, guest(segs), tag)],
                len + 1,
            ),
            Action::Write { offset, segs, .. } => (
                smallvec::smallvec![Request::write(offset, guest(segs), false, tag)],
                1,
            ),
            Action::Flush => (smallvec::smallvec![Request::flush(tag)], 1),
            Action::Discard(ranges) => (
                ranges
                    .into_iter()
                    .map(|(o, l)| Request::discard(o, l, tag))
                    .collect(),
                1,
            ),
            Action::WriteZeroes(ranges) => (
                ranges
                    .into_iter()
                    .map(|(o, l, u)| Request::write_zeroes(o, l, u, tag))
                    .collect(),
                1,
            ),
        };
        let n = reqs.len();
        // Registered before the first submit: with the thread pool a
        // completion may be handled on another thread before submit returns.
        self.map().insert(
            tag,
            InFlight {
                queue,
                head,
                mem: mem.clone(),
                status_addr: layout.status,
                // A chain is at most 4 GiB (virtio-queue stops the walk
                // otherwise), so this fits unless the guest lied; saturate.
                success_len: u32::try_from(success_len).unwrap_or(u32::MAX),
                remaining: n,
                status: BlkStatus::Ok,
            },
        );
        let mut submitted = 0;
        for req in reqs {
            if self.disk.submit(req).is_err() {
                break;
            }
            submitted += 1;
        }
        if submitted == n {
            return Ok(Processed::Pending);
        }
        // hostio refused one (it validates again after us): the rest are
        // never submitted; finish when those already submitted complete.
        if let Some(i) = Reject::ALL.iter().position(|x| *x == Reject::HostRejected) {
            self.rejects[i].fetch_add(1, Ordering::Relaxed);
        }
        let mut map = self.map();
        let done = match map.get_mut(&tag) {
            Some(e) => {
                e.status = BlkStatus::IoErr;
                e.remaining -= n - submitted;
                e.remaining == 0
            }
            None => false,
        };
        if done {
            map.remove(&tag);
            drop(map);
            write_status(mem, layout.status, BlkStatus::IoErr);
            return Ok(Processed::Done(1));
        }
        Ok(Processed::Pending)
    }

    /// Accounts for one hostio completion. Returns the chain to put on the
    /// used ring once all its hostio requests completed; `None` for
    /// partial progress or an unknown tag (a request forgotten by reset).
    pub fn complete(&self, c: Completion) -> Option<Finished> {
        let mut map = self.map();
        let e = map.get_mut(&c.tag)?;
        if c.result.is_err() {
            // hostio's `report` policy: the error reaches the guest.
            e.status = BlkStatus::IoErr;
        }
        e.remaining = e.remaining.saturating_sub(1);
        if e.remaining > 0 {
            return None;
        }
        let e = map.remove(&c.tag)?;
        drop(map);
        write_status(&e.mem, e.status_addr, e.status);
        Some(Finished {
            queue: e.queue,
            head: e.head,
            used_len: if e.status == BlkStatus::Ok {
                e.success_len
            } else {
                1
            },
            status: e.status,
        })
    }

    /// Forgets the requests with these tags (from [`Disk::cancel_held`]):
    /// they will never complete.
    pub fn cancel(&self, tags: &[u64]) -> usize {
        let mut map = self.map();
        tags.iter().filter(|t| map.remove(t).is_some()).count()
    }

    /// Forgets every request in flight (device reset, after draining the
    /// disk). Returns how many.
    pub fn clear(&self) -> usize {
        let mut map = self.map();
        let n = map.len();
        map.clear();
        n
    }
}

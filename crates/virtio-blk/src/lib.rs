//! # vmstor-virtio-blk: a virtio block device on the hostio engine
//!
//! A VMM embeds [`VirtioBlk`] behind its virtio transport to give a guest a
//! disk whose flush and write-cache semantics are exact: every guest
//! durability request becomes the right host primitive through
//! [`vmstor_hostio::Disk`].
//!
//! ## Architecture
//! ```text
//! transport ──features/status/config/queue setup──▶ VirtioBlk ──▶ interrupt callback
//!     │ kick(q)                                         │ pops chains (virtio-queue)
//!     ▼                                                 ▼
//! VirtioBlk::notify ─chain─▶ BlockWorker::process_chain ─parse─▶ Request(s) ─▶ Disk::submit
//! VirtioBlk::process_completions ◀─ BlockWorker::complete ◀──── Disk::poll ◀── executor
//! ```
//! - [`spec`]: wire structs (`VirtioBlkReqHeader`, `VirtioBlkConfig`, ...).
//! - [`features`]: the feature table and offer rules.
//! - [`config`]: options, the config space, and the limits the parser enforces.
//! - [`request`]: chain layout and request parsing; the request-type table
//!   and the named reasons for rejecting a request.
//! - [`worker`]: [`BlockWorker`], queue-agnostic request processing (also
//!   what a vhost-user-blk backend reuses).
//! - [`device`]: [`VirtioBlk`], transport-facing state, queues, interrupts.
//! - `testing` (feature `test-utils`): a guest driver that builds virtqueues
//!   in guest memory and implements [`vmstor_hostio::GuestDriver`], plus an
//!   in-memory host file; `fuzz`: the fuzz target's entry point.
//!
//! ## Error model
//! Every field a guest controls is validated before host I/O; a request
//! that fails gets `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP` with a named
//! [`Reject`] reason. A chain that cannot carry a status byte (no writable
//! last descriptor, loops, over-long chains, bad head index, bad avail
//! index) sets `DEVICE_NEEDS_RESET` with a config interrupt. Host errors
//! follow the disk's error policy: `report` → IOERR, `stop` → the request
//! stays in flight until [`VirtioBlk::resume_held`]. Nothing panics on guest
//! input, and nothing reaches the host outside the image (hostio validates
//! every range again).
//!
//! ## Durability
//! See `docs/virtio-blk.md` and the generated `docs/durability.md`. In short:
//! OUT is a plain write while `writeback` is 1 and durable on completion
//! while it is 0; FLUSH covers every write completed before it; a driver
//! without FLUSH gets write-through; `writeback` 1→0 flushes before it
//! takes effect.

pub mod config;
pub mod device;
pub mod doctable;
pub mod features;
pub mod request;
pub mod spec;
pub mod worker;

#[cfg(feature = "test-utils")]
pub mod fuzz;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use config::{BlkOptions, OptionsError, RequestLimits};
pub use device::{DeviceError, InterruptFn, InterruptKind, QueueConfig, TransportError, VirtioBlk};
pub use features::Features;
pub use request::{ChainError, Reject, RequestKind};
pub use spec::BlkStatus;
pub use worker::{BlockWorker, Finished, Processed};

//! # vmstor-virtio-scsi: a virtio SCSI host device of vmstor SCSI disks
//!
//! A VMM embeds [`VirtioScsi`] behind its virtio transport; each target/LUN
//! is a [`vmstor_scsi::ScsiDisk`] over a caller-built
//! [`vmstor_hostio::Disk`].
//!
//! ## Architecture
//! ```text
//! transport ──features/status/config/queues──▶ VirtioScsi ──▶ interrupt callback
//!    │ kick(q)                                     │ virtio-queue chains
//!    ▼                                             ▼
//! notify(0) ─▶ ScsiWorker::process_control ─▶ ScsiDisk::task_management
//! notify(2..) ─▶ ScsiWorker::process_request ─▶ ScsiDisk::submit ─▶ hostio
//! process_completions ◀─ ScsiWorker::poll ◀─ ScsiDisk::poll ◀─ Disk::poll
//! ```
//! - [`spec`]: wire structs and constants (virtio 1.2 §5.6).
//! - [`worker`]: [`ScsiWorker`], queue-agnostic chain processing (what a
//!   vhost-user-scsi backend reuses with its own `DescriptorChain`s and
//!   `GuestMemoryAtomic::memory().into_inner()`).
//! - [`device`]: [`VirtioScsi`], transport-facing state.
//! - `testing` (feature `test-utils`): a test initiator building requests
//!   in guest memory, implementing [`vmstor_hostio::GuestDriver`]; and the
//!   fuzz entry.
//!
//! ## Error model
//! Every guest field is validated: descriptors must lie in guest memory
//! and come readable-first; a chain that cannot carry a response sets
//! `DEVICE_NEEDS_RESET`; other malformed requests get the response code
//! the spec names (FAILURE, BAD_TARGET, OVERRUN, INCORRECT_LUN); the SCSI
//! disk validates the CDB itself. Nothing panics on guest input.

pub mod device;
pub mod spec;
pub mod worker;

#[cfg(feature = "test-utils")]
pub mod testing;

pub use device::{
    DeviceError, InterruptFn, InterruptKind, QueueConfig, ScsiOptions, TransportError, VirtioScsi,
    OFFERED,
};
pub use worker::{ChainError, Finished, ScsiWorker};

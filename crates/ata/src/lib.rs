//! # vmstor-ata: an ATA disk and a legacy PIIX-style IDE controller
//!
//! The seed of vmstor is an IDE disk that never told guests about its
//! write cache, so guests never flushed. This disk tells the truth —
//! IDENTIFY DEVICE word 85 bit 5 is the live write-cache state of the
//! [`vmstor_hostio::Disk`] — and honours every durability command: FLUSH
//! CACHE (EXT) → flush, WRITE DMA FUA EXT / WRITE MULTIPLE FUA EXT →
//! FUA writes, SET FEATURES 82h → write cache off *after* everything
//! written so far is flushed, DATA SET MANAGEMENT TRIM → discards.
//!
//! ## Architecture
//! ```text
//! port/BAR accesses ─▶ ide::IdeController ─task file, data, PRD scatter list─▶ device::AtaDevice
//!   (legacy ports,        (channels, HOB, SRST,                                 (command set, one
//!    BARs, PCI config)     PIO port, bus master, IRQ)                            table: commands)
//!                                                                                   │ hostio::Request
//!                                                                                   ▼
//!                                                                               hostio::Disk
//! ```
//! - [`commands`]: the opcode table. Dispatch, IDENTIFY capability bits and
//!   `docs/ata.md` all come from it.
//! - [`identify`]: IDENTIFY DEVICE data built from live state.
//! - [`device`]: the transport-independent device state machine.
//! - [`ide`]: the PIIX-style controller and its PCI header.
//! - [`regs`]: Status/Error/Device Control bits and the task file.
//! - `testing` (feature `test-utils`): an in-memory host file, the
//!   register-level guest driver [`testing::IdeDriver`] (a
//!   [`vmstor_hostio::GuestDriver`]) and the fuzz entry points.
//!
//! ## Contracts
//! - Every guest-controlled value (registers, counts, LBAs, PRD tables,
//!   TRIM ranges) is validated; bad input gets ABRT/IDNF or a bus-master
//!   error, never a panic, never unbounded work, never host I/O outside
//!   the disk (hostio validates each request again).
//! - A command completes (DRDY, INTRQ) only after its host request
//!   completed; under WCE off hostio makes every write FUA.
//! - Host errors: read → UNC; write/flush/discard → ABRT; the `stop`
//!   policy keeps the command BSY until `disk.resume_held()` + `poll()`.

#![forbid(unsafe_code)]

pub mod commands;
pub mod device;
pub mod docs;
pub mod ide;
pub mod identify;
pub mod regs;

#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

#[cfg(test)]
mod tests;

pub use commands::{CommandDesc, COMMANDS, SET_FEATURES};
pub use device::{AtaDevice, DeviceConfig, DmaDirection, DmaRequest, PowerMode};
pub use ide::{ControllerConfig, IdeController, IrqCallback, Region};
pub use identify::{IdentifyData, TransferModes};
pub use regs::{AtaError, DeviceControl, Status, TaskFile};

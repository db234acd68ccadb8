//! A front-end-neutral guest driver interface.
//!
//! Each front end ships a test driver (feature `test-utils`) that speaks to
//! its controller only as a real guest driver would (registers, virtqueues,
//! PRD tables, CDBs) and implements [`GuestDriver`]. The crash/property suite,
//! fault injection tests and the `vmstor` CLI (`demo`, `trace`, `crashcheck`)
//! drive every controller through this one trait.
//!
//! Every method issues real controller commands and reports what was sent
//! ([`Issued::commands`], e.g. `WRITE DMA FUA EXT`, `WRITE(10) FUA=1`,
//! `VIRTIO_BLK_T_OUT`) and the guest-visible status. A request the
//! controller has no way to express (e.g. FUA on virtio-blk) is
//! [`CannotExpress`], never silently approximated.

use std::fmt;

/// What the guest saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStatus {
    /// Success.
    Ok,
    /// The controller reported an error; the string is the protocol's view
    /// (e.g. `ERR ABRT`, `CHECK CONDITION MEDIUM ERROR 0C/00`, `IOERR`).
    Error(String),
    /// The command is still outstanding (held by the `stop` error policy).
    Pending,
}

impl GuestStatus {
    /// Whether the command succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, GuestStatus::Ok)
    }
}

impl fmt::Display for GuestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestStatus::Ok => f.write_str("OK"),
            GuestStatus::Error(e) => f.write_str(e),
            GuestStatus::Pending => f.write_str("PENDING"),
        }
    }
}

/// The controller commands one guest-level operation became, and the
/// final guest-visible status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Controller commands in the order sent.
    pub commands: Vec<String>,
    /// The status of the last (or first failing) command.
    pub status: GuestStatus,
}

impl Issued {
    /// One command with its status.
    pub fn one(command: impl Into<String>, status: GuestStatus) -> Issued {
        Issued {
            commands: vec![command.into()],
            status,
        }
    }
}

/// The controller cannot express this guest operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{controller} cannot express {what}: {why}")]
pub struct CannotExpress {
    /// Controller name.
    pub controller: &'static str,
    /// The operation asked for.
    pub what: String,
    /// Why not.
    pub why: String,
}

/// A guest driver over one disk of some controller. LBAs and counts are in
/// the disk's logical blocks.
pub trait GuestDriver {
    /// `ide`, `scsi` or `virtio-blk`.
    fn controller(&self) -> &'static str;
    /// Logical block size the guest sees.
    fn block_size(&self) -> u32;
    /// Capacity in logical blocks.
    fn capacity(&self) -> u64;
    /// Writes `data` (a whole number of blocks) at `lba`.
    fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<Issued, CannotExpress>;
    /// Reads `count` blocks at `lba` into `out` (replaced).
    fn read(&mut self, lba: u64, count: u32, out: &mut Vec<u8>) -> Result<Issued, CannotExpress>;
    /// Flushes the device's volatile cache.
    fn flush(&mut self) -> Result<Issued, CannotExpress>;
    /// Turns the device's write cache on or off the way a guest does.
    fn set_write_cache(&mut self, on: bool) -> Result<Issued, CannotExpress>;
    /// The write cache state the device reports (IDENTIFY word 85, caching
    /// mode page, virtio `writeback`), as a guest would read it.
    fn write_cache(&mut self) -> Result<bool, CannotExpress>;
    /// Discards `count` blocks at `lba`.
    fn discard(&mut self, lba: u64, count: u32) -> Result<Issued, CannotExpress>;
    /// Zeroes `count` blocks at `lba`, allowing deallocation if `unmap`.
    fn write_zeroes(&mut self, lba: u64, count: u32, unmap: bool) -> Result<Issued, CannotExpress>;
    /// Resets the device (and re-initialises the driver) as a guest would.
    fn reset(&mut self) -> Result<Issued, CannotExpress>;
}

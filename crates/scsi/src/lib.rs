//! # vmstor-scsi: a SCSI disk logical unit on the hostio engine
//!
//! A transport-independent SCSI direct-access logical unit (SPC-5 / SBC-4
//! subset): CDB, task attribute and a data buffer in; status, sense data
//! and bytes moved out. virtio-scsi (`vmstor-virtio-scsi`) is one
//! transport; anything that delivers CDBs can be another.
//!
//! ## Architecture
//! ```text
//! transport ──Task──▶ ScsiDisk (task set, UAs) ──▶ cdb::COMMANDS ──▶ handler
//!                                                      │               │
//!                             emulated data-in ◀───────┘   hostio Request (READ, WRITE,
//!                             (inquiry, mode, report)      SYNC CACHE, UNMAP, WRITE SAME)
//! ```
//! - [`cdb`]: the opcode table ([`cdb::COMMANDS`]) that drives decoding,
//!   reserved-bit checks, REPORT SUPPORTED OPERATION CODES and the docs.
//! - [`mode`]: mode pages (01h, 08h caching with WCE, 0Ah control with
//!   D_SENSE), MODE SENSE and MODE SELECT validation.
//! - [`inquiry`]: standard INQUIRY data and VPD pages.
//! - [`report`]: REPORT LUNS and REPORT SUPPORTED OPERATION CODES data.
//! - [`sense`]: status codes, sense keys, ASC/ASCQ and both sense formats.
//! - [`lu`]: [`ScsiDisk`], its task set, unit attentions, task management
//!   and the mapping of host errors to sense data.
//!
//! ## Durability
//! WRITE FUA=1 and WRITE AND VERIFY are FUA writes (hostio issues
//! `pwritev2(RWF_DSYNC)`); SYNCHRONIZE CACHE(10) and (16) are flushes
//! (`fdatasync`); MODE SELECT clearing WCE completes only after hostio
//! has made every acknowledged write durable; START STOP UNIT with START=0
//! flushes before the unit stops. The mode header advertises DPOFUA.
//!
//! ## Error model
//! The guest is the attacker: every CDB bit outside a command's usage mask,
//! every LBA range, length, limit and parameter-list field is checked
//! before any host I/O, and answered with the SCSI error (ILLEGAL REQUEST
//! with a field pointer, LBA OUT OF RANGE, PARAMETER LIST LENGTH ERROR...).
//! Host I/O failures become sense data by [`lu::host_sense`]: read EIO →
//! MEDIUM ERROR / UNRECOVERED READ ERROR, write or flush EIO → MEDIUM ERROR
//! / WRITE ERROR (both with the command's starting LBA in the INFORMATION
//! field when it has one), ENOSPC → DATA PROTECT / SPACE ALLOCATION FAILED
//! WRITE PROTECT. The hostio error policy may hold a failed request instead; its
//! task then stays in flight.

pub mod cdb;
mod data;
pub mod inquiry;
pub mod lu;
pub mod mode;
pub mod report;
pub mod sense;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use lu::{
    Done, NexusId, Outcome, ScsiDisk, ScsiDiskConfig, ScsiResult, Task, TaskAttr, TaskRef, Tmf,
    TmfResponse, Transfer,
};
pub use sense::{Asc, Sense, SenseKey, Status};

/// The whole generated part of `docs/scsi.md` (commands, mode pages, VPD
/// pages, sense codes), as Markdown. A test checks the file contains it.
pub fn doc_tables() -> String {
    let mut s = String::new();
    s.push_str("### Commands\n\n");
    s.push_str(&cdb::doc_table());
    s.push_str("\n### Mode pages\n\n");
    s.push_str(&mode::doc_table());
    s.push_str("\n### VPD pages\n\n");
    s.push_str(&inquiry::doc_table());
    s.push_str("\n### Additional sense codes reported\n\n| ASC/ASCQ | name |\n|---|---|\n");
    for (a, n) in sense::ASC_TABLE {
        s.push_str(&format!("| {:02X}/{:02X} | {} |\n", a.0, a.1, n));
    }
    s
}

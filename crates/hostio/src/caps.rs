//! Host capabilities: the facts the planner needs, as found by the probe
//! ([`crate::probe`]) or supplied by a test.
//!
//! Facts are read once at open and cached; the hot path never asks the host
//! again. A fact the probe could not establish is [`Fact::Unknown`] with the
//! reason, never a silent guess; the planner treats an unknown fact
//! conservatively (e.g. unknown stable-page need ⇒ bounce under `auto`).

use std::fmt;

/// A probed fact, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<T> {
    /// Established, with where it came from.
    Known(T, &'static str),
    /// Could not be established; the string says why.
    Unknown(String),
}

impl<T: Copy> Fact<T> {
    /// The value if known.
    pub fn get(&self) -> Option<T> {
        match self {
            Fact::Known(v, _) => Some(*v),
            Fact::Unknown(_) => None,
        }
    }

    /// The value if known, else `default`.
    pub fn unwrap_or(&self, default: T) -> T {
        self.get().unwrap_or(default)
    }
}

impl<T: fmt::Display> fmt::Display for Fact<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Known(v, src) => write!(f, "{v} ({src})"),
            Fact::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// What kind of object backs the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackingKind {
    /// A regular file: discard = punch hole, zeroing = `FALLOC_FL_ZERO_RANGE`.
    File,
    /// A block device: discard = `BLKDISCARD`, zeroing = `BLKZEROOUT`.
    BlockDevice,
}

/// Why the storage below needs stable pages (if it does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StablePagesReason {
    /// Whether in-flight write buffers must not change.
    pub required: bool,
    /// Human-readable explanation (which device or file system).
    pub why: String,
}

/// The host facts the planner and executors depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCaps {
    /// File or block device.
    pub kind: BackingKind,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size: the smallest unit the disk addresses (≥ 512).
    pub logical_block_size: u32,
    /// Physical block size (≥ logical).
    pub physical_block_size: u32,
    /// `O_DIRECT` memory alignment (bytes, power of two).
    pub dio_mem_align: u32,
    /// `O_DIRECT` file offset/length alignment (bytes, power of two).
    pub dio_offset_align: u32,
    /// Whether `pwritev2(RWF_DSYNC)` is accepted.
    pub rwf_dsync: bool,
    /// Whether discard (punch hole / BLKDISCARD) works.
    pub discard: bool,
    /// Whether efficient zeroing (ZERO_RANGE / BLKZEROOUT) works.
    pub write_zeroes: bool,
    /// The host device's volatile write cache (`queue/write_cache`).
    pub host_write_cache: Fact<bool>,
    /// The host device's FUA support (`queue/fua`).
    pub host_fua: Fact<bool>,
    /// Whether the storage below needs stable pages during writes.
    pub stable_pages: Fact<bool>,
    /// Explanation for `stable_pages`.
    pub stable_pages_why: String,
    /// Whether the device is rotational (for IDENTIFY word 217, VPD B1h).
    pub rotational: Fact<bool>,
    /// The host device's minimum I/O size hint in bytes (sysfs
    /// `queue/minimum_io_size`); 0 when unknown.
    pub io_min: u32,
    /// The host device's optimal I/O size hint in bytes (sysfs
    /// `queue/optimal_io_size`); 0 when the device gives none or it is
    /// unknown.
    pub io_opt: u32,
}

impl HostCaps {
    /// Caps for an in-memory or simulated disk of `size` bytes with 512-byte
    /// sectors and every feature available. Used by tests and the crash model.
    pub fn simulated(size: u64) -> HostCaps {
        HostCaps {
            kind: BackingKind::File,
            size,
            logical_block_size: 512,
            physical_block_size: 4096,
            dio_mem_align: 512,
            dio_offset_align: 512,
            rwf_dsync: true,
            discard: true,
            write_zeroes: true,
            host_write_cache: Fact::Known(true, "simulated"),
            host_fua: Fact::Known(false, "simulated"),
            stable_pages: Fact::Known(false, "simulated"),
            stable_pages_why: "simulated host".into(),
            rotational: Fact::Known(false, "simulated"),
            io_min: 0,
            io_opt: 0,
        }
    }
}

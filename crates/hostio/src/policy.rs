//! Cache policy: QEMU's three independent knobs, the cache-mode presets over
//! them, stable-write handling, discard handling and the error policy.
//!
//! The three knobs (see `docs/durability.md`):
//! - `direct`: the image is opened with `O_DIRECT` (open-time, fixed).
//! - `no_flush`: flushes and FUA are dropped ("unsafe"); nothing is ever
//!   promised durable.
//! - the guest-visible write cache (WCE): its *initial* value lives here; the
//!   guest toggles it at run time through IDE SET FEATURES, SCSI MODE SELECT or
//!   the virtio-blk `writeback` field, and [`crate::Disk`] holds the live value.
//!   WCE off means every write and write-zeroes is FUA.

use std::fmt;
use std::str::FromStr;

/// An error parsing a policy string. Its message names the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {given:?}: expected one of {accepted}")]
pub struct PolicyParseError {
    /// Which setting was being parsed (e.g. "cache mode").
    pub what: &'static str,
    /// The string that was given.
    pub given: String,
    /// The accepted values, comma separated.
    pub accepted: &'static str,
}

fn parse_err(what: &'static str, given: &str, accepted: &'static str) -> PolicyParseError {
    PolicyParseError {
        what,
        given: given.to_string(),
        accepted,
    }
}

/// Cache-mode presets, named as in QEMU's `-drive cache=`.
///
/// | preset | direct | no_flush | initial WCE |
/// |---|---|---|---|
/// | writeback | off | off | on |
/// | none | on | off | on |
/// | writethrough | off | off | off |
/// | directsync | on | off | off |
/// | unsafe | off | on | on |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheMode {
    /// Buffered I/O, guest write cache on; flushes reach stable storage.
    Writeback,
    /// `O_DIRECT`, guest write cache on; flushes reach stable storage.
    None,
    /// Buffered I/O, guest write cache off: every write is FUA.
    Writethrough,
    /// `O_DIRECT`, guest write cache off: every write is FUA.
    Directsync,
    /// Buffered I/O, flushes and FUA ignored. Nothing is durable.
    Unsafe,
}

impl CacheMode {
    /// Every preset, in documentation order.
    pub const ALL: [CacheMode; 5] = [
        CacheMode::Writeback,
        CacheMode::None,
        CacheMode::Writethrough,
        CacheMode::Directsync,
        CacheMode::Unsafe,
    ];
    const ACCEPTED: &'static str = "writeback, none, writethrough, directsync, unsafe";

    /// The preset's name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Writeback => "writeback",
            CacheMode::None => "none",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Directsync => "directsync",
            CacheMode::Unsafe => "unsafe",
        }
    }

    /// `O_DIRECT` at open.
    pub fn direct(self) -> bool {
        matches!(self, CacheMode::None | CacheMode::Directsync)
    }

    /// Flushes and FUA are dropped.
    pub fn no_flush(self) -> bool {
        matches!(self, CacheMode::Unsafe)
    }

    /// Initial guest-visible write cache state.
    pub fn write_cache(self) -> bool {
        !matches!(self, CacheMode::Writethrough | CacheMode::Directsync)
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheMode {
    type Err = PolicyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CacheMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| parse_err("cache mode", s, CacheMode::ACCEPTED))
    }
}

/// What to do about guest memory changing under an in-flight `O_DIRECT` write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StableWrites {
    /// Bounce when the host probe says the storage below needs stable pages
    /// (or cannot tell).
    Auto,
    /// Always copy guest data into an engine buffer before an `O_DIRECT` write.
    Bounce,
    /// Hand guest memory to `O_DIRECT` writes (Xen's `direct-io-safe`).
    Trust,
}

impl StableWrites {
    const ACCEPTED: &'static str = "auto, bounce, trust";
    /// Name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            StableWrites::Auto => "auto",
            StableWrites::Bounce => "bounce",
            StableWrites::Trust => "trust",
        }
    }
}

impl fmt::Display for StableWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StableWrites {
    type Err = PolicyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(StableWrites::Auto),
            "bounce" => Ok(StableWrites::Bounce),
            "trust" => Ok(StableWrites::Trust),
            _ => Err(parse_err("stable-writes setting", s, Self::ACCEPTED)),
        }
    }
}

/// Whether guest discards reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardMode {
    /// Discards complete successfully without host I/O (QEMU's default).
    Ignore,
    /// Discards punch holes (files) or issue `BLKDISCARD` (block devices).
    Unmap,
}

impl DiscardMode {
    const ACCEPTED: &'static str = "ignore, unmap";
    /// Name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            DiscardMode::Ignore => "ignore",
            DiscardMode::Unmap => "unmap",
        }
    }
}

impl fmt::Display for DiscardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DiscardMode {
    type Err = PolicyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ignore" | "off" => Ok(DiscardMode::Ignore),
            "unmap" | "on" => Ok(DiscardMode::Unmap),
            _ => Err(parse_err("discard setting", s, Self::ACCEPTED)),
        }
    }
}

/// What happens when a host operation fails, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// The guest sees the error (protocol-specific mapping in each front end).
    Report,
    /// The request is held; the VMM retries it after resolving the cause
    /// ([`crate::Disk::resume_held`]).
    Stop,
    /// Hold on `ENOSPC`, report every other error.
    Enospc,
}

impl ErrorAction {
    const ACCEPTED: &'static str = "report, stop, enospc";
    /// Name as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            ErrorAction::Report => "report",
            ErrorAction::Stop => "stop",
            ErrorAction::Enospc => "enospc",
        }
    }

    /// Whether an error with this errno is held rather than reported.
    pub fn holds(self, errno: i32) -> bool {
        match self {
            ErrorAction::Report => false,
            ErrorAction::Stop => true,
            ErrorAction::Enospc => errno == libc::ENOSPC,
        }
    }
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ErrorAction {
    type Err = PolicyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "report" => Ok(ErrorAction::Report),
            "stop" => Ok(ErrorAction::Stop),
            "enospc" => Ok(ErrorAction::Enospc),
            _ => Err(parse_err("error action", s, Self::ACCEPTED)),
        }
    }
}

/// Error policy per direction (QEMU's `rerror` / `werror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorPolicy {
    /// Applied to failed reads.
    pub read: ErrorAction,
    /// Applied to failed writes, flushes, discards and write-zeroes.
    pub write: ErrorAction,
}

impl Default for ErrorPolicy {
    /// QEMU's defaults: `rerror=report`, `werror=enospc`.
    fn default() -> Self {
        ErrorPolicy {
            read: ErrorAction::Report,
            write: ErrorAction::Enospc,
        }
    }
}

/// The complete policy for one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Open the image with `O_DIRECT`.
    pub direct: bool,
    /// Drop flushes and FUA.
    pub no_flush: bool,
    /// Initial (and after-reset default) guest-visible write cache.
    pub write_cache: bool,
    /// Stable-write handling for `O_DIRECT` writes.
    pub stable_writes: StableWrites,
    /// Discard handling.
    pub discard: DiscardMode,
    /// Error handling.
    pub errors: ErrorPolicy,
    /// Refuse writes, discards and write-zeroes.
    pub read_only: bool,
}

impl Policy {
    /// The policy a cache-mode preset stands for, with `stable_writes=auto`,
    /// `discard=ignore`, default error policy and read-write.
    pub fn from_mode(mode: CacheMode) -> Policy {
        Policy {
            direct: mode.direct(),
            no_flush: mode.no_flush(),
            write_cache: mode.write_cache(),
            stable_writes: StableWrites::Auto,
            discard: DiscardMode::Ignore,
            errors: ErrorPolicy::default(),
            read_only: false,
        }
    }

    /// The preset these knobs correspond to, if any.
    pub fn mode(&self) -> Option<CacheMode> {
        CacheMode::ALL.into_iter().find(|m| {
            m.direct() == self.direct
                && m.no_flush() == self.no_flush
                && m.write_cache() == self.write_cache
        })
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_mode(CacheMode::Writeback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_and_match_qemu_table() {
        for m in CacheMode::ALL {
            assert_eq!(m.name().parse::<CacheMode>().unwrap(), m);
            assert_eq!(Policy::from_mode(m).mode(), Some(m));
        }
        let none = Policy::from_mode(CacheMode::None);
        assert!(none.direct && !none.no_flush && none.write_cache);
        let ds = Policy::from_mode(CacheMode::Directsync);
        assert!(ds.direct && !ds.no_flush && !ds.write_cache);
        let un = Policy::from_mode(CacheMode::Unsafe);
        assert!(!un.direct && un.no_flush && un.write_cache);
    }

    #[test]
    fn bad_strings_name_accepted_values() {
        let e = "fast".parse::<CacheMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid cache mode \"fast\": expected one of writeback, none, writethrough, directsync, unsafe"
        );
        assert!("x"
            .parse::<StableWrites>()
            .unwrap_err()
            .to_string()
            .contains("auto, bounce, trust"));
        assert!("x"
            .parse::<DiscardMode>()
            .unwrap_err()
            .to_string()
            .contains("ignore, unmap"));
        assert!("x"
            .parse::<ErrorAction>()
            .unwrap_err()
            .to_string()
            .contains("report, stop, enospc"));
    }

    #[test]
    fn enospc_action_holds_only_enospc() {
        assert!(ErrorAction::Enospc.holds(libc::ENOSPC));
        assert!(!ErrorAction::Enospc.holds(libc::EIO));
        assert!(ErrorAction::Stop.holds(libc::EIO));
        assert!(!ErrorAction::Report.holds(libc::ENOSPC));
    }
}

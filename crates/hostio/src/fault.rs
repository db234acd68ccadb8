//! Fault injection around any [`HostFile`]: fail the Nth host op with EIO,
//! ENOSPC, EINTR or a short transfer. The crash model's simulator has the
//! same faults built in (with the kernel's writeback-failure semantics);
//! this wrapper puts them in front of real files.
//!
//! Over a file with a descriptor, the io_uring executor submits reads,
//! writes, syncs and fallocates to the kernel itself; the wrapper then counts
//! and fails them through [`HostFile::inject`] (same Nth-op numbering), so the
//! faults reach the real ring: an error completes the op without submitting
//! it, a short transfer submits half the bytes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::crash::FaultKind;
use std::os::fd::RawFd;

use crate::file::{HostFile, Injected, IoVec, OpKind};

/// Wraps a [`HostFile`], failing one chosen op.
pub struct FaultFile {
    inner: Arc<dyn HostFile>,
    count: AtomicU64,
    at: u64,
    kind: FaultKind,
}

impl FaultFile {
    /// Fails op number `at` (1-based, counting every call) with `kind`.
    pub fn new(inner: Arc<dyn HostFile>, at: u64, kind: FaultKind) -> FaultFile {
        FaultFile {
            inner,
            count: AtomicU64::new(0),
            at,
            kind,
        }
    }

    /// Ops seen so far.
    pub fn ops(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn hit(&self) -> Option<FaultKind> {
        (self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.at).then_some(self.kind)
    }
}

fn err(k: FaultKind) -> io::Error {
    io::Error::from_raw_os_error(match k {
        FaultKind::Eio | FaultKind::Short => libc::EIO,
        FaultKind::Enospc => libc::ENOSPC,
        FaultKind::Eintr => libc::EINTR,
    })
}

/// Half of the vectors' bytes (at least one byte short when possible).
pub(crate) fn half(iov: &[IoVec]) -> Vec<IoVec> {
    let total: usize = iov.iter().map(|v| v.len()).sum();
    let mut want = total / 2;
    let mut out = Vec::new();
    for v in iov {
        if want == 0 {
            break;
        }
        let n = v.len().min(want);
        // SAFETY: a prefix of a vector the caller made valid.
        out.push(unsafe { IoVec::from_raw(v.ptr(), n) });
        want -= n;
    }
    out
}

impl HostFile for FaultFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        match self.hit() {
            Some(FaultKind::Short) if iov.iter().map(|v| v.len()).sum::<usize>() > 1 => {
                self.inner.preadv(&half(iov), offset)
            }
            Some(k) => Err(err(k)),
            None => self.inner.preadv(iov, offset),
        }
    }
    fn pwritev(&self, iov: &[IoVec], offset: u64, dsync: bool) -> io::Result<usize> {
        match self.hit() {
            Some(FaultKind::Short) if iov.iter().map(|v| v.len()).sum::<usize>() > 1 => {
                self.inner.pwritev(&half(iov), offset, dsync)
            }
            Some(k) => Err(err(k)),
            None => self.inner.pwritev(iov, offset, dsync),
        }
    }
    fn fdatasync(&self) -> io::Result<()> {
        match self.hit() {
            Some(k) => Err(err(k)),
            None => self.inner.fdatasync(),
        }
    }
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.hit() {
            Some(k) => Err(err(k)),
            None => self.inner.punch_hole(offset, len),
        }
    }
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.hit() {
            Some(k) => Err(err(k)),
            None => self.inner.zero_range(offset, len),
        }
    }
    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.hit() {
            Some(k) => Err(err(k)),
            None => self.inner.blk_discard(offset, len),
        }
    }
    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.hit() {
            Some(k) => Err(err(k)),
            None => self.inner.blk_zeroout(offset, len),
        }
    }
    fn raw_fd(&self) -> Option<RawFd> {
        self.inner.raw_fd()
    }
    fn inject(&self, op: OpKind) -> Option<Injected> {
        let Some(k) = self.hit() else {
            return self.inner.inject(op);
        };
        match (k, op) {
            (FaultKind::Short, OpKind::Read | OpKind::Write) => Some(Injected::Short),
            (k, _) => Some(Injected::Error(err(k).raw_os_error().unwrap_or(libc::EIO))),
        }
    }
}

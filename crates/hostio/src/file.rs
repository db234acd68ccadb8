//! The host-file seam: the handful of syscalls the engine issues on an image.
//!
//! [`HostFile`] is implemented by [`RealFile`] (the syscalls), by the crash
//! model's simulated host ([`crate::crash::SimFile`]) and by the fault
//! injector ([`crate::fault::FaultFile`]). Executors run plans against it, so
//! every executor sees the same semantics and the same failures.
//!
//! Contract: implementations may return short transfers (the executor retries
//! the remainder) and any errno; they never touch bytes outside the ranges
//! they are given. Offsets and lengths reaching this layer were validated
//! against the disk size by [`crate::Request::validate`] and aligned by the
//! planner.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_io_nr;

/// One I/O vector: a pointer/length pair naming memory valid for the call.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct IoVec(libc::iovec);

// SAFETY: IoVec is only a description of memory; the creator of an IoVec
// promised (in `from_raw`) that the memory stays valid while it is in use.
unsafe impl Send for IoVec {}
// SAFETY: see Send.
unsafe impl Sync for IoVec {}

impl IoVec {
    /// Describes `len` bytes at `ptr`.
    ///
    /// # Safety
    /// The memory must stay mapped, readable and (for reads into it)
    /// writable for as long as the `IoVec` or a copy of it is used.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> IoVec {
        IoVec(libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.iov_len
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iov_len == 0
    }

    /// Start address.
    pub fn ptr(&self) -> *mut u8 {
        self.0.iov_base.cast()
    }

    /// The vector advanced by `n` bytes (`n <= len`).
    pub fn advance(&self, n: usize) -> IoVec {
        let n = n.min(self.0.iov_len);
        // SAFETY: stays within the memory described by self.
        unsafe { IoVec::from_raw(self.ptr().add(n), self.0.iov_len - n) }
    }

    /// Copies `dst.len()` bytes from offset `at` of this vector into `dst`.
    pub fn copy_to(&self, at: usize, dst: &mut [u8]) {
        let n = dst.len().min(self.len().saturating_sub(at));
        // SAFETY: `from_raw`'s contract makes [ptr, ptr+len) readable; we read
        // within it; dst is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr().add(at), dst.as_mut_ptr(), n) };
    }

    /// Copies `src` into this vector at offset `at`.
    pub fn copy_from(&self, at: usize, src: &[u8]) {
        let n = src.len().min(self.len().saturating_sub(at));
        // SAFETY: `from_raw`'s contract makes [ptr, ptr+len) writable for reads
        // into it; src is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr().add(at), n) };
    }
}

/// The syscalls the engine issues on an image. See the module contract.
pub trait HostFile: Send + Sync {
    /// `preadv` at `offset`.
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize>;
    /// `pwritev`, or `pwritev2(RWF_DSYNC)` when `dsync`.
    fn pwritev(&self, iov: &[IoVec], offset: u64, dsync: bool) -> io::Result<usize>;
    /// `fdatasync`.
    fn fdatasync(&self) -> io::Result<()>;
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// `fallocate(ZERO_RANGE | KEEP_SIZE)`.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// `ioctl(BLKDISCARD)`.
    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// `ioctl(BLKZEROOUT)`.
    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()>;

    /// The image's file descriptor, when this is a real file the io_uring
    /// executor can submit ops on. `None` (the default: crash-model and
    /// in-memory files) makes that executor call the methods above instead
    /// (its "emulated ring").
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    /// Fault hook for ops the io_uring executor submits on [`HostFile::raw_fd`]
    /// without calling the methods above: `Some` replaces the op's outcome.
    /// Called once per submitted op, in submission order. The default injects
    /// nothing.
    fn inject(&self, op: OpKind) -> Option<Injected> {
        let _ = op;
        None
    }
}

/// An op the io_uring executor is about to submit (see [`HostFile::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `IORING_OP_READV`.
    Read,
    /// `IORING_OP_WRITEV`.
    Write,
    /// `IORING_OP_FSYNC` (datasync).
    Sync,
    /// `IORING_OP_FALLOCATE`.
    Fallocate,
}

/// What [`HostFile::inject`] does to an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Complete it with this errno without submitting it.
    Error(i32),
    /// Submit only the first half of its bytes (a short transfer; the
    /// executor resubmits the rest). Only for reads and writes of 2+ bytes;
    /// otherwise the op runs whole.
    Short,
}

mod nr {
    #![allow(missing_docs)]
    use super::*;
    ioctl_io_nr!(BLKDISCARD, 0x12, 119);
    ioctl_io_nr!(BLKZEROOUT, 0x12, 127);
}
use nr::{BLKDISCARD, BLKZEROOUT};

/// The real syscalls on an open image.
#[derive(Debug)]
pub struct RealFile {
    file: File,
}

impl RealFile {
    /// Wraps an open image. Keep one long-lived description per image: the
    /// kernel reports a writeback error once per open file description.
    pub fn new(file: File) -> RealFile {
        RealFile { file }
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn off(o: u64) -> io::Result<i64> {
    i64::try_from(o).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

const IOV_MAX: usize = 1024;

impl HostFile for RealFile {
    fn preadv(&self, iov: &[IoVec], offset: u64) -> io::Result<usize> {
        let o = off(offset)?;
        let n = iov.len().min(IOV_MAX) as libc::c_int;
        retry(|| {
            // SAFETY: IoVec is repr(transparent) over iovec and its creator
            // guaranteed the memory is valid and writable.
            cvt(unsafe { libc::preadv(self.file.as_raw_fd(), iov.as_ptr().cast(), n, o) })
        })
    }

    fn pwritev(&self, iov: &[IoVec], offset: u64, dsync: bool) -> io::Result<usize> {
        let o = off(offset)?;
        let n = iov.len().min(IOV_MAX) as libc::c_int;
        let flags = if dsync { libc::RWF_DSYNC } else { 0 };
        retry(|| {
            // SAFETY: as in preadv; memory only read by the kernel.
            cvt(unsafe { libc::pwritev2(self.file.as_raw_fd(), iov.as_ptr().cast(), n, o, flags) })
        })
    }

    fn fdatasync(&self) -> io::Result<()> {
        // No EINTR retry loop on purpose: fdatasync reports an error once;
        // EINTR does not happen for it on Linux regular files and devices.
        self.file.sync_data()
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    fn blk_discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD reads a u64[2] range; `range` outlives the call.
        let r = unsafe { ioctl_with_ref(&self.file, BLKDISCARD(), &range) };
        cvt(r as isize).map(|_| ())
    }

    fn blk_zeroout(&self, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKZEROOUT reads a u64[2] range; `range` outlives the call.
        let r = unsafe { ioctl_with_ref(&self.file, BLKZEROOUT(), &range) };
        cvt(r as isize).map(|_| ())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }
}

impl RealFile {
    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        let (o, l) = (off(offset)?, off(len)?);
        retry(|| {
            // SAFETY: plain syscall on an owned fd, no memory arguments.
            let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, o, l) };
            cvt(r as isize).map(|_| ())
        })
    }
}

//! The request vocabulary every front end speaks, and its validation.
//!
//! Contract: offsets and lengths originate with the guest. [`Request::validate`]
//! (called by [`crate::Disk::submit`] before anything else) rejects requests
//! beyond the disk end, with overflowing arithmetic, misaligned to the logical
//! block size, or whose buffer does not match the length or lies outside
//! guest memory, with a typed [`RequestError`]. No host I/O happens for a
//! rejected request. Nothing here panics for any input.

use crate::buf::DataBuf;

/// The operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read `len` bytes at `offset` into the buffer.
    Read,
    /// Write the buffer at `offset`; `fua` asks for it to be durable on
    /// completion.
    Write {
        /// Force unit access.
        fua: bool,
    },
    /// Make every write completed before this request durable.
    Flush,
    /// The range's contents are no longer needed (advisory).
    Discard,
    /// The range must read back as zeroes; `may_unmap` allows deallocation.
    WriteZeroes {
        /// Deallocation allowed.
        may_unmap: bool,
    },
}

impl Op {
    /// Short name for traces and counters.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write { fua: false } => "write",
            Op::Write { fua: true } => "write-fua",
            Op::Flush => "flush",
            Op::Discard => "discard",
            Op::WriteZeroes { may_unmap: false } => "write-zeroes",
            Op::WriteZeroes { may_unmap: true } => "write-zeroes-unmap",
        }
    }

    /// Whether the op modifies the disk.
    pub fn is_write(self) -> bool {
        !matches!(self, Op::Read | Op::Flush)
    }
}

/// One guest request.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Byte offset on the disk (0 for flush).
    pub offset: u64,
    /// Length in bytes (0 for flush).
    pub len: u64,
    /// Data for reads and writes; [`DataBuf::None`] otherwise.
    pub buf: DataBuf,
    /// Opaque value returned with the completion.
    pub tag: u64,
}

impl Request {
    /// A read into `buf`.
    pub fn read(offset: u64, buf: DataBuf, tag: u64) -> Request {
        Request {
            op: Op::Read,
            offset,
            len: buf.len(),
            buf,
            tag,
        }
    }

    /// A write from `buf`.
    pub fn write(offset: u64, buf: DataBuf, fua: bool, tag: u64) -> Request {
        Request {
            op: Op::Write { fua },
            offset,
            len: buf.len(),
            buf,
            tag,
        }
    }

    /// A flush.
    pub fn flush(tag: u64) -> Request {
        Request {
            op: Op::Flush,
            offset: 0,
            len: 0,
            buf: DataBuf::None,
            tag,
        }
    }

    /// A discard of `len` bytes at `offset`.
    pub fn discard(offset: u64, len: u64, tag: u64) -> Request {
        Request {
            op: Op::Discard,
            offset,
            len,
            buf: DataBuf::None,
            tag,
        }
    }

    /// A write-zeroes of `len` bytes at `offset`.
    pub fn write_zeroes(offset: u64, len: u64, may_unmap: bool, tag: u64) -> Request {
        Request {
            op: Op::WriteZeroes { may_unmap },
            offset,
            len,
            buf: DataBuf::None,
            tag,
        }
    }

    /// Checks the request against a disk of `size` bytes with logical block
    /// size `lbs`. See the module contract.
    pub fn validate(&self, size: u64, lbs: u32, read_only: bool) -> Result<(), RequestError> {
        let lbs = u64::from(lbs.max(1));
        match self.op {
            Op::Flush => {
                if !self.buf.is_empty() {
                    return Err(RequestError::BufferMismatch {
                        len: self.len,
                        buf: self.buf.len(),
                    });
                }
                return Ok(());
            }
            Op::Read => {}
            _ if read_only => return Err(RequestError::ReadOnly),
            _ => {}
        }
        let end = self
            .offset
            .checked_add(self.len)
            .ok_or(RequestError::Overflow)?;
        if self.offset % lbs != 0 || self.len % lbs != 0 {
            return Err(RequestError::Misaligned {
                offset: self.offset,
                len: self.len,
                block: lbs as u32,
            });
        }
        if end > size {
            return Err(RequestError::OutOfRange {
                offset: self.offset,
                len: self.len,
                size,
            });
        }
        if self.len == 0 {
            return Err(RequestError::Empty);
        }
        match self.op {
            Op::Read | Op::Write { .. } => {
                if self.buf.len() != self.len {
                    return Err(RequestError::BufferMismatch {
                        len: self.len,
                        buf: self.buf.len(),
                    });
                }
                if let DataBuf::Guest(g) = &self.buf {
                    // Overflowing segment sums and unmapped addresses.
                    let mut sum = 0u64;
                    for (_, l) in g.segments() {
                        sum = sum.checked_add(*l as u64).ok_or(RequestError::Overflow)?;
                    }
                    if !g.for_each_slice(|_| ()) {
                        return Err(RequestError::GuestMemory);
                    }
                }
            }
            _ => {
                if !self.buf.is_empty() {
                    return Err(RequestError::BufferMismatch {
                        len: self.len,
                        buf: self.buf.len(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why a request was rejected before any host I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The range ends beyond the disk.
    #[error("range {offset}+{len} beyond disk end {size}")]
    OutOfRange {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// Disk size.
        size: u64,
    },
    /// Offset + length (or a buffer sum) overflows.
    #[error("offset/length arithmetic overflows")]
    Overflow,
    /// Not a multiple of the logical block size.
    #[error("range {offset}+{len} not aligned to the {block}-byte logical block")]
    Misaligned {
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// Logical block size.
        block: u32,
    },
    /// A data request of length zero.
    #[error("zero-length request")]
    Empty,
    /// The buffer length does not match the request length.
    #[error("buffer of {buf} bytes for a request of {len} bytes")]
    BufferMismatch {
        /// Request length.
        len: u64,
        /// Buffer length.
        buf: u64,
    },
    /// A buffer segment lies outside guest memory.
    #[error("buffer outside guest memory")]
    GuestMemory,
    /// A modifying request on a read-only disk.
    #[error("disk is read-only")]
    ReadOnly,
}

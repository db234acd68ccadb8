//! [`NullFile`]: a [`HostFile`] that completes every call at once and
//! touches no data, for measuring what the engine and the front ends cost
//! per request with the host I/O taken out (`crates/vmstor/benches`).
//!
//! Reads and writes report their full length without reading or writing a
//! byte of the vectors (a read leaves guest memory as it was), `fdatasync`
//! and the discard/zeroing calls succeed. Nothing is stored: it is not an
//! image, only the cheapest possible backend.

use std::io;

use crate::file::{HostFile, IoVec};

/// The null backend. See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullFile;

impl NullFile {
    /// A null backend.
    pub fn new() -> NullFile {
        NullFile
    }
}

fn total(iov: &[IoVec]) -> usize {
    iov.iter().map(IoVec::len).sum()
}

impl HostFile for NullFile {
    fn preadv(&self, iov: &[IoVec], _offset: u64) -> io::Result<usize> {
        Ok(total(iov))
    }

    fn pwritev(&self, iov: &[IoVec], _offset: u64, _dsync: bool) -> io::Result<usize> {
        Ok(total(iov))
    }

    fn fdatasync(&self) -> io::Result<()> {
        Ok(())
    }

    fn punch_hole(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn zero_range(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn blk_discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn blk_zeroout(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lengths_and_no_data_touched() {
        let mut a = [7u8; 512];
        let mut b = [9u8; 1024];
        // SAFETY: both arrays outlive the vectors.
        let iov = unsafe {
            [
                IoVec::from_raw(a.as_mut_ptr(), a.len()),
                IoVec::from_raw(b.as_mut_ptr(), b.len()),
            ]
        };
        let f = NullFile::new();
        assert_eq!(f.preadv(&iov, 4096).unwrap(), 1536);
        assert_eq!(f.pwritev(&iov, 0, true).unwrap(), 1536);
        f.fdatasync().unwrap();
        f.punch_hole(0, 4096).unwrap();
        assert!(a.iter().all(|&x| x == 7) && b.iter().all(|&x| x == 9));
    }
}

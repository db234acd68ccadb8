//! Helpers over hostio [`DataBuf`]s: copying emulated data in and out, and
//! taking a prefix of a buffer so a READ or WRITE moves exactly the bytes
//! its CDB names.
//!
//! Guest scatter lists are never resolved here beyond what the copies
//! touch; a segment outside guest memory makes the copy fail (the caller
//! reports it) rather than panic.

use vm_memory::{Address, Bytes, GuestAddress};
use vmstor_hostio::{AlignedBuf, DataBuf, GuestBufs};

/// Copies the first `dst.len()` bytes of `buf` into `dst`.
pub(crate) fn read_prefix(buf: &DataBuf, dst: &mut [u8]) -> Result<(), ()> {
    match buf {
        DataBuf::None => {
            if dst.is_empty() {
                Ok(())
            } else {
                Err(())
            }
        }
        DataBuf::Owned(b) => {
            let src = b.as_slice().get(..dst.len()).ok_or(())?;
            dst.copy_from_slice(src);
            Ok(())
        }
        DataBuf::Guest(g) => {
            let mut done = 0;
            for &(addr, len) in g.segments() {
                if done == dst.len() {
                    break;
                }
                let n = len.min(dst.len() - done);
                g.memory()
                    .read_slice(&mut dst[done..done + n], addr)
                    .map_err(|_| ())?;
                done += n;
            }
            if done == dst.len() {
                Ok(())
            } else {
                Err(())
            }
        }
    }
}

/// Copies `src` into the start of `buf`; returns how many bytes fit.
pub(crate) fn write_prefix(buf: &mut DataBuf, src: &[u8]) -> Result<usize, ()> {
    match buf {
        DataBuf::None => Ok(0),
        DataBuf::Owned(b) => {
            let n = src.len().min(b.len());
            b.as_mut_slice()[..n].copy_from_slice(&src[..n]);
            Ok(n)
        }
        DataBuf::Guest(g) => {
            let mut done = 0;
            for &(addr, len) in g.segments() {
                if done == src.len() {
                    break;
                }
                let n = len.min(src.len() - done);
                g.memory()
                    .write_slice(&src[done..done + n], addr)
                    .map_err(|_| ())?;
                done += n;
            }
            Ok(done)
        }
    }
}

/// The first `len` bytes of a guest scatter list (`None` if it is
/// shorter).
pub(crate) fn guest_prefix(g: &GuestBufs, len: u64) -> Option<GuestBufs> {
    let mut segs: Vec<(GuestAddress, usize)> = Vec::new();
    let mut left = len;
    for &(addr, l) in g.segments() {
        if left == 0 {
            break;
        }
        let n = (l as u64).min(left);
        if n > 0 {
            // Checked so a wrapping address is rejected later by hostio's
            // guest-memory validation rather than here.
            addr.checked_add(0)?;
            segs.push((addr, n as usize));
        }
        left -= n;
    }
    (left == 0).then(|| GuestBufs::new(g.memory().clone(), segs))
}

/// A buffer of exactly `len` bytes for a host request, taken from `buf`.
///
/// Returns `(request buffer, caller buffer kept aside)`. A guest list of
/// exactly `len` bytes (no empty segment) travels in the request as it is,
/// like an owned buffer of the exact length (no copy of the list); a longer
/// guest list is cut to its prefix (the caller's list needs no return: the
/// data lives in guest memory); a longer owned buffer is kept and a fresh
/// one used (for writes the prefix is copied into it).
pub(crate) fn io_buffer(
    buf: DataBuf,
    len: u64,
    copy_in: bool,
) -> Option<(DataBuf, Option<DataBuf>)> {
    if buf.len() < len {
        return None;
    }
    match buf {
        DataBuf::Guest(g) if g.total_len() == len && g.segments().iter().all(|s| s.1 > 0) => {
            Some((DataBuf::Guest(g), None))
        }
        DataBuf::Guest(g) => {
            let p = guest_prefix(&g, len)?;
            Some((DataBuf::Guest(p), Some(DataBuf::Guest(g))))
        }
        DataBuf::Owned(b) if b.len() as u64 == len => Some((DataBuf::Owned(b), None)),
        DataBuf::Owned(b) => {
            let n = usize::try_from(len).ok()?;
            let fresh = if copy_in {
                AlignedBuf::from_slice(&b.as_slice()[..n])
            } else {
                AlignedBuf::new(n)
            };
            Some((DataBuf::Owned(fresh), Some(DataBuf::Owned(b))))
        }
        DataBuf::None => (len == 0).then_some((DataBuf::None, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn guest_copies_span_segments_and_fail_outside_memory() {
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
        let g = GuestBufs::new(
            mem.clone(),
            vec![(GuestAddress(0x100), 3), (GuestAddress(0x200), 5)],
        );
        let mut b = DataBuf::Guest(g.clone());
        assert_eq!(write_prefix(&mut b, b"abcdefghij").unwrap(), 8);
        let mut out = [0u8; 6];
        read_prefix(&b, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        let p = guest_prefix(&g, 4).unwrap();
        assert_eq!(
            p.segments(),
            &[(GuestAddress(0x100), 3), (GuestAddress(0x200), 1)]
        );
        assert!(guest_prefix(&g, 9).is_none());
        let bad = DataBuf::Guest(GuestBufs::new(mem, vec![(GuestAddress(0xfff0), 0x20)]));
        assert!(read_prefix(&bad, &mut [0u8; 0x20]).is_err());
    }

    #[test]
    fn owned_io_buffers() {
        let (b, keep) =
            io_buffer(DataBuf::Owned(AlignedBuf::from_slice(b"12345678")), 4, true).unwrap();
        match b {
            DataBuf::Owned(b) => assert_eq!(b.as_slice(), b"1234"),
            _ => panic!(),
        }
        assert!(keep.is_some());
        assert!(io_buffer(DataBuf::Owned(AlignedBuf::new(2)), 4, true).is_none());
        assert!(io_buffer(DataBuf::None, 0, false).is_some());
    }
}

//! Data buffers a request carries: scatter lists in guest memory, or an
//! engine-owned aligned buffer (PIO transfers, bounce buffers).

use std::alloc::{self, Layout};
use std::sync::Arc;

use crate::request::RequestError;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Alignment of every [`AlignedBuf`]: a page, which satisfies any `O_DIRECT`
/// memory alignment a Linux host reports.
pub const BUF_ALIGN: usize = 4096;

/// A heap buffer aligned to [`BUF_ALIGN`], zero-initialised.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    /// Bytes allocated (at least `len`; more for a pooled bounce buffer).
    cap: usize,
}

// SAFETY: AlignedBuf uniquely owns its allocation, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8]; mutation needs &mut self.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> AlignedBuf {
        AlignedBuf::with_capacity(len, len)
    }

    /// A zeroed buffer of `len` bytes in an allocation of `cap` (>= `len`).
    fn with_capacity(len: usize, cap: usize) -> AlignedBuf {
        let cap = cap.max(len);
        if cap == 0 {
            return AlignedBuf {
                ptr: std::ptr::NonNull::dangling(),
                len: 0,
                cap: 0,
            };
        }
        let layout = Layout::from_size_align(cap, BUF_ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, cap }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::new(data.len());
        b.as_mut_slice().copy_from_slice(data);
        b
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes (or dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap != 0 {
            let layout = Layout::from_size_align(self.cap, BUF_ALIGN).expect("buffer layout");
            // SAFETY: allocated in new() with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Bounce buffers of one disk, kept for reuse: a fresh 64 KiB allocation
/// costs a page fault per page (measured: ~6 faults per bounced 64 KiB
/// write at QD8, half the throughput of an unbounced write). A buffer comes
/// out of the pool zeroed up to its length, so no byte of an earlier
/// request can reach a later one. Sizes are rounded up to a power of two
/// (at least a page); buffers over [`BouncePool::MAX_BUF`] are not kept,
/// nor more than [`BouncePool::MAX_COUNT`].
#[derive(Debug, Default)]
pub(crate) struct BouncePool {
    free: std::sync::Mutex<Vec<AlignedBuf>>,
}

impl BouncePool {
    /// Largest buffer kept.
    pub(crate) const MAX_BUF: usize = 1 << 20;
    /// Most buffers kept.
    pub(crate) const MAX_COUNT: usize = 64;

    fn class(len: usize) -> usize {
        len.next_power_of_two().max(BUF_ALIGN)
    }

    /// A zeroed buffer of `len` bytes.
    pub(crate) fn take(&self, len: usize) -> AlignedBuf {
        if len == 0 || len > Self::MAX_BUF {
            return AlignedBuf::new(len);
        }
        let cap = Self::class(len);
        let reused = {
            let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
            f.iter()
                .position(|b| b.cap == cap)
                .map(|i| f.swap_remove(i))
        };
        match reused {
            Some(mut b) => {
                b.len = len;
                b.as_mut_slice().fill(0);
                b
            }
            None => AlignedBuf::with_capacity(len, cap),
        }
    }

    /// Returns a buffer [`BouncePool::take`] gave out.
    pub(crate) fn give(&self, b: AlignedBuf) {
        if b.cap == 0 || b.cap > Self::MAX_BUF || b.cap != Self::class(b.len) {
            return;
        }
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < Self::MAX_COUNT {
            f.push(b);
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// A scatter list in guest memory. Keeps the memory alive for as long as the
/// request is in flight, so executors on other threads may use it.
#[derive(Clone)]
pub struct GuestBufs {
    mem: Arc<GuestMemoryMmap>,
    segs: Vec<(GuestAddress, usize)>,
}

impl std::fmt::Debug for GuestBufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestBufs")
            .field("segs", &self.segs)
            .finish()
    }
}

impl GuestBufs {
    /// A scatter list over `mem`. Nothing is checked here; [`crate::Disk`]
    /// validates every segment against guest memory before any host I/O.
    pub fn new(mem: Arc<GuestMemoryMmap>, segs: Vec<(GuestAddress, usize)>) -> GuestBufs {
        GuestBufs { mem, segs }
    }

    /// The segments.
    pub fn segments(&self) -> &[(GuestAddress, usize)] {
        &self.segs
    }

    /// The guest memory.
    pub fn memory(&self) -> &Arc<GuestMemoryMmap> {
        &self.mem
    }

    /// Total length (saturating; overflow is rejected by validation).
    pub fn total_len(&self) -> u64 {
        self.segs
            .iter()
            .fold(0u64, |a, (_, l)| a.saturating_add(*l as u64))
    }

    /// Resolves every segment to host-mapped slices, in order, and calls `f`
    /// with each (without collecting them: this runs several times per
    /// request). `false` if any byte lies outside guest memory; `f` may
    /// have seen the slices before the bad one.
    pub(crate) fn for_each_slice(&self, mut f: impl FnMut(&VolatileSlice<'_>)) -> bool {
        for &(addr, len) in &self.segs {
            if len == 0 {
                continue;
            }
            for s in GuestMemoryBackend::get_slices(&*self.mem, addr, len) {
                match s {
                    Ok(s) => f(&s),
                    Err(_) => return false,
                }
            }
        }
        true
    }

    /// Copies `dst.len()` bytes starting `offset` bytes into the scatter list
    /// into `dst`. Fails if the range is not inside the list or guest memory.
    pub fn copy_out(&self, mut offset: u64, dst: &mut [u8]) -> Result<(), RequestError> {
        let mut done = 0usize;
        for &(addr, len) in &self.segs {
            if done == dst.len() {
                break;
            }
            let len = len as u64;
            if offset >= len {
                offset -= len;
                continue;
            }
            let n = ((len - offset) as usize).min(dst.len() - done);
            let a = addr.checked_add(offset).ok_or(RequestError::GuestMemory)?;
            self.mem
                .read_slice(&mut dst[done..done + n], a)
                .map_err(|_| RequestError::GuestMemory)?;
            done += n;
            offset = 0;
        }
        if done == dst.len() {
            Ok(())
        } else {
            Err(RequestError::GuestMemory)
        }
    }

    /// Copies `src` into the scatter list starting `offset` bytes in. Fails
    /// if the range is not inside the list or guest memory.
    pub fn copy_in(&self, mut offset: u64, src: &[u8]) -> Result<(), RequestError> {
        let mut done = 0usize;
        for &(addr, len) in &self.segs {
            if done == src.len() {
                break;
            }
            let len = len as u64;
            if offset >= len {
                offset -= len;
                continue;
            }
            let n = ((len - offset) as usize).min(src.len() - done);
            let a = addr.checked_add(offset).ok_or(RequestError::GuestMemory)?;
            self.mem
                .write_slice(&src[done..done + n], a)
                .map_err(|_| RequestError::GuestMemory)?;
            done += n;
            offset = 0;
        }
        if done == src.len() {
            Ok(())
        } else {
            Err(RequestError::GuestMemory)
        }
    }
}

/// The data a request reads into or writes from.
#[derive(Debug, Default)]
pub enum DataBuf {
    /// No data (flush, discard, write-zeroes).
    #[default]
    None,
    /// A scatter list in guest memory.
    Guest(GuestBufs),
    /// An engine-owned aligned buffer; read data is returned in it with the
    /// completion.
    Owned(AlignedBuf),
}

impl DataBuf {
    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            DataBuf::None => 0,
            DataBuf::Guest(g) => g.total_len(),
            DataBuf::Owned(b) => b.len() as u64,
        }
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    /// A reused bounce buffer is the same allocation, has the new length
    /// and carries none of the previous request's bytes.
    #[test]
    fn reused_bounce_buffer_is_zeroed_and_sized() {
        let pool = BouncePool::default();
        let mut a = pool.take(65536);
        a.as_mut_slice().fill(0xa5);
        let at = a.as_slice().as_ptr();
        pool.give(a);
        // 40 KiB rounds up to the same 64 KiB class.
        let b = pool.take(40960);
        assert_eq!(b.as_slice().as_ptr(), at, "reused");
        assert_eq!(b.len(), 40960);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        assert_eq!(b.as_slice().as_ptr() as usize % BUF_ALIGN, 0);
        // Another class is a fresh allocation.
        let c = pool.take(4096);
        assert_ne!(c.as_slice().as_ptr(), at);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.free.lock().unwrap().len(), 2);
    }

    #[test]
    fn pool_keeps_neither_huge_nor_foreign_nor_too_many() {
        let pool = BouncePool::default();
        pool.give(pool.take(BouncePool::MAX_BUF * 2));
        pool.give(AlignedBuf::new(12288)); // not a pool class
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        let bufs: Vec<_> = (0..BouncePool::MAX_COUNT + 8)
            .map(|_| pool.take(8192))
            .collect();
        bufs.into_iter().for_each(|b| pool.give(b));
        assert_eq!(pool.free.lock().unwrap().len(), BouncePool::MAX_COUNT);
    }
}

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
}

// SAFETY: AlignedBuf uniquely owns its allocation, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8]; mutation needs &mut self.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> AlignedBuf {
        if len == 0 {
            return AlignedBuf {
                ptr: std::ptr::NonNull::dangling(),
                len: 0,
            };
        }
        let layout = Layout::from_size_align(len, BUF_ALIGN).expect("buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
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
        if self.len != 0 {
            let layout = Layout::from_size_align(self.len, BUF_ALIGN).expect("buffer layout");
            // SAFETY: allocated in new() with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
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

//! Guest RAM from `SYNC_SYSMEM`: the memfd regions QEMU passes are mapped
//! (shared, read-write) into a [`GuestMemoryMmap`] that device models DMA
//! through.
//!
//! Contract:
//! - A region is mapped only if its file really holds `offset + size` bytes
//!   (`fstat`): mapping past the end of a file would make a later access raise
//!   SIGBUS instead of failing. (A peer that shrinks the memfd afterwards can
//!   still cause SIGBUS; QEMU's memory backends never do, and QEMU creates the
//!   memfd without sealing support, so the remote cannot forbid it.)
//! - QEMU sends `SYNC_SYSMEM` on every memory-topology commit, 80–100 times per
//!   boot, nearly always with the same layout and fresh descriptors. A layout
//!   equal to the current one (same regions, same files by device and inode)
//!   keeps the current mapping, so device models are not disturbed.
//! - A layout that cannot be mapped leaves the guest with *no* memory (every
//!   DMA fails) rather than with a stale map.
//! - Replaced maps stay valid while a device model still holds their `Arc`:
//!   the unmapping happens when the last holder drops it.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use thiserror::Error;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::wire::RegionDesc;

/// Why a guest RAM layout was refused.
#[derive(Debug, Error)]
pub enum MemError {
    /// The region count and descriptor count differ.
    #[error("{regions} regions but {fds} file descriptors")]
    FdMismatch {
        /// Regions.
        regions: usize,
        /// Descriptors.
        fds: usize,
    },
    /// `fstat` of a region's descriptor failed.
    #[error("region {index}: fstat: {err}")]
    Stat {
        /// Region index.
        index: usize,
        /// The error.
        err: std::io::Error,
    },
    /// The region extends past the end of its file.
    #[error(
        "region {index}: offset {offset:#x} + size {size:#x} exceeds the file's {len:#x} bytes"
    )]
    PastEof {
        /// Region index.
        index: usize,
        /// Offset.
        offset: u64,
        /// Size.
        size: u64,
        /// File length.
        len: u64,
    },
    /// `mmap` failed or the region does not fit the address space.
    #[error("region {index}: mmap: {msg}")]
    Map {
        /// Region index.
        index: usize,
        /// The error.
        msg: String,
    },
    /// vm-memory refused the region set.
    #[error("region set: {0}")]
    Collection(String),
}

/// Identity of a region: where it sits and which file backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RegionKey {
    desc: RegionDesc,
    dev: u64,
    ino: u64,
}

/// Guest RAM as the proxy last described it.
#[derive(Debug)]
pub struct SysMem {
    key: Vec<RegionKey>,
    mem: Arc<GuestMemoryMmap>,
    generation: u64,
}

impl Default for SysMem {
    fn default() -> Self {
        SysMem::new()
    }
}

impl SysMem {
    /// No guest RAM yet: every access fails.
    pub fn new() -> SysMem {
        SysMem {
            key: Vec::new(),
            mem: Arc::new(GuestMemoryMmap::new()),
            generation: 0,
        }
    }

    /// The current map.
    pub fn memory(&self) -> Arc<GuestMemoryMmap> {
        self.mem.clone()
    }

    /// How many different layouts have been installed (including failed ones,
    /// which install an empty map).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Total bytes of guest RAM mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.key.iter().map(|k| k.desc.size).sum()
    }

    /// Applies a `SYNC_SYSMEM`: `fds[i]` backs `regions[i]`. Returns the new
    /// map if the layout changed (`Ok(None)`: identical layout, current map
    /// kept). On error the map is replaced by an empty one and the error is
    /// returned. The descriptors are closed in every case (a mapping keeps its
    /// own reference to the file).
    pub fn update(
        &mut self,
        regions: &[RegionDesc],
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Arc<GuestMemoryMmap>>, MemError> {
        match self.try_update(regions, fds) {
            Ok(changed) => Ok(changed),
            Err(e) => {
                self.key.clear();
                self.mem = Arc::new(GuestMemoryMmap::new());
                self.generation += 1;
                Err(e)
            }
        }
    }

    fn try_update(
        &mut self,
        regions: &[RegionDesc],
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Arc<GuestMemoryMmap>>, MemError> {
        if regions.len() != fds.len() {
            return Err(MemError::FdMismatch {
                regions: regions.len(),
                fds: fds.len(),
            });
        }
        let mut key = Vec::with_capacity(regions.len());
        let mut files = Vec::with_capacity(regions.len());
        for (index, (desc, fd)) in regions.iter().zip(fds).enumerate() {
            let file = File::from(fd);
            let md = file
                .metadata()
                .map_err(|err| MemError::Stat { index, err })?;
            // offset + size cannot overflow: wire::decode checked it.
            if desc.offset.saturating_add(desc.size) > md.len() {
                return Err(MemError::PastEof {
                    index,
                    offset: desc.offset,
                    size: desc.size,
                    len: md.len(),
                });
            }
            key.push(RegionKey {
                desc: *desc,
                dev: md.dev(),
                ino: md.ino(),
            });
            files.push(file);
        }
        if key == self.key {
            return Ok(None);
        }
        let mut mapped = Vec::with_capacity(files.len());
        for (index, (desc, file)) in regions.iter().zip(files).enumerate() {
            let map_err = |msg: String| MemError::Map { index, msg };
            let size = usize::try_from(desc.size).map_err(|e| map_err(e.to_string()))?;
            let region = MmapRegion::from_file(FileOffset::new(file, desc.offset), size)
                .map_err(|e| map_err(e.to_string()))?;
            let region = GuestRegionMmap::new(region, GuestAddress(desc.gpa))
                .ok_or_else(|| map_err("region wraps the guest address space".into()))?;
            mapped.push(region);
        }
        mapped.sort_by_key(vm_memory::GuestMemoryRegion::start_addr);
        let mem = GuestMemoryMmap::from_regions(mapped)
            .map_err(|e| MemError::Collection(e.to_string()))?;
        self.key = key;
        self.mem = Arc::new(mem);
        self.generation += 1;
        Ok(Some(self.mem.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use vm_memory::Bytes;

    fn memfd(len: u64) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        f
    }

    fn desc(gpa: u64, size: u64, offset: u64) -> RegionDesc {
        RegionDesc { gpa, size, offset }
    }

    #[test]
    fn maps_shared_and_dedups() {
        let mut f = memfd(0x3000);
        f.seek(SeekFrom::Start(0x1000)).unwrap();
        f.write_all(b"hello").unwrap();
        let mut sm = SysMem::new();
        let regions = [desc(0x10_0000, 0x2000, 0x1000)];
        let m = sm
            .update(&regions, vec![f.try_clone().unwrap().into()])
            .unwrap()
            .expect("new map");
        let mut buf = [0u8; 5];
        m.read_slice(&mut buf, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(&buf, b"hello");
        // writes through the map land in the file (MAP_SHARED)
        m.write_slice(b"WORLD", GuestAddress(0x10_1000)).unwrap();
        let mut back = [0u8; 5];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut back, 0x2000).unwrap();
        assert_eq!(&back, b"WORLD");
        assert_eq!(sm.generation(), 1);
        // same layout, same file (fresh descriptor): kept
        assert!(sm
            .update(&regions, vec![f.try_clone().unwrap().into()])
            .unwrap()
            .is_none());
        assert_eq!(sm.generation(), 1);
        // another file: remapped
        assert!(sm
            .update(&regions, vec![memfd(0x3000).into()])
            .unwrap()
            .is_some());
        assert_eq!(sm.generation(), 2);
        // outside every region: an error, not a crash
        assert!(sm.memory().read_slice(&mut buf, GuestAddress(0)).is_err());
    }

    #[test]
    fn refuses_regions_past_eof() {
        let mut sm = SysMem::new();
        let f = memfd(0x1000);
        sm.update(&[desc(0, 0x1000, 0)], vec![f.try_clone().unwrap().into()])
            .unwrap();
        let e = sm.update(
            &[desc(0, 0x1000, 0x800)],
            vec![f.try_clone().unwrap().into()],
        );
        assert!(matches!(e, Err(MemError::PastEof { .. })), "{e:?}");
        // the failed layout leaves no memory, not the old one
        let mut b = [0u8; 1];
        assert!(sm.memory().read_slice(&mut b, GuestAddress(0)).is_err());
        assert_eq!(sm.mapped_bytes(), 0);
        let e = sm.update(&[desc(0, 0x1000, 0)], vec![]);
        assert!(matches!(e, Err(MemError::FdMismatch { .. })));
    }

    #[test]
    fn unsorted_regions_are_sorted() {
        let mut sm = SysMem::new();
        let m = sm
            .update(
                &[desc(0x10_0000, 0x1000, 0), desc(0, 0x1000, 0x1000)],
                vec![memfd(0x2000).into(), memfd(0x2000).into()],
            )
            .unwrap()
            .unwrap();
        m.write_slice(b"x", GuestAddress(0)).unwrap();
        m.write_slice(b"y", GuestAddress(0x10_0fff)).unwrap();
        assert_eq!(sm.mapped_bytes(), 0x2000);
    }
}

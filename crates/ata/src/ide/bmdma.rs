//! Bus-master IDE (SFF-8038i, as in the Intel PIIX3/PIIX4 datasheets
//! §2.7 "Bus Master IDE Registers" and "Physical Region Descriptor Format"):
//! per-channel Command/Status/PRD-pointer registers and the walk of the
//! physical region descriptor table in guest memory.
//!
//! Guest-controlled inputs (the table pointer and every descriptor) are
//! validated here: descriptors and data regions must lie in guest memory,
//! the walk visits at most [`MAX_PRD_ENTRIES`] descriptors and stops at the
//! transfer length, and with the strict boundary rule (default) neither the
//! table nor a region may cross a 64 KiB boundary (the datasheets say they
//! "cannot"; we report a bus-master error instead of wrapping).

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Command register bit 0: start/stop bus master.
pub const BM_CMD_START: u8 = 0x01;
/// Command register bit 3: 1 = the bus master writes memory (device reads).
pub const BM_CMD_WRITE_MEMORY: u8 = 0x08;
/// Status register bit 0: bus master active (read only).
pub const BM_STATUS_ACTIVE: u8 = 0x01;
/// Status register bit 1: error (write 1 to clear).
pub const BM_STATUS_ERROR: u8 = 0x02;
/// Status register bit 2: the device asserted its interrupt (write 1 to clear).
pub const BM_STATUS_INTERRUPT: u8 = 0x04;
/// Status register bit 5: drive 0 DMA capable (software settable).
pub const BM_STATUS_DRIVE0_DMA: u8 = 0x20;
/// Status register bit 6: drive 1 DMA capable (software settable).
pub const BM_STATUS_DRIVE1_DMA: u8 = 0x40;

/// Most descriptors one walk reads (a 64 KiB table of 8-byte entries).
pub const MAX_PRD_ENTRIES: usize = 65536 / 8;

/// One physical region descriptor (PIIX4 datasheet §2.7.4, Figure
/// "Physical Region Descriptor Table Entry"): base address (bit 0 zero),
/// byte count (bit 0 zero; 0 means 64 KiB), end-of-table in bit 15 of the
/// last word.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PrdEntry {
    /// Memory region physical base address (bit 0 ignored).
    pub base: U32,
    /// Byte count (bit 0 ignored; 0 = 65536).
    pub count: U16,
    /// Bit 15: end of table.
    pub flags: U16,
}

impl PrdEntry {
    /// End-of-table flag.
    pub const EOT: u16 = 0x8000;

    /// An entry for `len` bytes (1..=65536; bit 0 dropped) at `base`.
    pub fn new(base: u32, len: u32, eot: bool) -> PrdEntry {
        PrdEntry {
            base: U32::new(base),
            count: U16::new((len & 0xfffe) as u16),
            flags: U16::new(if eot { Self::EOT } else { 0 }),
        }
    }

    /// Reads the entry at `addr` of guest memory.
    pub fn read(mem: &GuestMemoryMmap, addr: GuestAddress) -> Option<PrdEntry> {
        let mut b = [0u8; 8];
        mem.read_slice(&mut b, addr).ok()?;
        PrdEntry::read_from_bytes(&b).ok()
    }

    /// Writes the entry at `addr` of guest memory.
    pub fn write(
        &self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
    ) -> Result<(), vm_memory::GuestMemoryError> {
        mem.write_slice(self.as_bytes(), addr)
    }

    fn region(&self) -> (u64, u64) {
        let len = match self.count.get() & 0xfffe {
            0 => 0x10000,
            n => u64::from(n),
        };
        (u64::from(self.base.get() & !1), len)
    }
}

/// Where the engine is in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrdCursor {
    /// Address of the current descriptor.
    pub entry: u64,
    /// Bytes of its region already transferred.
    pub offset: u64,
}

/// A scatter list covering one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrdWalk {
    /// Guest regions, in order, summing to the transfer length.
    pub segs: Vec<(GuestAddress, usize)>,
    /// The transfer ended exactly at the end of an end-of-table region:
    /// the engine goes inactive. Otherwise the table is longer than the
    /// transfer and Active stays set.
    pub eot: bool,
    /// Where a following transfer would continue.
    pub next: PrdCursor,
}

/// Why a walk failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrdFault {
    /// The table describes fewer bytes than the transfer: Active and
    /// Interrupt clear, the device keeps waiting (PIIX "PRD table smaller
    /// than transfer size" case).
    Short,
    /// A descriptor or region lies outside guest memory (bus-master error).
    Memory,
    /// A region or the table crosses a 64 KiB boundary (strict mode).
    Boundary,
    /// More than [`MAX_PRD_ENTRIES`] descriptors without end of table.
    TooLong,
}

/// Walks the table from `cur` until `len` bytes are covered.
pub fn walk(
    mem: &GuestMemoryMmap,
    table: u64,
    cur: PrdCursor,
    len: u64,
    strict: bool,
) -> Result<PrdWalk, PrdFault> {
    let mut remaining = len;
    let mut entry = cur.entry;
    let mut offset = cur.offset;
    let mut segs: Vec<(GuestAddress, usize)> = Vec::new();
    for _ in 0..MAX_PRD_ENTRIES {
        if strict && (entry >> 16 != table >> 16 || (entry + 7) >> 16 != table >> 16) {
            return Err(PrdFault::Boundary);
        }
        if entry + 8 > 1 << 32 {
            return Err(PrdFault::Memory);
        }
        let e = PrdEntry::read(mem, GuestAddress(entry)).ok_or(PrdFault::Memory)?;
        let (base, count) = e.region();
        if strict && (base & 0xffff) + count > 0x10000 {
            return Err(PrdFault::Boundary);
        }
        let eot = e.flags.get() & PrdEntry::EOT != 0;
        let avail = count.saturating_sub(offset);
        let take = avail.min(remaining);
        if take > 0 {
            let addr = GuestAddress(base + offset);
            if !GuestMemoryBackend::check_range(mem, addr, take as usize) {
                return Err(PrdFault::Memory);
            }
            match segs.last_mut() {
                Some((a, l)) if a.0 + *l as u64 == addr.0 => *l += take as usize,
                _ => segs.push((addr, take as usize)),
            }
        }
        remaining -= take;
        if remaining == 0 {
            let (eot_end, next) = if take == avail {
                (
                    eot,
                    PrdCursor {
                        entry: entry + 8,
                        offset: 0,
                    },
                )
            } else {
                (
                    false,
                    PrdCursor {
                        entry,
                        offset: offset + take,
                    },
                )
            };
            return Ok(PrdWalk {
                segs,
                eot: eot_end,
                next,
            });
        }
        if eot {
            return Err(PrdFault::Short);
        }
        entry += 8;
        offset = 0;
    }
    Err(PrdFault::TooLong)
}

/// One channel's bus-master registers and engine state.
#[derive(Debug, Clone, Default)]
pub struct BusMaster {
    /// Command register (bits 0 and 3).
    pub cmd: u8,
    /// Status register bits other than Active (1, 2, 5, 6).
    pub status: u8,
    /// Descriptor table pointer (bits 31:2).
    pub prd: u32,
    /// Engine active (status bit 0).
    pub active: bool,
    /// Engine position while active.
    pub cursor: Option<PrdCursor>,
    /// Table start the engine loaded (boundary rule reference).
    pub table: u64,
    /// A transfer handed to a device: (device, eot, next cursor).
    pub transfer: Option<(usize, bool, PrdCursor)>,
}

impl BusMaster {
    /// Register read at `reg` (0..8).
    pub fn read(&self, reg: u64) -> u8 {
        match reg {
            0 => self.cmd & (BM_CMD_START | BM_CMD_WRITE_MEMORY),
            2 => self.status | u8::from(self.active),
            4 => self.prd as u8 & 0xfc,
            5 => (self.prd >> 8) as u8,
            6 => (self.prd >> 16) as u8,
            7 => (self.prd >> 24) as u8,
            _ => 0,
        }
    }

    /// Register write at `reg` (0..8).
    pub fn write(&mut self, reg: u64, v: u8) {
        match reg {
            0 => {
                let was = self.cmd & BM_CMD_START != 0;
                let start = v & BM_CMD_START != 0;
                // The direction must not change while active (PIIX): keep it.
                let dir = if self.active {
                    self.cmd & BM_CMD_WRITE_MEMORY
                } else {
                    v & BM_CMD_WRITE_MEMORY
                };
                self.cmd = dir | u8::from(start);
                if start && !was {
                    self.active = true;
                    self.table = u64::from(self.prd & !3);
                    self.cursor = Some(PrdCursor {
                        entry: self.table,
                        offset: 0,
                    });
                } else if !start && was {
                    // Stopping does not cancel a transfer already handed to
                    // the host; its completion is still reported.
                    self.active = false;
                    self.cursor = None;
                }
            }
            2 => {
                let w1c = v & (BM_STATUS_ERROR | BM_STATUS_INTERRUPT);
                self.status &= !w1c;
                self.status = (self.status & !(BM_STATUS_DRIVE0_DMA | BM_STATUS_DRIVE1_DMA))
                    | (v & (BM_STATUS_DRIVE0_DMA | BM_STATUS_DRIVE1_DMA));
            }
            4..=7 => {
                let shift = (reg - 4) * 8;
                self.prd = (self.prd & !(0xff << shift)) | (u32::from(v) << shift);
                self.prd &= !3;
            }
            _ => {}
        }
    }

    /// Power-on values; `capable` = drive 0/1 DMA-capable bits.
    pub fn reset(&mut self, capable: u8) {
        *self = BusMaster {
            status: capable & (BM_STATUS_DRIVE0_DMA | BM_STATUS_DRIVE1_DMA),
            ..BusMaster::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40000)]).unwrap()
    }

    fn put(mem: &GuestMemoryMmap, at: u64, entries: &[PrdEntry]) {
        for (i, e) in entries.iter().enumerate() {
            e.write(mem, GuestAddress(at + 8 * i as u64)).unwrap();
        }
    }

    fn cur(at: u64) -> PrdCursor {
        PrdCursor {
            entry: at,
            offset: 0,
        }
    }

    #[test]
    fn exact_table_ends_inactive() {
        let m = mem();
        put(
            &m,
            0x1000,
            &[
                PrdEntry::new(0x2000, 512, false),
                PrdEntry::new(0x3000, 512, true),
            ],
        );
        let w = walk(&m, 0x1000, cur(0x1000), 1024, true).unwrap();
        assert_eq!(
            w.segs,
            vec![(GuestAddress(0x2000), 512), (GuestAddress(0x3000), 512)]
        );
        assert!(w.eot);
    }

    #[test]
    fn longer_table_stays_active_and_continues() {
        let m = mem();
        put(
            &m,
            0x1000,
            &[
                PrdEntry::new(0x2000, 1024, false),
                PrdEntry::new(0x3000, 512, true),
            ],
        );
        let w = walk(&m, 0x1000, cur(0x1000), 512, true).unwrap();
        assert!(!w.eot);
        assert_eq!(
            w.next,
            PrdCursor {
                entry: 0x1000,
                offset: 512
            }
        );
        let w2 = walk(&m, 0x1000, w.next, 1024, true).unwrap();
        assert_eq!(
            w2.segs,
            vec![(GuestAddress(0x2200), 512), (GuestAddress(0x3000), 512)]
        );
        assert!(w2.eot);
    }

    #[test]
    fn short_table_and_faults() {
        let m = mem();
        put(&m, 0x1000, &[PrdEntry::new(0x2000, 512, true)]);
        assert_eq!(
            walk(&m, 0x1000, cur(0x1000), 1024, true),
            Err(PrdFault::Short)
        );
        // Region outside guest memory.
        put(&m, 0x1000, &[PrdEntry::new(0x3ff00, 512, true)]);
        assert_eq!(
            walk(&m, 0x1000, cur(0x1000), 512, false),
            Err(PrdFault::Memory)
        );
        // Table outside guest memory.
        assert_eq!(
            walk(&m, 0x40000, cur(0x40000), 512, false),
            Err(PrdFault::Memory)
        );
        // Region crossing 64 KiB: strict error, lenient accepted.
        put(&m, 0x1000, &[PrdEntry::new(0xff00, 512, true)]);
        assert_eq!(
            walk(&m, 0x1000, cur(0x1000), 512, true),
            Err(PrdFault::Boundary)
        );
        let w = walk(&m, 0x1000, cur(0x1000), 512, false).unwrap();
        assert_eq!(w.segs, vec![(GuestAddress(0xff00), 512)]);
        // Count 0 = 64 KiB, contiguous regions merge.
        put(
            &m,
            0x1000,
            &[
                PrdEntry::new(0x10000, 0, false),
                PrdEntry::new(0x20000, 0, true),
            ],
        );
        let w = walk(&m, 0x1000, cur(0x1000), 0x20000, true).unwrap();
        assert_eq!(w.segs, vec![(GuestAddress(0x10000), 0x20000)]);
        assert!(w.eot);
    }

    #[test]
    fn table_without_eot_is_bounded() {
        let m = mem();
        // 8192 tiny entries of 2 bytes, none with EOT: never covers 1 MiB.
        for i in 0..MAX_PRD_ENTRIES as u64 {
            PrdEntry::new(0x30000, 2, false)
                .write(&m, GuestAddress(0x10000 + 8 * i))
                .unwrap();
        }
        assert_eq!(
            walk(&m, 0x10000, cur(0x10000), 1 << 20, false),
            Err(PrdFault::TooLong)
        );
        // Strict: a full 64 KiB page of entries is still bounded...
        assert_eq!(
            walk(&m, 0x10000, cur(0x10000), 1 << 20, true),
            Err(PrdFault::TooLong)
        );
        // ...and a table starting mid-page may not run past its page.
        assert_eq!(
            walk(&m, 0x1f000, cur(0x1f000), 1 << 20, true),
            Err(PrdFault::Boundary)
        );
    }

    #[test]
    fn registers() {
        let mut bm = BusMaster::default();
        bm.reset(BM_STATUS_DRIVE0_DMA);
        for (i, b) in 0x1234_5677u32.to_le_bytes().iter().enumerate() {
            bm.write(4 + i as u64, *b);
        }
        assert_eq!(bm.prd, 0x1234_5674);
        assert_eq!(bm.read(4), 0x74);
        bm.write(0, BM_CMD_START | BM_CMD_WRITE_MEMORY | 0xf0);
        assert_eq!(bm.read(0), BM_CMD_START | BM_CMD_WRITE_MEMORY);
        assert_eq!(bm.read(2), BM_STATUS_DRIVE0_DMA | BM_STATUS_ACTIVE);
        // Direction is frozen while active.
        bm.write(0, BM_CMD_START);
        assert_eq!(bm.read(0), BM_CMD_START | BM_CMD_WRITE_MEMORY);
        bm.status |= BM_STATUS_ERROR | BM_STATUS_INTERRUPT;
        bm.write(2, BM_STATUS_INTERRUPT | BM_STATUS_DRIVE1_DMA);
        assert_eq!(
            bm.read(2),
            BM_STATUS_ERROR | BM_STATUS_DRIVE1_DMA | BM_STATUS_ACTIVE
        );
        bm.write(0, 0);
        assert_eq!(bm.read(2) & BM_STATUS_ACTIVE, 0);
    }
}

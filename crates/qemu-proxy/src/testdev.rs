//! A small PCI function that proves the proxy path end to end: configuration
//! space, an MMIO BAR and an I/O BAR a guest can poke with `devmem` and
//! `/sys/bus/pci/.../resource1`, DMA through the shared guest RAM, and INTx.
//!
//! Identity: vendor 1b36 device 00f0, class ff0000 (no driver binds it),
//! interrupt pin INTA#. This ID is a test-only placeholder: it must not ship
//! in a product.
//!
//! BAR0, 4 KiB 32-bit memory ([`Reg`] gives the offsets):
//!
//! | offset | name | access |
//! |---|---|---|
//! | 0x000 | `ID` | RO, `0x564d5354` |
//! | 0x004 | `VERSION` | RO, 1 |
//! | 0x008 | `ACCESSES` | RO, BAR accesses so far |
//! | 0x010 | `IRQ` | RW, bit 0 = INTx level requested |
//! | 0x014 | `IRQ_EDGES` | RO, rising edges delivered |
//! | 0x018 | `SYSMEM_GEN` | RO, guest RAM layouts installed |
//! | 0x01c | `RAM_MIB` | RO, guest RAM mapped (MiB) |
//! | 0x040–0x07f | `SCRATCH` | RW, any size 1/2/4/8 |
//! | 0x100–0x13f | `NEEDLE` | RW, bytes the search looks for |
//! | 0x140 | `DMA_CMD` | WO: 1 = search guest RAM for `NEEDLE` (up to its first NUL, at least 8 bytes) and write `REMOTE-WAS-HERE` one byte after it; 2 = write the 16-byte tag `VMSTOR-DMA-WRITE` at `DMA_ADDR` |
//! | 0x144 | `DMA_STATUS` | RO: 0 idle, 1 done, 2 not found, 3 no guest RAM, 4 bad needle, 5 address not in guest RAM |
//! | 0x148 | `DMA_GPA` | RO u64: where the needle was found |
//! | 0x150 | `DMA_ADDR` | RW u64 |
//!
//! BAR1, 32 bytes of I/O: scratch bytes, any size.
//!
//! The search reads guest RAM in bounded chunks through vm-memory (never a
//! raw pointer), and every guest-supplied address goes through vm-memory's
//! checked accessors: a bad address gives status 5, not a fault.

use std::sync::Arc;

use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::irq::IrqLine;
use crate::pci::{BarDesc, BarKind, PciFunction, NUM_BARS};
use crate::wire::size_mask;

/// Vendor ID.
pub const VENDOR_ID: u16 = 0x1b36;
/// Device ID.
pub const DEVICE_ID: u16 = 0x00f0;
/// Value of the `ID` register.
pub const ID_VALUE: u32 = 0x564d_5354;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 0x1000;
/// Size of BAR1.
pub const BAR1_SIZE: u64 = 32;
/// What the search writes after the needle.
pub const REMOTE_MARK: &[u8] = b"REMOTE-WAS-HERE";
/// What DMA_CMD 2 writes.
pub const DMA_TAG: &[u8; 16] = b"VMSTOR-DMA-WRITE";

/// BAR0 register offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Reg {
    /// Identification.
    Id = 0x000,
    /// Version.
    Version = 0x004,
    /// BAR accesses so far.
    Accesses = 0x008,
    /// INTx level request.
    Irq = 0x010,
    /// Rising edges delivered.
    IrqEdges = 0x014,
    /// Guest RAM layouts installed.
    SysmemGen = 0x018,
    /// Guest RAM mapped, MiB.
    RamMib = 0x01c,
    /// Scratch area start (64 bytes).
    Scratch = 0x040,
    /// Needle start (64 bytes).
    Needle = 0x100,
    /// DMA command.
    DmaCmd = 0x140,
    /// DMA status.
    DmaStatus = 0x144,
    /// Where the needle was found.
    DmaGpa = 0x148,
    /// Address for DMA_CMD 2.
    DmaAddr = 0x150,
}

const SCRATCH_LEN: u64 = 64;
const NEEDLE_LEN: usize = 64;
const CHUNK: usize = 1 << 20;

/// DMA status values.
pub mod status {
    /// Nothing run yet.
    pub const IDLE: u32 = 0;
    /// Done.
    pub const DONE: u32 = 1;
    /// Needle not in guest RAM.
    pub const NOT_FOUND: u32 = 2;
    /// No guest RAM mapped.
    pub const NO_MEMORY: u32 = 3;
    /// Needle shorter than 8 bytes.
    pub const BAD_NEEDLE: u32 = 4;
    /// Address not in guest RAM.
    pub const BAD_ADDRESS: u32 = 5;
}

/// The test function. See the module docs.
#[derive(Debug)]
pub struct TestDevice {
    cfg: [u8; 256],
    scratch: [u8; SCRATCH_LEN as usize],
    io: [u8; BAR1_SIZE as usize],
    needle: [u8; NEEDLE_LEN],
    irq_req: bool,
    dma_status: u32,
    dma_gpa: u64,
    dma_addr: u64,
    accesses: u32,
    mem: Arc<GuestMemoryMmap>,
    mem_gen: u32,
    irq: IrqLine,
}

impl Default for TestDevice {
    fn default() -> Self {
        TestDevice::new()
    }
}

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const CMD_INTX_DISABLE: u16 = 1 << 10;
const STATUS_INTERRUPT: u16 = 1 << 3;

impl TestDevice {
    /// A device in its power-on state.
    pub fn new() -> TestDevice {
        let mut d = TestDevice {
            cfg: [0; 256],
            scratch: [0; SCRATCH_LEN as usize],
            io: [0; BAR1_SIZE as usize],
            needle: [0; NEEDLE_LEN],
            irq_req: false,
            dma_status: status::IDLE,
            dma_gpa: 0,
            dma_addr: 0,
            accesses: 0,
            mem: Arc::new(GuestMemoryMmap::new()),
            mem_gen: 0,
            irq: IrqLine::new(),
        };
        d.power_on();
        d
    }

    fn power_on(&mut self) {
        let mut c = [0u8; 256];
        c[0..2].copy_from_slice(&VENDOR_ID.to_le_bytes());
        c[2..4].copy_from_slice(&DEVICE_ID.to_le_bytes());
        c[0x08] = 1; // revision
        c[0x0b] = 0xff; // class: unassigned
        c[0x10..0x14].copy_from_slice(&0u32.to_le_bytes()); // BAR0: mem32
        c[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // BAR1: I/O
        c[0x3d] = 1; // INTA#
        self.cfg = c;
        self.scratch = [0; SCRATCH_LEN as usize];
        self.io = [0; BAR1_SIZE as usize];
        self.needle = [0; NEEDLE_LEN];
        self.irq_req = false;
        self.dma_status = status::IDLE;
        self.dma_gpa = 0;
        self.dma_addr = 0;
        self.update_irq();
    }

    fn cfg16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.cfg[off], self.cfg[off + 1]])
    }

    fn set_cfg16(&mut self, off: usize, v: u16) {
        self.cfg[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Writable bits of configuration byte `off`.
    fn wmask(off: usize) -> u8 {
        match off {
            0x04 => 0x07,        // COMMAND: I/O, memory, bus master
            0x05 => 0x04,        // COMMAND: INTx disable
            0x0c | 0x0d => 0xff, // cache line size, latency timer
            0x10 => 0x00,        // BAR0 bits 0-7: size 4 KiB
            0x11 => 0xf0,        // BAR0 bits 8-11 are size bits too
            0x12 | 0x13 => 0xff,
            0x14 => 0xe0, // BAR1: 32 bytes of I/O
            0x15..=0x17 => 0xff,
            0x3c => 0xff,        // interrupt line
            0x40..=0xff => 0xff, // device-specific: plain storage
            _ => 0,
        }
    }

    fn update_irq(&mut self) {
        let disabled = self.cfg16(COMMAND) & CMD_INTX_DISABLE != 0;
        // PCI_STATUS.INTERRUPT reflects the request even when INTx is disabled.
        let st = self.cfg16(STATUS);
        let st = if self.irq_req {
            st | STATUS_INTERRUPT
        } else {
            st & !STATUS_INTERRUPT
        };
        self.set_cfg16(STATUS, st);
        self.irq.set_level(self.irq_req && !disabled);
    }

    fn search(&mut self) {
        let len = self
            .needle
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NEEDLE_LEN);
        if len < 8 {
            self.dma_status = status::BAD_NEEDLE;
            return;
        }
        let needle = self.needle[..len].to_vec();
        if self.mem.num_regions() == 0 {
            self.dma_status = status::NO_MEMORY;
            return;
        }
        let mut buf = vec![0u8; CHUNK + NEEDLE_LEN];
        for region in self.mem.iter() {
            let start = region.start_addr().0;
            let size = region.len();
            let mut off = 0u64;
            while off < size {
                // chunks overlap by the needle length so no match is split
                let n = (size - off).min(buf.len() as u64) as usize;
                if region
                    .read_slice(&mut buf[..n], MemoryRegionAddress(off))
                    .is_err()
                {
                    break;
                }
                if let Some(i) = buf[..n].windows(len).position(|w| w == needle.as_slice()) {
                    let gpa = start + off + i as u64;
                    self.dma_gpa = gpa;
                    let mark = GuestAddress(gpa + len as u64 + 1);
                    self.dma_status = match self.mem.write_slice(REMOTE_MARK, mark) {
                        Ok(()) => status::DONE,
                        Err(_) => status::BAD_ADDRESS,
                    };
                    return;
                }
                if n < buf.len() {
                    break;
                }
                off += (n - len) as u64;
            }
        }
        self.dma_status = status::NOT_FOUND;
    }

    fn dma_write(&mut self) {
        self.dma_status = match self.mem.write_slice(DMA_TAG, GuestAddress(self.dma_addr)) {
            Ok(()) => status::DONE,
            Err(_) => status::BAD_ADDRESS,
        };
    }

    fn read_bytes(buf: &[u8], off: u64, size: u8) -> u64 {
        let mut v = [0u8; 8];
        let (o, n) = (off as usize, usize::from(size));
        if let Some(src) = buf.get(o..o + n) {
            v[..n].copy_from_slice(src);
        }
        u64::from_le_bytes(v)
    }

    fn write_bytes(buf: &mut [u8], off: u64, size: u8, value: u64) {
        let (o, n) = (off as usize, usize::from(size));
        if let Some(dst) = buf.get_mut(o..o + n) {
            dst.copy_from_slice(&value.to_le_bytes()[..n]);
        }
    }

    fn reg_read(&self, off: u64, size: u8) -> u64 {
        let field = |base: Reg, width: u64, v: u64| -> Option<u64> {
            let b = base as u64;
            (off >= b && off + u64::from(size) <= b + width).then(|| v >> (8 * (off - b)))
        };
        let regs = [
            field(Reg::Id, 4, u64::from(ID_VALUE)),
            field(Reg::Version, 4, 1),
            field(Reg::Accesses, 4, u64::from(self.accesses)),
            field(Reg::Irq, 4, u64::from(self.irq_req)),
            field(Reg::IrqEdges, 4, self.irq.edges()),
            field(Reg::SysmemGen, 4, u64::from(self.mem_gen)),
            field(
                Reg::RamMib,
                4,
                self.mem.iter().map(|r| r.len()).sum::<u64>() >> 20,
            ),
            field(Reg::DmaStatus, 4, u64::from(self.dma_status)),
            field(Reg::DmaGpa, 8, self.dma_gpa),
            field(Reg::DmaAddr, 8, self.dma_addr),
        ];
        if let Some(v) = regs.into_iter().flatten().next() {
            return v;
        }
        let s = Reg::Scratch as u64;
        if off >= s && off + u64::from(size) <= s + SCRATCH_LEN {
            return Self::read_bytes(&self.scratch, off - s, size);
        }
        let n = Reg::Needle as u64;
        if off >= n && off + u64::from(size) <= n + NEEDLE_LEN as u64 {
            return Self::read_bytes(&self.needle, off - n, size);
        }
        0
    }

    fn reg_write(&mut self, off: u64, size: u8, value: u64) {
        let s = Reg::Scratch as u64;
        let n = Reg::Needle as u64;
        let a = Reg::DmaAddr as u64;
        if off >= s && off + u64::from(size) <= s + SCRATCH_LEN {
            Self::write_bytes(&mut self.scratch, off - s, size, value);
        } else if off >= n && off + u64::from(size) <= n + NEEDLE_LEN as u64 {
            Self::write_bytes(&mut self.needle, off - n, size, value);
        } else if off == Reg::Irq as u64 {
            self.irq_req = value & 1 != 0;
            self.update_irq();
        } else if off == Reg::DmaCmd as u64 {
            match value {
                1 => self.search(),
                2 => self.dma_write(),
                _ => {}
            }
        } else if off >= a && off + u64::from(size) <= a + 8 {
            let mut b = self.dma_addr.to_le_bytes();
            Self::write_bytes(&mut b, off - a, size, value);
            self.dma_addr = u64::from_le_bytes(b);
        }
    }
}

impl PciFunction for TestDevice {
    fn bars(&self) -> [Option<BarDesc>; NUM_BARS] {
        [
            Some(BarDesc {
                kind: BarKind::Mem32,
                size: BAR0_SIZE,
            }),
            Some(BarDesc {
                kind: BarKind::Io,
                size: BAR1_SIZE,
            }),
            None,
            None,
            None,
            None,
        ]
    }

    fn config_read(&mut self, offset: u16, size: u8) -> u32 {
        let o = usize::from(offset);
        let mut v = [0u8; 4];
        let n = usize::from(size).min(4);
        if let Some(src) = self.cfg.get(o..o + n) {
            v[..n].copy_from_slice(src);
        }
        u32::from_le_bytes(v)
    }

    fn config_write(&mut self, offset: u16, size: u8, value: u32) {
        let bytes = value.to_le_bytes();
        for (i, b) in bytes.iter().take(usize::from(size)).enumerate() {
            let o = usize::from(offset) + i;
            if o >= self.cfg.len() {
                break;
            }
            let m = Self::wmask(o);
            self.cfg[o] = (self.cfg[o] & !m) | (b & m);
        }
        self.update_irq();
    }

    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64 {
        self.accesses = self.accesses.wrapping_add(1);
        let v = match bar {
            0 => self.reg_read(offset, size),
            1 => Self::read_bytes(&self.io, offset, size),
            _ => u64::MAX,
        };
        v & size_mask(size)
    }

    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64) {
        self.accesses = self.accesses.wrapping_add(1);
        match bar {
            0 => self.reg_write(offset, size, value),
            1 => Self::write_bytes(&mut self.io, offset, size, value),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.power_on();
    }

    fn set_irq_sink(&mut self, irq: IrqLine) {
        self.irq = irq;
        self.update_irq();
    }

    fn set_guest_memory(&mut self, mem: Arc<GuestMemoryMmap>) {
        self.mem = mem;
        self.mem_gen = self.mem_gen.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::decode_bar;
    use crate::wire::Space;

    #[test]
    fn bar_sizing_and_decode() {
        let mut d = TestDevice::new();
        d.config_write(0x10, 4, 0xffff_ffff);
        assert_eq!(d.config_read(0x10, 4), 0xffff_f000);
        d.config_write(0x14, 4, 0xffff_ffff);
        assert_eq!(d.config_read(0x14, 4), 0xffff_ffe1);
        d.config_write(0x18, 4, 0xffff_ffff);
        assert_eq!(d.config_read(0x18, 4), 0, "unimplemented BAR reads 0");
        d.config_write(0x30, 4, 0xffff_ffff);
        assert_eq!(d.config_read(0x30, 4), 0, "no expansion ROM");
        d.config_write(0x10, 4, 0xfebf_f000);
        d.config_write(0x14, 4, 0xc000);
        assert_eq!(
            decode_bar(&mut d, Space::Memory, 0xfebf_f008, 4),
            Some((0, 8))
        );
        assert_eq!(
            decode_bar(&mut d, Space::Memory, 0xfebf_fffc, 8),
            None,
            "straddles the end"
        );
        assert_eq!(decode_bar(&mut d, Space::Io, 0xc01f, 1), Some((1, 0x1f)));
        assert_eq!(decode_bar(&mut d, Space::Io, 0xc020, 1), None);
        assert_eq!(
            decode_bar(&mut d, Space::Io, 0xfebf_f000, 1),
            None,
            "wrong space"
        );
    }

    #[test]
    fn registers() {
        let mut d = TestDevice::new();
        assert_eq!(d.bar_read(0, 0, 4), u64::from(ID_VALUE));
        assert_eq!(d.bar_read(0, 0, 1), 0x54);
        assert_eq!(d.bar_read(0, 2, 2), 0x564d);
        d.bar_write(0, 0x48, 8, 0x0123_4567_89ab_cdef);
        assert_eq!(d.bar_read(0, 0x48, 8), 0x0123_4567_89ab_cdef);
        assert_eq!(d.bar_read(0, 0x4c, 2), 0x4567);
        d.bar_write(0, 0x7f, 1, 0x5a);
        assert_eq!(d.bar_read(0, 0x7f, 1), 0x5a);
        d.bar_write(1, 4, 4, 0x1234_5678);
        assert_eq!(d.bar_read(1, 4, 4), 0x1234_5678);
        assert_eq!(d.bar_read(1, 6, 1), 0x34);
        // DMA with no guest RAM: a status, not a crash
        d.bar_write(0, Reg::DmaCmd as u64, 4, 2);
        assert_eq!(
            d.bar_read(0, Reg::DmaStatus as u64, 4),
            u64::from(status::BAD_ADDRESS)
        );
        d.bar_write(0, Reg::Needle as u64, 4, 0x41414141);
        d.bar_write(0, Reg::DmaCmd as u64, 4, 1);
        assert_eq!(
            d.bar_read(0, Reg::DmaStatus as u64, 4),
            u64::from(status::BAD_NEEDLE)
        );
        d.bar_write(0, Reg::Needle as u64 + 4, 4, 0x41414141);
        d.bar_write(0, Reg::DmaCmd as u64, 4, 1);
        assert_eq!(
            d.bar_read(0, Reg::DmaStatus as u64, 4),
            u64::from(status::NO_MEMORY)
        );
        d.reset();
        assert_eq!(d.bar_read(0, 0x48, 8), 0);
        assert_eq!(d.bar_read(0, Reg::DmaStatus as u64, 4), 0);
    }

    #[test]
    fn intx_follows_request_and_disable() {
        let mut d = TestDevice::new();
        let line = IrqLine::new();
        d.set_irq_sink(line.clone());
        d.bar_write(0, Reg::Irq as u64, 4, 1);
        assert!(line.level());
        assert_eq!(d.config_read(0x06, 2) & 0x8, 0x8, "status.INTERRUPT");
        d.config_write(0x04, 2, 0x0400); // INTx disable
        assert!(!line.level());
        assert_eq!(
            d.config_read(0x06, 2) & 0x8,
            0x8,
            "status still shows the request"
        );
        d.config_write(0x04, 2, 0x0000);
        assert!(line.level());
        assert_eq!(line.edges(), 2);
        d.bar_write(0, Reg::Irq as u64, 4, 0);
        assert!(!line.level());
        d.bar_write(0, Reg::Irq as u64, 4, 1);
        d.reset();
        assert!(!line.level(), "reset drops the line");
    }
}

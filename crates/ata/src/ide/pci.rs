//! The controller's PCI configuration header (type 0, PCI Local Bus 3.0
//! §6.1) and the PIIX IDE function's device-specific registers.
//!
//! - Class 01h/01h with a programming interface that says, per channel,
//!   whether it runs in compatibility mode (legacy ports 1F0h/3F6h IRQ 14,
//!   170h/376h IRQ 15) or native-PCI mode (BAR0/1 and BAR2/3, the PCI INTx
//!   line), and whether the mode is programmable (PCI IDE Controller
//!   Specification 1.0 §2). Bit 7 = bus-master capable.
//! - BAR0-3 are implemented only for channels that are native or may be
//!   switched to native; BAR4 is the 16-byte bus-master block; BAR5 and the
//!   expansion ROM read 0 (what QEMU's PCI proxy expects).
//! - With `piix_timing`, 40h-4Fh hold the PIIX IDE timing registers (read
//!   and write, as `ata_piix` and SeaBIOS expect); bit 15 of IDETIM
//!   (41h/43h bit 7) is the channel's decode enable and is set at reset.

/// IDs and class code the controller presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PciIdentity {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision: u8,
    /// Base class (01h: mass storage).
    pub class: u8,
    /// Subclass (01h: IDE; anything else is treated as native-PCI only).
    pub subclass: u8,
    /// Programming interface (see the module docs).
    pub prog_if: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// PIIX timing registers at 40h-4Fh with the decode-enable bits.
    pub piix_timing: bool,
}

impl PciIdentity {
    /// Intel 82371SB PIIX3 IDE in compatibility mode (prog-if 80h), bound
    /// by Linux `ata_piix` (`piix_pata_mwdma`).
    pub const PIIX3: PciIdentity = PciIdentity {
        vendor_id: 0x8086,
        device_id: 0x7010,
        revision: 0,
        class: 0x01,
        subclass: 0x01,
        prog_if: 0x80,
        subsystem_vendor_id: 0,
        subsystem_id: 0,
        piix_timing: true,
    };
    /// PIIX3 IDs in native-PCI mode on both channels, both programmable
    /// (prog-if 8Fh): what a bus that forwards only BARs needs (QEMU's PCI
    /// proxy; see `qemu-pci-proxy.md` §5.4).
    pub const PIIX3_NATIVE: PciIdentity = PciIdentity {
        prog_if: 0x8f,
        ..PciIdentity::PIIX3
    };
    /// Intel 82371AB PIIX4 IDE in compatibility mode (`ata_piix`
    /// `piix_pata_33`, UDMA 2).
    pub const PIIX4: PciIdentity = PciIdentity {
        device_id: 0x7111,
        revision: 1,
        ..PciIdentity::PIIX3
    };
}

/// I/O BAR sizes in bytes (powers of two, at least 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarSizes {
    /// BAR0/BAR2: command block (8 per the PCI IDE spec).
    pub command: u32,
    /// BAR1/BAR3: control block (4; Alternate Status/Device Control at +2).
    pub control: u32,
    /// BAR4: bus master (16).
    pub bus_master: u32,
}

impl BarSizes {
    /// The PCI IDE specification's sizes: 8, 4 and 16 bytes.
    pub const SPEC: BarSizes = BarSizes {
        command: 8,
        control: 4,
        bus_master: 16,
    };
    /// 16 bytes each: QEMU's PCI proxy maps I/O BARs smaller than 16 bytes
    /// as 16-byte regions (`qemu-pci-proxy.md` pitfall 3).
    pub const PROXY: BarSizes = BarSizes {
        command: 16,
        control: 16,
        bus_master: 16,
    };
}

/// PCI command register bits.
pub const CMD_IO: u16 = 0x0001;
/// Bus master enable.
pub const CMD_BUS_MASTER: u16 = 0x0004;
/// INTx disable (PCI 2.3).
pub const CMD_INTX_DISABLE: u16 = 0x0400;
const CMD_WRITABLE: u16 = CMD_IO | CMD_BUS_MASTER | CMD_INTX_DISABLE;

/// The configuration space.
#[derive(Debug, Clone)]
pub struct PciConfig {
    id: PciIdentity,
    sizes: BarSizes,
    space: [u8; 256],
    bars: [u32; 6],
}

impl PciConfig {
    /// Power-on configuration for `id` with BARs of `sizes`.
    pub fn new(id: PciIdentity, sizes: BarSizes) -> PciConfig {
        let mut c = PciConfig {
            id,
            sizes,
            space: [0; 256],
            bars: [0; 6],
        };
        c.reset();
        c
    }

    /// Back to power-on values (BARs unassigned, decoding off).
    pub fn reset(&mut self) {
        let id = self.id;
        let s = &mut self.space;
        *s = [0; 256];
        s[0..2].copy_from_slice(&id.vendor_id.to_le_bytes());
        s[2..4].copy_from_slice(&id.device_id.to_le_bytes());
        // Status: DEVSEL medium timing, fast back-to-back capable.
        s[6..8].copy_from_slice(&0x0280u16.to_le_bytes());
        s[8] = id.revision;
        s[9] = id.prog_if;
        s[10] = id.subclass;
        s[11] = id.class;
        s[0x2c..0x2e].copy_from_slice(&id.subsystem_vendor_id.to_le_bytes());
        s[0x2e..0x30].copy_from_slice(&id.subsystem_id.to_le_bytes());
        if id.piix_timing {
            // IDETIM primary/secondary: decode enabled, as firmware leaves it.
            s[0x41] = 0x80;
            s[0x43] = 0x80;
        }
        self.space[0x3d] = u8::from(self.native_capable(0) || self.native_capable(1));
        self.bars = [0; 6];
        for i in 0..6 {
            if self.bar_size(i).is_some() {
                self.bars[i] = 1;
            }
        }
    }

    /// The identity.
    pub fn identity(&self) -> &PciIdentity {
        &self.id
    }

    /// Whether channel `ch` can be (or is) in native-PCI mode.
    pub fn native_capable(&self, ch: usize) -> bool {
        if self.id.class != 0x01 || self.id.subclass != 0x01 {
            return true;
        }
        let pi = self.space[9];
        pi & (0b11 << (2 * ch)) != 0
    }

    /// Whether channel `ch` is in native-PCI mode now.
    pub fn native(&self, ch: usize) -> bool {
        if self.id.class != 0x01 || self.id.subclass != 0x01 {
            return true;
        }
        self.space[9] & (1 << (2 * ch)) != 0
    }

    /// Size of BAR `i`, if implemented.
    pub fn bar_size(&self, i: usize) -> Option<u32> {
        match i {
            0 | 2 if self.native_capable(i / 2) => Some(self.sizes.command),
            1 | 3 if self.native_capable(i / 2) => Some(self.sizes.control),
            4 => Some(self.sizes.bus_master),
            _ => None,
        }
    }

    /// The I/O base BAR `i` decodes, if implemented, assigned and I/O
    /// decoding is on.
    pub fn bar_base(&self, i: usize) -> Option<u32> {
        self.bar_size(i)?;
        let base = self.bars[i] & !3;
        (self.command() & CMD_IO != 0 && base != 0).then_some(base)
    }

    /// Command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.space[4], self.space[5]])
    }

    /// Whether bus mastering is enabled.
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & CMD_BUS_MASTER != 0
    }

    /// Whether INTx is disabled.
    pub fn intx_disabled(&self) -> bool {
        self.command() & CMD_INTX_DISABLE != 0
    }

    /// Whether the channel's register blocks are decoded (IDETIM decode
    /// enable on PIIX; always otherwise).
    pub fn channel_enabled(&self, ch: usize) -> bool {
        !self.id.piix_timing || self.space[0x41 + 2 * ch] & 0x80 != 0
    }

    /// A configuration read of `size` bytes at `offset`; `intx` is the
    /// current INTx level (status bit 3).
    pub fn read(&self, offset: u16, size: u8, intx: bool) -> u32 {
        let mut v = 0u32;
        for i in 0..u16::from(size.clamp(1, 4)) {
            let o = offset.wrapping_add(i) as usize;
            let b = if o >= 256 {
                0xff
            } else if (0x10..0x28).contains(&o) {
                let bar = (o - 0x10) / 4;
                (self.bars[bar] >> (8 * ((o - 0x10) % 4))) as u8
            } else if o == 6 {
                self.space[6] | if intx { 0x08 } else { 0 }
            } else {
                self.space[o]
            };
            v |= u32::from(b) << (8 * i);
        }
        v
    }

    /// A configuration write of `size` bytes at `offset`.
    pub fn write(&mut self, offset: u16, size: u8, value: u32) {
        let mut touched_bars = [false; 6];
        for i in 0..u16::from(size.clamp(1, 4)) {
            let o = offset.wrapping_add(i) as usize;
            let b = (value >> (8 * i)) as u8;
            match o {
                4 => self.space[4] = b & CMD_WRITABLE as u8,
                5 => self.space[5] = b & (CMD_WRITABLE >> 8) as u8,
                9 => {
                    // Mode bits 0/2 are writable only when bits 1/3 say
                    // the channel's mode is programmable.
                    let pi = self.space[9];
                    let mut mask = 0u8;
                    if self.id.subclass == 0x01 && self.id.class == 0x01 {
                        if pi & 0x02 != 0 {
                            mask |= 0x01;
                        }
                        if pi & 0x08 != 0 {
                            mask |= 0x04;
                        }
                    }
                    self.space[9] = (pi & !mask) | (b & mask);
                }
                0x0c | 0x0d | 0x3c => self.space[o] = b,
                0x10..=0x27 => {
                    let bar = (o - 0x10) / 4;
                    let shift = 8 * ((o - 0x10) % 4);
                    self.bars[bar] = (self.bars[bar] & !(0xff << shift)) | (u32::from(b) << shift);
                    touched_bars[bar] = true;
                }
                0x40..=0x4f if self.id.piix_timing => self.space[o] = b,
                _ => {}
            }
        }
        for (i, t) in touched_bars.iter().enumerate() {
            if *t {
                self.bars[i] = match self.bar_size(i) {
                    // I/O BAR: address bits above the size are writable.
                    Some(sz) => (self.bars[i] & !(sz - 1) & !3) | 1,
                    None => 0,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_bar_sizing() {
        let mut c = PciConfig::new(PciIdentity::PIIX3_NATIVE, BarSizes::SPEC);
        assert_eq!(c.read(0, 4, false), 0x7010_8086);
        assert_eq!(c.read(8, 4, false), 0x0101_8f00);
        assert_eq!(c.read(0x3d, 1, false), 1);
        for (i, size) in [(0, 8u32), (1, 4), (2, 8), (3, 4), (4, 16)] {
            c.write(0x10 + 4 * i, 4, 0xffff_ffff);
            assert_eq!(c.read(0x10 + 4 * i, 4, false), !(size - 1) | 1, "BAR{i}");
        }
        c.write(0x24, 4, 0xffff_ffff);
        assert_eq!(c.read(0x24, 4, false), 0);
        c.write(0x30, 4, 0xffff_ffff);
        assert_eq!(c.read(0x30, 4, false), 0);
        c.write(0x10, 4, 0xc020);
        assert_eq!(c.bar_base(0), None, "IO decoding off");
        c.write(4, 2, 0xffff);
        assert_eq!(c.command(), CMD_WRITABLE);
        assert_eq!(c.bar_base(0), Some(0xc020));
        assert_eq!(c.read(6, 2, true) & 0x08, 0x08);
        // Mode bits are programmable.
        c.write(9, 1, 0x8a);
        assert!(!c.native(0) && !c.native(1));
        c.reset();
        assert_eq!(c.bar_base(0), None);
    }

    #[test]
    fn legacy_piix3_has_no_bar0_to_3() {
        let mut c = PciConfig::new(PciIdentity::PIIX3, BarSizes::SPEC);
        c.write(0x10, 4, 0xffff_ffff);
        assert_eq!(c.read(0x10, 4, false), 0);
        assert_eq!(c.read(0x3d, 1, false), 0);
        // Not programmable: mode bits stay.
        c.write(9, 1, 0x85);
        assert_eq!(c.read(9, 1, false), 0x80);
        assert!(c.channel_enabled(0));
        c.write(0x40, 2, 0);
        assert!(!c.channel_enabled(0));
        assert_eq!(c.read(0x20, 4, false), 1);
    }
}

//! IDENTIFY DEVICE data (ACS-3 §7.12.7, Table 45), built from the disk's
//! live state every time the command runs.
//!
//! Capability bits for commands come from [`crate::commands`] (a bit is set
//! only if a command whose gate is open claims it); the write-cache and
//! look-ahead "enabled" bits, capacities, sector sizes, modes and rotation
//! rate come from [`IdentifyInputs`]. [`WORD_MAP`] documents every word the
//! builder may set; a test checks the two agree.

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::commands::{Gate, COMMANDS, SET_FEATURES};

/// The 512-byte IDENTIFY DEVICE data block (ACS-3 §7.12.7): 256
/// little-endian words.
#[derive(Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdentifyData {
    /// The words.
    pub words: [U16; 256],
}

impl std::fmt::Debug for IdentifyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyData").finish_non_exhaustive()
    }
}

impl Default for IdentifyData {
    fn default() -> Self {
        IdentifyData {
            words: [U16::new(0); 256],
        }
    }
}

/// Transfer modes a device offers (limited to what its controller supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferModes {
    /// Highest PIO mode (0..=4; modes 3 and 4 are reported in word 64).
    pub pio: u8,
    /// Highest multiword DMA mode (0..=2), if any.
    pub mwdma: Option<u8>,
    /// Highest Ultra DMA mode (0..=6), if any.
    pub udma: Option<u8>,
}

impl TransferModes {
    /// PIIX3 (82371SB): PIO 4, MWDMA 2, no Ultra DMA.
    pub const PIIX3: TransferModes = TransferModes {
        pio: 4,
        mwdma: Some(2),
        udma: None,
    };
    /// PIIX4 (82371AB): PIO 4, MWDMA 2, UDMA 2 (33 MB/s).
    pub const PIIX4: TransferModes = TransferModes {
        pio: 4,
        mwdma: Some(2),
        udma: Some(2),
    };
    /// A generic controller: PIO 4, MWDMA 2, UDMA 5.
    pub const GENERIC: TransferModes = TransferModes {
        pio: 4,
        mwdma: Some(2),
        udma: Some(5),
    };

    /// The modes both `self` and `other` support.
    pub fn intersect(self, other: TransferModes) -> TransferModes {
        fn min(a: Option<u8>, b: Option<u8>) -> Option<u8> {
            Some(a?.min(b?))
        }
        TransferModes {
            pio: self.pio.min(other.pio).min(4),
            mwdma: min(self.mwdma, other.mwdma).map(|m| m.min(2)),
            udma: min(self.udma, other.udma).map(|m| m.min(6)),
        }
    }
}

/// The DMA mode selected with SET FEATURES 03h (at most one, ACS-3 §7.12.7.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaMode {
    /// None selected.
    None,
    /// Multiword DMA mode n.
    Mwdma(u8),
    /// Ultra DMA mode n.
    Udma(u8),
}

/// CHS geometry (obsolete, for old guests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u32,
    /// Heads (1..=16).
    pub heads: u32,
    /// Sectors per track (1..=255).
    pub sectors: u32,
}

impl Geometry {
    /// The default translation for `capacity` sectors: 16 heads and 63
    /// sectors per track (fewer for tiny disks), at most 16383 cylinders.
    pub fn default_for(capacity: u64) -> Geometry {
        let sectors = capacity.clamp(1, 63);
        let heads = (capacity / sectors).clamp(1, 16);
        Geometry {
            cylinders: (capacity / (heads * sectors)).min(16383) as u32,
            heads: heads as u32,
            sectors: sectors as u32,
        }
    }

    /// A host-chosen geometry (INITIALIZE DEVICE PARAMETERS); cylinders
    /// follow from the capacity, at most 65535.
    pub fn with(capacity: u64, heads: u32, sectors: u32) -> Geometry {
        let per_cyl = u64::from(heads.max(1)) * u64::from(sectors.max(1));
        Geometry {
            cylinders: (capacity / per_cyl).min(65535) as u32,
            heads,
            sectors,
        }
    }

    /// Sectors addressable through this geometry.
    pub fn capacity(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }
}

/// The live facts IDENTIFY DEVICE reports.
#[derive(Debug, Clone)]
pub struct IdentifyInputs<'a> {
    /// Model number (40 ASCII characters, space padded).
    pub model: &'a str,
    /// Serial number (20 characters).
    pub serial: &'a str,
    /// Firmware revision (8 characters).
    pub firmware: &'a str,
    /// Capacity in logical sectors.
    pub capacity: u64,
    /// Logical sector size in bytes.
    pub logical_sector: u32,
    /// Physical sector size in bytes.
    pub physical_sector: u32,
    /// Volatile write cache enabled (the disk's live WCE).
    pub write_cache: bool,
    /// Read look-ahead enabled.
    pub look_ahead: bool,
    /// Maximum sectors per DRQ block for READ/WRITE MULTIPLE.
    pub max_multiple: u8,
    /// Current multiple setting (0 = disabled).
    pub multiple: u8,
    /// Supported transfer modes.
    pub modes: TransferModes,
    /// Selected DMA mode.
    pub dma_mode: DmaMode,
    /// Default CHS geometry.
    pub default_geometry: Geometry,
    /// Current CHS geometry.
    pub geometry: Geometry,
    /// TRIM reaches the host (DATA SET MANAGEMENT gate).
    pub trim: bool,
    /// Maximum 512-byte blocks of TRIM ranges per command (word 105).
    pub max_dsm_blocks: u16,
    /// Rotational medium: `Some(false)` = solid state, `Some(true)` =
    /// rotating (rate not reported), `None` = unknown.
    pub rotational: Option<bool>,
}

/// Largest LBA28 capacity reported in words 60-61 (ACS-3: 0FFFFFFFh).
pub const LBA28_LIMIT: u64 = 0x0fff_ffff;

/// Whether `gate` is open for a device with these inputs.
pub fn gate_open(gate: Gate, trim: bool) -> bool {
    match gate {
        Gate::Always => true,
        Gate::Trim => trim,
    }
}

impl IdentifyData {
    fn set(&mut self, word: usize, v: u16) {
        self.words[word] = U16::new(v);
    }

    fn or(&mut self, word: usize, v: u16) {
        let w = self.words[word].get() | v;
        self.set(word, w);
    }

    /// Word `n`.
    pub fn word(&self, n: usize) -> u16 {
        self.words[n].get()
    }

    /// Whether bit `bit` of word `n` is set.
    pub fn bit(&self, n: usize, bit: u8) -> bool {
        self.word(n) & (1 << bit) != 0
    }

    /// ATA string in words `first..first+len/2`: two characters per word,
    /// first character in the high byte (ACS-3 §3.2.9), space padded;
    /// non-printable or non-ASCII characters become `?`.
    fn set_string(&mut self, first: usize, len: usize, s: &str) {
        let mut bytes = vec![b' '; len];
        for (dst, c) in bytes.iter_mut().zip(s.chars()) {
            *dst = if c.is_ascii_graphic() || c == ' ' {
                c as u8
            } else {
                b'?'
            };
        }
        for (i, pair) in bytes.chunks(2).enumerate() {
            self.set(first + i, u16::from(pair[0]) << 8 | u16::from(pair[1]));
        }
    }

    /// Reads back an ATA string (trailing spaces trimmed).
    pub fn string(&self, first: usize, len: usize) -> String {
        let mut s = String::new();
        for i in 0..len / 2 {
            let w = self.word(first + i);
            s.push((w >> 8) as u8 as char);
            s.push((w & 0xff) as u8 as char);
        }
        s.trim_end().to_string()
    }

    /// Builds the data for `inp`.
    pub fn build(inp: &IdentifyInputs<'_>) -> IdentifyData {
        let mut d = IdentifyData::default();
        let cap = inp.capacity;
        let g0 = inp.default_geometry;
        let g = inp.geometry;
        // Word 0: fixed, non-removable ATA device (bit 15 = 0: ATA).
        d.set(0, 0x0040);
        d.set(1, g0.cylinders as u16);
        d.set(3, g0.heads as u16);
        d.set(6, g0.sectors as u16);
        d.set_string(10, 20, inp.serial);
        d.set_string(23, 8, inp.firmware);
        d.set_string(27, 40, inp.model);
        // Word 47: 80h in bits 15:8, maximum sectors per DRQ block.
        d.set(47, 0x8000 | u16::from(inp.max_multiple));
        // Word 48: Trusted Computing not supported; bit 14 shall be one.
        d.set(48, 0x4000);
        // Word 49: IORDY supported (11) and may be disabled (10), LBA (9);
        // DMA (8) comes from the command table.
        d.set(49, 1 << 11 | 1 << 10 | 1 << 9);
        // Word 50: bit 14 shall be one.
        d.set(50, 0x4000);
        // Words 51-52 (obsolete PIO/DMA timing): PIO 2 for old drivers.
        d.set(51, 0x0200);
        // Word 53: words 54-58, 64-70 and 88 are valid.
        d.set(53, 0x0007);
        d.set(54, g.cylinders as u16);
        d.set(55, g.heads as u16);
        d.set(56, g.sectors as u16);
        let chs_cap = g.capacity().min(u64::from(u32::MAX)) as u32;
        d.set(57, chs_cap as u16);
        d.set(58, (chs_cap >> 16) as u16);
        // Word 59: bit 8 = multiple setting valid, bits 7:0 current.
        d.set(59, 0x0100 | u16::from(inp.multiple));
        let cap28 = cap.min(LBA28_LIMIT) as u32;
        d.set(60, cap28 as u16);
        d.set(61, (cap28 >> 16) as u16);
        // Word 63: MWDMA supported (2:0) and selected (10:8).
        if let Some(m) = inp.modes.mwdma {
            let mut w = (1u16 << (m + 1)) - 1;
            if let DmaMode::Mwdma(s) = inp.dma_mode {
                w |= 1 << (8 + s);
            }
            d.set(63, w);
        }
        // Word 64: PIO modes 3 and 4 supported.
        d.set(
            64,
            match inp.modes.pio {
                0..=2 => 0,
                3 => 1,
                _ => 3,
            },
        );
        // Words 65-68: cycle times (ns) for MWDMA2 / PIO4.
        for w in 65..=68 {
            d.set(w, 120);
        }
        // Words 80/81: ATA/ATAPI-4 .. ATA8-ACS; minor version not reported.
        d.set(80, 0x01f0);
        // Words 82-87: validity bits for 83/84/87 (bit 14 one, 15 zero).
        d.set(83, 0x4000);
        d.set(84, 0x4000);
        d.set(87, 0x4000);
        // Word 88: UDMA supported (6:0) and selected (14:8).
        if let Some(u) = inp.modes.udma {
            let mut w = (1u16 << (u + 1)) - 1;
            if let DmaMode::Udma(s) = inp.dma_mode {
                w |= 1 << (8 + s);
            }
            d.set(88, w);
        }
        // Word 93: hardware reset results: bit 14 one, device 0 passed
        // diagnostics (bit 0 one by convention); bit 13 = 80-conductor
        // cable, reported when the controller offers UDMA > 2.
        let cable80 = inp.modes.udma.is_some_and(|u| u > 2);
        d.set(93, 0x4001 | if cable80 { 1 << 13 } else { 0 });
        // Words 100-103: 48-bit capacity.
        for i in 0..4 {
            d.set(100 + i, (cap >> (16 * i)) as u16);
        }
        // Word 105: maximum DSM blocks (only meaningful with TRIM).
        if inp.trim {
            d.set(105, inp.max_dsm_blocks);
        }
        // Word 106: physical/logical sector size.
        let lss = inp.logical_sector.max(512);
        let pss = inp.physical_sector.max(lss);
        let per_phys = pss / lss;
        if lss > 512 || per_phys > 1 {
            let mut w = 0x4000u16;
            if per_phys > 1 {
                w |= 1 << 13 | (per_phys.trailing_zeros() as u16 & 0xf);
            }
            if lss > 512 {
                w |= 1 << 12;
                let words = lss / 2;
                d.set(117, words as u16);
                d.set(118, (words >> 16) as u16);
            }
            d.set(106, w);
            if per_phys > 1 {
                // Word 209: alignment valid (bit 14), LBA 0 at offset 0.
                d.set(209, 0x4000);
            }
        }
        // Word 217: nominal media rotation rate (0001h = non-rotating).
        d.set(
            217,
            match inp.rotational {
                Some(false) => 1,
                _ => 0,
            },
        );
        // Capability bits claimed by the command tables.
        for c in COMMANDS {
            if gate_open(c.gate, inp.trim) {
                for bit in c.claims {
                    d.or(bit.word, 1 << bit.bit);
                }
            }
        }
        for f in SET_FEATURES {
            for bit in f.claims {
                d.or(bit.word, 1 << bit.bit);
            }
        }
        // Live enabled bits.
        if inp.write_cache {
            d.or(85, 1 << 5);
        }
        if inp.look_ahead {
            d.or(85, 1 << 6);
        }
        d.seal();
        d
    }

    /// Sets word 255: signature A5h and the checksum byte making the sum of
    /// all 512 bytes zero (ACS-3 §7.12.7.91).
    pub fn seal(&mut self) {
        self.set(255, 0x00a5);
        let sum = self
            .as_bytes()
            .iter()
            .take(511)
            .fold(0u8, |a, b| a.wrapping_add(*b));
        self.set(255, u16::from(sum.wrapping_neg()) << 8 | 0xa5);
    }

    /// Whether word 255 holds a valid signature and checksum.
    pub fn checksum_ok(&self) -> bool {
        self.word(255) & 0xff == 0xa5
            && self.as_bytes().iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }
}

/// One row of the IDENTIFY word map (docs and a consistency test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordDesc {
    /// First word.
    pub first: usize,
    /// Last word (inclusive).
    pub last: usize,
    /// Field name (ACS-3 Table 45).
    pub name: &'static str,
    /// What vmstor reports.
    pub value: &'static str,
}

const fn w(first: usize, last: usize, name: &'static str, value: &'static str) -> WordDesc {
    WordDesc {
        first,
        last,
        name,
        value,
    }
}

/// Every IDENTIFY DEVICE word the builder may set to a non-zero value.
pub const WORD_MAP: &[WordDesc] = &[
    w(0, 0, "General configuration", "0040h: fixed, non-removable ATA device"),
    w(1, 1, "Default cylinders (obsolete)", "capacity / (16 × 63), at most 16383"),
    w(3, 3, "Default heads (obsolete)", "16 (fewer for tiny disks)"),
    w(6, 6, "Default sectors per track (obsolete)", "63 (fewer for tiny disks)"),
    w(10, 19, "Serial number", "20 ASCII characters from `DeviceConfig::serial`"),
    w(23, 26, "Firmware revision", "8 ASCII characters from `DeviceConfig::firmware`"),
    w(27, 46, "Model number", "40 ASCII characters from `DeviceConfig::model`"),
    w(47, 47, "Maximum sectors per DRQ block (READ/WRITE MULTIPLE)", "8000h | 16"),
    w(48, 48, "Trusted Computing feature set", "4000h: not supported"),
    w(49, 49, "Capabilities", "IORDY (11), IORDY may be disabled (10), LBA (9), DMA (8, from the table)"),
    w(50, 50, "Capabilities", "4000h"),
    w(51, 51, "PIO timing (obsolete)", "0200h (mode 2) for old drivers"),
    w(53, 53, "Field validity", "0007h: words 54-58, 64-70 and 88 valid"),
    w(54, 56, "Current cylinders/heads/sectors (obsolete)", "as set by INITIALIZE DEVICE PARAMETERS (default geometry at power-on)"),
    w(57, 58, "Current CHS capacity (obsolete)", "cylinders × heads × sectors"),
    w(59, 59, "Multiple setting", "bit 8 valid, bits 7:0 = SET MULTIPLE MODE value (16 at power-on)"),
    w(60, 61, "Total user addressable sectors (28-bit)", "min(capacity, 0FFFFFFFh)"),
    w(63, 63, "Multiword DMA modes", "supported modes of the controller (2:0), selected mode (10:8)"),
    w(64, 64, "PIO modes 3 and 4", "0003h with PIO 4"),
    w(65, 68, "DMA/PIO cycle times", "120 ns"),
    w(80, 80, "Major version", "01F0h: ATA/ATAPI-4 through ATA8-ACS"),
    w(82, 82, "Supported command sets", "NOP (14), read look-ahead (6), volatile write cache (5), power management (3)"),
    w(83, 83, "Supported command sets", "4000h | FLUSH CACHE EXT (13), FLUSH CACHE (12), 48-bit address (10)"),
    w(84, 84, "Supported features", "4000h | WRITE DMA FUA EXT / WRITE MULTIPLE FUA EXT (6)"),
    w(85, 85, "Enabled command sets", "NOP (14), look-ahead enabled (6, live), **write cache enabled (5) = live `disk.write_cache()`**, power management (3)"),
    w(86, 86, "Enabled command sets", "FLUSH CACHE EXT (13), FLUSH CACHE (12), 48-bit address (10)"),
    w(87, 87, "Enabled features", "4000h | FUA commands (6)"),
    w(88, 88, "Ultra DMA modes", "supported modes of the controller (6:0), selected mode (14:8)"),
    w(93, 93, "Hardware reset results", "4001h, bit 13 (80-conductor cable) when the controller offers UDMA > 2"),
    w(100, 103, "Total user addressable sectors (48-bit)", "capacity in logical sectors"),
    w(105, 105, "Maximum DATA SET MANAGEMENT blocks", "8 when TRIM is available"),
    w(106, 106, "Physical/logical sector size", "4000h | multiple logical per physical (13) + log2 ratio (3:0) | logical > 512 (12)"),
    w(117, 118, "Logical sector size in words", "when larger than 256 words"),
    w(169, 169, "DATA SET MANAGEMENT", "TRIM supported (0) when the discard policy is unmap"),
    w(209, 209, "Alignment of logical within physical", "4000h (LBA 0 aligned) when physical > logical"),
    w(217, 217, "Nominal media rotation rate", "0001h for non-rotating media, 0 when rotating or unknown"),
    w(255, 255, "Integrity word", "A5h signature and checksum byte"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> IdentifyInputs<'static> {
        IdentifyInputs {
            model: "vmstor disk",
            serial: "SN1",
            firmware: "0.1",
            capacity: 1 << 30,
            logical_sector: 512,
            physical_sector: 4096,
            write_cache: true,
            look_ahead: true,
            max_multiple: 16,
            multiple: 16,
            modes: TransferModes::PIIX4,
            dma_mode: DmaMode::Udma(2),
            default_geometry: Geometry::default_for(1 << 30),
            geometry: Geometry::default_for(1 << 30),
            trim: true,
            max_dsm_blocks: 8,
            rotational: Some(false),
        }
    }

    #[test]
    fn every_nonzero_word_is_documented() {
        let mut inp = inputs();
        inp.logical_sector = 4096;
        inp.physical_sector = 16384;
        let d = IdentifyData::build(&inp);
        for n in 0..256 {
            if d.word(n) != 0 {
                assert!(
                    WORD_MAP.iter().any(|w| (w.first..=w.last).contains(&n)),
                    "word {n} = {:#06x} is not in WORD_MAP",
                    d.word(n)
                );
            }
        }
        for w in WORD_MAP.windows(2) {
            assert!(w[0].last < w[1].first);
        }
    }

    #[test]
    fn checksum_and_strings() {
        let d = IdentifyData::build(&inputs());
        assert!(d.checksum_ok());
        assert_eq!(d.string(27, 40), "vmstor disk");
        assert_eq!(d.string(10, 20), "SN1");
        // First character in the high byte of the word.
        assert_eq!(d.word(27), u16::from_be_bytes(*b"vm"));
        let mut inp = inputs();
        inp.model = "é\u{7}long name that is certainly longer than forty characters";
        let d = IdentifyData::build(&inp);
        assert_eq!(&d.string(27, 40)[..2], "??");
        assert_eq!(d.string(27, 40).len(), 40);
        assert!(d.checksum_ok());
    }

    #[test]
    fn geometry_defaults() {
        let g = Geometry::default_for(1 << 30);
        assert_eq!((g.cylinders, g.heads, g.sectors), (16383, 16, 63));
        let g = Geometry::default_for(100);
        assert_eq!((g.heads, g.sectors), (1, 63));
        assert!(g.capacity() <= 100);
        let g = Geometry::default_for(0);
        assert_eq!(g.capacity(), 0);
    }
}

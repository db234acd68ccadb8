//! The opcode table: the single source of truth for which ATA commands the
//! device executes, how (protocol, addressing, host requests), which
//! IDENTIFY DEVICE capability bits each one justifies, and `docs/ata.md`.
//!
//! Dispatch ([`crate::device`]) looks commands up here and nowhere else; the
//! IDENTIFY builder ([`crate::identify`]) sets a "supported"/"enabled"
//! capability bit only if some entry here (whose [`Gate`] is open) claims
//! it, so the device cannot advertise a command it does not execute.
//! SET FEATURES subcommands have their own table, [`SET_FEATURES`].

/// How data moves for a command (ATA/ATAPI-6 §9 protocols).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// No data transfer.
    NonData,
    /// PIO data-in (device to host through the data port).
    PioIn,
    /// PIO data-out (host to device through the data port).
    PioOut,
    /// DMA from device to host memory.
    DmaIn,
    /// DMA from host memory to device.
    DmaOut,
    /// EXECUTE DEVICE DIAGNOSTIC: both devices on the channel respond.
    Diagnostic,
}

impl Protocol {
    /// Name used in the docs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::NonData => "non-data",
            Protocol::PioIn => "PIO in",
            Protocol::PioOut => "PIO out",
            Protocol::DmaIn => "DMA in",
            Protocol::DmaOut => "DMA out",
            Protocol::Diagnostic => "diagnostic",
        }
    }
}

/// How the command addresses the medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// No address.
    None,
    /// 28-bit LBA (or CHS when Device bit 6 is clear); count 0 means 256.
    Lba28,
    /// 48-bit LBA from the current and HOB registers; count 0 means 65536.
    Lba48,
}

impl Addressing {
    /// Name used in the docs.
    pub fn name(self) -> &'static str {
        match self {
            Addressing::None => "-",
            Addressing::Lba28 => "28-bit/CHS",
            Addressing::Lba48 => "48-bit",
        }
    }
}

/// When a command is available (its capability bits are set only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// Always.
    Always,
    /// Only when the disk's discard policy is `unmap` (TRIM reaches the
    /// host); otherwise the command is aborted and not advertised.
    Trim,
}

impl Gate {
    /// Name used in the docs.
    pub fn name(self) -> &'static str {
        match self {
            Gate::Always => "always",
            Gate::Trim => "discard=unmap",
        }
    }
}

/// One IDENTIFY DEVICE bit: `word`, `bit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentifyBit {
    /// Word number (0..=255).
    pub word: usize,
    /// Bit number (0..=15).
    pub bit: u8,
}

const fn b(word: usize, bit: u8) -> IdentifyBit {
    IdentifyBit { word, bit }
}

/// What the device does for a command (dispatch key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// NOP: always aborted (ACS-3 §7.17).
    Nop,
    /// DATA SET MANAGEMENT (TRIM).
    DataSetManagement,
    /// RECALIBRATE (obsolete, completes).
    Recalibrate,
    /// READ SECTOR(S) / READ MULTIPLE / READ DMA (and EXT).
    Read,
    /// WRITE SECTOR(S) / WRITE MULTIPLE / WRITE DMA (and EXT, FUA EXT).
    Write,
    /// READ VERIFY SECTOR(S) (EXT).
    ReadVerify,
    /// SEEK (obsolete): range check only.
    Seek,
    /// EXECUTE DEVICE DIAGNOSTIC.
    ExecuteDiagnostic,
    /// INITIALIZE DEVICE PARAMETERS (CHS geometry).
    InitializeDeviceParameters,
    /// READ NATIVE MAX ADDRESS (EXT).
    ReadNativeMax,
    /// SET MULTIPLE MODE.
    SetMultiple,
    /// STANDBY IMMEDIATE.
    StandbyImmediate,
    /// IDLE IMMEDIATE.
    IdleImmediate,
    /// STANDBY.
    Standby,
    /// IDLE.
    Idle,
    /// CHECK POWER MODE.
    CheckPowerMode,
    /// SLEEP.
    Sleep,
    /// FLUSH CACHE (EXT).
    Flush,
    /// IDENTIFY DEVICE.
    Identify,
    /// SET FEATURES.
    SetFeatures,
}

/// One command the device executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDesc {
    /// Command register value.
    pub opcode: u8,
    /// Name as in ACS-3 (obsolete aliases say so).
    pub name: &'static str,
    /// Data protocol.
    pub protocol: Protocol,
    /// Addressing.
    pub addressing: Addressing,
    /// Dispatch key.
    pub action: Action,
    /// READ/WRITE MULTIPLE: DRQ blocks of the SET MULTIPLE size.
    pub multiple: bool,
    /// The write is forced unit access (`Request::write(.., fua=true, ..)`).
    pub fua: bool,
    /// Availability.
    pub gate: Gate,
    /// IDENTIFY DEVICE bits this command justifies (supported and, for
    /// features without a disable, enabled).
    pub claims: &'static [IdentifyBit],
    /// The hostio requests it becomes (for the docs).
    pub host: &'static str,
}

/// 48-bit Address feature set supported/enabled (words 83/86 bit 10).
const LBA48: &[IdentifyBit] = &[b(83, 10), b(86, 10)];
/// FUA commands supported/enabled (words 84/87 bit 6) + 48-bit.
const FUA48: &[IdentifyBit] = &[b(83, 10), b(86, 10), b(84, 6), b(87, 6)];
/// DMA supported (word 49 bit 8).
const DMA: &[IdentifyBit] = &[b(49, 8)];
/// DMA + 48-bit.
const DMA48: &[IdentifyBit] = &[b(49, 8), b(83, 10), b(86, 10)];
/// DMA + FUA + 48-bit.
const DMA_FUA48: &[IdentifyBit] = &[b(49, 8), b(83, 10), b(86, 10), b(84, 6), b(87, 6)];
/// Power Management feature set (words 82/85 bit 3).
const PM: &[IdentifyBit] = &[b(82, 3), b(85, 3)];

macro_rules! cmd {
    ($op:expr, $name:expr, $proto:ident, $addr:ident, $act:ident, $claims:expr, $host:expr) => {
        cmd!($op, $name, $proto, $addr, $act, false, false, Always, $claims, $host)
    };
    ($op:expr, $name:expr, $proto:ident, $addr:ident, $act:ident, $mult:expr, $fua:expr, $gate:ident, $claims:expr, $host:expr) => {
        CommandDesc {
            opcode: $op,
            name: $name,
            protocol: Protocol::$proto,
            addressing: Addressing::$addr,
            action: Action::$act,
            multiple: $mult,
            fua: $fua,
            gate: Gate::$gate,
            claims: $claims,
            host: $host,
        }
    };
}

const PIO_READ: &str = "read into a device buffer, one per ≤ 4 MiB of the command";
const PIO_WRITE: &str = "write from a device buffer, one per command (≤ 4 MiB chunks)";
const PIO_WRITE_FUA: &str = "FUA write from a device buffer, one per command (≤ 4 MiB chunks)";
const DMA_READ: &str = "one read straight into the PRD scatter list";
const DMA_WRITE: &str = "one write straight from the PRD scatter list";
const DMA_WRITE_FUA: &str = "one FUA write straight from the PRD scatter list";

/// Every command the device executes, by opcode.
pub const COMMANDS: &[CommandDesc] = &[
    cmd!(
        0x00,
        "NOP",
        NonData,
        None,
        Nop,
        &[b(82, 14), b(85, 14)],
        "none (always ABRT, as specified)"
    ),
    cmd!(
        0x06,
        "DATA SET MANAGEMENT",
        DmaOut,
        Lba48,
        DataSetManagement,
        false,
        false,
        Trim,
        &[b(169, 0), b(83, 10), b(86, 10), b(49, 8)],
        "one discard per non-empty TRIM range"
    ),
    cmd!(
        0x10,
        "RECALIBRATE (obsolete)",
        NonData,
        None,
        Recalibrate,
        &[],
        "none"
    ),
    cmd!(0x20, "READ SECTOR(S)", PioIn, Lba28, Read, &[], PIO_READ),
    cmd!(
        0x21,
        "READ SECTOR(S) without retry (obsolete)",
        PioIn,
        Lba28,
        Read,
        &[],
        PIO_READ
    ),
    cmd!(
        0x24,
        "READ SECTOR(S) EXT",
        PioIn,
        Lba48,
        Read,
        LBA48,
        PIO_READ
    ),
    cmd!(0x25, "READ DMA EXT", DmaIn, Lba48, Read, DMA48, DMA_READ),
    cmd!(
        0x27,
        "READ NATIVE MAX ADDRESS EXT",
        NonData,
        Lba48,
        ReadNativeMax,
        LBA48,
        "none"
    ),
    cmd!(
        0x29,
        "READ MULTIPLE EXT",
        PioIn,
        Lba48,
        Read,
        true,
        false,
        Always,
        LBA48,
        PIO_READ
    ),
    cmd!(
        0x30,
        "WRITE SECTOR(S)",
        PioOut,
        Lba28,
        Write,
        &[],
        PIO_WRITE
    ),
    cmd!(
        0x31,
        "WRITE SECTOR(S) without retry (obsolete)",
        PioOut,
        Lba28,
        Write,
        &[],
        PIO_WRITE
    ),
    cmd!(
        0x34,
        "WRITE SECTOR(S) EXT",
        PioOut,
        Lba48,
        Write,
        LBA48,
        PIO_WRITE
    ),
    cmd!(
        0x35,
        "WRITE DMA EXT",
        DmaOut,
        Lba48,
        Write,
        DMA48,
        DMA_WRITE
    ),
    cmd!(
        0x39,
        "WRITE MULTIPLE EXT",
        PioOut,
        Lba48,
        Write,
        true,
        false,
        Always,
        LBA48,
        PIO_WRITE
    ),
    cmd!(
        0x3d,
        "WRITE DMA FUA EXT",
        DmaOut,
        Lba48,
        Write,
        false,
        true,
        Always,
        DMA_FUA48,
        DMA_WRITE_FUA
    ),
    cmd!(
        0x40,
        "READ VERIFY SECTOR(S)",
        NonData,
        Lba28,
        ReadVerify,
        &[],
        "reads into a scratch buffer, ≤ 4 MiB each"
    ),
    cmd!(
        0x41,
        "READ VERIFY SECTOR(S) without retry (obsolete)",
        NonData,
        Lba28,
        ReadVerify,
        &[],
        "reads into a scratch buffer, ≤ 4 MiB each"
    ),
    cmd!(
        0x42,
        "READ VERIFY SECTOR(S) EXT",
        NonData,
        Lba48,
        ReadVerify,
        LBA48,
        "reads into a scratch buffer, ≤ 4 MiB each"
    ),
    cmd!(
        0x70,
        "SEEK (obsolete)",
        NonData,
        Lba28,
        Seek,
        &[],
        "none (range check)"
    ),
    cmd!(
        0x90,
        "EXECUTE DEVICE DIAGNOSTIC",
        Diagnostic,
        None,
        ExecuteDiagnostic,
        &[],
        "none"
    ),
    cmd!(
        0x91,
        "INITIALIZE DEVICE PARAMETERS",
        NonData,
        None,
        InitializeDeviceParameters,
        &[],
        "none"
    ),
    cmd!(
        0xc4,
        "READ MULTIPLE",
        PioIn,
        Lba28,
        Read,
        true,
        false,
        Always,
        &[],
        PIO_READ
    ),
    cmd!(
        0xc5,
        "WRITE MULTIPLE",
        PioOut,
        Lba28,
        Write,
        true,
        false,
        Always,
        &[],
        PIO_WRITE
    ),
    cmd!(
        0xc6,
        "SET MULTIPLE MODE",
        NonData,
        None,
        SetMultiple,
        &[],
        "none"
    ),
    cmd!(0xc8, "READ DMA", DmaIn, Lba28, Read, DMA, DMA_READ),
    cmd!(
        0xc9,
        "READ DMA without retry (obsolete)",
        DmaIn,
        Lba28,
        Read,
        DMA,
        DMA_READ
    ),
    cmd!(0xca, "WRITE DMA", DmaOut, Lba28, Write, DMA, DMA_WRITE),
    cmd!(
        0xcb,
        "WRITE DMA without retry (obsolete)",
        DmaOut,
        Lba28,
        Write,
        DMA,
        DMA_WRITE
    ),
    cmd!(
        0xce,
        "WRITE MULTIPLE FUA EXT",
        PioOut,
        Lba48,
        Write,
        true,
        true,
        Always,
        FUA48,
        PIO_WRITE_FUA
    ),
    cmd!(
        0xe0,
        "STANDBY IMMEDIATE",
        NonData,
        None,
        StandbyImmediate,
        PM,
        "none"
    ),
    cmd!(
        0xe1,
        "IDLE IMMEDIATE",
        NonData,
        None,
        IdleImmediate,
        PM,
        "none"
    ),
    cmd!(0xe2, "STANDBY", NonData, None, Standby, PM, "none"),
    cmd!(0xe3, "IDLE", NonData, None, Idle, PM, "none"),
    cmd!(
        0xe5,
        "CHECK POWER MODE",
        NonData,
        None,
        CheckPowerMode,
        PM,
        "none"
    ),
    cmd!(0xe6, "SLEEP", NonData, None, Sleep, PM, "none"),
    cmd!(
        0xe7,
        "FLUSH CACHE",
        NonData,
        None,
        Flush,
        &[b(83, 12), b(86, 12)],
        "flush"
    ),
    cmd!(
        0xea,
        "FLUSH CACHE EXT",
        NonData,
        None,
        Flush,
        &[b(83, 13), b(86, 13), b(83, 10), b(86, 10)],
        "flush"
    ),
    cmd!(
        0xec,
        "IDENTIFY DEVICE",
        PioIn,
        None,
        Identify,
        &[],
        "none (built from live disk state)"
    ),
    cmd!(
        0xef,
        "SET FEATURES",
        NonData,
        None,
        SetFeatures,
        &[],
        "see the SET FEATURES table"
    ),
    cmd!(
        0xf8,
        "READ NATIVE MAX ADDRESS",
        NonData,
        Lba28,
        ReadNativeMax,
        &[],
        "none"
    ),
];

/// Looks an opcode up in [`COMMANDS`].
pub fn lookup(opcode: u8) -> Option<&'static CommandDesc> {
    COMMANDS.iter().find(|c| c.opcode == opcode)
}

/// What a SET FEATURES subcommand does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// 02h: enable the volatile write cache.
    EnableWriteCache,
    /// 82h: disable the volatile write cache (flushes first).
    DisableWriteCache,
    /// 03h: set the transfer mode from the Count register.
    SetTransferMode,
    /// AAh: enable read look-ahead.
    EnableLookAhead,
    /// 55h: disable read look-ahead.
    DisableLookAhead,
    /// 66h: disable reverting to power-on defaults.
    DisableRevert,
    /// CCh: enable reverting to power-on defaults.
    EnableRevert,
}

/// One SET FEATURES subcommand (ACS-3 §7.45 Table 78).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureDesc {
    /// Features register value.
    pub code: u8,
    /// Name.
    pub name: &'static str,
    /// Dispatch key.
    pub feature: Feature,
    /// IDENTIFY DEVICE bits it justifies.
    pub claims: &'static [IdentifyBit],
    /// What happens (for the docs).
    pub effect: &'static str,
}

/// Every SET FEATURES subcommand the device accepts; others are aborted.
pub const SET_FEATURES: &[FeatureDesc] = &[
    FeatureDesc {
        code: 0x02,
        name: "Enable volatile write cache",
        feature: Feature::EnableWriteCache,
        claims: &[b(82, 5)],
        effect: "`disk.set_write_cache(true)`; word 85 bit 5 becomes 1",
    },
    FeatureDesc {
        code: 0x03,
        name: "Set transfer mode",
        feature: Feature::SetTransferMode,
        claims: &[],
        effect: "Count selects PIO/MWDMA/UDMA mode; modes the controller lacks are aborted; words 63/88 follow",
    },
    FeatureDesc {
        code: 0x55,
        name: "Disable read look-ahead",
        feature: Feature::DisableLookAhead,
        claims: &[b(82, 6)],
        effect: "word 85 bit 6 becomes 0 (no host effect)",
    },
    FeatureDesc {
        code: 0x66,
        name: "Disable reverting to power-on defaults",
        feature: Feature::DisableRevert,
        claims: &[],
        effect: "software reset keeps SET FEATURES/SET MULTIPLE settings (default)",
    },
    FeatureDesc {
        code: 0x82,
        name: "Disable volatile write cache",
        feature: Feature::DisableWriteCache,
        claims: &[b(82, 5)],
        effect: "`disk.set_write_cache(false)`: waits for and flushes cached writes, then completes (ABRT if the flush fails); later writes are FUA",
    },
    FeatureDesc {
        code: 0xaa,
        name: "Enable read look-ahead",
        feature: Feature::EnableLookAhead,
        claims: &[b(82, 6)],
        effect: "word 85 bit 6 becomes 1 (no host effect)",
    },
    FeatureDesc {
        code: 0xcc,
        name: "Enable reverting to power-on defaults",
        feature: Feature::EnableRevert,
        claims: &[],
        effect: "software reset restores multiple count, transfer mode, look-ahead and the policy's write cache",
    },
];

/// Looks a SET FEATURES subcommand up in [`SET_FEATURES`].
pub fn lookup_feature(code: u8) -> Option<&'static FeatureDesc> {
    SET_FEATURES.iter().find(|f| f.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_are_unique_and_sorted() {
        for w in COMMANDS.windows(2) {
            assert!(
                w[0].opcode < w[1].opcode,
                "{:#x} {:#x}",
                w[0].opcode,
                w[1].opcode
            );
        }
        for w in SET_FEATURES.windows(2) {
            assert!(w[0].code < w[1].code);
        }
    }

    #[test]
    fn table_is_consistent() {
        for c in COMMANDS {
            // FUA only on writes; MULTIPLE only on PIO data commands.
            if c.fua {
                assert_eq!(c.action, Action::Write, "{}", c.name);
            }
            if c.multiple {
                assert!(matches!(c.protocol, Protocol::PioIn | Protocol::PioOut));
            }
            // Every EXT command claims the 48-bit feature set, and nothing
            // else does except FLUSH CACHE EXT.
            let claims48 = c.claims.contains(&b(83, 10));
            assert_eq!(
                claims48,
                c.addressing == Addressing::Lba48 || c.opcode == 0xea,
                "{}",
                c.name
            );
            for bit in c.claims {
                assert!(bit.word < 255 && bit.bit < 16);
            }
        }
        // The FUA bit is claimed by exactly the two FUA commands.
        let fua: Vec<u8> = COMMANDS
            .iter()
            .filter(|c| c.claims.contains(&b(84, 6)))
            .map(|c| c.opcode)
            .collect();
        assert_eq!(fua, vec![0x3d, 0xce]);
    }
}

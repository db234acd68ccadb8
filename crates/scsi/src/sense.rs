//! Sense data (SPC-5 §4.4): sense keys, additional sense codes, and the
//! fixed (70h) and descriptor (72h) formats.
//!
//! Which format a CHECK CONDITION carries is chosen by the control mode
//! page's D_SENSE bit ([`crate::mode`]); REQUEST SENSE chooses with its DESC
//! bit. [`ASC_TABLE`] names every code this crate reports and feeds the
//! sense table in `docs/scsi.md`.

use zerocopy::byteorder::{BigEndian, U16, U32};
use zerocopy::{Immutable, IntoBytes, KnownLayout};

/// SCSI status codes (SAM-5 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// GOOD.
    Good = 0x00,
    /// CHECK CONDITION: sense data describes the error.
    CheckCondition = 0x02,
    /// BUSY.
    Busy = 0x08,
    /// TASK SET FULL.
    TaskSetFull = 0x28,
    /// TASK ABORTED.
    TaskAborted = 0x40,
}

/// Sense keys (SPC-5 Table 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// NO SENSE.
    NoSense = 0x0,
    /// NOT READY.
    NotReady = 0x2,
    /// MEDIUM ERROR.
    MediumError = 0x3,
    /// HARDWARE ERROR.
    HardwareError = 0x4,
    /// ILLEGAL REQUEST.
    IllegalRequest = 0x5,
    /// UNIT ATTENTION.
    UnitAttention = 0x6,
    /// DATA PROTECT.
    DataProtect = 0x7,
    /// ABORTED COMMAND.
    AbortedCommand = 0xb,
}

impl SenseKey {
    /// The spec name.
    pub fn name(self) -> &'static str {
        match self {
            SenseKey::NoSense => "NO SENSE",
            SenseKey::NotReady => "NOT READY",
            SenseKey::MediumError => "MEDIUM ERROR",
            SenseKey::HardwareError => "HARDWARE ERROR",
            SenseKey::IllegalRequest => "ILLEGAL REQUEST",
            SenseKey::UnitAttention => "UNIT ATTENTION",
            SenseKey::DataProtect => "DATA PROTECT",
            SenseKey::AbortedCommand => "ABORTED COMMAND",
        }
    }
}

/// An additional sense code and qualifier (SPC-5 Table 54).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

impl Asc {
    /// NO ADDITIONAL SENSE INFORMATION.
    pub const NO_ADDITIONAL_SENSE: Asc = Asc(0x00, 0x00);
    /// LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED.
    pub const NOT_READY_INIT_REQUIRED: Asc = Asc(0x04, 0x02);
    /// WRITE ERROR.
    pub const WRITE_ERROR: Asc = Asc(0x0c, 0x00);
    /// UNRECOVERED READ ERROR.
    pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
    /// PARAMETER LIST LENGTH ERROR.
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1a, 0x00);
    /// INVALID COMMAND OPERATION CODE.
    pub const INVALID_OPCODE: Asc = Asc(0x20, 0x00);
    /// LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
    /// INVALID FIELD IN CDB.
    pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
    /// LOGICAL UNIT NOT SUPPORTED.
    pub const LUN_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
    /// INVALID FIELD IN PARAMETER LIST.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x26, 0x00);
    /// WRITE PROTECTED.
    pub const WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
    /// SPACE ALLOCATION FAILED WRITE PROTECT.
    pub const SPACE_ALLOCATION_FAILED: Asc = Asc(0x27, 0x07);
    /// POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const POWER_ON_RESET: Asc = Asc(0x29, 0x00);
    /// BUS DEVICE RESET FUNCTION OCCURRED (logical unit reset).
    pub const BUS_DEVICE_RESET: Asc = Asc(0x29, 0x03);
    /// I_T NEXUS LOSS OCCURRED.
    pub const IT_NEXUS_LOSS: Asc = Asc(0x29, 0x07);
    /// MODE PARAMETERS CHANGED.
    pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2a, 0x01);
    /// CAPACITY DATA HAS CHANGED.
    pub const CAPACITY_DATA_CHANGED: Asc = Asc(0x2a, 0x09);
    /// COMMANDS CLEARED BY ANOTHER INITIATOR.
    pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Asc = Asc(0x2f, 0x00);
    /// SAVING PARAMETERS NOT SUPPORTED.
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
    /// REPORTED LUNS DATA HAS CHANGED.
    pub const REPORTED_LUNS_DATA_CHANGED: Asc = Asc(0x3f, 0x0e);
    /// INTERNAL TARGET FAILURE.
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
}

/// Every additional sense code this crate reports, with its spec name.
pub const ASC_TABLE: &[(Asc, &str)] = &[
    (Asc::NO_ADDITIONAL_SENSE, "NO ADDITIONAL SENSE INFORMATION"),
    (
        Asc::NOT_READY_INIT_REQUIRED,
        "LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED",
    ),
    (Asc::WRITE_ERROR, "WRITE ERROR"),
    (Asc::UNRECOVERED_READ_ERROR, "UNRECOVERED READ ERROR"),
    (
        Asc::PARAMETER_LIST_LENGTH_ERROR,
        "PARAMETER LIST LENGTH ERROR",
    ),
    (Asc::INVALID_OPCODE, "INVALID COMMAND OPERATION CODE"),
    (Asc::LBA_OUT_OF_RANGE, "LOGICAL BLOCK ADDRESS OUT OF RANGE"),
    (Asc::INVALID_FIELD_IN_CDB, "INVALID FIELD IN CDB"),
    (Asc::LUN_NOT_SUPPORTED, "LOGICAL UNIT NOT SUPPORTED"),
    (
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
        "INVALID FIELD IN PARAMETER LIST",
    ),
    (Asc::WRITE_PROTECTED, "WRITE PROTECTED"),
    (
        Asc::SPACE_ALLOCATION_FAILED,
        "SPACE ALLOCATION FAILED WRITE PROTECT",
    ),
    (
        Asc::POWER_ON_RESET,
        "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED",
    ),
    (Asc::BUS_DEVICE_RESET, "BUS DEVICE RESET FUNCTION OCCURRED"),
    (Asc::IT_NEXUS_LOSS, "I_T NEXUS LOSS OCCURRED"),
    (Asc::MODE_PARAMETERS_CHANGED, "MODE PARAMETERS CHANGED"),
    (Asc::CAPACITY_DATA_CHANGED, "CAPACITY DATA HAS CHANGED"),
    (
        Asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR,
        "COMMANDS CLEARED BY ANOTHER INITIATOR",
    ),
    (
        Asc::SAVING_PARAMETERS_NOT_SUPPORTED,
        "SAVING PARAMETERS NOT SUPPORTED",
    ),
    (
        Asc::REPORTED_LUNS_DATA_CHANGED,
        "REPORTED LUNS DATA HAS CHANGED",
    ),
    (Asc::INTERNAL_TARGET_FAILURE, "INTERNAL TARGET FAILURE"),
];

impl Asc {
    /// The spec name, if this crate reports the code.
    pub fn name(self) -> Option<&'static str> {
        ASC_TABLE.iter().find(|(a, _)| *a == self).map(|(_, n)| *n)
    }
}

/// The sense-key-specific field pointer (SPC-5 §4.4.2.4.2): which CDB or
/// parameter-list byte (and bit) was invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// C/D: the error is in the CDB (else in the parameter list).
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit within the byte (BPV set when present).
    pub bit: Option<u8>,
}

impl FieldPointer {
    /// The three sense-key-specific bytes, SKSV set.
    pub fn bytes(&self) -> [u8; 3] {
        let mut b0 = 0x80;
        if self.in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = self.bit {
            b0 |= 0x08 | (bit & 7);
        }
        let [hi, lo] = self.byte.to_be_bytes();
        [b0, hi, lo]
    }
}

/// One sense condition: key, code, and optional field pointer and
/// information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code and qualifier.
    pub asc: Asc,
    /// Sense-key-specific field pointer (ILLEGAL REQUEST only).
    pub field: Option<FieldPointer>,
    /// INFORMATION field (e.g. the first failing LBA), if known.
    pub info: Option<u64>,
}

/// Fixed-format sense data (SPC-5 §4.4.3, response code 70h), 18 bytes.
#[derive(Debug, Clone, Copy, Default, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct FixedSense {
    /// VALID (bit 7) and RESPONSE CODE.
    pub response_code: u8,
    /// Obsolete.
    pub obsolete: u8,
    /// FILEMARK, EOM, ILI and SENSE KEY.
    pub key: u8,
    /// INFORMATION.
    pub information: U32<BigEndian>,
    /// ADDITIONAL SENSE LENGTH (n - 7).
    pub additional_length: u8,
    /// COMMAND-SPECIFIC INFORMATION.
    pub command_specific: U32<BigEndian>,
    /// ADDITIONAL SENSE CODE.
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER.
    pub ascq: u8,
    /// FIELD REPLACEABLE UNIT CODE.
    pub fru: u8,
    /// SKSV and SENSE KEY SPECIFIC.
    pub sks: [u8; 3],
}

/// Length of fixed-format sense data.
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    /// A condition with no field pointer or information.
    pub const fn new(key: SenseKey, asc: Asc) -> Sense {
        Sense {
            key,
            asc,
            field: None,
            info: None,
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at `byte`/`bit`.
    pub fn invalid_cdb_field(byte: usize, bit: Option<u8>) -> Sense {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: Asc::INVALID_FIELD_IN_CDB,
            field: Some(FieldPointer {
                in_cdb: true,
                byte: u16::try_from(byte).unwrap_or(u16::MAX),
                bit,
            }),
            info: None,
        }
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, pointing at
    /// parameter-list `byte`/`bit`.
    pub fn invalid_param_field(byte: usize, bit: Option<u8>) -> Sense {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: Asc::INVALID_FIELD_IN_PARAMETER_LIST,
            field: Some(FieldPointer {
                in_cdb: false,
                byte: u16::try_from(byte).unwrap_or(u16::MAX),
                bit,
            }),
            info: None,
        }
    }

    /// ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR.
    pub const fn param_list_length() -> Sense {
        Sense::new(SenseKey::IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (field pointer at
    /// byte 0 of the CDB, or at the service action).
    pub fn invalid_opcode(byte: usize) -> Sense {
        Sense {
            field: Some(FieldPointer {
                in_cdb: true,
                byte: byte as u16,
                bit: None,
            }),
            ..Sense::new(SenseKey::IllegalRequest, Asc::INVALID_OPCODE)
        }
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Sense {
        Sense::new(SenseKey::IllegalRequest, Asc::LBA_OUT_OF_RANGE)
    }

    /// Fixed-format bytes (SPC-5 §4.4.3).
    pub fn fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut s = FixedSense {
            response_code: 0x70,
            key: self.key as u8,
            additional_length: (FIXED_SENSE_LEN - 8) as u8,
            asc: self.asc.0,
            ascq: self.asc.1,
            ..Default::default()
        };
        if let Some(info) = self.info.and_then(|i| u32::try_from(i).ok()) {
            s.response_code |= 0x80;
            s.information = info.into();
        }
        if let Some(f) = self.field {
            s.sks = f.bytes();
        }
        let mut out = [0u8; FIXED_SENSE_LEN];
        out.copy_from_slice(s.as_bytes());
        out
    }

    /// Descriptor-format bytes (SPC-5 §4.4.2): header, then an information
    /// descriptor (type 00h) and a sense key specific descriptor (type 02h)
    /// when those are present.
    pub fn descriptor(&self) -> Vec<u8> {
        let mut out = vec![0x72, self.key as u8, self.asc.0, self.asc.1, 0, 0, 0, 0];
        if let Some(info) = self.info {
            out.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            out.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(f) = self.field {
            let b = f.bytes();
            out.extend_from_slice(&[0x02, 0x06, 0x00, 0x00, b[0], b[1], b[2], 0x00]);
        }
        out[7] = (out.len() - 8) as u8;
        out
    }

    /// The bytes in the chosen format.
    pub fn to_bytes(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.descriptor()
        } else {
            self.fixed().to_vec()
        }
    }

    /// Parses fixed or descriptor sense data (for initiators and tests).
    pub fn parse(b: &[u8]) -> Option<(u8, u8, u8, u8)> {
        match b.first()? & 0x7f {
            0x70 | 0x71 if b.len() >= 14 => Some((b[0] & 0x7f, b[2] & 0xf, b[12], b[13])),
            0x72 | 0x73 if b.len() >= 4 => Some((b[0], b[1] & 0xf, b[2], b[3])),
            _ => None,
        }
    }

    /// `KEY ASC/ASCQ` as guests print it, e.g. `MEDIUM ERROR 0C/00`.
    pub fn describe(key: u8, asc: u8, ascq: u8) -> String {
        let k = [
            SenseKey::NoSense,
            SenseKey::NotReady,
            SenseKey::MediumError,
            SenseKey::HardwareError,
            SenseKey::IllegalRequest,
            SenseKey::UnitAttention,
            SenseKey::DataProtect,
            SenseKey::AbortedCommand,
        ]
        .into_iter()
        .find(|k| *k as u8 == key)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("KEY {key:X}h"));
        format!("{k} {asc:02X}/{ascq:02X}")
    }
}

/// A READ CAPACITY(10) parameter (SBC-4 §5.20.2).
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReadCapacity10Data {
    /// RETURNED LOGICAL BLOCK ADDRESS (last LBA, clipped).
    pub last_lba: U32<BigEndian>,
    /// LOGICAL BLOCK LENGTH IN BYTES.
    pub block_len: U32<BigEndian>,
}

/// A 16-byte UNMAP block descriptor is decoded field by field; this is the
/// header (SBC-4 §5.32.2).
#[derive(Debug, Clone, Copy, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct UnmapHeader {
    /// UNMAP DATA LENGTH (n - 1).
    pub data_len: U16<BigEndian>,
    /// UNMAP BLOCK DESCRIPTOR DATA LENGTH.
    pub desc_len: U16<BigEndian>,
    /// Reserved.
    pub reserved: [u8; 4],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_with_cdb_field_pointer_byte_by_byte() {
        let s = Sense::invalid_cdb_field(2, Some(7));
        assert_eq!(
            s.fixed(),
            [
                0x70,
                0,
                0x05,
                0,
                0,
                0,
                0,
                10,
                0,
                0,
                0,
                0,
                0x24,
                0x00,
                0,
                0xc8 | 7,
                0x00,
                0x02
            ]
        );
        let p = Sense::invalid_param_field(0x1234, None);
        let f = p.fixed();
        assert_eq!((f[12], f[13]), (0x26, 0));
        assert_eq!(&f[15..18], &[0x80, 0x12, 0x34]);
    }

    #[test]
    fn descriptor_format_byte_by_byte() {
        let s = Sense::new(SenseKey::UnitAttention, Asc::CAPACITY_DATA_CHANGED);
        assert_eq!(s.descriptor(), vec![0x72, 0x06, 0x2a, 0x09, 0, 0, 0, 0]);
        let s = Sense::invalid_cdb_field(1, None);
        assert_eq!(
            s.descriptor(),
            vec![0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xc0, 0, 1, 0]
        );
        let s = Sense {
            info: Some(0x1_0000_0001),
            ..Sense::new(SenseKey::MediumError, Asc::UNRECOVERED_READ_ERROR)
        };
        assert_eq!(
            s.descriptor(),
            vec![0x72, 0x03, 0x11, 0, 0, 0, 0, 12, 0, 0x0a, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 1]
        );
        // Information beyond 32 bits cannot be carried by the fixed format.
        assert_eq!(s.fixed()[0], 0x70);
        let s = Sense { info: Some(7), ..s };
        assert_eq!(&s.fixed()[..7], &[0xf0, 0, 3, 0, 0, 0, 7]);
    }

    #[test]
    fn parse_and_describe() {
        let s = Sense::new(SenseKey::MediumError, Asc::WRITE_ERROR);
        assert_eq!(Sense::parse(&s.fixed()), Some((0x70, 3, 0x0c, 0)));
        assert_eq!(Sense::parse(&s.descriptor()), Some((0x72, 3, 0x0c, 0)));
        assert_eq!(Sense::describe(3, 0x0c, 0), "MEDIUM ERROR 0C/00");
        assert_eq!(Sense::parse(&[0x10]), None);
        assert!(ASC_TABLE.iter().all(|(a, _)| a.name().is_some()));
    }
}

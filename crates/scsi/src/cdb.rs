//! The opcode table: the single source of truth for which commands exist,
//! how long their CDBs are, which CDB bits the device server accepts, what
//! data they move and which handler runs them.
//!
//! [`COMMANDS`] drives:
//! - CDB decoding ([`lookup`], [`check_usage`]): a CDB bit outside the
//!   usage mask is rejected with INVALID FIELD IN CDB and a field pointer at
//!   that byte and bit, so nothing the device does not evaluate is silently
//!   ignored (SPC-5 §4.2.2, "reserved fields");
//! - REPORT SUPPORTED OPERATION CODES ([`usage_data`]): the CDB usage data
//!   is this mask with the service action code substituted, never typed
//!   twice;
//! - the command table in `docs/scsi.md` ([`doc_table`]), checked by a test.
//!
//! The usage mask's bit for a field is 1 when the device server evaluates
//! the field (including fields it accepts and ignores, such as GROUP
//! NUMBER and DPO); 0 for reserved, obsolete and unsupported fields (e.g.
//! RDPROTECT: no protection information, NACA: no ACA).

/// Where a read/write style CDB keeps its LBA and transfer length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbaFormat {
    /// 6-byte: 21-bit LBA in bytes 1-3, 8-bit length in byte 4 (0 = 256).
    Cdb6,
    /// 10-byte: LBA bytes 2-5, length bytes 7-8.
    Cdb10,
    /// 12-byte: LBA bytes 2-5, length bytes 6-9.
    Cdb12,
    /// 16-byte: LBA bytes 2-9, length bytes 10-13.
    Cdb16,
}

impl LbaFormat {
    /// `(lba, blocks)` from a CDB already known to be long enough.
    pub fn decode(self, c: &[u8]) -> (u64, u32) {
        let be32 = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
        let be16 = |i: usize| u16::from_be_bytes([c[i], c[i + 1]]);
        match self {
            LbaFormat::Cdb6 => {
                let lba = (u64::from(c[1] & 0x1f) << 16) | (u64::from(c[2]) << 8) | u64::from(c[3]);
                let n = if c[4] == 0 { 256 } else { u32::from(c[4]) };
                (lba, n)
            }
            LbaFormat::Cdb10 => (u64::from(be32(2)), u32::from(be16(7))),
            LbaFormat::Cdb12 => (u64::from(be32(2)), be32(6)),
            LbaFormat::Cdb16 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&c[2..10]);
                (u64::from_be_bytes(b), be32(10))
            }
        }
    }

    /// Byte offset of the transfer length field (for field pointers).
    pub fn length_byte(self) -> usize {
        match self {
            LbaFormat::Cdb6 => 4,
            LbaFormat::Cdb10 => 7,
            LbaFormat::Cdb12 => 6,
            LbaFormat::Cdb16 => 10,
        }
    }
}

/// Which handler runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// TEST UNIT READY.
    TestUnitReady,
    /// REQUEST SENSE.
    RequestSense,
    /// INQUIRY (standard data and VPD pages).
    Inquiry,
    /// MODE SELECT(6) / (10).
    ModeSelect {
        /// The 10-byte form.
        ten: bool,
    },
    /// MODE SENSE(6) / (10).
    ModeSense {
        /// The 10-byte form.
        ten: bool,
    },
    /// START STOP UNIT.
    StartStopUnit,
    /// PREVENT ALLOW MEDIUM REMOVAL.
    PreventAllow,
    /// READ CAPACITY(10).
    ReadCapacity10,
    /// READ CAPACITY(16).
    ReadCapacity16,
    /// READ(6/10/12/16).
    Read(LbaFormat),
    /// WRITE(6/10/12/16).
    Write(LbaFormat),
    /// WRITE AND VERIFY(10/16): a FUA write.
    WriteAndVerify(LbaFormat),
    /// VERIFY(10/16) with BYTCHK=0: a range check.
    Verify(LbaFormat),
    /// SYNCHRONIZE CACHE(10/16).
    SyncCache(LbaFormat),
    /// WRITE SAME(10/16).
    WriteSame(LbaFormat),
    /// UNMAP.
    Unmap,
    /// REPORT LUNS.
    ReportLuns,
    /// REPORT SUPPORTED OPERATION CODES.
    ReportOpcodes,
}

/// Direction of a command's data phase (for docs and transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPhase {
    /// No data.
    None,
    /// Device to initiator.
    In,
    /// Initiator to device.
    Out,
}

/// One supported command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDesc {
    /// OPERATION CODE.
    pub opcode: u8,
    /// SERVICE ACTION (in CDB byte 1, bits 4-0), if the opcode has them.
    pub service_action: Option<u8>,
    /// Spec name.
    pub name: &'static str,
    /// CDB usage mask; its length is the CDB length. Byte 0 is FFh; the
    /// service action bits (when present) are 1Fh in byte 1.
    pub usage: &'static [u8],
    /// Handler.
    pub handler: Handler,
    /// Data phase.
    pub data: DataPhase,
    /// How vmstor implements it (for docs).
    pub note: &'static str,
}

impl CommandDesc {
    /// CDB length.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }
}

use DataPhase::{In, None as NoData, Out};
use Handler as H;
use LbaFormat::{Cdb10, Cdb12, Cdb16, Cdb6};

/// Every supported command, in opcode order.
pub const COMMANDS: &[CommandDesc] = &[
    CommandDesc {
        opcode: 0x00,
        service_action: None,
        name: "TEST UNIT READY",
        usage: &[0xff, 0, 0, 0, 0, 0],
        handler: H::TestUnitReady,
        data: NoData,
        note: "GOOD, or NOT READY 04/02 after a START STOP UNIT stop",
    },
    CommandDesc {
        opcode: 0x03,
        service_action: None,
        name: "REQUEST SENSE",
        usage: &[0xff, 0x01, 0, 0, 0xff, 0],
        handler: H::RequestSense,
        data: In,
        note: "pending unit attention (cleared) or NO SENSE; DESC selects the format",
    },
    CommandDesc {
        opcode: 0x08,
        service_action: None,
        name: "READ(6)",
        usage: &[0xff, 0x1f, 0xff, 0xff, 0xff, 0],
        handler: H::Read(Cdb6),
        data: In,
        note: "zero-copy read into the data-in buffer",
    },
    CommandDesc {
        opcode: 0x0a,
        service_action: None,
        name: "WRITE(6)",
        usage: &[0xff, 0x1f, 0xff, 0xff, 0xff, 0],
        handler: H::Write(Cdb6),
        data: Out,
        note: "zero-copy write (no FUA bit in this CDB)",
    },
    CommandDesc {
        opcode: 0x12,
        service_action: None,
        name: "INQUIRY",
        usage: &[0xff, 0x01, 0xff, 0xff, 0xff, 0],
        handler: H::Inquiry,
        data: In,
        note: "standard data; VPD 00h, 80h, 83h, B0h, B1h, B2h",
    },
    CommandDesc {
        opcode: 0x15,
        service_action: None,
        name: "MODE SELECT(6)",
        usage: &[0xff, 0x11, 0, 0, 0xff, 0],
        handler: H::ModeSelect { ten: false },
        data: Out,
        note: "PF=1, SP=0; validates every non-changeable bit; WCE=0 flushes before GOOD",
    },
    CommandDesc {
        opcode: 0x1a,
        service_action: None,
        name: "MODE SENSE(6)",
        usage: &[0xff, 0x08, 0xff, 0xff, 0xff, 0],
        handler: H::ModeSense { ten: false },
        data: In,
        note: "pages 01h, 08h, 0Ah, 3Fh; current/changeable/default",
    },
    CommandDesc {
        opcode: 0x1b,
        service_action: None,
        name: "START STOP UNIT",
        usage: &[0xff, 0x01, 0, 0, 0xf7, 0],
        handler: H::StartStopUnit,
        data: NoData,
        note: "stop flushes (always, even with NO_FLUSH) then enters the stopped state",
    },
    CommandDesc {
        opcode: 0x1e,
        service_action: None,
        name: "PREVENT ALLOW MEDIUM REMOVAL",
        usage: &[0xff, 0, 0, 0, 0x03, 0],
        handler: H::PreventAllow,
        data: NoData,
        note: "recorded; PREVENT 00b/01b only",
    },
    CommandDesc {
        opcode: 0x25,
        service_action: None,
        name: "READ CAPACITY(10)",
        usage: &[0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        handler: H::ReadCapacity10,
        data: In,
        note: "last LBA clipped to FFFFFFFFh",
    },
    CommandDesc {
        opcode: 0x28,
        service_action: None,
        name: "READ(10)",
        usage: &[0xff, 0x18, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0],
        handler: H::Read(Cdb10),
        data: In,
        note: "DPO, FUA accepted (a read needs no host sync)",
    },
    CommandDesc {
        opcode: 0x2a,
        service_action: None,
        name: "WRITE(10)",
        usage: &[0xff, 0x18, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0],
        handler: H::Write(Cdb10),
        data: Out,
        note: "FUA=1 → pwritev2(RWF_DSYNC)",
    },
    CommandDesc {
        opcode: 0x2e,
        service_action: None,
        name: "WRITE AND VERIFY(10)",
        usage: &[0xff, 0x10, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0],
        handler: H::WriteAndVerify(Cdb10),
        data: Out,
        note: "BYTCHK=00b; a FUA write",
    },
    CommandDesc {
        opcode: 0x2f,
        service_action: None,
        name: "VERIFY(10)",
        usage: &[0xff, 0x10, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0],
        handler: H::Verify(Cdb10),
        data: NoData,
        note: "BYTCHK=00b; range check only",
    },
    CommandDesc {
        opcode: 0x35,
        service_action: None,
        name: "SYNCHRONIZE CACHE(10)",
        usage: &[0xff, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0],
        handler: H::SyncCache(Cdb10),
        data: NoData,
        note: "fdatasync of the whole image; IMMED accepted, status after the sync",
    },
    CommandDesc {
        opcode: 0x41,
        service_action: None,
        name: "WRITE SAME(10)",
        usage: &[0xff, 0x08, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0],
        handler: H::WriteSame(Cdb10),
        data: Out,
        note: "zero block or UNMAP → write-zeroes (may unmap); else the pattern is written",
    },
    CommandDesc {
        opcode: 0x42,
        service_action: None,
        name: "UNMAP",
        usage: &[0xff, 0, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0],
        handler: H::Unmap,
        data: Out,
        note: "each descriptor → discard (policy decides whether the host punches holes)",
    },
    CommandDesc {
        opcode: 0x55,
        service_action: None,
        name: "MODE SELECT(10)",
        usage: &[0xff, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
        handler: H::ModeSelect { ten: true },
        data: Out,
        note: "as MODE SELECT(6), long LBA block descriptors accepted",
    },
    CommandDesc {
        opcode: 0x5a,
        service_action: None,
        name: "MODE SENSE(10)",
        usage: &[0xff, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
        handler: H::ModeSense { ten: true },
        data: In,
        note: "LLBAA honoured",
    },
    CommandDesc {
        opcode: 0x88,
        service_action: None,
        name: "READ(16)",
        usage: &[
            0xff, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0,
        ],
        handler: H::Read(Cdb16),
        data: In,
        note: "as READ(10)",
    },
    CommandDesc {
        opcode: 0x8a,
        service_action: None,
        name: "WRITE(16)",
        usage: &[
            0xff, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0,
        ],
        handler: H::Write(Cdb16),
        data: Out,
        note: "FUA=1 → pwritev2(RWF_DSYNC)",
    },
    CommandDesc {
        opcode: 0x8e,
        service_action: None,
        name: "WRITE AND VERIFY(16)",
        usage: &[
            0xff, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0,
        ],
        handler: H::WriteAndVerify(Cdb16),
        data: Out,
        note: "BYTCHK=00b; a FUA write",
    },
    CommandDesc {
        opcode: 0x8f,
        service_action: None,
        name: "VERIFY(16)",
        usage: &[
            0xff, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0,
        ],
        handler: H::Verify(Cdb16),
        data: NoData,
        note: "BYTCHK=00b; range check only",
    },
    CommandDesc {
        opcode: 0x91,
        service_action: None,
        name: "SYNCHRONIZE CACHE(16)",
        usage: &[
            0xff, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0,
        ],
        handler: H::SyncCache(Cdb16),
        data: NoData,
        note: "as SYNCHRONIZE CACHE(10) (QEMU: INVALID OPCODE)",
    },
    CommandDesc {
        opcode: 0x93,
        service_action: None,
        name: "WRITE SAME(16)",
        usage: &[
            0xff, 0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x3f, 0,
        ],
        handler: H::WriteSame(Cdb16),
        data: Out,
        note: "as WRITE SAME(10); NDOB=1 writes zeroes without a data-out buffer",
    },
    CommandDesc {
        opcode: 0x9e,
        service_action: Some(0x10),
        name: "READ CAPACITY(16)",
        usage: &[
            0xff, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
        handler: H::ReadCapacity16,
        data: In,
        note: "LBPME/LBPRZ when discards reach the host; physical block exponent",
    },
    CommandDesc {
        opcode: 0xa0,
        service_action: None,
        name: "REPORT LUNS",
        usage: &[0xff, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0],
        handler: H::ReportLuns,
        data: In,
        note: "SELECT REPORT 00h, 01h, 02h; single-level LUNs",
    },
    CommandDesc {
        opcode: 0xa3,
        service_action: Some(0x0c),
        name: "REPORT SUPPORTED OPERATION CODES",
        usage: &[
            0xff, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ],
        handler: H::ReportOpcodes,
        data: In,
        note: "generated from this table; RCTD gives (unspecified) timeouts",
    },
    CommandDesc {
        opcode: 0xa8,
        service_action: None,
        name: "READ(12)",
        usage: &[
            0xff, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0,
        ],
        handler: H::Read(Cdb12),
        data: In,
        note: "as READ(10)",
    },
    CommandDesc {
        opcode: 0xaa,
        service_action: None,
        name: "WRITE(12)",
        usage: &[
            0xff, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0,
        ],
        handler: H::Write(Cdb12),
        data: Out,
        note: "FUA=1 → pwritev2(RWF_DSYNC)",
    },
];

/// Why a CDB could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The opcode (or its service action) is not supported.
    InvalidOpcode {
        /// Byte to point at: 0 for the opcode, 1 for the service action.
        byte: usize,
    },
    /// The CDB is shorter than the command's CDB length.
    Short,
}

/// The descriptor for `cdb`'s operation code (and service action).
pub fn lookup(cdb: &[u8]) -> Result<&'static CommandDesc, Lookup> {
    let op = *cdb.first().ok_or(Lookup::InvalidOpcode { byte: 0 })?;
    let mut have_op = false;
    for d in COMMANDS.iter().filter(|d| d.opcode == op) {
        have_op = true;
        match d.service_action {
            None => return Ok(d),
            Some(sa) => {
                if cdb.len() < 2 {
                    return Err(Lookup::Short);
                }
                if cdb[1] & 0x1f == sa {
                    return Ok(d);
                }
            }
        }
    }
    Err(Lookup::InvalidOpcode {
        byte: usize::from(have_op),
    })
}

/// The first bit set in `cdb` outside the command's usage mask, as
/// `(byte, highest offending bit)`.
pub fn check_usage(d: &CommandDesc, cdb: &[u8]) -> Option<(usize, u8)> {
    d.usage.iter().zip(cdb).enumerate().find_map(|(i, (m, b))| {
        let bad = b & !m;
        (bad != 0).then(|| (i, 7 - bad.leading_zeros() as u8))
    })
}

/// CDB usage data for REPORT SUPPORTED OPERATION CODES (SPC-5 §6.35.3):
/// the operation code in byte 0, then the usage mask with the service
/// action code in the service action field.
pub fn usage_data(d: &CommandDesc) -> Vec<u8> {
    let mut u = d.usage.to_vec();
    u[0] = d.opcode;
    if let Some(sa) = d.service_action {
        u[1] = (u[1] & !0x1f) | sa;
    }
    u
}

/// The command table of `docs/scsi.md`, as Markdown.
pub fn doc_table() -> String {
    let mut s = String::from(
        "| opcode | SA | command | CDB | data | CDB usage data | vmstor |\n|---|---|---|---|---|---|---|\n",
    );
    for d in COMMANDS {
        let sa = d
            .service_action
            .map(|s| format!("{s:02X}h"))
            .unwrap_or_default();
        let data = match d.data {
            DataPhase::None => "none",
            DataPhase::In => "in",
            DataPhase::Out => "out",
        };
        let usage: Vec<String> = usage_data(d).iter().map(|b| format!("{b:02X}")).collect();
        s.push_str(&format!(
            "| {:02X}h | {} | {} | {} | {} | `{}` | {} |\n",
            d.opcode,
            sa,
            d.name,
            d.cdb_len(),
            data,
            usage.join(" "),
            d.note
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, d) in COMMANDS.iter().enumerate() {
            assert_eq!(d.usage[0], 0xff, "{}", d.name);
            assert!(matches!(d.cdb_len(), 6 | 10 | 12 | 16), "{}", d.name);
            if d.service_action.is_some() {
                assert_eq!(d.usage[1] & 0x1f, 0x1f, "{}", d.name);
            }
            // Sorted, no duplicates: lookup finds each entry itself.
            if i > 0 {
                let p = &COMMANDS[i - 1];
                assert!((p.opcode, p.service_action) < (d.opcode, d.service_action));
            }
            let mut cdb = vec![0u8; d.cdb_len()];
            cdb[0] = d.opcode;
            if let Some(sa) = d.service_action {
                cdb[1] = sa;
            }
            assert_eq!(lookup(&cdb).unwrap(), d);
            // Control byte: no NACA, no LINK, no vendor bits.
            assert_eq!(*d.usage.last().unwrap(), 0, "{}", d.name);
        }
    }

    #[test]
    fn lookup_errors_and_usage_check() {
        assert_eq!(lookup(&[0xff; 16]), Err(Lookup::InvalidOpcode { byte: 0 }));
        assert_eq!(
            lookup(&[0x9e, 0x11]),
            Err(Lookup::InvalidOpcode { byte: 1 })
        );
        assert_eq!(lookup(&[0x9e]), Err(Lookup::Short));
        assert_eq!(lookup(&[]), Err(Lookup::InvalidOpcode { byte: 0 }));
        let d = lookup(&[0x28]).unwrap();
        // RDPROTECT=001b is outside the READ(10) mask.
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[1] = 0x20 | 0x08;
        assert_eq!(check_usage(d, &cdb), Some((1, 5)));
        cdb[1] = 0x18;
        assert_eq!(check_usage(d, &cdb), None);
        cdb[9] = 0x04; // NACA
        assert_eq!(check_usage(d, &cdb), Some((9, 2)));
    }

    #[test]
    fn usage_data_substitutes_service_action() {
        let d = lookup(&[0x9e, 0x10]).unwrap();
        assert_eq!(usage_data(d)[..2], [0x9e, 0x10]);
        let d = lookup(&[0xa3, 0x0c]).unwrap();
        assert_eq!(usage_data(d)[..3], [0xa3, 0x0c, 0x87]);
    }

    #[test]
    fn lba_formats_decode() {
        assert_eq!(
            LbaFormat::Cdb6.decode(&[8, 0x1f, 0xff, 0xfe, 0, 0]),
            (0x1f_fffe, 256)
        );
        assert_eq!(
            LbaFormat::Cdb10.decode(&[0x28, 0, 1, 2, 3, 4, 0, 0, 9, 0]),
            (0x01020304, 9)
        );
        assert_eq!(
            LbaFormat::Cdb12.decode(&[0xa8, 0, 0, 0, 0, 5, 0, 1, 0, 0, 0, 0]),
            (5, 0x10000)
        );
        let mut c = [0u8; 16];
        c[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        c[10..14].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(LbaFormat::Cdb16.decode(&c), (u64::MAX, 7));
    }
}

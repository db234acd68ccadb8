//! INQUIRY data (SPC-5 §6.7) and the vital product data pages (SPC-5 §7.7,
//! SBC-4 §6.6).
//!
//! [`VPD_PAGES`] lists every page with its builder; page 00h is generated
//! from the same list, and so is the VPD table in `docs/scsi.md`.

use crate::sense::Sense;

/// What INQUIRY and the VPD pages report about a logical unit.
#[derive(Debug, Clone)]
pub struct InquiryFacts {
    /// T10 VENDOR IDENTIFICATION (8 ASCII bytes, space padded).
    pub vendor: [u8; 8],
    /// PRODUCT IDENTIFICATION (16 bytes).
    pub product: [u8; 16],
    /// PRODUCT REVISION LEVEL (4 bytes).
    pub revision: [u8; 4],
    /// Unit serial number (ASCII).
    pub serial: Vec<u8>,
    /// NAA designator (8 bytes, NAA in the top nibble).
    pub naa: u64,
    /// Capacity in logical blocks.
    pub blocks: u64,
    /// Logical block length.
    pub block_len: u32,
    /// Logical blocks per physical block, as a power of two exponent.
    pub phys_exp: u8,
    /// MAXIMUM TRANSFER LENGTH in blocks.
    pub max_transfer: u32,
    /// Discards reach the host: thin provisioning is reported.
    pub unmap: bool,
    /// Unmapped blocks read as zero.
    pub lbprz: bool,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// MAXIMUM WRITE SAME LENGTH.
    pub max_write_same: u64,
    /// MEDIUM ROTATION RATE (0 not reported, 1 non-rotating).
    pub rotation_rate: u16,
}

/// One VPD page.
#[derive(Debug, Clone, Copy)]
pub struct VpdPage {
    /// PAGE CODE.
    pub code: u8,
    /// Spec name.
    pub name: &'static str,
    /// Builds the page.
    pub build: fn(&InquiryFacts) -> Vec<u8>,
    /// What vmstor reports, for docs.
    pub doc: &'static str,
}

fn page(code: u8, body: Vec<u8>) -> Vec<u8> {
    let mut p = vec![0, code];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend(body);
    p
}

fn vpd_00(_: &InquiryFacts) -> Vec<u8> {
    page(0x00, VPD_PAGES.iter().map(|p| p.code).collect())
}

fn vpd_80(f: &InquiryFacts) -> Vec<u8> {
    page(0x80, f.serial.clone())
}

fn vpd_83(f: &InquiryFacts) -> Vec<u8> {
    let mut b = Vec::new();
    // NAA designator: binary code set, LU association, type 3h.
    b.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
    b.extend_from_slice(&f.naa.to_be_bytes());
    // T10 vendor ID designator: ASCII, LU association, type 1h.
    let mut id = f.vendor.to_vec();
    id.extend_from_slice(&f.serial);
    b.extend_from_slice(&[0x02, 0x01, 0x00, id.len() as u8]);
    b.extend(id);
    page(0x83, b)
}

fn vpd_b0(f: &InquiryFacts) -> Vec<u8> {
    let mut b = vec![0u8; 0x3c];
    b[0] = 0x01; // WSNZ: WRITE SAME with NUMBER OF BLOCKS 0 is rejected.
    let gran = 1u16 << f.phys_exp.min(15);
    b[2..4].copy_from_slice(&gran.to_be_bytes());
    b[4..8].copy_from_slice(&f.max_transfer.to_be_bytes());
    b[8..12].copy_from_slice(&f.max_transfer.to_be_bytes());
    if f.unmap {
        b[16..20].copy_from_slice(&f.max_unmap_blocks.to_be_bytes());
        b[20..24].copy_from_slice(&f.max_unmap_descriptors.to_be_bytes());
        b[24..28].copy_from_slice(&u32::from(gran).to_be_bytes());
        b[28..32].copy_from_slice(&0x8000_0000u32.to_be_bytes()); // UGAVALID, alignment 0
    }
    b[32..40].copy_from_slice(&f.max_write_same.to_be_bytes());
    page(0xb0, b)
}

fn vpd_b1(f: &InquiryFacts) -> Vec<u8> {
    let mut b = vec![0u8; 0x3c];
    b[0..2].copy_from_slice(&f.rotation_rate.to_be_bytes());
    page(0xb1, b)
}

fn vpd_b2(f: &InquiryFacts) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    if f.unmap {
        // LBPU, LBPWS, LBPWS10; LBPRZ; provisioning type 2h (thin).
        b[1] = 0xe0 | if f.lbprz { 0x04 } else { 0 };
        b[2] = 0x02;
    }
    page(0xb2, b)
}

/// Every VPD page, in page-code order.
pub const VPD_PAGES: &[VpdPage] = &[
    VpdPage {
        code: 0x00,
        name: "Supported VPD Pages",
        build: vpd_00,
        doc: "generated from this table",
    },
    VpdPage {
        code: 0x80,
        name: "Unit Serial Number",
        build: vpd_80,
        doc: "configured serial",
    },
    VpdPage {
        code: 0x83,
        name: "Device Identification",
        build: vpd_83,
        doc: "NAA (binary, type 3h) and T10 vendor ID (vendor + serial)",
    },
    VpdPage {
        code: 0xb0,
        name: "Block Limits",
        build: vpd_b0,
        doc: "WSNZ=1; maximum/optimal transfer; unmap limits when discards reach the host; maximum WRITE SAME length",
    },
    VpdPage {
        code: 0xb1,
        name: "Block Device Characteristics",
        build: vpd_b1,
        doc: "medium rotation rate from the host probe (1 = non-rotating, 0 = not reported)",
    },
    VpdPage {
        code: 0xb2,
        name: "Logical Block Provisioning",
        build: vpd_b2,
        doc: "LBPU, LBPWS, LBPWS10, LBPRZ and thin provisioning when discards reach the host; else full",
    },
];

/// Standard INQUIRY data (36 bytes).
pub fn standard(f: &InquiryFacts) -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = 0x00; // connected, direct access block device
    d[1] = 0x00; // not removable
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HISUP, response data format 2
    d[4] = 36 - 5;
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(&f.vendor);
    d[16..32].copy_from_slice(&f.product);
    d[32..36].copy_from_slice(&f.revision);
    d
}

/// INQUIRY data for `cdb` (EVPD and PAGE CODE decoded here).
pub fn inquiry(cdb: &[u8], f: &InquiryFacts) -> Result<Vec<u8>, Sense> {
    let evpd = cdb[1] & 1 != 0;
    let code = cdb[2];
    if !evpd {
        if code != 0 {
            return Err(Sense::invalid_cdb_field(2, None));
        }
        return Ok(standard(f));
    }
    VPD_PAGES
        .iter()
        .find(|p| p.code == code)
        .map(|p| (p.build)(f))
        .ok_or_else(|| Sense::invalid_cdb_field(2, None))
}

/// Standard INQUIRY data for a LUN with no logical unit behind it
/// (peripheral qualifier 011b, device type 1Fh; SPC-5 §6.7.2).
pub fn absent_lun() -> Vec<u8> {
    let mut d = vec![0u8; 36];
    d[0] = 0x7f;
    d[2] = 0x06;
    d[3] = 0x12;
    d[4] = 31;
    d
}

/// Pads `s` with spaces (or truncates) to `N` bytes.
pub fn ascii<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (o, c) in out.iter_mut().zip(s.bytes()) {
        *o = if c.is_ascii_graphic() || c == b' ' {
            c
        } else {
            b'_'
        };
    }
    out
}

/// The VPD table of `docs/scsi.md`, as Markdown.
pub fn doc_table() -> String {
    let mut s = String::from("| page | name | contents |\n|---|---|---|\n");
    for p in VPD_PAGES {
        s.push_str(&format!("| {:02X}h | {} | {} |\n", p.code, p.name, p.doc));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(unmap: bool) -> InquiryFacts {
        InquiryFacts {
            vendor: ascii("VMSTOR"),
            product: ascii("VIRTUAL DISK"),
            revision: ascii("0.1"),
            serial: b"SN1".to_vec(),
            naa: 0x3000_0000_0000_1234,
            blocks: 100,
            block_len: 512,
            phys_exp: 3,
            max_transfer: 0x4000,
            unmap,
            lbprz: true,
            max_unmap_blocks: 0x10000,
            max_unmap_descriptors: 256,
            max_write_same: 0x20000,
            rotation_rate: 1,
        }
    }

    #[test]
    fn standard_inquiry_bytes() {
        let d = inquiry(&[0x12, 0, 0, 0, 36, 0], &facts(false)).unwrap();
        assert_eq!(&d[..8], &[0, 0, 6, 0x12, 31, 0, 0, 2]);
        assert_eq!(&d[8..16], b"VMSTOR  ");
        assert_eq!(&d[16..32], b"VIRTUAL DISK    ");
        assert_eq!(&d[32..36], b"0.1 ");
        assert_eq!(
            inquiry(&[0x12, 0, 0x80, 0, 36, 0], &facts(false)).unwrap_err(),
            Sense::invalid_cdb_field(2, None)
        );
    }

    #[test]
    fn vpd_pages_bytes() {
        let f = facts(true);
        let p = inquiry(&[0x12, 1, 0, 0, 255, 0], &f).unwrap();
        assert_eq!(p, vec![0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
        let p = inquiry(&[0x12, 1, 0x80, 0, 255, 0], &f).unwrap();
        assert_eq!(p, vec![0, 0x80, 0, 3, b'S', b'N', b'1']);
        let p = inquiry(&[0x12, 1, 0x83, 0, 255, 0], &f).unwrap();
        assert_eq!(
            &p[..16],
            &[0, 0x83, 0, 27, 1, 3, 0, 8, 0x30, 0, 0, 0, 0, 0, 0x12, 0x34]
        );
        assert_eq!(&p[16..20], &[2, 1, 0, 11]);
        assert_eq!(&p[20..31], b"VMSTOR  SN1");
        let p = inquiry(&[0x12, 1, 0xb0, 0, 255, 0], &f).unwrap();
        assert_eq!(&p[..8], &[0, 0xb0, 0, 0x3c, 1, 0, 0, 8]);
        assert_eq!(&p[8..12], &0x4000u32.to_be_bytes());
        assert_eq!(&p[20..24], &0x10000u32.to_be_bytes());
        assert_eq!(&p[24..28], &256u32.to_be_bytes());
        assert_eq!(&p[32..36], &0x8000_0000u32.to_be_bytes());
        assert_eq!(&p[36..44], &0x20000u64.to_be_bytes());
        let p = inquiry(&[0x12, 1, 0xb1, 0, 255, 0], &f).unwrap();
        assert_eq!(&p[..6], &[0, 0xb1, 0, 0x3c, 0, 1]);
        let p = inquiry(&[0x12, 1, 0xb2, 0, 255, 0], &f).unwrap();
        assert_eq!(p, vec![0, 0xb2, 0, 4, 0, 0xe4, 2, 0]);
        let p = inquiry(&[0x12, 1, 0xb2, 0, 255, 0], &facts(false)).unwrap();
        assert_eq!(p, vec![0, 0xb2, 0, 4, 0, 0, 0, 0]);
        assert!(inquiry(&[0x12, 1, 0x81, 0, 255, 0], &f).is_err());
    }
}

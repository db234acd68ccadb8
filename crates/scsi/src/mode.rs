//! Mode parameters (SPC-5 §7.5, SBC-4 §6.5): the mode page table, MODE
//! SENSE data and MODE SELECT parameter-list validation.
//!
//! [`MODE_PAGES`] is the single source for every page: its length, its
//! current/default contents and its changeable-bits mask. MODE SENSE builds
//! from it; MODE SELECT compares every byte of a page the initiator sends
//! against the current page and accepts a difference only under the mask
//! (anything else is INVALID FIELD IN PARAMETER LIST with a field pointer to
//! the first offending bit); the docs table comes from it too.
//!
//! The parameter list is validated completely before anything changes, so
//! a rejected MODE SELECT changes nothing.

use crate::sense::{Asc, Sense, SenseKey};

/// The values a guest can change (everything else is fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeValues {
    /// Caching page WCE: the live write-cache state of the disk.
    pub wce: bool,
    /// Control page D_SENSE: descriptor-format sense data.
    pub d_sense: bool,
}

/// MODE SENSE page control (PC field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    /// Current values.
    Current,
    /// Changeable-bits masks.
    Changeable,
    /// Default values.
    Default,
    /// Saved values (not supported).
    Saved,
}

/// One mode page.
#[derive(Debug, Clone, Copy)]
pub struct ModePageDesc {
    /// PAGE CODE.
    pub code: u8,
    /// Spec name.
    pub name: &'static str,
    /// Page length including the 2-byte page header.
    pub len: usize,
    /// Changeable-bits mask over the whole page (header bytes 0).
    pub changeable: &'static [u8],
    /// Builds the page for the given values.
    pub build: fn(&ModeValues) -> Vec<u8>,
    /// What is changeable, for docs.
    pub doc: &'static str,
}

fn page_01(_: &ModeValues) -> Vec<u8> {
    // No retries to report and no recovery behaviour to select: the host
    // file system owns error recovery.
    let mut p = vec![0u8; 12];
    p[0] = 0x01;
    p[1] = 0x0a;
    p
}

fn page_08(v: &ModeValues) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x08;
    p[1] = 0x12;
    p[2] = u8::from(v.wce) << 2; // RCD (bit 0) = 0: reads are cached.
    p
}

fn page_0a(v: &ModeValues) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0x0a;
    p[1] = 0x0a;
    p[2] = u8::from(v.d_sense) << 2;
    // QUEUE ALGORITHM MODIFIER 1h: SIMPLE commands may be reordered;
    // QERR 00b: other commands continue after a CHECK CONDITION.
    p[3] = 0x10;
    p
}

/// Every mode page, in page-code order.
pub const MODE_PAGES: &[ModePageDesc] = &[
    ModePageDesc {
        code: 0x01,
        name: "Read-Write Error Recovery",
        len: 12,
        changeable: &[0; 12],
        build: page_01,
        doc: "nothing",
    },
    ModePageDesc {
        code: 0x08,
        name: "Caching",
        len: 20,
        changeable: &[
            0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        build: page_08,
        doc: "WCE (byte 2 bit 2): clearing it flushes before the command completes",
    },
    ModePageDesc {
        code: 0x0a,
        name: "Control",
        len: 12,
        changeable: &[0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        build: page_0a,
        doc: "D_SENSE (byte 2 bit 2): descriptor-format sense data",
    },
];

/// Facts MODE SENSE reports besides the pages.
#[derive(Debug, Clone, Copy)]
pub struct MediumFacts {
    /// Capacity in logical blocks.
    pub blocks: u64,
    /// Logical block length.
    pub block_len: u32,
    /// WP in the device-specific parameter.
    pub write_protected: bool,
}

/// A decoded MODE SENSE CDB.
#[derive(Debug, Clone, Copy)]
pub struct ModeSenseCdb {
    /// MODE SENSE(10).
    pub ten: bool,
    /// DBD.
    pub dbd: bool,
    /// LLBAA (10 only).
    pub llbaa: bool,
    /// PC.
    pub pc: PageControl,
    /// PAGE CODE.
    pub page: u8,
    /// SUBPAGE CODE.
    pub subpage: u8,
}

impl ModeSenseCdb {
    /// Decodes a MODE SENSE(6) or (10) CDB (length already checked).
    pub fn decode(cdb: &[u8], ten: bool) -> ModeSenseCdb {
        ModeSenseCdb {
            ten,
            dbd: cdb[1] & 0x08 != 0,
            llbaa: ten && cdb[1] & 0x10 != 0,
            pc: match cdb[2] >> 6 {
                0 => PageControl::Current,
                1 => PageControl::Changeable,
                2 => PageControl::Default,
                _ => PageControl::Saved,
            },
            page: cdb[2] & 0x3f,
            subpage: cdb[3],
        }
    }
}

/// Builds MODE SENSE data (header, block descriptor, pages), untruncated.
pub fn mode_sense(
    c: &ModeSenseCdb,
    current: &ModeValues,
    default: &ModeValues,
    m: &MediumFacts,
) -> Result<Vec<u8>, Sense> {
    let values = match c.pc {
        PageControl::Current => Some(current),
        PageControl::Default => Some(default),
        PageControl::Changeable => None,
        PageControl::Saved => {
            return Err(Sense::new(
                SenseKey::IllegalRequest,
                Asc::SAVING_PARAMETERS_NOT_SUPPORTED,
            ))
        }
    };
    // Our pages have no subpages: subpage 00h is the page itself, FFh means
    // "all subpages" which is again the page_0 format page.
    if c.subpage != 0 && c.subpage != 0xff {
        return Err(Sense::invalid_cdb_field(3, Some(7)));
    }
    let pages: Vec<&ModePageDesc> = if c.page == 0x3f {
        MODE_PAGES.iter().collect()
    } else {
        match MODE_PAGES.iter().find(|p| p.code == c.page) {
            Some(p) => vec![p],
            None => return Err(Sense::invalid_cdb_field(2, Some(5))),
        }
    };
    let mut body = Vec::new();
    for p in pages {
        match values {
            Some(v) => body.extend((p.build)(v)),
            None => {
                let mut b = p.changeable.to_vec();
                b[0] = p.code;
                b[1] = (p.len - 2) as u8;
                body.extend(b);
            }
        }
    }
    // Block descriptor: short (8 bytes) unless LLBAA, where the long one
    // (16 bytes) is used; none with DBD.
    let long = c.llbaa;
    let bd: Vec<u8> = if c.dbd {
        Vec::new()
    } else if long {
        let mut b = vec![0u8; 16];
        b[..8].copy_from_slice(&m.blocks.to_be_bytes());
        b[12..16].copy_from_slice(&m.block_len.to_be_bytes());
        b
    } else {
        let mut b = vec![0u8; 8];
        let n = u32::try_from(m.blocks).unwrap_or(u32::MAX);
        b[..4].copy_from_slice(&n.to_be_bytes());
        b[5..8].copy_from_slice(&m.block_len.to_be_bytes()[1..]);
        b
    };
    // Device-specific parameter (SBC-4 §6.5.1): WP, and DPOFUA because FUA
    // writes are honoured (pwritev2(RWF_DSYNC)).
    let dsp = 0x10 | if m.write_protected { 0x80 } else { 0 };
    let mut out = Vec::with_capacity(8 + bd.len() + body.len());
    if c.ten {
        let total = 8 + bd.len() + body.len();
        out.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        out.extend_from_slice(&[0, dsp, u8::from(long && !c.dbd), 0]);
        out.extend_from_slice(&(bd.len() as u16).to_be_bytes());
    } else {
        let total = 4 + bd.len() + body.len();
        out.extend_from_slice(&[(total - 1) as u8, 0, dsp, bd.len() as u8]);
    }
    out.extend(bd);
    out.extend(body);
    Ok(out)
}

/// What a valid MODE SELECT parameter list selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSelection {
    /// The values after the command.
    pub values: ModeValues,
    /// The list carried the caching page (so WCE was explicitly selected).
    pub caching: bool,
}

/// Validates a MODE SELECT parameter list against the current values and
/// returns what it selects. Nothing is applied here.
///
/// Rules: the header and block descriptors must fit the list (else
/// PARAMETER LIST LENGTH ERROR); medium type must be 0; the block
/// descriptor length is 0 or one descriptor (8 bytes, or 16 with LONGLBA in
/// MODE SELECT(10)) whose block count is 0 or the capacity and whose block
/// length is the logical block length; every page must be known, in page_0
/// format, of its exact length, complete within the list, and differ from
/// the current page only in changeable bits. The mode data length and
/// device-specific parameter are reserved for MODE SELECT and ignored, as
/// is each page's PS bit.
pub fn mode_select(
    list: &[u8],
    ten: bool,
    current: &ModeValues,
    m: &MediumFacts,
) -> Result<ModeSelection, Sense> {
    let hdr = if ten { 8 } else { 4 };
    if list.len() < hdr {
        return Err(Sense::param_list_length());
    }
    let medium_type_at = if ten { 2 } else { 1 };
    if list[medium_type_at] != 0 {
        return Err(Sense::invalid_param_field(medium_type_at, None));
    }
    let (bdl, bdl_at, long) = if ten {
        (
            usize::from(u16::from_be_bytes([list[6], list[7]])),
            6,
            list[4] & 1 != 0,
        )
    } else {
        (usize::from(list[3]), 3, false)
    };
    if ten && list[4] & !1 != 0 {
        return Err(Sense::invalid_param_field(
            4,
            Some(7 - (list[4] & !1).leading_zeros() as u8),
        ));
    }
    let one = if long { 16 } else { 8 };
    if bdl != 0 && bdl != one {
        return Err(Sense::invalid_param_field(bdl_at, None));
    }
    if hdr + bdl > list.len() {
        return Err(Sense::param_list_length());
    }
    if bdl != 0 {
        let b = &list[hdr..hdr + bdl];
        let (blocks, blocks_max, len) = if long {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[..8]);
            if b[8..12] != [0; 4] {
                return Err(Sense::invalid_param_field(hdr + 8, None));
            }
            (
                u64::from_be_bytes(n),
                m.blocks,
                u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
            )
        } else {
            if b[4] != 0 {
                return Err(Sense::invalid_param_field(hdr + 4, None));
            }
            (
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                m.blocks.min(u64::from(u32::MAX)),
                u32::from_be_bytes([0, b[5], b[6], b[7]]),
            )
        };
        if blocks != 0 && blocks != blocks_max {
            return Err(Sense::invalid_param_field(hdr, None));
        }
        if len != m.block_len {
            return Err(Sense::invalid_param_field(
                hdr + if long { 12 } else { 5 },
                None,
            ));
        }
    }
    let mut new = *current;
    let mut caching = false;
    let mut at = hdr + bdl;
    while at < list.len() {
        let code = list[at] & 0x3f;
        if list[at] & 0x40 != 0 {
            // SPF: sub-page format; none of our pages has subpages.
            return Err(Sense::invalid_param_field(at, Some(6)));
        }
        let Some(desc) = MODE_PAGES.iter().find(|p| p.code == code) else {
            return Err(Sense::invalid_param_field(at, Some(5)));
        };
        if at + 2 > list.len() {
            return Err(Sense::param_list_length());
        }
        if usize::from(list[at + 1]) != desc.len - 2 {
            return Err(Sense::invalid_param_field(at + 1, None));
        }
        if at + desc.len > list.len() {
            return Err(Sense::param_list_length());
        }
        let given = &list[at..at + desc.len];
        let cur = (desc.build)(current);
        for i in 2..desc.len {
            let diff = (given[i] ^ cur[i]) & !desc.changeable[i];
            if diff != 0 {
                let bit = 7 - diff.leading_zeros() as u8;
                return Err(Sense::invalid_param_field(at + i, Some(bit)));
            }
        }
        match code {
            0x08 => {
                caching = true;
                new.wce = given[2] & 0x04 != 0;
            }
            0x0a => new.d_sense = given[2] & 0x04 != 0,
            _ => {}
        }
        at += desc.len;
    }
    Ok(ModeSelection {
        values: new,
        caching,
    })
}

/// The mode page table of `docs/scsi.md`, as Markdown.
pub fn doc_table() -> String {
    let mut s = String::from("| page | name | length | changeable |\n|---|---|---|---|\n");
    for p in MODE_PAGES {
        s.push_str(&format!(
            "| {:02X}h | {} | {} | {} |\n",
            p.code, p.name, p.len, p.doc
        ));
    }
    s.push_str("| 3Fh | all pages | | |\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: MediumFacts = MediumFacts {
        blocks: 2048,
        block_len: 512,
        write_protected: false,
    };
    const V: ModeValues = ModeValues {
        wce: true,
        d_sense: false,
    };

    fn sense(cdb: &[u8], ten: bool) -> Result<Vec<u8>, Sense> {
        mode_sense(&ModeSenseCdb::decode(cdb, ten), &V, &V, &M)
    }

    #[test]
    fn table_masks_match_lengths() {
        for p in MODE_PAGES {
            assert_eq!(p.changeable.len(), p.len);
            let b = (p.build)(&V);
            assert_eq!(b.len(), p.len);
            assert_eq!(b[0], p.code);
            assert_eq!(usize::from(b[1]) + 2, p.len);
        }
    }

    #[test]
    fn mode_sense6_caching_page_bytes() {
        let d = sense(&[0x1a, 0, 0x08, 0, 0xff, 0], false).unwrap();
        assert_eq!(&d[..4], &[3 + 8 + 20, 0, 0x10, 8]);
        assert_eq!(&d[4..12], &[0, 0, 0x08, 0, 0, 0, 0x02, 0]);
        assert_eq!(&d[12..15], &[0x08, 0x12, 0x04]);
        // Changeable: only WCE.
        let d = sense(&[0x1a, 0x08, 0x48, 0, 0xff, 0], false).unwrap();
        assert_eq!(&d[..4], &[3 + 20, 0, 0x10, 0]);
        assert_eq!(&d[4..7], &[0x08, 0x12, 0x04]);
        assert!(d[7..].iter().all(|b| *b == 0));
    }

    #[test]
    fn mode_sense10_all_pages_long_lba() {
        let d = sense(&[0x5a, 0x10, 0x3f, 0, 0, 0, 0, 0xff, 0xff, 0], true).unwrap();
        let total = 8 + 16 + 12 + 20 + 12;
        assert_eq!(d.len(), total);
        assert_eq!(&d[..8], &[0, (total - 2) as u8, 0, 0x10, 1, 0, 0, 16]);
        assert_eq!(&d[8..16], &2048u64.to_be_bytes());
        assert_eq!(d[8 + 16], 0x01);
        assert_eq!(d[8 + 16 + 12], 0x08);
        assert_eq!(d[8 + 16 + 32], 0x0a);
    }

    #[test]
    fn mode_sense_errors() {
        let e = sense(&[0x1a, 0, 0xc8, 0, 0xff, 0], false).unwrap_err();
        assert_eq!(e.asc, Asc::SAVING_PARAMETERS_NOT_SUPPORTED);
        let e = sense(&[0x1a, 0, 0x1c, 0, 0xff, 0], false).unwrap_err();
        assert_eq!(e, Sense::invalid_cdb_field(2, Some(5)));
        let e = sense(&[0x1a, 0, 0x08, 1, 0xff, 0], false).unwrap_err();
        assert_eq!(e, Sense::invalid_cdb_field(3, Some(7)));
        assert!(sense(&[0x1a, 0, 0x3f, 0xff, 0xff, 0], false).is_ok());
    }

    fn select_list(page: &[u8]) -> Vec<u8> {
        let mut l = vec![0, 0, 0, 8, 0, 0, 0x08, 0, 0, 0, 2, 0];
        l.extend_from_slice(page);
        l
    }

    #[test]
    fn mode_select_changes_only_changeable_bits() {
        let mut p = page_08(&V);
        p[2] = 0;
        let n = mode_select(&select_list(&p), false, &V, &M).unwrap();
        assert!(!n.values.wce && !n.values.d_sense && n.caching);
        // PS bit ignored.
        p[0] |= 0x80;
        assert!(mode_select(&select_list(&p), false, &V, &M).is_ok());
        // RCD is not changeable.
        p[2] = 0x01;
        assert_eq!(
            mode_select(&select_list(&p), false, &V, &M).unwrap_err(),
            Sense::invalid_param_field(12 + 2, Some(0))
        );
        let mut c = page_0a(&V);
        c[2] = 0x04;
        let n = mode_select(&select_list(&c), false, &V, &M).unwrap();
        assert!(n.values.d_sense && n.values.wce && !n.caching);
        c[3] = 0;
        assert_eq!(
            mode_select(&select_list(&c), false, &V, &M).unwrap_err(),
            Sense::invalid_param_field(12 + 3, Some(4))
        );
    }

    #[test]
    fn mode_select_length_and_descriptor_rules() {
        let p = page_08(&V);
        let l = select_list(&p);
        // Truncated page.
        assert_eq!(
            mode_select(&l[..l.len() - 1], false, &V, &M).unwrap_err(),
            Sense::param_list_length()
        );
        // Short header.
        assert_eq!(
            mode_select(&[0, 0], false, &V, &M).unwrap_err(),
            Sense::param_list_length()
        );
        // Wrong page length.
        let mut bad = l.clone();
        bad[13] = 0x11;
        assert_eq!(
            mode_select(&bad, false, &V, &M).unwrap_err(),
            Sense::invalid_param_field(13, None)
        );
        // Unknown page.
        let mut bad = l.clone();
        bad[12] = 0x1c;
        assert_eq!(
            mode_select(&bad, false, &V, &M).unwrap_err(),
            Sense::invalid_param_field(12, Some(5))
        );
        // Wrong block length in the descriptor.
        let mut bad = l.clone();
        bad[10] = 0x10;
        assert_eq!(
            mode_select(&bad, false, &V, &M).unwrap_err(),
            Sense::invalid_param_field(9, None)
        );
        // Block count equal to the capacity is fine, other counts are not.
        let mut ok = l.clone();
        ok[4..8].copy_from_slice(&2048u32.to_be_bytes());
        assert!(mode_select(&ok, false, &V, &M).is_ok());
        ok[7] = 1;
        assert!(mode_select(&ok, false, &V, &M).is_err());
        // Bad block descriptor length.
        let mut bad = l.clone();
        bad[3] = 4;
        assert_eq!(
            mode_select(&bad, false, &V, &M).unwrap_err(),
            Sense::invalid_param_field(3, None)
        );
        // Header only: nothing changes.
        assert_eq!(mode_select(&[0, 0, 0, 0], false, &V, &M).unwrap().values, V);
        // MODE SELECT(10) with a long descriptor.
        let mut l10 = vec![0, 0, 0, 0, 1, 0, 0, 16];
        l10.extend_from_slice(&0u64.to_be_bytes());
        l10.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 0]);
        l10.extend_from_slice(&p);
        assert!(mode_select(&l10, true, &V, &M).is_ok());
    }
}

//! REPORT LUNS (SPC-5 §6.33) and REPORT SUPPORTED OPERATION CODES (SPC-5
//! §6.35) parameter data. The latter is generated from
//! [`crate::cdb::COMMANDS`] only.

use crate::cdb::{usage_data, CommandDesc, COMMANDS};
use crate::sense::Sense;

/// The 8-byte LUN for a single-level `lun` (SAM-5 §4.7): peripheral
/// device addressing below 256, flat space addressing above.
pub fn lun_bytes(lun: u16) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else {
        b[0] = 0x40 | ((lun >> 8) as u8 & 0x3f);
        b[1] = lun as u8;
    }
    b
}

/// REPORT LUNS parameter data for SELECT REPORT `select` over `luns`.
pub fn report_luns(select: u8, luns: &[u16]) -> Result<Vec<u8>, Sense> {
    let list: &[u16] = match select {
        0x00 | 0x02 => luns,
        // Only well-known logical units: we have none.
        0x01 => &[],
        _ => return Err(Sense::invalid_cdb_field(2, None)),
    };
    let mut d = vec![0u8; 8];
    d[..4].copy_from_slice(&((list.len() * 8) as u32).to_be_bytes());
    for l in list {
        d.extend_from_slice(&lun_bytes(*l));
    }
    Ok(d)
}

/// The 12-byte command timeouts descriptor (SPC-5 §6.35.4) with the
/// timeouts unspecified.
const TIMEOUTS: [u8; 12] = [0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn one(d: Option<&CommandDesc>, rctd: bool) -> Vec<u8> {
    match d {
        None => vec![0, 0x01, 0, 0], // SUPPORT 001b: not supported
        Some(d) => {
            let u = usage_data(d);
            let mut out = vec![0, 0x03 | if rctd { 0x80 } else { 0 }];
            out.extend_from_slice(&(u.len() as u16).to_be_bytes());
            out.extend(u);
            if rctd {
                out.extend_from_slice(&TIMEOUTS);
            }
            out
        }
    }
}

/// REPORT SUPPORTED OPERATION CODES parameter data for `cdb`.
pub fn supported_opcodes(cdb: &[u8]) -> Result<Vec<u8>, Sense> {
    let rctd = cdb[2] & 0x80 != 0;
    let opts = cdb[2] & 0x07;
    let op = cdb[3];
    let sa = u16::from_be_bytes([cdb[4], cdb[5]]);
    let with_op = || COMMANDS.iter().filter(move |d| d.opcode == op);
    let has_sa = with_op().any(|d| d.service_action.is_some());
    let plain = with_op().find(|d| d.service_action.is_none());
    let by_sa = with_op().find(|d| d.service_action.map(u16::from) == Some(sa));
    match opts {
        0 => {
            let mut body = Vec::new();
            for d in COMMANDS {
                body.push(d.opcode);
                body.push(0);
                body.extend_from_slice(&u16::from(d.service_action.unwrap_or(0)).to_be_bytes());
                body.push(0);
                body.push(u8::from(rctd) << 1 | u8::from(d.service_action.is_some()));
                body.extend_from_slice(&(d.cdb_len() as u16).to_be_bytes());
                if rctd {
                    body.extend_from_slice(&TIMEOUTS);
                }
            }
            let mut out = (body.len() as u32).to_be_bytes().to_vec();
            out.extend(body);
            Ok(out)
        }
        1 if has_sa => Err(Sense::invalid_cdb_field(3, None)),
        1 => Ok(one(plain, rctd)),
        2 if plain.is_some() => Err(Sense::invalid_cdb_field(3, None)),
        2 => Ok(one(by_sa, rctd)),
        3 => Ok(one(if has_sa { by_sa } else { plain }, rctd)),
        _ => Err(Sense::invalid_cdb_field(2, Some(2))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luns_single_level() {
        assert_eq!(lun_bytes(5), [0, 5, 0, 0, 0, 0, 0, 0]);
        assert_eq!(lun_bytes(0x1234), [0x52, 0x34, 0, 0, 0, 0, 0, 0]);
        let d = report_luns(0, &[0, 3]).unwrap();
        assert_eq!(
            d,
            vec![0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(report_luns(1, &[0]).unwrap(), vec![0; 8]);
        assert_eq!(
            report_luns(0x10, &[0]).unwrap_err(),
            Sense::invalid_cdb_field(2, None)
        );
    }

    #[test]
    fn rsoc_one_command_derived_from_table() {
        // WRITE(10): supported, usage data = table mask.
        let d = supported_opcodes(&[0xa3, 0x0c, 0x01, 0x2a, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(&d[..4], &[0, 3, 0, 10]);
        assert_eq!(
            &d[4..],
            &[0x2a, 0x18, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0]
        );
        // SYNCHRONIZE CACHE(16) is supported (QEMU lacks it).
        let d = supported_opcodes(&[0xa3, 0x0c, 0x01, 0x91, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(d[1], 3);
        // Unknown opcode: not supported.
        let d = supported_opcodes(&[0xa3, 0x0c, 0x01, 0x99, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(d, vec![0, 1, 0, 0]);
        // Service action forms.
        let d = supported_opcodes(&[0xa3, 0x0c, 0x82, 0x9e, 0, 0x10, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(&d[..6], &[0, 0x83, 0, 16, 0x9e, 0x10]);
        assert_eq!(d.len(), 4 + 16 + 12);
        assert!(supported_opcodes(&[0xa3, 0x0c, 0x01, 0x9e, 0, 0, 0, 0, 1, 0, 0, 0]).is_err());
        assert!(supported_opcodes(&[0xa3, 0x0c, 0x02, 0x28, 0, 0, 0, 0, 1, 0, 0, 0]).is_err());
        assert!(supported_opcodes(&[0xa3, 0x0c, 0x07, 0x28, 0, 0, 0, 0, 1, 0, 0, 0]).is_err());
    }

    #[test]
    fn rsoc_all_commands() {
        let d = supported_opcodes(&[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        assert_eq!(n, COMMANDS.len() * 8);
        let ops: Vec<u8> = d[4..].chunks(8).map(|c| c[0]).collect();
        assert_eq!(ops, COMMANDS.iter().map(|c| c.opcode).collect::<Vec<_>>());
        let d = supported_opcodes(&[0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
        assert_eq!(d.len(), 4 + COMMANDS.len() * 20);
    }
}

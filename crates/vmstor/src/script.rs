//! The guest-level script language of `vmstor trace`:
//!
//! ```text
//! # comment
//! write LBA COUNT [fua]
//! read LBA COUNT
//! flush
//! wce on|off
//! discard LBA COUNT
//! zero LBA COUNT [unmap]
//! reset
//! ```

use vmstor_hostio::crash::GuestOp;

/// A parse error naming the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// The line's text.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {:?}: {}", self.line, self.text, self.why)
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number.
    pub line: usize,
    /// The source text.
    pub text: String,
    /// The operation.
    pub op: GuestOp,
}

fn num<T: std::str::FromStr>(w: Option<&str>, what: &str) -> Result<T, String> {
    let w = w.ok_or_else(|| format!("missing {what}"))?;
    w.parse()
        .map_err(|_| format!("{what} {w:?} is not a non-negative integer"))
}

/// Parses a script.
pub fn parse(src: &str) -> Result<Vec<Line>, ScriptError> {
    let mut out = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let text = raw.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let err = |why: String| ScriptError {
            line: i + 1,
            text: raw.trim().to_string(),
            why,
        };
        let mut w = text.split_whitespace();
        let cmd = w.next().unwrap_or("");
        let op = (|| -> Result<GuestOp, String> {
            let op = match cmd {
                "write" => {
                    let lba = num(w.next(), "LBA")?;
                    let count = num(w.next(), "COUNT")?;
                    let fua = match w.next() {
                        None => false,
                        Some("fua") => true,
                        Some(x) => return Err(format!("unexpected {x:?} (only \"fua\" may follow)")),
                    };
                    GuestOp::Write { lba, count, fua }
                }
                "read" => GuestOp::Read {
                    lba: num(w.next(), "LBA")?,
                    count: num(w.next(), "COUNT")?,
                },
                "flush" => GuestOp::Flush,
                "wce" => match w.next() {
                    Some("on") => GuestOp::WriteCache(true),
                    Some("off") => GuestOp::WriteCache(false),
                    _ => return Err("expected \"wce on\" or \"wce off\"".into()),
                },
                "discard" => GuestOp::Discard {
                    lba: num(w.next(), "LBA")?,
                    count: num(w.next(), "COUNT")?,
                },
                "zero" => {
                    let lba = num(w.next(), "LBA")?;
                    let count = num(w.next(), "COUNT")?;
                    let unmap = match w.next() {
                        None => false,
                        Some("unmap") => true,
                        Some(x) => return Err(format!("unexpected {x:?} (only \"unmap\" may follow)")),
                    };
                    GuestOp::Zero { lba, count, unmap }
                }
                "reset" => GuestOp::Reset,
                other => {
                    return Err(format!(
                        "unknown command {other:?}: expected write, read, flush, wce, discard, zero or reset"
                    ))
                }
            };
            if let Some(extra) = w.next() {
                return Err(format!("unexpected {extra:?} at end of line"));
            }
            if let GuestOp::Write { count: 0, .. }
            | GuestOp::Read { count: 0, .. }
            | GuestOp::Discard { count: 0, .. }
            | GuestOp::Zero { count: 0, .. } = op
            {
                return Err("COUNT must be at least 1".into());
            }
            Ok(op)
        })()
        .map_err(err)?;
        out.push(Line {
            line: i + 1,
            text: raw.trim().to_string(),
            op,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let s = "# journal\nwrite 0 8\nwrite 8 1 fua\nread 0 9\nflush\nwce off\nwce on\ndiscard 16 4\nzero 20 4 unmap\nzero 1 1\nreset # done\n";
        let l = parse(s).unwrap();
        assert_eq!(l.len(), 10);
        assert_eq!(
            l[1].op,
            GuestOp::Write {
                lba: 8,
                count: 1,
                fua: true
            }
        );
        assert_eq!(l[1].line, 3);
        assert_eq!(
            l[7].op,
            GuestOp::Zero {
                lba: 20,
                count: 4,
                unmap: true
            }
        );
    }

    #[test]
    fn errors_name_line_and_reason() {
        let e = parse("flush\nwrite 0 x\n").unwrap_err();
        assert_eq!((e.line, e.text.as_str()), (2, "write 0 x"));
        assert!(e.why.contains("COUNT"), "{e}");
        assert!(parse("frob").unwrap_err().why.contains("unknown command"));
        assert!(parse("write 0 1 fast").unwrap_err().why.contains("fua"));
        assert!(parse("read 0 0").unwrap_err().why.contains("at least 1"));
        assert!(parse("wce maybe").is_err());
        assert!(parse("flush now").is_err());
    }
}

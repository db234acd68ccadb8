//! Markdown tables for `docs/ata.md`, generated from the code's tables. A
//! test checks the file contains exactly these (regenerate with
//! `VMSTOR_BLESS=1 cargo test -p vmstor-ata docs`).

use std::fmt::Write as _;

use crate::commands::{COMMANDS, SET_FEATURES};
use crate::identify::WORD_MAP;

/// One row of the error mapping (each row is exercised by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRow {
    /// What went wrong.
    pub cause: &'static str,
    /// Status register.
    pub status: &'static str,
    /// Error register.
    pub error: &'static str,
    /// Notes.
    pub note: &'static str,
}

/// How failures reach the guest.
pub const ERRORS: &[ErrorRow] = &[
    ErrorRow {
        cause: "unknown opcode, command gated off (e.g. DSM without discard=unmap), NOP",
        status: "DRDY ERR",
        error: "ABRT",
        note: "INTRQ",
    },
    ErrorRow {
        cause: "invalid parameter (SET FEATURES subcommand or mode, SET MULTIPLE size, INITIALIZE DEVICE PARAMETERS with 0 sectors, DSM features/count, READ/WRITE MULTIPLE with multiple mode off)",
        status: "DRDY ERR",
        error: "ABRT",
        note: "",
    },
    ErrorRow {
        cause: "write, DSM on a read-only disk",
        status: "DRDY ERR",
        error: "ABRT",
        note: "no host I/O",
    },
    ErrorRow {
        cause: "LBA/CHS range outside the addressable sectors (28-bit commands: below min(capacity, 0FFFFFFFh))",
        status: "DRDY ERR",
        error: "IDNF",
        note: "no host I/O",
    },
    ErrorRow {
        cause: "TRIM range past the last sector",
        status: "DRDY ERR",
        error: "ABRT",
        note: "no discard issued",
    },
    ErrorRow {
        cause: "host read failure (READ SECTORS/MULTIPLE/DMA, READ VERIFY)",
        status: "DRDY ERR",
        error: "UNC",
        note: "LBA registers = first LBA of the failed host request",
    },
    ErrorRow {
        cause: "host write failure (incl. ENOSPC, latched fdatasync error on a FUA write)",
        status: "DRDY ERR",
        error: "ABRT",
        note: "as QEMU; Linux libata retries then fails the I/O",
    },
    ErrorRow {
        cause: "host flush failure (FLUSH CACHE (EXT), SET FEATURES 82h)",
        status: "DRDY ERR",
        error: "ABRT",
        note: "for 82h the cache stays off",
    },
    ErrorRow {
        cause: "host discard failure",
        status: "DRDY ERR",
        error: "ABRT",
        note: "",
    },
    ErrorRow {
        cause: "host error under `stop` (or `enospc` + ENOSPC) error policy",
        status: "BSY",
        error: "-",
        note: "command held until `disk.resume_held()` + `poll()`; SRST drops it",
    },
    ErrorRow {
        cause: "PRD descriptor/region outside guest memory, 64 KiB crossing (strict), > 8192 descriptors, engine direction ≠ command",
        status: "DRDY ERR",
        error: "ABRT",
        note: "bus-master Error set, Active clear, INTRQ",
    },
    ErrorRow {
        cause: "PRD table shorter than the transfer",
        status: "DRDY DRQ",
        error: "-",
        note: "Active and Interrupt clear, nothing transferred, device waits (restart the engine or reset)",
    },
    ErrorRow {
        cause: "command while BSY or DRQ",
        status: "unchanged",
        error: "unchanged",
        note: "ignored (as QEMU); register writes while BSY are ignored too",
    },
    ErrorRow {
        cause: "any command in Sleep mode",
        status: "DRDY ERR",
        error: "ABRT",
        note: "until SRST or hardware reset",
    },
];

fn esc(s: &str) -> String {
    s.replace('|', "\\|")
}

fn bits(claims: &[crate::commands::IdentifyBit]) -> String {
    if claims.is_empty() {
        return "-".into();
    }
    claims
        .iter()
        .map(|b| format!("{}.{}", b.word, b.bit))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command table.
pub fn command_table() -> String {
    let mut s = String::from(
        "| opcode | command | protocol | addressing | available | IDENTIFY bits (word.bit) | host requests |\n|---|---|---|---|---|---|---|\n",
    );
    for c in COMMANDS {
        let name = if c.fua {
            format!("**{}**", c.name)
        } else {
            c.name.to_string()
        };
        let _ = writeln!(
            s,
            "| {:02X}h | {} | {} | {} | {} | {} | {} |",
            c.opcode,
            esc(&name),
            c.protocol.name(),
            c.addressing.name(),
            c.gate.name(),
            bits(c.claims),
            esc(c.host)
        );
    }
    s
}

/// The SET FEATURES table.
pub fn set_features_table() -> String {
    let mut s = String::from("| code | subcommand | IDENTIFY bits | effect |\n|---|---|---|---|\n");
    for f in SET_FEATURES {
        let _ = writeln!(
            s,
            "| {:02X}h | {} | {} | {} |",
            f.code,
            esc(f.name),
            bits(f.claims),
            esc(f.effect)
        );
    }
    s
}

/// The IDENTIFY word map.
pub fn identify_table() -> String {
    let mut s = String::from("| word | field | vmstor reports |\n|---|---|---|\n");
    for w in WORD_MAP {
        let words = if w.first == w.last {
            w.first.to_string()
        } else {
            format!("{}-{}", w.first, w.last)
        };
        let _ = writeln!(s, "| {} | {} | {} |", words, esc(w.name), esc(w.value));
    }
    s
}

/// The error mapping.
pub fn error_table() -> String {
    let mut s = String::from("| cause | status | error | notes |\n|---|---|---|---|\n");
    for e in ERRORS {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            esc(e.cause),
            e.status,
            e.error,
            esc(e.note)
        );
    }
    s
}

/// Every generated section: (marker name, content).
pub fn sections() -> Vec<(&'static str, String)> {
    vec![
        ("commands", command_table()),
        ("set-features", set_features_table()),
        ("identify", identify_table()),
        ("errors", error_table()),
    ]
}

/// Replaces each `<!-- BEGIN name -->…<!-- END name -->` section of `doc`
/// with the generated content. Returns `None` if a marker is missing.
pub fn render(doc: &str) -> Option<String> {
    let mut out = doc.to_string();
    for (name, content) in sections() {
        let begin = format!("<!-- BEGIN {name} -->\n");
        let end = format!("<!-- END {name} -->");
        let a = out.find(&begin)? + begin.len();
        let b = a + out[a..].find(&end)?;
        out.replace_range(a..b, &content);
    }
    Some(out)
}

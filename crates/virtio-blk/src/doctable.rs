//! The tables in `docs/virtio-blk.md`, generated from the code's own tables
//! ([`crate::features::FEATURES`], [`crate::config::config_fields`],
//! [`crate::request::REQUEST_TYPES`], [`crate::request::Reject::ALL`]) so
//! the documentation cannot drift: `cargo test -p vmstor-virtio-blk --test
//! docs` compares, and `UPDATE_DOCS=1` rewrites.

use std::fmt::Write;

use crate::config::config_fields;
use crate::features::{Offer, FEATURES};
use crate::request::{Reject, REQUEST_TYPES};
use crate::spec::BlkStatus;

/// Features: name, bit, when offered, meaning.
pub fn features_table() -> String {
    let mut s = String::from("| feature | bit | offered | meaning |\n|---|---|---|---|\n");
    for f in FEATURES {
        let offer = match f.offer {
            Offer::Always => "always".to_string(),
            Offer::Default => "by default (configurable)".to_string(),
            Offer::When(w) => format!("when {w}"),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            f.name,
            f.feature.bits().trailing_zeros(),
            offer,
            f.meaning
        );
    }
    s
}

/// Config fields: name, offset, size, feature, writable, value source.
pub fn config_table() -> String {
    let mut s = String::from(
        "| field | offset | size | feature | guest writes | value |\n|---|---|---|---|---|---|\n",
    );
    for f in config_fields() {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            f.name,
            f.offset,
            f.size,
            f.feature.map_or("-".to_string(), |x| format!("`{x}`")),
            if f.writable { "yes" } else { "ignored" },
            f.value
        );
    }
    s
}

/// Request types: name, value, feature gate, hostio mapping.
pub fn requests_table() -> String {
    let mut s = String::from("| request | type | needs | maps to (hostio) |\n|---|---|---|---|\n");
    for r in REQUEST_TYPES {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            r.name,
            r.ty,
            r.feature.map_or("-".to_string(), |f| format!("{f:?}")),
            r.maps_to
        );
    }
    s.push_str("| any other type | - | - | UNSUPP, no host I/O |\n");
    s
}

/// Reject reasons: name, status, when.
pub fn rejects_table() -> String {
    let mut s = String::from("| reason | status | when |\n|---|---|---|\n");
    for r in Reject::ALL {
        let st = match r.status() {
            BlkStatus::Ok => "OK",
            BlkStatus::IoErr => "IOERR",
            BlkStatus::Unsupp => "UNSUPP",
        };
        let _ = writeln!(s, "| `{r:?}` | {st} | {} |", r.describe());
    }
    s
}

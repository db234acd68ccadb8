//! Generates the durability tables of `docs/durability.md` from [`plan`], so
//! the documentation is the planner's output and cannot drift (a test in
//! `tests/docs.rs` compares them).

use crate::caps::{BackingKind, Fact, HostCaps};
use crate::plan::{plan, BufShape, HostOp, RequestShape};
use crate::policy::{CacheMode, DiscardMode, Policy, StableWrites};
use crate::request::Op;

const SIZE: u64 = 1 << 30;

fn base_caps() -> HostCaps {
    let mut c = HostCaps::simulated(SIZE);
    c.stable_pages = Fact::Known(false, "doc");
    c
}

fn cell(ops: &[HostOp], durable: bool, direct: bool) -> String {
    if ops.is_empty() {
        return "(nothing)".into();
    }
    let names: Vec<&str> = ops.iter().map(|o| o.name()).collect();
    let mut s = names.join(" → ");
    if direct && ops.iter().any(|o| o.is_syscall()) {
        s.push_str(" [D]");
    }
    if durable {
        s.push_str(" **durable**");
    }
    md(&s)
}

/// Escapes table-cell pipes (`PUNCH_HOLE|KEEP_SIZE`).
fn md(s: &str) -> String {
    s.replace('|', "\\|")
}

fn requests() -> Vec<(&'static str, RequestShape)> {
    let data = |op| RequestShape {
        op,
        offset: 8192,
        len: 4096,
        buf: BufShape::Guest { aligned: true },
    };
    let nodata = |op| RequestShape {
        op,
        offset: 8192,
        len: 4096,
        buf: BufShape::None,
    };
    vec![
        ("read", data(Op::Read)),
        ("write", data(Op::Write { fua: false })),
        ("write FUA", data(Op::Write { fua: true })),
        (
            "flush",
            RequestShape {
                op: Op::Flush,
                offset: 0,
                len: 0,
                buf: BufShape::None,
            },
        ),
        ("discard", nodata(Op::Discard)),
        ("write zeroes", nodata(Op::WriteZeroes { may_unmap: false })),
        (
            "write zeroes (may unmap)",
            nodata(Op::WriteZeroes { may_unmap: true }),
        ),
    ]
}

/// The main table: request × cache mode × guest write cache → host ops, on a
/// regular file that accepts `RWF_DSYNC`, aligned guest buffers, storage that
/// needs no stable pages, `discard=unmap`.
pub fn mode_table() -> String {
    let caps = base_caps();
    let mut out = String::new();
    out.push_str("| guest request | WCE |");
    for m in CacheMode::ALL {
        out.push_str(&format!(" {m} |"));
    }
    out.push_str("\n|---|---|");
    for _ in CacheMode::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for (name, r) in requests() {
        for wce in [true, false] {
            out.push_str(&format!("| {name} | {} |", if wce { "on" } else { "off" }));
            for m in CacheMode::ALL {
                let p = Policy {
                    discard: DiscardMode::Unmap,
                    ..Policy::from_mode(m)
                };
                let pl = plan(&r, &p, wce, &caps);
                out.push_str(&format!(" {} |", cell(&pl.ops, pl.durable, p.direct)));
            }
            out.push('\n');
        }
    }
    out
}

/// How host facts and options change the plan of a 4 KiB write at offset
/// 8192 (cache mode `none`, WCE on unless stated).
pub fn variation_table() -> String {
    let mut rows: Vec<(String, RequestShape, Policy, bool, HostCaps)> = Vec::new();
    let none = Policy::from_mode(CacheMode::None);
    let w = |fua| RequestShape {
        op: Op::Write { fua },
        offset: 8192,
        len: 4096,
        buf: BufShape::Guest { aligned: true },
    };
    rows.push((
        "baseline (none, trust-worthy storage)".into(),
        w(false),
        none,
        true,
        base_caps(),
    ));
    let mut c = base_caps();
    c.rwf_dsync = false;
    rows.push((
        "FUA write, host refuses RWF_DSYNC".into(),
        w(true),
        none,
        true,
        c,
    ));
    let mut c = base_caps();
    c.stable_pages = Fact::Known(true, "doc");
    rows.push((
        "stable pages needed, stable_writes=auto".into(),
        w(false),
        none,
        true,
        c,
    ));
    let mut c = base_caps();
    c.stable_pages = Fact::Unknown("doc".into());
    rows.push((
        "stable-page need unknown, stable_writes=auto".into(),
        w(false),
        none,
        true,
        c,
    ));
    rows.push((
        "stable_writes=trust".into(),
        w(false),
        Policy {
            stable_writes: StableWrites::Trust,
            ..none
        },
        true,
        {
            let mut c = base_caps();
            c.stable_pages = Fact::Known(true, "doc");
            c
        },
    ));
    rows.push((
        "guest buffer misaligned for O_DIRECT".into(),
        RequestShape {
            buf: BufShape::Guest { aligned: false },
            ..w(false)
        },
        none,
        true,
        base_caps(),
    ));
    let mut c = base_caps();
    c.dio_offset_align = 4096;
    rows.push((
        "512-byte write, host O_DIRECT needs 4096 (read-modify-write)".into(),
        RequestShape {
            offset: 8704,
            len: 512,
            ..w(false)
        },
        none,
        true,
        c.clone(),
    ));
    rows.push((
        "same, guest write cache off".into(),
        RequestShape {
            offset: 8704,
            len: 512,
            ..w(false)
        },
        none,
        false,
        c,
    ));
    let mut c = base_caps();
    c.kind = BackingKind::BlockDevice;
    rows.push((
        "block device: write zeroes".into(),
        RequestShape {
            op: Op::WriteZeroes { may_unmap: false },
            buf: BufShape::None,
            ..w(false)
        },
        none,
        true,
        c.clone(),
    ));
    rows.push((
        "block device: discard (discard=unmap)".into(),
        RequestShape {
            op: Op::Discard,
            buf: BufShape::None,
            ..w(false)
        },
        Policy {
            discard: DiscardMode::Unmap,
            ..none
        },
        true,
        c,
    ));
    let mut c = base_caps();
    c.write_zeroes = false;
    rows.push((
        "file without ZERO_RANGE: write zeroes, WCE off".into(),
        RequestShape {
            op: Op::WriteZeroes { may_unmap: false },
            buf: BufShape::None,
            ..w(false)
        },
        none,
        false,
        c,
    ));
    let mut out = String::from("| situation | host ops |\n|---|---|\n");
    for (name, r, p, wce, c) in rows {
        let pl = plan(&r, &p, wce, &c);
        let ops: Vec<String> = pl.ops.iter().map(|o| o.to_string()).collect();
        out.push_str(&format!(
            "| {name} | {}{} |\n",
            md(&ops.join(" → ")),
            if pl.durable { " **durable**" } else { "" }
        ));
    }
    out
}

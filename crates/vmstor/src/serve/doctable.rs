//! The tables in `docs/serve.md`, generated from the code's own tables
//! ([`OPTIONS`], [`SIGNALS`], [`COUNTER_FIELDS`]) and checked against the
//! file: `UPDATE_DOCS=1 cargo test -p vmstor --bin vmstor serve::doctable`
//! rewrites the generated parts.

use super::cli::OPTIONS;
use super::counters::COUNTER_FIELDS;
use super::SIGNALS;

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Every option.
pub(crate) fn options_table() -> String {
    let mut s = String::from("| option | where | default | meaning |\n|---|---|---|---|\n");
    for o in OPTIONS {
        let name = if o.value.is_empty() {
            format!("`--{}`", o.name)
        } else {
            format!("`--{} {}`", o.name, cell(o.value))
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            o.scope.label(),
            if o.default.is_empty() { "" } else { o.default },
            cell(o.help)
        ));
    }
    s
}

/// Every signal.
pub(crate) fn signals_table() -> String {
    let mut s = String::from("| signal | effect |\n|---|---|\n");
    for (_, name, _, doc) in SIGNALS {
        s.push_str(&format!("| {name} | {} |\n", cell(doc)));
    }
    s
}

/// Every counter.
pub(crate) fn counters_table() -> String {
    let mut s = String::from("| field | meaning |\n|---|---|\n");
    for (f, doc) in COUNTER_FIELDS {
        s.push_str(&format!("| `{f}` | {} |\n", cell(doc)));
    }
    s
}

fn splice(doc: &str, marker: &str, generated: &str) -> Result<String, String> {
    let begin = format!("<!-- BEGIN GENERATED {marker} -->\n");
    let end = format!("<!-- END GENERATED {marker} -->");
    let a = doc.find(&begin).ok_or(format!("missing {begin}"))? + begin.len();
    let b = doc[a..].find(&end).ok_or(format!("missing {end}"))? + a;
    let out = format!("{}{}{}", &doc[..a], generated, &doc[b..]);
    if &doc[a..b] == generated {
        Ok(out)
    } else {
        Err(out)
    }
}

#[test]
fn serve_doc_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/serve.md");
    let doc = std::fs::read_to_string(path).expect("docs/serve.md");
    let mut cur = doc.clone();
    let mut stale = false;
    for (m, g) in [
        ("OPTIONS", options_table()),
        ("SIGNALS", signals_table()),
        ("COUNTERS", counters_table()),
    ] {
        match splice(&cur, m, &g) {
            Ok(s) => cur = s,
            Err(s) if s.starts_with("missing") => panic!("docs/serve.md: {s}"),
            Err(s) => {
                stale = true;
                cur = s;
            }
        }
    }
    if stale {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(path, cur).unwrap();
        } else {
            panic!(
                "docs/serve.md is stale: run UPDATE_DOCS=1 cargo test -p vmstor --bin vmstor serve::doctable"
            );
        }
    }
}

//! `docs/durability.md` holds the planner's output between markers; this test
//! fails when the file and the code disagree. `UPDATE_DOCS=1 cargo test -p
//! vmstor-hostio --test docs` rewrites the generated parts.

use vmstor_hostio::doctable;

fn check(doc: &str, marker: &str, generated: &str) -> Result<String, String> {
    let begin = format!("<!-- BEGIN GENERATED {marker} -->\n");
    let end = format!("<!-- END GENERATED {marker} -->");
    let a = doc.find(&begin).ok_or(format!("missing {begin}"))? + begin.len();
    let b = doc[a..].find(&end).ok_or(format!("missing {end}"))? + a;
    let mut out = doc[..a].to_string();
    out.push_str(generated);
    out.push_str(&doc[b..]);
    if &doc[a..b] == generated {
        Ok(out)
    } else {
        Err(out)
    }
}

#[test]
fn durability_doc_matches_planner() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/durability.md");
    let doc = std::fs::read_to_string(path).expect("docs/durability.md");
    let mut stale = false;
    let mut cur = doc.clone();
    for (m, g) in [
        ("MODE TABLE", doctable::mode_table()),
        ("VARIATION TABLE", doctable::variation_table()),
    ] {
        match check(&cur, m, &g) {
            Ok(s) => cur = s,
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
            panic!("docs/durability.md is stale: run UPDATE_DOCS=1 cargo test -p vmstor-hostio --test docs");
        }
    }
}

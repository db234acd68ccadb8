//! `docs/virtio-blk.md` holds tables generated from the code between markers;
//! this test fails when the file and the code disagree. `UPDATE_DOCS=1 cargo
//! test -p vmstor-virtio-blk --test docs` rewrites the generated parts.

use vmstor_virtio_blk::doctable;

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
fn virtio_blk_doc_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/virtio-blk.md");
    let doc = std::fs::read_to_string(path).expect("docs/virtio-blk.md");
    let mut cur = doc.clone();
    let mut stale = false;
    for (m, g) in [
        ("FEATURES", doctable::features_table()),
        ("CONFIG", doctable::config_table()),
        ("REQUESTS", doctable::requests_table()),
        ("REJECTS", doctable::rejects_table()),
    ] {
        match splice(&cur, m, &g) {
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
            panic!("docs/virtio-blk.md is stale: run UPDATE_DOCS=1 cargo test -p vmstor-virtio-blk --test docs");
        }
    }
}

#[test]
fn doc_links_the_durability_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/virtio-blk.md");
    let doc = std::fs::read_to_string(path).expect("docs/virtio-blk.md");
    assert!(doc.contains("(durability.md)"));
}

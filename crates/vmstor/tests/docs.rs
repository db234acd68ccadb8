//! docs/embedding.md shows the example programs verbatim; this test fails
//! when they drift (`UPDATE_DOCS=1` rewrites the page from the files).

#[test]
fn embedding_doc_shows_the_examples() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let path = format!("{root}/docs/embedding.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut out = doc.clone();
    let mut stale = Vec::new();
    for name in ["embed_virtio_blk.rs", "embed_ide.rs", "embed_scsi.rs"] {
        let file = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let Ok(code) = std::fs::read_to_string(&file) else {
            continue;
        };
        let begin = format!("<!-- BEGIN EXAMPLE {name} -->\n");
        let end = format!("<!-- END EXAMPLE {name} -->");
        let a = out
            .find(&begin)
            .unwrap_or_else(|| panic!("{begin} missing"))
            + begin.len();
        let b = out[a..].find(&end).unwrap() + a;
        let want = format!("```rust\n{code}```\n");
        if out[a..b] != want {
            stale.push(name);
            out.replace_range(a..b, &want);
        }
    }
    if !stale.is_empty() {
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, out).unwrap();
        } else {
            panic!("docs/embedding.md is stale for {stale:?}: UPDATE_DOCS=1 cargo test -p vmstor --test docs");
        }
    }
}

//! `docs/scsi.md` carries the tables generated from the crate's tables
//! (opcodes, mode pages, VPD pages, sense codes), so they cannot drift.
//! `VMSTOR_BLESS=1 cargo test -p vmstor-scsi --test docs` rewrites them.

const BEGIN: &str = "<!-- BEGIN GENERATED: vmstor_scsi::doc_tables() -->\n";
const END: &str = "<!-- END GENERATED -->";

#[test]
fn docs_tables_match_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/scsi.md");
    let doc = std::fs::read_to_string(path).expect("docs/scsi.md");
    let (a, rest) = doc.split_once(BEGIN).expect("begin marker");
    let (_, b) = rest.split_once(END).expect("end marker");
    let want = format!("{a}{BEGIN}{}{END}{b}", vmstor_scsi::doc_tables());
    if std::env::var_os("VMSTOR_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    assert!(
        doc == want,
        "docs/scsi.md tables are stale: run VMSTOR_BLESS=1 cargo test -p vmstor-scsi --test docs"
    );
}

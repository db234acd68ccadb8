//! `docs/ata.md` carries the generated tables verbatim.

use crate::docs;

#[test]
fn docs_tables_match_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ata.md");
    let doc = std::fs::read_to_string(&path).expect("docs/ata.md");
    let want = docs::render(&doc).expect("every BEGIN/END marker present");
    if want != doc {
        if std::env::var_os("VMSTOR_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        } else {
            panic!("docs/ata.md is out of date; run VMSTOR_BLESS=1 cargo test -p vmstor-ata docs");
        }
    }
}

#[test]
fn every_error_row_names_a_known_status() {
    for e in docs::ERRORS {
        assert!(
            ["DRDY ERR", "BSY", "DRDY DRQ", "unchanged"].contains(&e.status),
            "{}",
            e.cause
        );
    }
    // The command table lists every opcode once.
    let t = docs::command_table();
    for c in crate::COMMANDS {
        assert_eq!(t.matches(&format!("| {:02X}h |", c.opcode)).count(), 1);
    }
}

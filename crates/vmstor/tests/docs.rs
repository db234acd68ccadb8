//! docs/embedding.md shows the example programs verbatim, and README.md
//! shows real output of `vmstor demo`, `vmstor trace` and `vmstor
//! crashcheck`; these tests fail when either drifts (`UPDATE_DOCS=1`
//! rewrites docs/embedding.md from the files; README blocks are pasted by
//! hand from the command the block shows).

#[test]
fn embedding_doc_shows_the_examples() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let path = format!("{root}/docs/embedding.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut out = doc.clone();
    let mut stale = Vec::new();
    for name in ["embed_virtio_blk.rs", "embed_ide.rs", "embed_scsi.rs"] {
        let file = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let code = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("example {file} named by the doc is missing: {e}"));
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

/// The text between `after` and the next closing fence in README.md.
fn readme_block(readme: &str, after: &str) -> String {
    let a = readme
        .find(after)
        .unwrap_or_else(|| panic!("README.md lacks {after:?}"))
        + after.len();
    let b = readme[a..].find("```").unwrap() + a;
    readme[a..b].to_string()
}

fn run(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmstor"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "vmstor {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn readme_shows_real_output() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert_eq!(
        readme_block(&readme, "`vmstor demo`:\n\n```text\n"),
        run(&["demo"], ""),
        "README's demo table is stale"
    );
    let script = "write 0 8\nflush\nwrite 8 1 fua\nwce off\nwrite 16 1\n";
    assert_eq!(
        readme_block(
            &readme,
            "$ printf 'write 0 8\\nflush\\nwrite 8 1 fua\\nwce off\\nwrite 16 1\\n' | vmstor trace --controller ide --cache none\n"
        ),
        run(&["trace", "--controller", "ide", "--cache", "none"], script),
        "README's trace sample is stale"
    );
    assert_eq!(
        readme_block(
            &readme,
            "$ vmstor crashcheck --cases 20 --controller ide --cache none\n"
        ),
        run(
            &[
                "crashcheck",
                "--cases",
                "20",
                "--controller",
                "ide",
                "--cache",
                "none"
            ],
            ""
        ),
        "README's crashcheck sample is stale"
    );
}

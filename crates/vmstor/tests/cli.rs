//! The `vmstor` binary as a process: output, exit status (0 ok, 1 failure,
//! 2 usage), bad arguments and bad script lines.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn vmstor(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmstor"));
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn vmstor");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// `vmstor ARGS` with extra environment variables (no standard input).
fn vmstor_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmstor"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("spawn vmstor")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn demo_prints_a_verdict_per_controller_and_preset() {
    let o = vmstor(&["demo"], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for mode in ["writeback", "none", "writethrough", "directsync", "unsafe"] {
        for c in ["ide", "scsi", "virtio-blk"] {
            assert!(
                out.lines().any(|l| l.starts_with(c) && l.contains(mode)),
                "no row for {c}/{mode}:\n{out}"
            );
        }
    }
    assert!(out.contains("no acknowledged write lost"), "{out}");
    assert!(!out.contains("VIOLATION"), "{out}");
}

#[test]
fn demo_json_is_machine_readable() {
    let o = vmstor(
        &[
            "demo",
            "--controller",
            "ide",
            "--cache",
            "writethrough",
            "--json",
        ],
        None,
    );
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["controller"], "ide");
    assert_eq!(rows[0]["executor"], "inline", "the demo runs inline");
    // Write-through: every write is RWF_DSYNC.
    assert!(rows[0]["host_ops"]["pwritev2(RWF_DSYNC)"].as_u64().unwrap() >= 6);
}

#[test]
fn probe_reports_facts_and_recommendation() {
    let f = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    f.as_file().set_len(1 << 20).unwrap();
    let p = f.path().to_str().unwrap();
    let o = vmstor(&["probe", p], None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for k in [
        "O_DIRECT alignment",
        "RWF_DSYNC",
        "stable pages needed",
        "recommendation:",
        "cache=",
    ] {
        assert!(out.contains(k), "missing {k}:\n{out}");
    }
    assert!(out.contains("  io_uring:              "), "{out}");
    let o = vmstor(&["probe", p, "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["size"], 1 << 20);
    assert!(v["recommended_cache"].is_string());
    // io_uring runs, or the pool does and the reason is given; the text
    // says the same.
    match v["executor"].as_str() {
        Some("io_uring") => {
            assert_eq!(v["io_uring_available"], true);
            assert!(v["io_uring_unavailable_why"].is_null());
            assert!(out.contains("io_uring:              available"), "{out}");
        }
        Some("threads") => {
            assert_eq!(v["io_uring_available"], false);
            let why = v["io_uring_unavailable_why"].as_str().unwrap();
            assert!(out.contains(&format!("unavailable: {why}")), "{out}");
        }
        other => panic!("executor {other:?}"),
    }
    // A kernel refusal is simulated with hostio's switch.
    let o = vmstor_env(&["probe", p, "--json"], &[("VMSTOR_DISABLE_IO_URING", "1")]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["executor"], "threads");
    assert_eq!(v["io_uring_available"], false);
    assert!(v["io_uring_unavailable_why"]
        .as_str()
        .unwrap()
        .contains("VMSTOR_DISABLE_IO_URING"));
    let o = vmstor_env(&["probe", p], &[("VMSTOR_DISABLE_IO_URING", "1")]);
    assert!(
        text(&o)
            .0
            .contains("io_uring:              unavailable: disabled by VMSTOR_DISABLE_IO_URING"),
        "{}",
        text(&o).0
    );
    let o = vmstor(&["probe", "/nonexistent/image"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("/nonexistent/image"));
}

#[test]
fn trace_shows_commands_status_and_host_ops() {
    let script = "# journal\nwrite 0 8\nflush\nwrite 8 1 fua\nwce off\nwrite 16 1\n";
    let o = vmstor(
        &["trace", "--controller", "ide", "--cache", "none"],
        Some(script),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("WRITE DMA FUA EXT -> OK"), "{out}");
    assert!(
        out.contains("pwritev2(RWF_DSYNC) 4096+512 [O_DIRECT]"),
        "{out}"
    );
    assert!(out.contains("FLUSH CACHE EXT -> OK"), "{out}");
    assert!(out.contains("SET FEATURES 82h"), "{out}");
    // After wce off the next plain write is durable.
    let tail = out.split("6: write 16 1").nth(1).unwrap();
    assert!(tail.contains("pwritev2(RWF_DSYNC)"), "{tail}");
}

#[test]
fn trace_reads_a_script_file_and_prints_json() {
    let mut f = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    writeln!(f, "write 0 1\nflush").unwrap();
    let o = vmstor(
        &[
            "trace",
            "--controller",
            "virtio-blk",
            "--cache",
            "writeback",
            "--json",
            f.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["commands"][0], "VIRTIO_BLK_T_OUT");
    assert_eq!(v[1]["host_ops"][0], "fdatasync [buffered]");
}

#[test]
fn inexpressible_line_is_an_error_naming_line_and_reason() {
    let o = vmstor(
        &["trace", "--controller", "virtio-blk", "--cache", "none"],
        Some("write 0 1\nwrite 1 1 fua\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(err.contains("line 2") && err.contains("FUA"), "{err}");
}

#[test]
fn bad_script_line_is_an_error_naming_it() {
    let o = vmstor(
        &["trace", "--controller", "ide", "--cache", "none"],
        Some("flush\nwrite zero 1\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(
        err.contains("line 2") && err.contains("write zero 1") && err.contains("LBA"),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_2_and_name_accepted_values() {
    let o = vmstor(
        &["trace", "--controller", "nvme", "--cache", "none"],
        Some(""),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("ide, scsi, virtio-blk"),
        "{}",
        text(&o).1
    );
    let o = vmstor(&["demo", "--cache", "fast"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o)
        .1
        .contains("writeback, none, writethrough, directsync, unsafe"));
    let o = vmstor(&["frobnicate"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = vmstor(&["--help"], None);
    assert!(o.status.success());
    for sub in ["demo", "probe", "trace", "crashcheck"] {
        assert!(text(&o).0.contains(sub));
        let o = vmstor(&[sub, "--help"], None);
        assert!(o.status.success(), "{sub} --help");
    }
}

#[test]
fn crashcheck_runs_cases_and_reports() {
    let o = vmstor(
        &[
            "crashcheck",
            "--cases",
            "5",
            "--controller",
            "ide",
            "--cache",
            "none",
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["cases"], 5);
    assert_eq!(v[0]["violations"], 0);
    assert!(v[0]["crash_points"].as_u64().unwrap() > 5);
}

#[test]
fn crashcheck_on_a_reduced_host() {
    let o = vmstor(
        &[
            "crashcheck",
            "--cases",
            "3",
            "--controller",
            "scsi",
            "--cache",
            "directsync",
            "--host",
            "align-4k",
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["host"], "align-4k");
    assert_eq!(v[0]["violations"], 0);
    let o = vmstor(&["crashcheck", "--host", "fast"], None);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.contains("no-rwf-dsync"), "names accepted values: {err}");
}

/// The failure path: with a known-bad behaviour switched on, crashcheck
/// exits 1 and prints a minimal counterexample.
#[test]
fn crashcheck_fails_with_a_minimal_counterexample() {
    let o = vmstor(
        &[
            "crashcheck",
            "--cases",
            "40",
            "--controller",
            "virtio-blk",
            "--cache",
            "none",
            "--sabotage",
            "skip-flush-when-direct",
        ],
        None,
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("minimal counterexample"), "{out}");
    let row = out.lines().find(|l| l.starts_with("virtio-blk")).unwrap();
    assert!(row.trim_end().ends_with('1'), "one violation: {row}");
    // The counterexample is short: a write and the flush that lied.
    let steps = out
        .lines()
        .skip_while(|l| !l.contains("minimal counterexample"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .count();
    assert!((1..=3).contains(&steps), "{out}");
}

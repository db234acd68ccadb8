//! The launcher with stand-in processes (`sh`): descriptors reach each child
//! at the promised numbers, QEMU's `-device` arguments, exit status pass-through,
//! remotes see EOF when QEMU exits, and a dying remote takes QEMU down.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use vmstor_qemu_proxy::launch::{launch, LaunchError, LaunchSpec, ProxySpec};

fn sh(script: &str) -> Vec<OsString> {
    vec!["sh".into(), "-c".into(), script.into(), "sh".into()]
}

fn proxy(remote: &str, id: &str, addr: Option<&str>) -> ProxySpec {
    ProxySpec {
        remote: sh(remote),
        device_id: id.into(),
        addr: addr.map(Into::into),
        remote_log: None,
    }
}

// A remote: checks it got `--fd 3` and that 3 is a socket, then waits for EOF on it.
const REMOTE: &str = r#"[ "$1" = --fd ] && [ "$2" = 3 ] && [ -S /proc/self/fd/3 ] || exit 9; cat <&3 >/dev/null; exit 0"#;

#[test]
fn passes_fds_args_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("args");
    // "QEMU": records its arguments, checks fds 3 and 4 are sockets, exits 7
    let qemu = format!(
        r#"echo "$@" > {}; [ -S /proc/self/fd/3 ] && [ -S /proc/self/fd/4 ] || exit 8; exit 7"#,
        out.display()
    );
    let spec = LaunchSpec {
        qemu: sh(&qemu),
        proxies: vec![proxy(REMOTE, "p0", Some("0x5")), proxy(REMOTE, "p1", None)],
    };
    let t0 = Instant::now();
    let st = launch(&spec).unwrap();
    assert_eq!(st.code(), Some(7), "QEMU's status passes through");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "remotes saw EOF and exited"
    );
    let args = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        args.trim(),
        "-device x-pci-proxy-dev,id=p0,fd=3,addr=0x5 -device x-pci-proxy-dev,id=p1,fd=4"
    );
}

#[test]
fn remote_death_kills_qemu() {
    let spec = LaunchSpec {
        qemu: sh("sleep 30"),
        proxies: vec![proxy("exit 3", "p0", None)],
    };
    let t0 = Instant::now();
    match launch(&spec) {
        Err(LaunchError::RemoteDied(0, st)) => assert_eq!(st.code(), Some(3)),
        other => panic!("{other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "QEMU was killed, not waited for"
    );
}

#[test]
fn bad_specs() {
    let none = LaunchSpec {
        qemu: sh("exit 0"),
        proxies: vec![],
    };
    assert!(matches!(launch(&none), Err(LaunchError::ProxyCount(0))));
    let empty_qemu = LaunchSpec {
        qemu: vec![],
        proxies: vec![proxy(REMOTE, "p0", None)],
    };
    assert!(matches!(
        launch(&empty_qemu),
        Err(LaunchError::Empty("QEMU"))
    ));
    let missing = LaunchSpec {
        qemu: vec!["/nonexistent/qemu".into()],
        proxies: vec![proxy(REMOTE, "p0", None)],
    };
    assert!(matches!(launch(&missing), Err(LaunchError::Io { .. })));
}

#[test]
fn children_die_with_the_launcher() {
    // Run the launcher in a child process (this test binary re-executed) so it can be killed.
    if let Ok(pidfile) = std::env::var("VMSTOR_LAUNCH_CHILD") {
        let qemu = format!("echo $$ > {pidfile}; sleep 30");
        let spec = LaunchSpec {
            qemu: sh(&qemu),
            proxies: vec![proxy(REMOTE, "p0", None)],
        };
        let _ = launch(&spec);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("qemu.pid");
    let mut launcher = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "children_die_with_the_launcher", "--nocapture"])
        .env("VMSTOR_LAUNCH_CHILD", &pidfile)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "QEMU stand-in never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let qemu_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // the stand-in must be gone (killed by the kernel), well before its 30 s sleep
    let t0 = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{qemu_pid}/stat")).unwrap_or_default();
        // gone, or a zombie waiting for init to reap it
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "QEMU outlived the launcher: {stat}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

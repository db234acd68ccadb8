//! Helpers for tests that need loop devices, mounts and root. Each returns
//! `None` (and the caller prints why it skips) when the host cannot do it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command, returning stdout on success.
pub fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A loop device over a file, detached on drop.
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    pub fn new(backing: &Path, extra: &[&str]) -> Result<Loop, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(extra);
        let b = backing.to_str().unwrap();
        args.push(b);
        let dev = sh("losetup", &args)?;
        Ok(Loop { dev: dev.into() })
    }

    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    pub fn sysfs(&self, attr: &str) -> PathBuf {
        PathBuf::from(format!("/sys/block/{}/{attr}", self.name()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = sh("losetup", &["-d", self.dev.to_str().unwrap()]);
    }
}

/// A mount, unmounted (lazily) on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(src: &str, dir: &Path, args: &[&str]) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut a: Vec<&str> = args.to_vec();
        a.push(src);
        a.push(dir.to_str().unwrap());
        sh("mount", &a)?;
        Ok(Mount { dir: dir.into() })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = sh("umount", &["-l", self.dir.to_str().unwrap()]);
    }
}

pub fn skip(test: &str, why: &str) {
    println!("SKIP {test}: {why}");
    eprintln!("SKIP {test}: {why}");
}

pub const MIB: u64 = 1 << 20;

/// A sparse image file of `size` bytes in the target's temporary directory.
pub fn image(size: u64) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    f.as_file_mut().set_len(size).unwrap();
    f.flush().unwrap();
    f
}

/// 4 MiB of guest memory.
pub fn mem() -> std::sync::Arc<vm_memory::GuestMemoryMmap> {
    std::sync::Arc::new(
        vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 4 * MIB as usize)])
            .unwrap(),
    )
}

/// One guest-memory segment as a request buffer.
pub fn guest(
    m: &std::sync::Arc<vm_memory::GuestMemoryMmap>,
    addr: u64,
    len: usize,
) -> vmstor_hostio::DataBuf {
    vmstor_hostio::DataBuf::Guest(vmstor_hostio::GuestBufs::new(
        m.clone(),
        vec![(vm_memory::GuestAddress(addr), len)],
    ))
}

/// Executes a request and returns its completion (never held in tests).
pub fn run(d: &vmstor_hostio::Disk, r: vmstor_hostio::Request) -> vmstor_hostio::Completion {
    match d.execute(r).unwrap() {
        vmstor_hostio::Outcome::Done(c) => c,
        vmstor_hostio::Outcome::Held => panic!("held"),
    }
}

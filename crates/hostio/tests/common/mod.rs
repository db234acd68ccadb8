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

//! Starting QEMU and the remote on the two ends of one socket pair.
//!
//! `x-pci-proxy-dev` takes an inherited descriptor (`fd=N`), not a path, so a
//! launcher must create a `socketpair()` and give one end to each process.
//! [`launch`] does that: each child gets only its own end, as descriptor
//! [`CHILD_FD`] (both ends are close-on-exec in the launcher, so neither child
//! holds the other's end and each sees EOF when its peer dies). It appends
//! `-device x-pci-proxy-dev,id=..,fd=3[,addr=..]` to QEMU's arguments and
//! `--fd 3` to the remote's.
//!
//! Contract: [`launch`] returns QEMU's exit status (so `isa-debug-exit`
//! results pass through). If the remote exits while QEMU runs, QEMU is killed
//! and the result is an error: a guest whose device vanished must not pass.
//! After QEMU exits, the remote gets [`REMOTE_GRACE`] to see EOF and exit,
//! then it is killed.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Descriptor number each child finds its end of the socket pair on.
pub const CHILD_FD: RawFd = 3;
/// How long the remote may take to exit after QEMU did.
pub const REMOTE_GRACE: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// QEMU's program and arguments (without the proxy device).
    pub qemu: Vec<OsString>,
    /// The remote's program and arguments (without `--fd`).
    pub remote: Vec<OsString>,
    /// `id=` of the proxy device.
    pub device_id: String,
    /// `addr=` of the proxy device (PCI slot), if any.
    pub addr: Option<String>,
    /// Where the remote's stdout/stderr go (inherited if `None`).
    pub remote_log: Option<std::path::PathBuf>,
}

/// Why a launch failed.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// An empty command line.
    #[error("empty {0} command line")]
    Empty(&'static str),
    /// Creating the socket pair or starting a process failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        err: io::Error,
    },
    /// The remote exited while QEMU was running.
    #[error("the remote exited ({0}) while QEMU was running; QEMU was killed")]
    RemoteDied(ExitStatus),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> LaunchError {
    move |err| LaunchError::Io { what, err }
}

/// Makes `fd` the child's descriptor [`CHILD_FD`], without close-on-exec.
fn give_fd(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls dup2(2) and fcntl(2), which are async-signal-safe, and touches no
    // memory but its two captured integers.
    unsafe {
        cmd.pre_exec(move || {
            if fd == CHILD_FD {
                // dup2 onto itself keeps close-on-exec set: clear it instead
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHILD_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn kill_and_reap(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Starts the remote and QEMU on a fresh socket pair and waits for QEMU. See
/// the module docs.
pub fn launch(spec: &LaunchSpec) -> Result<ExitStatus, LaunchError> {
    let (qprog, qargs) = spec.qemu.split_first().ok_or(LaunchError::Empty("QEMU"))?;
    let (rprog, rargs) = spec
        .remote
        .split_first()
        .ok_or(LaunchError::Empty("remote"))?;
    let (qemu_end, remote_end) = UnixStream::pair().map_err(io_err("socketpair"))?;

    let mut remote = Command::new(rprog);
    remote
        .args(rargs)
        .arg("--fd")
        .arg(CHILD_FD.to_string())
        .stdin(Stdio::null());
    if let Some(log) = &spec.remote_log {
        let f = std::fs::File::create(log).map_err(io_err("remote log"))?;
        remote
            .stdout(f.try_clone().map_err(io_err("remote log"))?)
            .stderr(f);
    }
    give_fd(&mut remote, remote_end.as_raw_fd());
    let mut remote = remote.spawn().map_err(io_err("starting the remote"))?;
    drop(remote_end);

    let mut dev = format!("x-pci-proxy-dev,id={},fd={CHILD_FD}", spec.device_id);
    if let Some(a) = &spec.addr {
        dev.push_str(",addr=");
        dev.push_str(a);
    }
    let mut qemu = Command::new(qprog);
    qemu.args(qargs).arg("-device").arg(dev);
    give_fd(&mut qemu, qemu_end.as_raw_fd());
    let mut qemu = match qemu.spawn() {
        Ok(c) => c,
        Err(err) => {
            kill_and_reap(&mut remote);
            return Err(LaunchError::Io {
                what: "starting QEMU",
                err,
            });
        }
    };
    drop(qemu_end);

    let status = loop {
        if let Some(s) = qemu.try_wait().map_err(io_err("waiting for QEMU"))? {
            break s;
        }
        if let Some(rs) = remote
            .try_wait()
            .map_err(io_err("waiting for the remote"))?
        {
            kill_and_reap(&mut qemu);
            return Err(LaunchError::RemoteDied(rs));
        }
        sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + REMOTE_GRACE;
    loop {
        match remote.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
            _ => {
                kill_and_reap(&mut remote);
                break;
            }
        }
    }
    Ok(status)
}

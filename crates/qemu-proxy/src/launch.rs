//! Starting QEMU and the remotes, each pair on its own socket pair.
//!
//! `x-pci-proxy-dev` takes an inherited descriptor (`fd=N`), not a path, so a
//! launcher must create a `socketpair()` per proxied function and give one end
//! to QEMU and the other to the remote. [`launch`] does that for any number of
//! functions: remote `i` gets its end as descriptor [`REMOTE_FD`], QEMU gets
//! its end of pair `i` as descriptor `QEMU_FD_BASE + i`. All ends are
//! close-on-exec in the launcher, so no child holds an end meant for another
//! process, and each side sees EOF when its peer dies. It appends
//! `-device x-pci-proxy-dev,id=..,fd=N[,addr=..]` per function to QEMU's
//! arguments and `--fd 3` to each remote's.
//!
//! Every child dies with the launcher (`PR_SET_PDEATHSIG`), so ending the
//! launcher (e.g. by `timeout`) ends QEMU and the remotes too.
//!
//! Contract: [`launch`] returns QEMU's exit status (so `isa-debug-exit`
//! results pass through). If a remote exits while QEMU runs, QEMU is killed
//! and the result is an error: a guest whose device vanished must not pass.
//! After QEMU exits, the remotes get [`REMOTE_GRACE`] to see EOF and exit,
//! then they are killed.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use thiserror::Error;

/// Descriptor number each remote finds its end of the socket pair on.
pub const REMOTE_FD: RawFd = 3;
/// Descriptor number of QEMU's end of the first pair (then +1 per function).
pub const QEMU_FD_BASE: RawFd = 3;
/// How long QEMU may take to be reaped after a remote exited, before the
/// remote's exit counts as a death (a remote also exits when QEMU exits
/// first: it sees EOF).
pub const QEMU_EXIT_RACE: Duration = Duration::from_millis(500);
/// Most functions one launch proxies.
pub const MAX_PROXIES: usize = 8;
/// How long the remote may take to exit after QEMU did.
pub const REMOTE_GRACE: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// QEMU's program and arguments (without the proxy devices).
    pub qemu: Vec<OsString>,
    /// The proxied functions.
    pub proxies: Vec<ProxySpec>,
}

/// One proxied function: its remote and its `x-pci-proxy-dev`.
#[derive(Debug, Clone)]
pub struct ProxySpec {
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
    /// A remote exited while QEMU was running.
    #[error("remote {0} exited ({1}) while QEMU was running; QEMU was killed")]
    RemoteDied(usize, ExitStatus),
    /// No function, or more than [`MAX_PROXIES`].
    #[error("{0} proxied functions (1..={MAX_PROXIES})")]
    ProxyCount(usize),
}

/// Gives the child `pairs[i].0` as descriptor `pairs[i].1`, without
/// close-on-exec, and makes the kernel SIGKILL the child if the launcher dies
/// (so a launcher ended by `timeout` or a signal leaves no QEMU or remote
/// behind). The sources are first duplicated above every target (with
/// close-on-exec, so the copies vanish at exec), so one move cannot overwrite
/// a source another move still needs.
fn give_fds(cmd: &mut Command, pairs: Vec<(RawFd, RawFd)>) {
    let high = pairs.iter().map(|p| p.0.max(p.1)).max().unwrap_or(0) + 1;
    // SAFETY: getpid has no preconditions.
    let launcher = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec; it only
    // calls prctl(2), getppid(2), fcntl(2) and dup2(2), which are
    // async-signal-safe, and writes only to the vector it owns, whose
    // capacity is reserved before the fork, so nothing allocates.
    unsafe {
        let mut tmp: Vec<RawFd> = Vec::with_capacity(pairs.len());
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != launcher {
                // the launcher died before the death signal was armed
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            tmp.clear();
            for &(src, _) in &pairs {
                let t = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, high);
                if t < 0 {
                    return Err(io::Error::last_os_error());
                }
                tmp.push(t);
            }
            for (&t, &(_, dst)) in tmp.iter().zip(&pairs) {
                if libc::dup2(t, dst) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

fn kill_and_reap(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Starts the remotes and QEMU and waits for QEMU. See the module docs.
pub fn launch(spec: &LaunchSpec) -> Result<ExitStatus, LaunchError> {
    let n = spec.proxies.len();
    if n == 0 || n > MAX_PROXIES {
        return Err(LaunchError::ProxyCount(n));
    }
    let (qprog, qargs) = spec.qemu.split_first().ok_or(LaunchError::Empty("QEMU"))?;
    let mut remotes: Vec<Child> = Vec::new();
    let mut qemu_ends = Vec::new();
    let fail = |remotes: &mut Vec<Child>, e: LaunchError| {
        for r in remotes.iter_mut() {
            kill_and_reap(r);
        }
        Err(e)
    };
    for p in &spec.proxies {
        let Some((rprog, rargs)) = p.remote.split_first() else {
            return fail(&mut remotes, LaunchError::Empty("remote"));
        };
        let (qemu_end, remote_end) = match UnixStream::pair() {
            Ok(v) => v,
            Err(err) => {
                return fail(
                    &mut remotes,
                    LaunchError::Io {
                        what: "socketpair",
                        err,
                    },
                )
            }
        };
        let mut remote = Command::new(rprog);
        remote
            .args(rargs)
            .arg("--fd")
            .arg(REMOTE_FD.to_string())
            .stdin(Stdio::null());
        if let Some(log) = &p.remote_log {
            let f = match std::fs::File::create(log).and_then(|f| Ok((f.try_clone()?, f))) {
                Ok(v) => v,
                Err(err) => {
                    return fail(
                        &mut remotes,
                        LaunchError::Io {
                            what: "remote log",
                            err,
                        },
                    )
                }
            };
            remote.stdout(f.0).stderr(f.1);
        }
        give_fds(&mut remote, vec![(remote_end.as_raw_fd(), REMOTE_FD)]);
        match remote.spawn() {
            Ok(c) => remotes.push(c),
            Err(err) => {
                return fail(
                    &mut remotes,
                    LaunchError::Io {
                        what: "starting a remote",
                        err,
                    },
                );
            }
        }
        qemu_ends.push(qemu_end);
    }

    let mut qemu = Command::new(qprog);
    qemu.args(qargs);
    let mut moves = Vec::new();
    for (i, (p, end)) in spec.proxies.iter().zip(&qemu_ends).enumerate() {
        let fd = QEMU_FD_BASE + i as RawFd;
        let mut dev = format!("x-pci-proxy-dev,id={},fd={fd}", p.device_id);
        if let Some(a) = &p.addr {
            dev.push_str(",addr=");
            dev.push_str(a);
        }
        qemu.arg("-device").arg(dev);
        moves.push((end.as_raw_fd(), fd));
    }
    give_fds(&mut qemu, moves);
    let mut qemu = match qemu.spawn() {
        Ok(c) => c,
        Err(err) => {
            return fail(
                &mut remotes,
                LaunchError::Io {
                    what: "starting QEMU",
                    err,
                },
            )
        }
    };
    drop(qemu_ends);

    let status = loop {
        match qemu.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(err) => {
                kill_and_reap(&mut qemu);
                return fail(
                    &mut remotes,
                    LaunchError::Io {
                        what: "waiting for QEMU",
                        err,
                    },
                );
            }
        }
        let died = remotes
            .iter_mut()
            .enumerate()
            .find_map(|(i, r)| r.try_wait().ok().flatten().map(|rs| (i, rs)));
        if let Some((i, rs)) = died {
            // A remote also exits when QEMU exits first (EOF on its socket):
            // give QEMU a moment to be reaped before calling it a failure.
            let deadline = Instant::now() + QEMU_EXIT_RACE;
            let exited = loop {
                if let Ok(Some(s)) = qemu.try_wait() {
                    break Some(s);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                sleep(Duration::from_millis(10));
            };
            match exited {
                Some(s) => break s,
                None => {
                    kill_and_reap(&mut qemu);
                    return fail(&mut remotes, LaunchError::RemoteDied(i, rs));
                }
            }
        }
        sleep(Duration::from_millis(20));
    };
    let deadline = Instant::now() + REMOTE_GRACE;
    for r in remotes.iter_mut() {
        loop {
            match r.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
                _ => {
                    kill_and_reap(r);
                    break;
                }
            }
        }
    }
    Ok(status)
}

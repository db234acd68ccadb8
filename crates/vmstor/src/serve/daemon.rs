//! The serving loop every export runs on its own thread: listen, accept one
//! front end at a time, serve it with a fresh per-connection back end, and
//! after a disconnect settle and flush, then listen again (QEMU's
//! `-chardev socket,reconnect=N` reconnects to it).
//!
//! Contracts:
//! - [`Server::run`] returns `Ok` only after [`Server::stop`]; it returns
//!   `Err` if the socket or a connection's machinery cannot be set up.
//! - [`Server::stop`] (SIGINT/SIGTERM): the export stops taking requests,
//!   completes the in-flight ones on the rings, fails held ones, flushes
//!   its disks and closes the connection; `run` then returns.
//! - After every disconnect the connection's in-flight host I/O is waited
//!   for and the disks are flushed before the next front end is accepted:
//!   a write that reached hostio is on stable storage even if the front end
//!   crashed.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing::{error, info, info_span, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserBackend, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::cli::ExportKind;
use super::vring::{Mem, Vring};

/// A per-connection back end.
pub(crate) trait Conn:
    VhostUserBackend<Bitmap = (), Vring = Vring> + Clone + 'static
{
    /// Extra fds for the vring threads' epolls: `(fd, flags, event id)`.
    fn listeners(&self) -> Vec<(RawFd, EventSet, u64)>;
    /// Stops taking requests and settles in-flight ones (published on the
    /// rings when `connected`), then flushes. Idempotent.
    fn quiesce(&self, connected: bool) -> Result<(), String>;
    /// The connection is over (fold its statistics into the export's).
    fn retire(&self);
}

/// An export, independent of connections.
pub(crate) trait Service: Send + Sync + 'static {
    /// Its per-connection back end.
    type Conn: Conn;
    /// A back end for a new connection over `mem`.
    fn connect(self: &Arc<Self>, mem: Mem) -> Self::Conn;
    /// Retries requests held by the `stop` error policy.
    fn resume_held(&self) -> usize;
    /// Counters as JSON.
    fn report(&self) -> Value;
    /// Counters on one line.
    fn report_line(&self) -> String;
    /// Flushes every disk.
    fn flush(&self) -> Result<(), String>;
}

/// What the main thread needs from any export.
pub(crate) trait Exported: Send + Sync {
    /// `blk0`, `scsi1`, ...
    fn name(&self) -> &str;
    /// Stops serving (see the module docs).
    fn stop(&self);
    /// Retries held requests; returns how many.
    fn resume_held(&self) -> usize;
    /// Counters as JSON, with the export's identity.
    fn report(&self) -> Value;
    /// Counters on one line.
    fn report_line(&self) -> String;
    /// Flushes every disk.
    fn flush(&self) -> Result<(), String>;
}

/// Called after every disconnect (writes the counters file).
pub(crate) type Hook = Arc<dyn Fn() + Send + Sync>;

/// One export's serving state. See the module docs.
pub(crate) struct Server<S: Service> {
    name: String,
    kind: ExportKind,
    socket: PathBuf,
    svc: Arc<S>,
    stopping: AtomicBool,
    wake: EventFd,
    current: Mutex<Option<(S::Conn, ShutdownHandle)>>,
    on_disconnect: Hook,
}

impl<S: Service> Server<S> {
    /// A server for `svc` on `socket`.
    pub(crate) fn new(
        name: String,
        kind: ExportKind,
        socket: PathBuf,
        svc: Arc<S>,
        on_disconnect: Hook,
    ) -> std::io::Result<Server<S>> {
        Ok(Server {
            name,
            kind,
            socket,
            svc,
            stopping: AtomicBool::new(false),
            wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
            current: Mutex::new(None),
            on_disconnect,
        })
    }

    /// Waits until a front end connects (`true`) or the server is stopped.
    fn wait_for_client(&self, listener: &Listener) -> Result<bool, String> {
        loop {
            if self.stopping.load(SeqCst) {
                return Ok(false);
            }
            let mut fds = [
                libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll on the listening socket: {e}"));
            }
            if fds[1].revents != 0 {
                return Ok(false);
            }
            if fds[0].revents & libc::POLLIN != 0 {
                return Ok(true);
            }
            if fds[0].revents != 0 {
                return Err("the listening socket failed".into());
            }
        }
    }

    fn stop_current(&self) {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some((conn, sh)) = cur {
            if let Err(e) = conn.quiesce(true) {
                error!(export = %self.name, "flush at shutdown failed: {e}");
            }
            sh.shutdown();
        }
    }

    /// Serves front ends one after the other until stopped.
    pub(crate) fn run(&self, mut listener: Listener) -> Result<(), String> {
        let span = info_span!("export", name = %self.name);
        let _e = span.enter();
        info!(
            socket = %self.socket.display(),
            "{} listening",
            self.kind.name()
        );
        while self.wait_for_client(&listener)? {
            let mem: Mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let conn = self.svc.connect(mem.clone());
            let mut daemon = VhostUserDaemon::new(self.name.clone(), conn.clone(), mem)
                .map_err(|e| format!("cannot set up the vhost-user handler: {e}"))?;
            for h in daemon.get_epoll_handlers() {
                for (fd, flags, id) in conn.listeners() {
                    h.register_listener(fd, flags, id)
                        .map_err(|e| format!("cannot watch the completion eventfd: {e}"))?;
                }
            }
            daemon
                .start(&mut listener)
                .map_err(|e| format!("cannot accept the front end: {e}"))?;
            info!("front end connected");
            if let Some(sh) = daemon.shutdown_handle() {
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((conn.clone(), sh));
            }
            // A stop that raced with the accept did not see the connection.
            if self.stopping.load(SeqCst) {
                self.stop_current();
            }
            let r = daemon.wait();
            self.current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match r {
                Ok(()) => info!("front end disconnected"),
                Err(e) => warn!("front end connection ended: {e}"),
            }
            if let Err(e) = conn.quiesce(false) {
                error!("flush after disconnect failed: {e}");
            }
            // Joins the vring threads (their exit events fire on drop).
            drop(daemon);
            conn.retire();
            (self.on_disconnect)();
        }
        info!("stopped");
        Ok(())
    }
}

impl<S: Service> Exported for Server<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn stop(&self) {
        self.stopping.store(true, SeqCst);
        let _ = self.wake.write(1);
        self.stop_current();
    }

    fn resume_held(&self) -> usize {
        self.svc.resume_held()
    }

    fn report(&self) -> Value {
        let mut v = self.svc.report();
        if let Value::Object(m) = &mut v {
            m.insert("name".into(), Value::from(self.name.clone()));
            m.insert("kind".into(), Value::from(self.kind.name()));
            m.insert(
                "socket".into(),
                Value::from(self.socket.display().to_string()),
            );
        }
        v
    }

    fn report_line(&self) -> String {
        format!(
            "{} ({} {}): {}",
            self.name,
            self.kind.name(),
            self.socket.display(),
            self.svc.report_line()
        )
    }

    fn flush(&self) -> Result<(), String> {
        self.svc.flush()
    }
}

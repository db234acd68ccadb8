//! The function's INTx line and how its rising edges reach the guest.
//!
//! QEMU hands the remote two eventfds (`SET_IRQFD`): the remote writes the
//! *irqfd* when the line goes 0→1, and QEMU writes the *resamplefd* when the
//! guest has acknowledged the interrupt; if the line is still high then, the
//! remote kicks the irqfd again (level semantics). With KVM, QEMU binds the
//! pair to the guest's interrupt controller. Under TCG it does not
//! (`kvm_irqchip_add_irqfd_notifier_gsi` fails and nothing else raises the
//! line): no interrupt ever reaches the guest.
//!
//! The *doorbell UART* works around that (`qemu-pci-proxy.md` §5.1): a QEMU
//! `pci-serial` on the same PCI interrupt line as the proxy, whose chardev is a
//! UNIX socket the remote connects to. Each rising edge sends one byte; the
//! guest keeps the tty open, so the UART raises the shared line, and Linux
//! runs every handler on it, the storage driver's included, which then reads
//! the device's status through the proxy. A [`Doorbell`] is that socket.
//!
//! Contract: [`IrqLine::set_level`] may be called from any thread; a rising
//! edge kicks the irqfd (if any) and rings the doorbell (if any) exactly once;
//! a failure to kick is counted, never fatal (the line state is still right,
//! and a later edge tries again).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// A UNIX-socket chardev of a QEMU `pci-serial` used as the interrupt
/// doorbell. Connected lazily, and again after an error.
#[derive(Debug)]
pub struct Doorbell {
    path: PathBuf,
    conn: Option<UnixStream>,
}

impl Doorbell {
    /// A doorbell on the chardev socket at `path` (QEMU:
    /// `-chardev socket,id=..,path=PATH,server=on,wait=off`).
    pub fn new(path: impl Into<PathBuf>) -> Doorbell {
        Doorbell {
            path: path.into(),
            conn: None,
        }
    }

    fn connect(&mut self) -> Option<&mut UnixStream> {
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.path).ok()?;
            s.set_nonblocking(true).ok()?;
            self.conn = Some(s);
        }
        self.conn.as_mut()
    }

    /// Sends one byte; `false` if it could not be sent.
    pub fn ring(&mut self) -> bool {
        let Some(c) = self.connect() else {
            return false;
        };
        // Drain whatever the guest sent on the UART: we never read it.
        let mut sink = [0u8; 256];
        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
        match c.write(b"!") {
            Ok(1) => true,
            // The guest is not draining the UART: the line is already pending.
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            _ => {
                self.conn = None;
                false
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    level: bool,
    irqfd: Option<File>,
    doorbell: Option<Doorbell>,
    edges: u64,
    kick_failures: u64,
}

/// The function's INTx line. Clones share the line.
#[derive(Debug, Clone, Default)]
pub struct IrqLine {
    state: Arc<Mutex<State>>,
}

impl IrqLine {
    /// A line with no irqfd and no doorbell yet.
    pub fn new() -> IrqLine {
        IrqLine::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the level; a 0→1 transition kicks the irqfd and rings the doorbell.
    pub fn set_level(&self, level: bool) {
        let mut s = self.lock();
        let rising = level && !s.level;
        s.level = level;
        if rising {
            s.edges += 1;
            kick(&mut s, true);
        }
    }

    /// The current level.
    pub fn level(&self) -> bool {
        self.lock().level
    }

    /// Rising edges so far.
    pub fn edges(&self) -> u64 {
        self.lock().edges
    }

    /// Kicks that could not be delivered (no irqfd and no doorbell, or
    /// errors).
    pub fn kick_failures(&self) -> u64 {
        self.lock().kick_failures
    }

    /// Installs the irqfd from `SET_IRQFD` (replacing an older one).
    pub fn set_irqfd(&self, irqfd: File) {
        self.lock().irqfd = Some(irqfd);
    }

    /// Installs the doorbell.
    pub fn set_doorbell(&self, doorbell: Doorbell) {
        self.lock().doorbell = Some(doorbell);
    }

    /// The guest acknowledged the interrupt (resamplefd fired): if the line is
    /// still high, kick the irqfd again. The doorbell is not rung again: the
    /// guest runs the handlers of the shared line once per doorbell byte, and
    /// a level that stays high is the driver's to clear.
    pub fn resample(&self) {
        let mut s = self.lock();
        if s.level {
            kick(&mut s, false);
        }
    }
}

fn kick(s: &mut State, doorbell: bool) {
    let mut delivered = false;
    if let Some(fd) = s.irqfd.as_mut() {
        delivered |= fd.write_all(&1u64.to_ne_bytes()).is_ok();
    }
    if doorbell {
        if let Some(d) = s.doorbell.as_mut() {
            delivered |= d.ring();
        }
    }
    if !delivered {
        s.kick_failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn edges_kick_irqfd_once() {
        let line = IrqLine::new();
        let efd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        line.set_irqfd(File::from(efd.try_clone().unwrap().into_raw_fd_owned()));
        line.set_level(true);
        line.set_level(true); // still high: no second edge
        assert_eq!(efd.read().unwrap(), 1);
        assert!(efd.read().is_err(), "no second kick");
        line.resample();
        assert_eq!(efd.read().unwrap(), 1, "resample while high kicks again");
        line.set_level(false);
        line.resample();
        assert!(efd.read().is_err(), "no kick when low");
        line.set_level(true);
        assert_eq!(efd.read().unwrap(), 1);
        assert_eq!(line.edges(), 2);
        assert_eq!(line.kick_failures(), 0);
    }

    #[test]
    fn doorbell_rings_per_edge() {
        let dir = std::env::temp_dir().join(format!("vmstor-db-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixListener::bind(&dir).unwrap();
        let line = IrqLine::new();
        line.set_doorbell(Doorbell::new(&dir));
        line.set_level(true);
        let (mut peer, _) = listener.accept().unwrap();
        line.set_level(false);
        line.set_level(true);
        line.resample(); // no doorbell on resample
        line.set_level(false);
        let mut buf = [0u8; 8];
        peer.set_nonblocking(true).unwrap();
        let n = peer.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"!!");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn no_sink_counts_failures() {
        let line = IrqLine::new();
        line.set_level(true);
        assert_eq!(line.kick_failures(), 1);
        line.set_doorbell(Doorbell::new("/nonexistent/vmstor-doorbell"));
        line.set_level(false);
        line.set_level(true);
        assert_eq!(line.kick_failures(), 2);
        assert!(line.level());
    }

    trait IntoOwned {
        fn into_raw_fd_owned(self) -> std::os::fd::OwnedFd;
    }
    impl IntoOwned for EventFd {
        fn into_raw_fd_owned(self) -> std::os::fd::OwnedFd {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let fd = self.into_raw_fd();
            // SAFETY: `fd` was just released by the EventFd that owned it.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
        }
    }
}

//! The remote: answers the proxy's messages with one [`PciFunction`].
//!
//! [`Remote::handle`] is the protocol logic without I/O (the fuzz target and
//! unit tests drive it directly); [`serve`] is the event loop around it: it
//! waits on the proxy socket, the resamplefd and the function's wake
//! descriptor, and ends when the proxy closes the socket.
//!
//! Reply discipline (a stray or missing `RET` desynchronises QEMU, whose vCPU
//! thread blocks on each access): exactly one `RET` for PCI_CFGREAD,
//! PCI_CFGWRITE, BAR_READ, BAR_WRITE and DEVICE_RESET; none for SYNC_SYSMEM
//! and SET_IRQFD. An access no BAR decodes is answered like a master abort:
//! reads return all ones of the access size, writes are dropped.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use thiserror::Error;

use crate::channel::{Channel, ChannelError};
use crate::irq::IrqLine;
use crate::memory::SysMem;
use crate::pci::{decode_bar, PciFunction};
use crate::wire::{size_mask, Message, Space};

/// Message counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SYNC_SYSMEM messages.
    pub sync_sysmem: u64,
    /// Of those, the ones that changed the layout.
    pub sysmem_changes: u64,
    /// Of those, the ones that could not be mapped.
    pub sysmem_errors: u64,
    /// PCI_CFGREAD.
    pub cfg_reads: u64,
    /// PCI_CFGWRITE.
    pub cfg_writes: u64,
    /// BAR_READ.
    pub bar_reads: u64,
    /// BAR_WRITE.
    pub bar_writes: u64,
    /// BAR accesses no BAR decoded.
    pub bar_unclaimed: u64,
    /// SET_IRQFD.
    pub set_irqfd: u64,
    /// DEVICE_RESET.
    pub resets: u64,
    /// resamplefd wake-ups.
    pub resamples: u64,
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The connection failed or carried a malformed message.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// poll(2) failed.
    #[error("poll: {0}")]
    Poll(io::Error),
}

/// One handled message, as kept by the history ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// What it was.
    pub msg: EventKind,
    /// The value written, or the value returned.
    pub value: u64,
}

/// The kind of an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// SYNC_SYSMEM (value: 1 if the layout changed).
    SyncSysmem,
    /// Config read at offset/size.
    CfgRead(u16, u8),
    /// Config write at offset/size.
    CfgWrite(u16, u8),
    /// BAR read at the absolute address/size.
    BarRead(Space, u64, u8),
    /// BAR write at the absolute address/size.
    BarWrite(Space, u64, u8),
    /// SET_IRQFD.
    SetIrqfd,
    /// DEVICE_RESET.
    Reset,
}

/// One proxied PCI function and the state the protocol gives it.
#[derive(Debug)]
pub struct Remote<F> {
    dev: F,
    mem: SysMem,
    irq: IrqLine,
    resamplefd: Option<File>,
    stats: Stats,
    verbose: bool,
    history: std::collections::VecDeque<Event>,
    history_len: usize,
}

impl<F: PciFunction> Remote<F> {
    /// A remote for `dev`, whose INTx drives `irq` (install a doorbell on it
    /// first if the guest runs under TCG).
    pub fn new(mut dev: F, irq: IrqLine) -> Remote<F> {
        dev.set_irq_sink(irq.clone());
        let mem = SysMem::new();
        dev.set_guest_memory(mem.memory());
        Remote {
            dev,
            mem,
            irq,
            resamplefd: None,
            stats: Stats::default(),
            verbose: false,
            history: std::collections::VecDeque::new(),
            history_len: 0,
        }
    }

    /// Logs every message on stderr.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// Keeps the last `len` messages (cheap, unlike `verbose`, so it does not
    /// change the timing being debugged); see [`Remote::history`].
    pub fn set_history(&mut self, len: usize) {
        self.history_len = len;
        self.history = std::collections::VecDeque::with_capacity(len);
    }

    /// The last messages handled, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Event> {
        self.history.iter()
    }

    fn record(&mut self, msg: EventKind, value: u64) {
        if self.history_len == 0 {
            return;
        }
        if self.history.len() == self.history_len {
            self.history.pop_front();
        }
        self.history.push_back(Event { msg, value });
    }

    /// The function.
    pub fn device(&self) -> &F {
        &self.dev
    }

    /// The function, mutably.
    pub fn device_mut(&mut self) -> &mut F {
        &mut self.dev
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The guest RAM state.
    pub fn sysmem(&self) -> &SysMem {
        &self.mem
    }

    /// The interrupt line.
    pub fn irq(&self) -> &IrqLine {
        &self.irq
    }

    /// Handles one message; `Some(value)` is the `RET` to send.
    pub fn handle(&mut self, msg: Message, fds: Vec<OwnedFd>) -> Option<u64> {
        let reply = match msg {
            Message::SyncSysmem(regions) => {
                self.stats.sync_sysmem += 1;
                match self.mem.update(&regions, fds) {
                    Ok(Some(mem)) => {
                        self.stats.sysmem_changes += 1;
                        self.record(EventKind::SyncSysmem, 1);
                        if self.verbose {
                            eprintln!("qemu-proxy: guest RAM {regions:x?}");
                        }
                        self.dev.set_guest_memory(mem);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.stats.sysmem_errors += 1;
                        eprintln!("qemu-proxy: SYNC_SYSMEM refused, no guest RAM now: {e}");
                        self.dev.set_guest_memory(self.mem.memory());
                    }
                }
                None
            }
            Message::CfgRead { addr, len } => {
                self.stats.cfg_reads += 1;
                let v = self.dev.config_read(addr, len);
                self.record(EventKind::CfgRead(addr, len), u64::from(v));
                if self.verbose {
                    eprintln!("qemu-proxy: CFGREAD {addr:#04x}/{len} -> {v:#x}");
                }
                Some(u64::from(v) & size_mask(len))
            }
            Message::CfgWrite { addr, len, val } => {
                self.stats.cfg_writes += 1;
                self.record(EventKind::CfgWrite(addr, len), u64::from(val));
                if self.verbose {
                    eprintln!("qemu-proxy: CFGWRITE {addr:#04x}/{len} <- {val:#x}");
                }
                self.dev
                    .config_write(addr, len, val & size_mask(len) as u32);
                Some(0)
            }
            Message::BarRead { space, addr, size } => {
                self.stats.bar_reads += 1;
                let v = match decode_bar(&mut self.dev, space, addr, size) {
                    Some((bar, off)) => self.dev.bar_read(bar, off, size) & size_mask(size),
                    None => {
                        self.stats.bar_unclaimed += 1;
                        size_mask(size)
                    }
                };
                self.record(EventKind::BarRead(space, addr, size), v);
                if self.verbose {
                    eprintln!("qemu-proxy: BAR_READ {space:?} {addr:#x}/{size} -> {v:#x}");
                }
                Some(v)
            }
            Message::BarWrite {
                space,
                addr,
                size,
                val,
            } => {
                self.stats.bar_writes += 1;
                self.record(EventKind::BarWrite(space, addr, size), val);
                if self.verbose {
                    eprintln!("qemu-proxy: BAR_WRITE {space:?} {addr:#x}/{size} <- {val:#x}");
                }
                match decode_bar(&mut self.dev, space, addr, size) {
                    Some((bar, off)) => self.dev.bar_write(bar, off, size, val),
                    None => self.stats.bar_unclaimed += 1,
                }
                Some(0)
            }
            Message::SetIrqfd => {
                self.stats.set_irqfd += 1;
                self.record(EventKind::SetIrqfd, 0);
                let mut it = fds.into_iter();
                if let (Some(irqfd), Some(resample)) = (it.next(), it.next()) {
                    self.irq.set_irqfd(File::from(irqfd));
                    self.resamplefd = Some(File::from(resample));
                }
                None
            }
            Message::DeviceReset => {
                self.stats.resets += 1;
                self.record(EventKind::Reset, 0);
                if self.verbose {
                    eprintln!("qemu-proxy: DEVICE_RESET");
                }
                self.dev.reset();
                Some(0)
            }
        };
        self.dev.poll();
        reply
    }

    /// The resamplefd fired: consume it and re-kick a line that is still high.
    fn resample(&mut self) {
        if let Some(f) = self.resamplefd.as_mut() {
            let mut b = [0u8; 8];
            let _ = io::Read::read(f, &mut b);
        }
        self.stats.resamples += 1;
        self.irq.resample();
    }
}

/// Serves the proxy on `sock` until it closes the socket (`Ok`) or the
/// connection fails.
pub fn serve<F: PciFunction>(
    remote: &mut Remote<F>,
    sock: UnixStream,
) -> Result<Stats, ServeError> {
    let mut ch = Channel::new(sock);
    loop {
        let mut pfds = vec![
            libc::pollfd {
                fd: ch.socket().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: remote.resamplefd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        pfds.extend(remote.dev.wake_fds().into_iter().map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: `pfds` is a live vector of `pfds.len()` pollfd structs;
        // negative descriptors are ignored by poll(2).
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ServeError::Poll(e));
        }
        if pfds[1].revents & libc::POLLIN != 0 {
            remote.resample();
        }
        if pfds[2..].iter().any(|p| p.revents != 0) {
            remote.dev.poll();
        }
        if pfds[0].revents != 0 {
            let Some(rx) = ch.recv()? else {
                return Ok(remote.stats);
            };
            if let Some(v) = remote.handle(rx.msg, rx.fds) {
                ch.send_ret(v)?;
            }
        }
    }
}

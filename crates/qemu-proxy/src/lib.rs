//! The remote side of QEMU's multi-process PCI proxy (`-device
//! x-pci-proxy-dev`, the "mpqemu" protocol, QEMU 6.0 and later; experimental
//! in QEMU and here).
//!
//! QEMU forwards one PCI function's configuration space and BAR accesses (MMIO
//! and I/O) over a UNIX socket to another process, and shares guest RAM with
//! it by passing the RAM's memfds. This crate is that other process for a
//! Rust device model:
//!
//! - [`wire`]: the message format, one table of commands driving decoding;
//!   malformed input is rejected, never a panic.
//! - [`channel`]: reading messages and their descriptors from the socket.
//! - [`memory`]: `SYNC_SYSMEM` → a [`vm_memory::GuestMemoryMmap`] the device
//!   model DMAs through.
//! - [`pci`]: the [`pci::PciFunction`] trait a device model implements, and
//!   BAR address decoding.
//! - [`irq`]: the INTx line: irqfd/resamplefd, and the doorbell-UART workaround
//!   for TCG, where QEMU never delivers the proxy's INTx.
//! - [`server`]: the protocol logic and the event loop.
//! - [`launch`]: starting QEMU and the remote on one socket pair.
//! - [`testdev`]: a test function proving the path against real QEMU.
//! - [`ide`]: vmstor's IDE controller (`vmstor-ata`) as a proxied function.
//!
//! See `docs/guests.md` ("IDE through QEMU's PCI proxy") for how a guest uses
//! it, and `shared/reference/qemu-pci-proxy.md` for the protocol facts and
//! pitfalls this code follows.

pub mod channel;
pub mod ide;
pub mod irq;
pub mod launch;
pub mod memory;
pub mod pci;
pub mod server;
pub mod testdev;
pub mod wire;

#[cfg(any(test, feature = "test-utils"))]
pub mod fuzz;

//! What a device model implements to sit behind the proxy: one PCI function
//! ([`PciFunction`]), and how the remote maps the proxy's absolute BAR
//! addresses onto it ([`decode_bar`]).
//!
//! Contract for implementors:
//! - `config_read`/`config_write` get `size` in {1, 2, 4} and
//!   `offset + size <= 256` (the remote rejects anything else before calling).
//! - `bar_read`/`bar_write` get a BAR index the function declared in
//!   [`PciFunction::bars`], `size` in {1, 2, 4, 8} and
//!   `offset + size <= bar size`; the value of a write is already masked to
//!   `size` bytes. Everything else in the access (which register, what value)
//!   comes from the guest and must be validated by the function.
//! - The function keeps its own configuration registers; the remote reads the
//!   BAR registers through `config_read` to decode addresses, so BARs must read
//!   back as PCI specifies (base address bits, size mask after all-ones,
//!   bit 0 = 1 for I/O).
//! - Interrupts: INTx only (the proxy cannot deliver MSI/MSI-X, so a function
//!   must not advertise them), driven through the [`IrqLine`] it is given.
//! - BARs: 32-bit memory or I/O, I/O BARs of at least 16 bytes (the proxy
//!   sizes I/O BARs as if they were at least 16 bytes), no 64-bit BARs and no
//!   expansion ROM (the proxy probes neither correctly): `qemu-pci-proxy.md` §6.

use std::os::fd::RawFd;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use crate::irq::IrqLine;
use crate::wire::Space;

/// Number of BARs of a type-0 header.
pub const NUM_BARS: usize = 6;
/// Configuration offset of BAR0.
pub const BAR0_OFFSET: u16 = 0x10;

/// The kind of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// I/O space.
    Io,
    /// 32-bit, non-prefetchable memory space.
    Mem32,
}

/// A BAR a function implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarDesc {
    /// Its kind.
    pub kind: BarKind,
    /// Its size in bytes (a power of two).
    pub size: u64,
}

/// One PCI function behind QEMU's `x-pci-proxy-dev`.
pub trait PciFunction: Send {
    /// The BARs the function implements, by index.
    fn bars(&self) -> [Option<BarDesc>; NUM_BARS];
    /// Configuration read of `size` bytes at `offset`.
    fn config_read(&mut self, offset: u16, size: u8) -> u32;
    /// Configuration write of `size` bytes at `offset`.
    fn config_write(&mut self, offset: u16, size: u8, value: u32);
    /// Read of `size` bytes at `offset` in BAR `bar`.
    fn bar_read(&mut self, bar: usize, offset: u64, size: u8) -> u64;
    /// Write of `size` bytes at `offset` in BAR `bar`.
    fn bar_write(&mut self, bar: usize, offset: u64, size: u8, value: u64);
    /// Device reset (machine reset): configuration space and registers return
    /// to their power-on values, the interrupt line drops.
    fn reset(&mut self);
    /// The INTx line to drive (given once, before any other call but `bars`).
    fn set_irq_sink(&mut self, irq: IrqLine);
    /// Guest RAM as the proxy last described it. Called whenever the layout
    /// changes; the function must not keep addresses from an older map.
    fn set_guest_memory(&mut self, mem: Arc<GuestMemoryMmap>);
    /// Descriptors that become readable when the function has work to do
    /// outside a register access (e.g. host I/O completed); the remote then
    /// calls [`PciFunction::poll`]. The function owns them; the remote only
    /// polls them, and asks again after every message.
    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// Processes pending work. Also called after every message.
    fn poll(&mut self) {}
}

/// Maps an access of `size` bytes at the absolute address `addr` in `space`
/// onto `(bar index, offset)`, using the function's current BAR registers.
/// `None` if no enabled BAR of that space contains the whole access (the
/// remote then answers like a master abort: reads return all ones, writes are
/// dropped).
pub fn decode_bar<F: PciFunction + ?Sized>(
    f: &mut F,
    space: Space,
    addr: u64,
    size: u8,
) -> Option<(usize, u64)> {
    let bars = f.bars();
    for (i, bar) in bars.iter().enumerate() {
        let Some(bar) = bar else { continue };
        let want = match space {
            Space::Io => BarKind::Io,
            Space::Memory => BarKind::Mem32,
        };
        if bar.kind != want {
            continue;
        }
        let reg = f.config_read(BAR0_OFFSET + 4 * i as u16, 4);
        let base = match bar.kind {
            BarKind::Io => u64::from(reg & !0x3),
            BarKind::Mem32 => u64::from(reg & !0xf),
        };
        if base == 0 {
            continue; // not assigned
        }
        let Some(offset) = addr.checked_sub(base) else {
            continue;
        };
        if offset
            .checked_add(u64::from(size))
            .is_some_and(|end| end <= bar.size)
        {
            return Some((i, offset));
        }
    }
    None
}

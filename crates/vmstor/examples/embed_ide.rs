//! Embedding the IDE controller in a VMM: attach an ATA disk, route port I/O
//! and the IRQ line, and (as a guest would) read IDENTIFY through the
//! legacy ports. `cargo run -p vmstor --example embed_ide IMG`.

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstor_ata::device::{AtaDevice, DeviceConfig};
use vmstor_ata::ide::{ControllerConfig, IdeController};
use vmstor_hostio::{CacheMode, Disk, DiskOptions, Policy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "embed.img".into());
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?
        .set_len(64 << 20)?;
    let disk = Arc::new(Disk::open(
        path.as_ref(),
        Policy::from_mode(CacheMode::Writeback),
        DiskOptions::default(),
    )?);

    // A PIIX4 function with the disk as primary master; DMA goes to guest memory.
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(
        GuestAddress(0),
        16 << 20,
    )])?);
    let mut ide = IdeController::new(ControllerConfig::piix4(), mem);
    ide.attach(0, 0, AtaDevice::new(disk, DeviceConfig::default()));
    // IRQ 14 for the primary channel (route to the VMM's interrupt controller).
    ide.set_irq_callback(0, Box::new(|level| println!("IRQ14 level {level}")));

    // The VMM's port-I/O handler forwards 1F0h-1F7h, 3F6h, 170h-177h, 376h and
    // the BAR4 bus-master range; PCI config cycles go to pci_config_read/write.
    println!("PCI ID {:08x}", ide.pci_config_read(0, 4));
    ide.io_write(0x1f6, 1, 0xa0); // select master
    ide.io_write(0x1f7, 1, 0xec); // IDENTIFY DEVICE
    let words: Vec<u16> = (0..256)
        .map(|_| ide.io_read(0x1f0, 2).unwrap_or(0) as u16)
        .collect();
    let model: String = words[27..47]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .map(char::from)
        .collect();
    println!("model {:?}", model.trim());
    println!(
        "write cache supported {} enabled {}",
        words[82] & 0x20 != 0,
        words[85] & 0x20 != 0
    );
    println!("FUA commands {}", words[84] & 0x40 != 0);
    Ok(())
}

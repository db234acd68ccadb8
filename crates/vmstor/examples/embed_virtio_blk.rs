//! Embedding the virtio-blk device in a VMM: open the image through hostio,
//! build the device, and forward the transport's events to it. Run with an
//! image path (created if missing): `cargo run -p vmstor --example embed_virtio_blk IMG`.

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{CacheMode, Disk, DiskOptions, ExecutorKind, Policy};
use vmstor_virtio_blk::spec::{device_status as st, VirtioBlkConfig};
use vmstor_virtio_blk::{BlkOptions, InterruptKind, QueueConfig, VirtioBlk};

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

    // 1. The disk: cache policy + host probe + executor. Worker threads
    //    complete I/O off the vCPU thread and signal an eventfd.
    let disk = Arc::new(Disk::open(
        path.as_ref(),
        Policy::from_mode(CacheMode::None),
        DiskOptions {
            executor: ExecutorKind::Threads(2),
            ..Default::default()
        },
    )?);

    // 2. The device, over the VMM's guest memory.
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(
        GuestAddress(0),
        16 << 20,
    )])?);
    let mut dev = VirtioBlk::new(disk.clone(), mem, BlkOptions::default())?;
    dev.set_interrupt(Arc::new(|kind| match kind {
        // Raise the MSI-X vector / INTx of the transport here.
        InterruptKind::Queue(q) => println!("interrupt: queue {q}"),
        InterruptKind::Config => println!("interrupt: config change"),
    }));

    // 3. The transport forwards what the guest driver does. (A real VMM calls
    //    these from its virtio-pci or virtio-mmio register handlers.)
    dev.set_status(st::ACKNOWLEDGE | st::DRIVER);
    dev.set_driver_features(dev.device_features());
    dev.set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK);
    dev.set_queue(
        0,
        QueueConfig {
            size: 256,
            desc_table: GuestAddress(0x10_0000),
            avail_ring: GuestAddress(0x11_0000),
            used_ring: GuestAddress(0x12_0000),
        },
    )?;
    dev.set_queue_ready(0, true)?;
    dev.set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK | st::DRIVER_OK);

    // Config space reads/writes go to read_config/write_config; the guest's
    // `writeback` field is live (writing 0 flushes before it takes effect).
    let mut cfg = [0u8; std::mem::size_of::<VirtioBlkConfig>()];
    dev.read_config(0, &mut cfg);
    let capacity = u64::from_le_bytes(cfg[..8].try_into()?);
    let writeback = cfg[std::mem::offset_of!(VirtioBlkConfig, writeback)];
    println!("capacity {capacity} sectors, writeback {writeback}");

    // 4. The event loop: a queue notification (ioeventfd) calls notify();
    //    the disk's completion eventfd calls process_completions().
    let _queue_kick = || dev.notify(0);
    println!(
        "register disk completion fd {:?} with the event loop",
        disk.notify_fd()
    );
    Ok(())
}

//! Embedding the virtio-scsi controller in a VMM with two SCSI disks (target
//! 0, LUNs 0 and 1), each on its own hostio disk and cache policy.
//! `cargo run -p vmstor --example embed_scsi IMG0 IMG1`.

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstor_hostio::{CacheMode, Disk, DiskOptions, ExecutorKind, Policy};
use vmstor_scsi::ScsiDiskConfig;
use vmstor_virtio_scsi::spec::status as st;
use vmstor_virtio_scsi::{InterruptKind, QueueConfig, ScsiOptions, VirtioScsi};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(
        GuestAddress(0),
        16 << 20,
    )])?);
    let mut hba = VirtioScsi::new(ScsiOptions::default(), mem);
    hba.set_interrupt(Arc::new(|kind| match kind {
        InterruptKind::Queue(q) => println!("interrupt: queue {q}"),
        InterruptKind::Config => println!("interrupt: config change"),
    }));

    // One hostio disk per logical unit, each with its own policy.
    for (lun, mode) in [(0u16, CacheMode::None), (1, CacheMode::Writethrough)] {
        let path = std::env::args()
            .nth(1 + usize::from(lun))
            .unwrap_or_else(|| format!("lun{lun}.img"));
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?
            .set_len(64 << 20)?;
        let opts = DiskOptions {
            executor: ExecutorKind::Threads(2),
            ..Default::default()
        };
        let disk = Arc::new(Disk::open(path.as_ref(), Policy::from_mode(mode), opts)?);
        // Registered with the event loop: on readiness, hba.process_completions().
        let _fd = disk.notify_fd();
        hba.add_disk(0, lun, disk, ScsiDiskConfig::default())
            .ok_or("LUN address taken or out of range")?;
    }

    // The transport forwards the driver's setup: features, status, the
    // control (0), event (1) and request (2..) queues, config accesses.
    hba.set_status(st::ACKNOWLEDGE | st::DRIVER);
    hba.set_driver_features(hba.device_features());
    hba.set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK);
    for q in 0..hba.num_queues() {
        let base = 0x10_0000 + u64::from(q) * 0x1_0000;
        let cfg = QueueConfig {
            size: 128,
            desc_table: GuestAddress(base),
            avail_ring: GuestAddress(base + 0x800),
            used_ring: GuestAddress(base + 0x1000),
        };
        hba.set_queue(q, cfg)?;
        hba.set_queue_ready(q, true)?;
    }
    hba.set_status(st::ACKNOWLEDGE | st::DRIVER | st::FEATURES_OK | st::DRIVER_OK);
    let c = hba.config();
    println!(
        "{} queues, cdb_size {}, max_lun {}",
        hba.num_queues(),
        c.cdb_size.get(),
        c.max_lun.get()
    );

    // Event loop: a kick of queue q calls hba.notify(q); disk completion fds
    // call hba.process_completions(); hot-plug with add_disk/remove_disk
    // raises transport events on the event queue.
    let _kick = |q| hba.notify(q);
    Ok(())
}

//! The host probe on ext4 files, loop devices, and a loop device with
//! `queue/stable_writes=1` (which must make `stable_writes=auto` bounce).

mod common;
use common::*;

use std::io::Write;
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmstor_hostio::probe::probe_path;
use vmstor_hostio::*;

fn tmpfile(size: u64) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    f.as_file_mut().set_len(size).unwrap();
    f.flush().unwrap();
    f
}

fn fstype(p: &std::path::Path) -> String {
    sh("stat", &["-f", "-c", "%T", p.to_str().unwrap()]).unwrap_or_default()
}

#[test]
fn probe_regular_file() {
    let f = tmpfile(3 << 20);
    let r = probe_path(f.path()).unwrap();
    let c = &r.caps;
    assert_eq!(c.kind, BackingKind::File);
    assert_eq!(c.size, 3 << 20);
    assert_eq!(c.logical_block_size, 512);
    assert!(c.dio_offset_align.is_power_of_two() && c.dio_mem_align.is_power_of_two());
    assert!(c.rwf_dsync, "kernel >= 4.7 accepts RWF_DSYNC");
    // Opened read-only: no fallocate trials, so discard/zeroing are off.
    assert!(!c.discard && !c.write_zeroes);
    println!("{} on {}: {:?}", f.path().display(), fstype(f.path()), r);
    if fstype(f.path()) == "ext2/ext3" {
        // ext4 reports STATX_DIOALIGN (host-facts §2).
        assert!(
            r.dio_align_source.contains("STATX_DIOALIGN"),
            "{}",
            r.dio_align_source
        );
    }
    // Whatever the answer, an unknown stable-page fact carries a reason.
    if let Fact::Unknown(why) = &c.stable_pages {
        assert!(!why.is_empty());
    }
    // Opening for writing runs the past-EOF trials and leaves the size alone.
    let d = Disk::open(f.path(), Policy::default(), DiskOptions::default()).unwrap();
    if fstype(f.path()) == "ext2/ext3" {
        assert!(d.caps().discard && d.caps().write_zeroes);
    }
    assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 3 << 20);
}

#[test]
fn probe_rejects_other_file_types() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    assert!(probe_path(dir.path()).is_err());
}

#[test]
fn probe_loop_device_and_stable_writes() {
    let backing = tmpfile(16 << 20);
    let lp = match Loop::new(backing.path(), &[]) {
        Ok(l) => l,
        Err(e) => return skip("probe_loop_device_and_stable_writes", &e),
    };
    let r = probe_path(&lp.dev).unwrap();
    assert_eq!(r.caps.kind, BackingKind::BlockDevice);
    assert_eq!(r.caps.size, 16 << 20);
    assert_eq!(r.caps.logical_block_size, 512);
    assert!(
        r.devices.iter().any(|(n, _)| *n == lp.name()),
        "{:?}",
        r.devices
    );
    assert_eq!(
        r.caps.stable_pages.get(),
        Some(false),
        "{:?}",
        r.caps.stable_pages
    );
    assert_eq!(r.recommended_stable, StableWrites::Trust);

    std::fs::write(lp.sysfs("queue/stable_writes"), "1").unwrap();
    let r = probe_path(&lp.dev).unwrap();
    assert_eq!(r.caps.stable_pages.get(), Some(true));
    assert!(
        r.caps.stable_pages_why.contains(&lp.name()),
        "{}",
        r.caps.stable_pages_why
    );
    assert_eq!(r.recommended_stable, StableWrites::Bounce);

    // auto resolves to bounce: guest memory never reaches the O_DIRECT write.
    let d = Disk::open(
        &lp.dev,
        Policy::from_mode(CacheMode::None),
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let m = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    let c = d.execute(Request::write(
        0,
        DataBuf::Guest(GuestBufs::new(m, vec![(GuestAddress(0), 4096)])),
        false,
        1,
    ));
    assert!(matches!(
        c,
        Ok(Outcome::Done(Completion {
            result: Ok(4096),
            ..
        }))
    ));
    let t = d.trace().take();
    assert_eq!(t[0].op, HostOp::FillBounce { at: 0, len: 4096 });
    assert!(t
        .iter()
        .all(|e| !(matches!(e.op, HostOp::Write { .. }) && e.guest_memory)));
    std::fs::write(lp.sysfs("queue/stable_writes"), "0").unwrap();
}

#[test]
fn probe_file_on_filesystem_on_stable_loop_device() {
    let backing = tmpfile(64 << 20);
    let lp = match Loop::new(backing.path(), &[]) {
        Ok(l) => l,
        Err(e) => return skip("probe_file_on_filesystem_on_stable_loop_device", &e),
    };
    if let Err(e) = sh("mkfs.ext4", &["-q", "-F", lp.dev.to_str().unwrap()]) {
        return skip("probe_file_on_filesystem_on_stable_loop_device", &e);
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mnt = match Mount::new(lp.dev.to_str().unwrap(), &dir.path().join("m"), &[]) {
        Ok(m) => m,
        Err(e) => return skip("probe_file_on_filesystem_on_stable_loop_device", &e),
    };
    let img = mnt.dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    std::fs::write(lp.sysfs("queue/stable_writes"), "1").unwrap();
    let r = probe_path(&img).unwrap();
    assert_eq!(r.caps.stable_pages.get(), Some(true), "{:?}", r.devices);
    assert!(r.caps.stable_pages_why.contains(&lp.name()));
    // The host device facts of the loop device are read too.
    assert!(
        r.caps.host_write_cache.get().is_some(),
        "{:?}",
        r.caps.host_write_cache
    );
    std::fs::write(lp.sysfs("queue/stable_writes"), "0").unwrap();
    let r = probe_path(&img).unwrap();
    assert_eq!(r.caps.stable_pages.get(), Some(false));
    drop(mnt);
}

#[test]
fn probe_4k_loop_device() {
    let backing = tmpfile(8 << 20);
    let lp = match Loop::new(backing.path(), &["-b", "4096"]) {
        Ok(l) => l,
        Err(e) => return skip("probe_4k_loop_device", &e),
    };
    let r = probe_path(&lp.dev).unwrap();
    assert_eq!(r.caps.logical_block_size, 4096);
    assert_eq!(r.caps.dio_offset_align, 4096);
}

/// The I/O size hints come from the sysfs queue of the device under the
/// file system holding the image.
#[test]
fn probe_reads_io_size_hints_of_the_device_below() {
    use std::os::unix::fs::MetadataExt;
    let f = tmpfile(1 << 20);
    let r = vmstor_hostio::probe::probe_path(f.path()).unwrap();
    let dev = std::fs::metadata(f.path()).unwrap().dev();
    let sys = format!(
        "/sys/dev/block/{}:{}/queue",
        libc::major(dev),
        libc::minor(dev)
    );
    let read = |a: &str| {
        std::fs::read_to_string(format!("{sys}/{a}"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    match (read("minimum_io_size"), read("optimal_io_size")) {
        (Some(min), Some(opt)) => {
            assert_eq!((r.caps.io_min, r.caps.io_opt), (min, opt));
            assert!(min >= 512, "a device reports at least a sector: {min}");
        }
        _ => println!("SKIP probe_reads_io_size_hints_of_the_device_below: no {sys} (partition or no block device)"),
    }
}

//! The fdatasync error latch against the real kernel: a file system on a loop
//! device whose backing file lives on a full tmpfs, so data writeback fails
//! with ENOSPC while metadata (already allocated) still works. The kernel
//! reports the error once and then "succeeds"; the engine must keep failing.

mod common;
use common::*;

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::*;

fn done(o: Result<Outcome, RequestError>) -> Result<u64, IoError> {
    match o.expect("valid request") {
        Outcome::Done(c) => c.result,
        Outcome::Held => panic!("held"),
    }
}

#[test]
fn failed_fdatasync_latches_on_the_real_kernel() {
    const T: &str = "failed_fdatasync_latches_on_the_real_kernel";
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tmp = match Mount::new(
        "tmpfs",
        &dir.path().join("t"),
        &["-t", "tmpfs", "-o", "size=24M"],
    ) {
        Ok(m) => m,
        Err(e) => return skip(T, &e),
    };
    let backing = tmp.dir.join("backing");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let lp = match Loop::new(&backing, &[]) {
        Ok(l) => l,
        Err(e) => return skip(T, &e),
    };
    // No journal, eager inode tables: metadata blocks exist in tmpfs now;
    // data blocks written later land in holes of the sparse backing file.
    if let Err(e) = sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=0",
            lp.dev.to_str().unwrap(),
        ],
    ) {
        return skip(T, &e);
    }
    let fs = match Mount::new(lp.dev.to_str().unwrap(), &dir.path().join("f"), &[]) {
        Ok(m) => m,
        Err(e) => return skip(T, &e),
    };
    let img = fs.dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let disk = Disk::open(
        &img,
        Policy {
            errors: ErrorPolicy {
                read: ErrorAction::Report,
                write: ErrorAction::Report,
            },
            ..Policy::from_mode(CacheMode::Writeback)
        },
        DiskOptions {
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Fill the tmpfs that holds the loop device's backing file.
    let _ = sh(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", tmp.dir.join("filler").display()),
            "bs=1M",
        ],
    );

    let m = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    m.write_slice(&[0x5a; 65536], GuestAddress(0)).unwrap();
    let buf = |len| DataBuf::Guest(GuestBufs::new(m.clone(), vec![(GuestAddress(0), len)]));
    assert_eq!(
        done(disk.execute(Request::write(0, buf(65536), false, 1))),
        Ok(65536)
    );
    let first =
        done(disk.execute(Request::flush(2))).expect_err("writeback into a full tmpfs must fail");
    assert!(matches!(first.errno, libc::ENOSPC | libc::EIO), "{first}");
    println!("first flush: {first}");

    // The kernel has reported the error and dropped the dirty pages: a fresh
    // description syncs "successfully" now.
    let other = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(0)
        .open(&img)
        .unwrap();
    assert!(
        other.sync_data().is_ok(),
        "kernel reports the error only once"
    );

    // The engine does not forget: same errno, no matter what follows.
    let again = done(disk.execute(Request::flush(3))).unwrap_err();
    assert_eq!((again.errno, again.latched), (first.errno, true));
    assert_eq!(
        done(disk.execute(Request::write(8192, buf(4096), false, 4))),
        Ok(4096)
    );
    assert_eq!(
        done(disk.execute(Request::flush(5))).unwrap_err().errno,
        first.errno
    );
    let fua = done(disk.execute(Request::write(8192, buf(4096), true, 6))).unwrap_err();
    assert_eq!(fua.errno, first.errno);
    assert_eq!(disk.set_write_cache(false).unwrap_err().errno, first.errno);
    assert_eq!(disk.latched_error(), Some(first.errno));
    let fds = disk
        .trace()
        .take()
        .iter()
        .filter(|e| e.op == HostOp::Fdatasync)
        .count();
    assert_eq!(fds, 1, "latched flushes issue no syscall");
    drop(disk);
    drop(fs);
}

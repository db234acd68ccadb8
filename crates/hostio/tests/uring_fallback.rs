//! Forced fallback: with `VMSTOR_DISABLE_IO_URING=1` at open, a disk asking
//! for io_uring runs the thread pool, says why, and works. (Its own test
//! binary: the variable is process-wide.)

use std::io::Write;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstor_hostio::*;

#[test]
fn disabled_io_uring_falls_back_to_the_thread_pool() {
    let mut img = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    img.as_file_mut().set_len(1 << 20).unwrap();
    img.flush().unwrap();
    std::env::set_var(vmstor_hostio::uring::DISABLE_ENV, "1");
    let d = Disk::open(
        img.path(),
        Policy::from_mode(CacheMode::Writeback),
        DiskOptions {
            executor: ExecutorKind::IO_URING,
            trace: true,
            ..Default::default()
        },
    )
    .unwrap();
    let info = d.executor_info().clone();
    assert_eq!(info.requested, ExecutorKind::IO_URING);
    assert_eq!(info.active, "threads");
    let why = info.fallback.expect("a fallback reason");
    assert!(why.contains("VMSTOR_DISABLE_IO_URING"), "{why}");
    let k = d.counters();
    assert_eq!(k.executor, "threads");
    assert_eq!(k.io_uring_fallback.as_deref(), Some(why.as_str()));
    // The pool does the work.
    let m = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
    m.write_slice(&[5u8; 4096], GuestAddress(0)).unwrap();
    let buf = DataBuf::Guest(GuestBufs::new(m.clone(), vec![(GuestAddress(0), 4096)]));
    d.submit(Request::write(0, buf, false, 1)).unwrap();
    d.submit(Request::flush(2)).unwrap();
    let done = d.drain();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.result.is_ok()));
    assert!(d.notify_fd().is_some());
    // Over a simulated host too: the variable disables the emulated ring.
    let sim = vmstor_hostio::crash::SimFile::new(&[0u8; 4096], false);
    let d = Disk::from_host_file(
        Arc::new(sim),
        HostCaps::simulated(4096),
        Policy::default(),
        DiskOptions {
            executor: ExecutorKind::IO_URING,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(d.executor_info().active, "threads");
}

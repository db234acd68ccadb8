//! Turning the guest write cache off races with writes being submitted: once
//! `set_write_cache(false)` has returned, no write planned as volatile may
//! still be in flight (it would complete after the switch without being
//! durable, breaking "completed while the write cache was off ⇒ durable").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vmstor_hostio::null::NullFile;
use vmstor_hostio::*;

#[test]
fn no_volatile_write_outlives_a_write_cache_disable() {
    let disk = Arc::new(
        Disk::from_host_file(
            Arc::new(NullFile::new()),
            HostCaps::simulated(1 << 20),
            Policy::from_mode(CacheMode::Writeback),
            DiskOptions::default(),
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (disk, stop, done) = (disk.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let buf = DataBuf::Owned(AlignedBuf::new(512));
                    let off = (n % 64 + 64 * w) * 512;
                    disk.execute(Request::write(off, buf, false, n)).unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                n
            })
        })
        .collect();
    // Enough switches to overlap many writes (bounded, whatever the speed).
    let mut i = 0u64;
    while i < 3000 || (done.load(Ordering::Relaxed) < 50_000 && i < 2_000_000) {
        i += 1;
        disk.set_write_cache(true).unwrap();
        disk.set_write_cache(false).unwrap();
        // Only this thread turns the cache back on: every write planned from
        // here is durable, and every volatile one was waited for.
        assert_eq!(disk.volatile_in_flight(), 0, "iteration {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(writes > 0);
}

//! Flush coordinator: decides whether a flush issues, shares or skips an
//! `fdatasync`, and latches the first failure.
//!
//! Rules (each one is a test below and a property in the crash suite):
//! 1. A flush covers every write *completed* before it was submitted. Writes
//!    count as completed (the generation is bumped) when their syscall
//!    returns, before the guest can see the completion, and before any
//!    `fdatasync` issued on their own behalf (emulated FUA) — so that sync
//!    can never be elided (QEMU's write-generation ordering trap). A write
//!    issued with `RWF_DSYNC` is durable when it returns and does not count.
//! 2. Concurrent flushes share one `fdatasync` only if that `fdatasync`
//!    *started* after each of them was submitted (group commit). A sync
//!    already running when a flush arrives does not count for it by itself:
//!    the flush waits for it and then applies rule 3, so it is satisfied
//!    without a new sync only if no write completed in between.
//! 3. A flush is skipped only when no write, discard or zeroing completed
//!    since the start of the last successful `fdatasync`.
//! 4. A failed `fdatasync` latches: every later flush (and, via
//!    [`FlushCoordinator::latched`], every durable write) fails with the
//!    original errno until the disk is reopened. A failed `RWF_DSYNC` write
//!    latches too when volatile writes were outstanding
//!    ([`FlushCoordinator::latch_if_dirty`]). The kernel reports a
//!    writeback error once per open file and drops the dirty pages, so a later
//!    "successful" sync would be a lie (`host-facts.md` §4).

use std::io;
use std::sync::{Condvar, Mutex};

/// How a flush was satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// This flush ran the `fdatasync`.
    Synced,
    /// Another flush's `fdatasync`, started after this one was submitted,
    /// covered it.
    Shared,
    /// Nothing completed since the last successful `fdatasync`.
    Elided,
    /// This flush's own `fdatasync` failed with this errno (now latched).
    Failed(i32),
    /// An earlier `fdatasync` failed; this is its latched errno.
    Latched(i32),
}

#[derive(Debug, Default)]
struct State {
    /// Completed modifying ops.
    write_gen: u64,
    /// `write_gen` sampled at the start of the last successful sync.
    synced_gen: u64,
    rounds_started: u64,
    rounds_done: u64,
    running: bool,
    latched: Option<i32>,
    /// Flushes currently inside [`FlushCoordinator::flush`].
    inside: usize,
}

/// Known-bad behaviours that the crash/property suite must detect. Only for
/// tests of the tests; every field defaults to off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Sabotage {
    /// Let a flush share an `fdatasync` that started before it.
    pub share_running_sync: bool,
    /// Forget failures: no latch.
    pub no_latch: bool,
    /// Under `O_DIRECT`, complete flushes without `fdatasync` ("O_DIRECT is
    /// durable" fallacy).
    pub skip_flush_when_direct: bool,
    /// Ignore the guest write cache being off: writes stay volatile.
    pub wce_off_not_fua: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct FlushCoordinator {
    state: Mutex<State>,
    cv: Condvar,
    sabotage: Sabotage,
}

impl FlushCoordinator {
    /// A coordinator with the given (test-only) sabotage switches.
    pub fn with_sabotage(sabotage: Sabotage) -> FlushCoordinator {
        FlushCoordinator {
            sabotage,
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that a modifying op completed (call after the syscall returned
    /// successfully and before the completion is reported).
    pub fn write_completed(&self) {
        self.lock().write_gen += 1;
    }

    /// The latched errno, if any.
    pub fn latched(&self) -> Option<i32> {
        self.lock().latched
    }

    /// A durable (`RWF_DSYNC`) write failed with `errno`. Its sync half may
    /// have consumed the file's writeback error for *other* dirty data, so
    /// latch — but only if volatile writes completed since the last
    /// successful sync: with nothing outstanding, the failure concerns this
    /// write alone (e.g. ENOSPC allocating its blocks), and a retry after
    /// the operator frees space must be able to succeed.
    pub fn latch_if_dirty(&self, errno: i32) {
        if self.sabotage.no_latch {
            return;
        }
        let mut s = self.lock();
        if s.latched.is_none() && s.write_gen > s.synced_gen {
            s.latched = Some(errno);
        }
    }

    /// Clears the latch (only when the image was reopened).
    pub fn clear_latch(&self) {
        self.lock().latched = None;
    }

    /// Performs a flush, calling `sync` (the `fdatasync`) when rules 1-3
    /// require one.
    ///
    /// The flush records the write generation at submission and is satisfied
    /// once a successful sync whose sampled generation covers it completes.
    /// A sync running at submission is waited for and then judged by rule 3:
    /// it covers this flush only if no write completed between its start and
    /// this submission; otherwise a new sync starts.
    pub fn flush(&self, sync: impl FnOnce() -> io::Result<()>) -> FlushOutcome {
        self.lock().inside += 1;
        let r = self.flush_inner(sync);
        self.lock().inside -= 1;
        r
    }

    /// How many flushes are inside the coordinator right now (tests use it
    /// to order concurrent flushes deterministically).
    pub fn flushes_inside(&self) -> usize {
        self.lock().inside
    }

    fn flush_inner(&self, sync: impl FnOnce() -> io::Result<()>) -> FlushOutcome {
        let mut s = self.lock();
        let submit_gen = s.write_gen;
        let mut sync = Some(sync);
        let mut ran = false;
        let mut waited = false;
        if self.sabotage.share_running_sync && s.running {
            // Known-bad: accept the running sync whatever it sampled.
            let round = s.rounds_started;
            while s.rounds_done < round {
                s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            return match s.latched {
                Some(e) => FlushOutcome::Latched(e),
                None => FlushOutcome::Shared,
            };
        }
        loop {
            if let Some(e) = s.latched {
                return FlushOutcome::Latched(e);
            }
            if s.synced_gen >= submit_gen {
                return if ran {
                    FlushOutcome::Synced
                } else if waited {
                    FlushOutcome::Shared
                } else {
                    FlushOutcome::Elided
                };
            }
            if s.running {
                waited = true;
                s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.running = true;
            s.rounds_started += 1;
            let round = s.rounds_started;
            let gen = s.write_gen;
            drop(s);
            let r = match sync.take() {
                Some(f) => f(),
                // Our own sync already ran and did not cover us: impossible,
                // since it sampled a generation >= submit_gen.
                None => Ok(()),
            };
            ran = true;
            s = self.lock();
            s.running = false;
            s.rounds_done = round;
            match r {
                Ok(()) => s.synced_gen = s.synced_gen.max(gen),
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    if !self.sabotage.no_latch && s.latched.is_none() {
                        s.latched = Some(errno);
                    }
                    self.cv.notify_all();
                    return FlushOutcome::Failed(errno);
                }
            }
            self.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn elides_only_when_nothing_completed() {
        let c = FlushCoordinator::default();
        let n = AtomicU32::new(0);
        let sync = || {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        assert_eq!(c.flush(sync), FlushOutcome::Elided);
        c.write_completed();
        assert_eq!(c.flush(sync), FlushOutcome::Synced);
        assert_eq!(c.flush(sync), FlushOutcome::Elided);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failure_latches_with_original_errno() {
        let c = FlushCoordinator::default();
        c.write_completed();
        let r = c.flush(|| Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(r, FlushOutcome::Failed(libc::ENOSPC));
        // Nothing new was written and the next sync would "succeed": still fails.
        assert_eq!(c.flush(|| Ok(())), FlushOutcome::Latched(libc::ENOSPC));
        c.write_completed();
        assert_eq!(c.flush(|| Ok(())), FlushOutcome::Latched(libc::ENOSPC));
        assert_eq!(c.latched(), Some(libc::ENOSPC));
    }

    #[test]
    fn no_latch_sabotage_forgets() {
        let c = FlushCoordinator::with_sabotage(Sabotage {
            no_latch: true,
            ..Default::default()
        });
        c.write_completed();
        let _ = c.flush(|| Err(io::Error::from_raw_os_error(libc::EIO)));
        assert_eq!(c.flush(|| Ok(())), FlushOutcome::Synced);
    }

    /// A flush submitted while a sync is running must wait for a new sync.
    #[test]
    fn running_sync_is_not_shared_with_later_flush() {
        let c = Arc::new(FlushCoordinator::default());
        let syncs = Arc::new(AtomicU32::new(0));
        c.write_completed();
        let entered = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let t = {
            let (c, syncs, entered, release) =
                (c.clone(), syncs.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                c.flush(|| {
                    entered.wait();
                    release.wait();
                    syncs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        entered.wait();
        // A write completes while the first sync runs; then a second flush.
        c.write_completed();
        let t2 = {
            let (c, syncs) = (c.clone(), syncs.clone());
            std::thread::spawn(move || {
                c.flush(|| {
                    syncs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        release.wait();
        assert_eq!(t.join().unwrap(), FlushOutcome::Synced);
        assert_eq!(t2.join().unwrap(), FlushOutcome::Synced);
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
    }

    fn race(sabotage: Sabotage, write_between: bool) -> (FlushOutcome, u32) {
        let c = Arc::new(FlushCoordinator::with_sabotage(sabotage));
        let syncs = Arc::new(AtomicU32::new(0));
        c.write_completed();
        let entered = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let t = {
            let (c, syncs, entered, release) =
                (c.clone(), syncs.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                c.flush(|| {
                    entered.wait();
                    release.wait();
                    syncs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        entered.wait();
        if write_between {
            c.write_completed();
        }
        let t2 = {
            let (c, syncs) = (c.clone(), syncs.clone());
            std::thread::spawn(move || {
                c.flush(|| {
                    syncs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        release.wait();
        t.join().unwrap();
        (t2.join().unwrap(), syncs.load(Ordering::SeqCst))
    }

    /// Two flushes after one write: the second waits for the running sync,
    /// which covered everything, and needs no sync of its own.
    #[test]
    fn concurrent_flushes_after_one_write_share_one_sync() {
        assert_eq!(race(Sabotage::default(), false), (FlushOutcome::Shared, 1));
    }

    /// The known-bad group commit accepts a running sync that missed a write.
    #[test]
    fn sabotaged_group_commit_skips_needed_sync() {
        let bad = Sabotage {
            share_running_sync: true,
            ..Default::default()
        };
        assert_eq!(race(bad, true), (FlushOutcome::Shared, 1));
        assert_eq!(race(Sabotage::default(), true), (FlushOutcome::Synced, 2));
    }
}

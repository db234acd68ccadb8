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
use std::sync::{Condvar, Mutex, OnceLock};

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

/// Callback run when a blocking-path sync ends.
type Waker = Box<dyn Fn() + Send + Sync>;

/// See the module docs.
#[derive(Default)]
pub struct FlushCoordinator {
    state: Mutex<State>,
    cv: Condvar,
    sabotage: Sabotage,
    waker: OnceLock<Waker>,
}

impl std::fmt::Debug for FlushCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushCoordinator")
            .field("state", &*self.lock())
            .field("sabotage", &self.sabotage)
            .finish()
    }
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
    /// require one. Blocks (condvar) while another sync runs.
    ///
    /// The flush records the write generation at submission and is satisfied
    /// once a successful sync whose sampled generation covers it completes.
    /// A sync running at submission is waited for and then judged by rule 3:
    /// it covers this flush only if no write completed between its start and
    /// this submission; otherwise a new sync starts.
    ///
    /// Built on the non-blocking step API ([`FlushCoordinator::begin`],
    /// [`FlushCoordinator::step`], [`FlushCoordinator::sync_done`]) that the
    /// io_uring executor uses, so both follow the same rules.
    pub fn flush(&self, sync: impl FnOnce() -> io::Result<()>) -> FlushOutcome {
        let mut t = self.begin();
        let mut sync = Some(sync);
        let mut s = self.lock();
        loop {
            match self.step_locked(&mut s, &mut t) {
                FlushStep::Done(o) => return o,
                FlushStep::Busy => s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                FlushStep::Start { round, gen } => {
                    drop(s);
                    let r = match sync.take() {
                        Some(f) => f(),
                        // Our own sync already ran and did not cover us:
                        // impossible, it sampled a generation >= ours.
                        None => Ok(()),
                    };
                    let done = self.sync_done(&mut t, round, gen, r.map_err(|e| errno_of(&e)));
                    // A flush parked by a non-blocking caller may be waiting
                    // for this sync to end.
                    if let Some(w) = self.waker.get() {
                        w();
                    }
                    if let Some(o) = done {
                        return o;
                    }
                    s = self.lock();
                }
            }
        }
    }

    /// How many flushes are inside the coordinator right now (tests use it
    /// to order concurrent flushes deterministically).
    pub fn flushes_inside(&self) -> usize {
        self.lock().inside
    }

    /// Syncs finished so far (successful or not). A non-blocking caller that
    /// saw [`FlushStep::Busy`] compares this before parking: if it moved, it
    /// steps again instead of waiting for a wake-up that already happened.
    pub fn rounds_done(&self) -> u64 {
        self.lock().rounds_done
    }

    /// Registers a callback run after every sync issued through the
    /// blocking [`FlushCoordinator::flush`] ends, so an executor with parked
    /// flushes (io_uring) retries them. Only the first call takes effect.
    pub fn set_waker(&self, waker: Box<dyn Fn() + Send + Sync>) {
        let _ = self.waker.set(waker);
    }

    /// Starts a flush (non-blocking API): samples the write generation. The
    /// flush counts in [`FlushCoordinator::flushes_inside`] until a step
    /// returns [`FlushStep::Done`] or [`FlushCoordinator::sync_done`] returns
    /// an outcome.
    pub fn begin(&self) -> FlushTicket {
        let mut s = self.lock();
        s.inside += 1;
        FlushTicket {
            submit_gen: s.write_gen,
            // Known-bad: remember the running sync, to accept it whatever it
            // sampled.
            stale_round: (self.sabotage.share_running_sync && s.running)
                .then_some(s.rounds_started),
            ran: false,
            waited: false,
            finished: false,
        }
    }

    /// Advances a flush without blocking: it is satisfied
    /// ([`FlushStep::Done`]), must wait for the running sync to end
    /// ([`FlushStep::Busy`]: step again after it did), or must issue a sync
    /// itself ([`FlushStep::Start`]: then report it with
    /// [`FlushCoordinator::sync_done`]).
    pub fn step(&self, t: &mut FlushTicket) -> FlushStep {
        let mut s = self.lock();
        self.step_locked(&mut s, t)
    }

    fn step_locked(&self, s: &mut State, t: &mut FlushTicket) -> FlushStep {
        if t.finished {
            // A misuse (stepping a finished flush) must not unbalance
            // `inside`; report the latch or success.
            return FlushStep::Done(match s.latched {
                Some(e) => FlushOutcome::Latched(e),
                None => FlushOutcome::Elided,
            });
        }
        let o = if let Some(round) = t.stale_round {
            if s.rounds_done < round {
                return FlushStep::Busy;
            }
            match s.latched {
                Some(e) => FlushOutcome::Latched(e),
                None => FlushOutcome::Shared,
            }
        } else if let Some(e) = s.latched {
            FlushOutcome::Latched(e)
        } else if s.synced_gen >= t.submit_gen {
            if t.ran {
                FlushOutcome::Synced
            } else if t.waited {
                FlushOutcome::Shared
            } else {
                FlushOutcome::Elided
            }
        } else if s.running {
            t.waited = true;
            return FlushStep::Busy;
        } else {
            s.running = true;
            s.rounds_started += 1;
            return FlushStep::Start {
                round: s.rounds_started,
                gen: s.write_gen,
            };
        };
        t.finished = true;
        s.inside -= 1;
        FlushStep::Done(o)
    }

    /// Reports the end of the sync a [`FlushStep::Start`] asked for, with
    /// its errno on failure. Returns the flush's outcome when the failure
    /// decided it ([`FlushOutcome::Failed`]); `None` means step again.
    pub fn sync_done(
        &self,
        t: &mut FlushTicket,
        round: u64,
        gen: u64,
        result: Result<(), i32>,
    ) -> Option<FlushOutcome> {
        let mut s = self.lock();
        s.running = false;
        s.rounds_done = round;
        t.ran = true;
        let out = match result {
            Ok(()) => {
                s.synced_gen = s.synced_gen.max(gen);
                None
            }
            Err(errno) => {
                if !self.sabotage.no_latch && s.latched.is_none() {
                    s.latched = Some(errno);
                }
                if !t.finished {
                    t.finished = true;
                    s.inside -= 1;
                }
                Some(FlushOutcome::Failed(errno))
            }
        };
        self.cv.notify_all();
        out
    }
}

fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// One flush in progress through the non-blocking API
/// ([`FlushCoordinator::begin`]).
#[derive(Debug)]
pub struct FlushTicket {
    submit_gen: u64,
    stale_round: Option<u64>,
    ran: bool,
    waited: bool,
    finished: bool,
}

/// What a flush must do next (see [`FlushCoordinator::step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushStep {
    /// The flush is decided.
    Done(FlushOutcome),
    /// A sync is running; step again once it ended.
    Busy,
    /// Issue the sync now and report it with [`FlushCoordinator::sync_done`].
    Start {
        /// The sync's round number.
        round: u64,
        /// The write generation it covers.
        gen: u64,
    },
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

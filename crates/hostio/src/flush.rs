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
//!    it covers the flush only by rule 3 (no write completed between its
//!    start and the flush's submission); otherwise the flush starts a sync
//!    of its own, or waits for room for one (see "Several syncs in flight").
//! 3. A flush is skipped only when no write, discard or zeroing completed
//!    since the start of the last successful `fdatasync`.
//! 4. A failed `fdatasync` latches: every later flush (and, via
//!    [`FlushCoordinator::latched`], every durable write) fails with the
//!    original errno until the disk is reopened. A failed `RWF_DSYNC` write
//!    latches too when volatile writes were outstanding
//!    ([`FlushCoordinator::latch_if_dirty`]). The kernel reports a
//!    writeback error once per open file and drops the dirty pages, so a later
//!    "successful" sync would be a lie (`host-facts.md` §4).
//!
//! ## Waiting
//! A blocking flush that must wait parks its thread. When a sync ends, only
//! the parked flushes it decided are unparked, plus one that must now start
//! the next sync (which will cover the rest): with 32 streams on 2 CPUs,
//! waking every waiter at every sync's end cost more CPU than the sync.
//! Non-blocking callers (io_uring) park their requests instead and step
//! them when [`FlushCoordinator::rounds_done`] moves.
//!
//! ## Several syncs in flight
//!
//! Up to a limit of `fdatasync`s run at once
//! ([`crate::DiskOptions::max_syncs_in_flight`]; [`DEFAULT_MAX_SYNCS`] by
//! default, at most [`MAX_SYNCS_IN_FLIGHT`]), on the theory that the block
//! layer merges concurrent cache flushes. Each sync samples the write generation when it starts; a
//! flush that finds no running or finished sync whose sample covers its
//! submission starts one if there is room, and otherwise waits for one to
//! end and decides again.
//!
//! A sync's success is not believed the moment it returns. The kernel hands
//! a writeback error to the *first* `fdatasync` on the file description that
//! checks after the error was recorded; with syncs overlapping, another sync
//! may take the error for pages this one was meant to cover and this one
//! returns 0. So a successful sync is only *committed* (the covered
//! generation advances, rule 3's "last successful sync") once every sync
//! started before it returned has reported too: if any of them failed, the
//! latch (rule 4) is set first, and every flush that was waiting — the ones
//! that sync's success alone would have satisfied included — fails. A
//! later-started sync that finishes first therefore waits for the earlier
//! ones, and the covered generation is always the sample of a sync whose
//! success is committed. With one sync at a time this is exactly the old
//! serial coordinator.

use std::io;
use std::sync::{Condvar, Mutex, OnceLock};

/// The most `fdatasync`s a coordinator may be allowed to run at once (see
/// the module docs).
pub const MAX_SYNCS_IN_FLIGHT: usize = 4;

/// How many `fdatasync`s a coordinator runs at once unless told otherwise:
/// one. On the 2-vCPU ext4-on-virtio project machine, 2 or 4 concurrent
/// syncs did not raise the 32-stream flush storm's throughput and issued
/// 1.5-2.5x the `fdatasync`s (`docs/performance.md`): a success must wait
/// for every overlapping sync before it counts, which adds latency.
pub const DEFAULT_MAX_SYNCS: usize = 1;

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
    /// `write_gen` sampled at the start of the committed successful sync
    /// that sampled the most.
    synced_gen: u64,
    rounds_started: u64,
    /// Syncs that ended (successfully or not), in any order.
    rounds_done: u64,
    /// Syncs running: (round, sampled generation).
    running: Vec<(u64, u64)>,
    /// Successful syncs not yet committed: (`rounds_started` when it
    /// ended, sampled generation). Committed once no sync of a round up to
    /// the first is still running.
    pending: Vec<(u64, u64)>,
    latched: Option<i32>,
    /// Flushes currently inside [`FlushCoordinator::flush`].
    inside: usize,
    /// Blocking flushes parked until a sync's end decides them.
    parked: Vec<Parked>,
    next_parked: u64,
}

/// A blocking flush waiting in [`FlushCoordinator::flush`].
#[derive(Debug)]
struct Parked {
    id: u64,
    submit_gen: u64,
    stale_round: Option<u64>,
    thread: std::thread::Thread,
}

impl State {
    /// Whether sync `round` is still running.
    fn is_running(&self, round: u64) -> bool {
        self.running.iter().any(|&(r, _)| r == round)
    }

    /// Commits the pending successes that no running sync can have taken an
    /// error from (every sync started before they ended has ended).
    fn commit(&mut self) {
        let oldest = self.running.iter().map(|&(r, _)| r).min();
        let mut synced = self.synced_gen;
        self.pending.retain(|&(horizon, gen)| {
            if oldest.is_some_and(|o| o <= horizon) {
                return true;
            }
            synced = synced.max(gen);
            false
        });
        self.synced_gen = synced;
    }

    /// Whether a flush stepped now would get [`FlushStep::Busy`] (the
    /// predicate of [`FlushCoordinator::step`]).
    fn busy(&self, submit_gen: u64, stale_round: Option<u64>, max_syncs: usize) -> bool {
        match stale_round {
            Some(r) => self.is_running(r),
            None => {
                self.latched.is_none()
                    && self.synced_gen < submit_gen
                    && (self.coming(submit_gen) || self.running.len() >= max_syncs)
            }
        }
    }

    /// Unparks the blocking flushes a sync's end decided, and one that must
    /// now start a sync (that sync will cover the others still waiting:
    /// their generations were sampled before it starts). The rest stay
    /// parked, so a sync's end wakes the flushes it concerns instead of
    /// every waiter.
    fn wake_decided(&mut self, max_syncs: usize) {
        let mut parked = std::mem::take(&mut self.parked);
        let mut starter = false;
        parked.retain(|p| {
            if self.busy(p.submit_gen, p.stale_round, max_syncs) {
                return true;
            }
            let decided = p.stale_round.is_some()
                || self.latched.is_some()
                || self.synced_gen >= p.submit_gen;
            if !decided {
                if starter {
                    return true;
                }
                starter = true;
            }
            p.thread.unpark();
            false
        });
        self.parked = parked;
    }

    /// Whether a running or pending sync will cover generation `gen` if it
    /// succeeds.
    fn coming(&self, gen: u64) -> bool {
        self.running.iter().any(|&(_, g)| g >= gen) || self.pending.iter().any(|&(_, g)| g >= gen)
    }
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

/// See [`FlushCoordinator::set_progress`].
pub type Progress = Box<dyn Fn(&dyn Fn() -> bool) -> bool + Send + Sync>;

/// See the module docs.
pub struct FlushCoordinator {
    state: Mutex<State>,
    cv: Condvar,
    sabotage: Sabotage,
    waker: OnceLock<Waker>,
    progress: OnceLock<Progress>,
    max_syncs: usize,
}

impl Default for FlushCoordinator {
    fn default() -> FlushCoordinator {
        FlushCoordinator::with_sabotage(Sabotage::default())
    }
}

impl std::fmt::Debug for FlushCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushCoordinator")
            .field("state", &*self.lock())
            .field("sabotage", &self.sabotage)
            .field("max_syncs", &self.max_syncs)
            .finish()
    }
}

impl FlushCoordinator {
    /// A coordinator with the given (test-only) sabotage switches.
    pub fn with_sabotage(sabotage: Sabotage) -> FlushCoordinator {
        FlushCoordinator::with_limits(sabotage, DEFAULT_MAX_SYNCS)
    }

    /// A coordinator running at most `max_syncs` `fdatasync`s at once
    /// (clamped to 1..=[`MAX_SYNCS_IN_FLIGHT`]; 0 means
    /// [`DEFAULT_MAX_SYNCS`]); 1 is the serial coordinator.
    pub fn with_limits(sabotage: Sabotage, max_syncs: usize) -> FlushCoordinator {
        let max_syncs = match max_syncs {
            0 => DEFAULT_MAX_SYNCS,
            n => n.min(MAX_SYNCS_IN_FLIGHT),
        };
        FlushCoordinator {
            state: Mutex::default(),
            cv: Condvar::new(),
            sabotage,
            waker: OnceLock::new(),
            progress: OnceLock::new(),
            max_syncs,
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
    /// require one. Blocks (condvar) while it waits for syncs to end.
    ///
    /// The flush records the write generation at submission and is satisfied
    /// once a successful sync whose sampled generation covers it is
    /// committed. A sync running at submission covers it only if no write
    /// completed between that sync's start and this submission; otherwise a
    /// new sync starts (when fewer than the limit run) or the flush waits
    /// for one to end and decides again.
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
                FlushStep::Busy => {
                    let seen = s.rounds_done;
                    match self.progress.get() {
                        // The executor reaps the sync's completion itself.
                        Some(p) => {
                            drop(s);
                            if !p(&|| self.rounds_done() != seen) {
                                s = self.lock();
                                if s.rounds_done == seen {
                                    s = self.wait_briefly(s);
                                }
                                continue;
                            }
                            s = self.lock();
                        }
                        None => s = self.park(s, &t),
                    }
                }
                FlushStep::Start { round, gen } => {
                    drop(s);
                    let r = match sync.take() {
                        Some(f) => f(),
                        // A flush starts at most one sync: once its own
                        // sync ran, a sync sampling at least its generation
                        // is running or pending until it is decided.
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

    /// How many `fdatasync`s are running right now.
    pub fn syncs_running(&self) -> usize {
        self.lock().running.len()
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

    /// Registers how the blocking [`FlushCoordinator::flush`] waits for a
    /// sync to end when the executor's completions are reaped by whoever
    /// waits (io_uring): the callback blocks until its condition holds,
    /// reaping meanwhile, and returns false if it cannot (the executor is
    /// gone; the flush then waits on its condition variable). Only the first
    /// call takes effect.
    pub fn set_progress(&self, progress: Progress) {
        let _ = self.progress.set(progress);
    }

    /// Parks the calling flush until a sync's end unparks it (see
    /// `State::wake_decided`). A bounded park, so even a missed unpark
    /// costs a retry, not a hang.
    fn park<'a>(
        &'a self,
        mut s: std::sync::MutexGuard<'a, State>,
        t: &FlushTicket,
    ) -> std::sync::MutexGuard<'a, State> {
        let id = s.next_parked;
        s.next_parked += 1;
        s.parked.push(Parked {
            id,
            submit_gen: t.submit_gen,
            stale_round: t.stale_round,
            thread: std::thread::current(),
        });
        loop {
            drop(s);
            std::thread::park_timeout(std::time::Duration::from_millis(20));
            s = self.lock();
            match s.parked.iter().position(|p| p.id == id) {
                None => return s,
                Some(i) if !s.busy(t.submit_gen, t.stale_round, self.max_syncs) => {
                    // Timed out although it could go on: step again.
                    s.parked.swap_remove(i);
                    return s;
                }
                Some(_) => {}
            }
        }
    }

    fn wait_briefly<'a>(
        &'a self,
        s: std::sync::MutexGuard<'a, State>,
    ) -> std::sync::MutexGuard<'a, State> {
        self.cv
            .wait_timeout(s, std::time::Duration::from_millis(10))
            .unwrap_or_else(|e| e.into_inner())
            .0
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
            // Known-bad: remember the latest running sync, to accept it
            // whatever it sampled.
            stale_round: if self.sabotage.share_running_sync {
                s.running.iter().map(|&(r, _)| r).max()
            } else {
                None
            },
            ran: false,
            waited: false,
            finished: false,
        }
    }

    /// Advances a flush without blocking: it is satisfied
    /// ([`FlushStep::Done`]), must wait for a running sync to end
    /// ([`FlushStep::Busy`]: step again after one did), or must issue a sync
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
            if s.is_running(round) {
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
        } else if s.coming(t.submit_gen) || s.running.len() >= self.max_syncs {
            // A sync that will cover this flush is running or awaits
            // commit, or there is no room for another: wait.
            t.waited = true;
            return FlushStep::Busy;
        } else {
            s.rounds_started += 1;
            let (round, gen) = (s.rounds_started, s.write_gen);
            s.running.push((round, gen));
            return FlushStep::Start { round, gen };
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
        if let Some(i) = s.running.iter().position(|&(r, _)| r == round) {
            s.running.swap_remove(i);
        }
        s.rounds_done += 1;
        t.ran = true;
        let out = match result {
            Ok(()) => {
                let horizon = s.rounds_started;
                s.pending.push((horizon, gen));
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
        s.commit();
        s.wake_decided(self.max_syncs);
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

    /// Many blocking flushes at once (each after its own write): every
    /// flush returns only once a sync that sampled its write has succeeded,
    /// syncs are shared (group commit with only the decided flushes woken
    /// at a sync's end), and nobody is left parked.
    #[test]
    fn storm_of_blocking_flushes_each_covered_and_grouped() {
        use std::sync::Mutex;
        for max_syncs in [1, 2, 4] {
            let c = Arc::new(FlushCoordinator::with_limits(
                Sabotage::default(),
                max_syncs,
            ));
            // (writes completed, highest write count a finished sync sampled)
            let book = Arc::new(Mutex::new((0u64, 0u64)));
            let syncs = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..16)
                .map(|_| {
                    let (c, book, syncs) = (c.clone(), book.clone(), syncs.clone());
                    std::thread::spawn(move || {
                        for _ in 0..40 {
                            let mine = {
                                let mut b = book.lock().unwrap();
                                c.write_completed();
                                b.0 += 1;
                                b.0
                            };
                            let o = c.flush(|| {
                                let sampled = book.lock().unwrap().0;
                                std::thread::sleep(std::time::Duration::from_micros(300));
                                syncs.fetch_add(1, Ordering::SeqCst);
                                let mut b = book.lock().unwrap();
                                b.1 = b.1.max(sampled);
                                Ok(())
                            });
                            assert!(
                                matches!(o, FlushOutcome::Synced | FlushOutcome::Shared),
                                "{o:?}"
                            );
                            let durable = book.lock().unwrap().1;
                            assert!(durable >= mine, "write {mine} not covered ({durable})");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let n = syncs.load(Ordering::SeqCst);
            assert!(
                n < 16 * 40 / 2,
                "{n} syncs for 640 flushes (max {max_syncs})"
            );
            assert_eq!(c.flushes_inside(), 0);
            assert!(c.lock().parked.is_empty());
        }
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

    /// Step-API driver: a flush that must issue a sync; returns its ticket
    /// and the sync's round and generation.
    fn started(c: &FlushCoordinator) -> (FlushTicket, u64, u64) {
        let mut t = c.begin();
        match c.step(&mut t) {
            FlushStep::Start { round, gen } => (t, round, gen),
            other => panic!("expected Start, got {other:?}"),
        }
    }

    /// A write, a flush that starts a sync, another write, and a second
    /// flush that starts a second sync while the first runs.
    #[allow(clippy::type_complexity)]
    fn two_syncs(c: &FlushCoordinator) -> ((FlushTicket, u64, u64), (FlushTicket, u64, u64)) {
        c.write_completed();
        let first = started(c);
        c.write_completed();
        (first, started(c))
    }

    /// A flush submitted after a write that a running sync missed starts a
    /// second sync at once instead of waiting for the first.
    #[test]
    fn second_sync_starts_while_first_runs() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 4);
        let ((mut t1, r1, g1), (mut t2, r2, g2)) = two_syncs(&c);
        assert!(g2 > g1);
        assert_eq!(c.syncs_running(), 2);
        assert_eq!(c.sync_done(&mut t1, r1, g1, Ok(())), None);
        // t2's sync, running when t1's returned, may have taken t1's error:
        // t1 waits for it.
        assert_eq!(c.step(&mut t1), FlushStep::Busy);
        assert_eq!(c.step(&mut t2), FlushStep::Busy);
        assert_eq!(c.sync_done(&mut t2, r2, g2, Ok(())), None);
        assert_eq!(c.step(&mut t1), FlushStep::Done(FlushOutcome::Synced));
        assert_eq!(c.step(&mut t2), FlushStep::Done(FlushOutcome::Synced));
        assert_eq!(c.flushes_inside(), 0);
    }

    /// A later-started sync that succeeds first is not believed until every
    /// sync started before it returned has ended: the earlier one may have
    /// taken the writeback error for the pages both were to cover.
    #[test]
    fn later_sync_success_waits_for_earlier_sync() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 4);
        let ((mut t1, r1, g1), (mut t2, r2, g2)) = two_syncs(&c);
        assert_eq!(c.sync_done(&mut t2, r2, g2, Ok(())), None);
        // Not committed: no flush may pass on it yet, not even a new one
        // (which waits for it rather than starting a third sync).
        assert_eq!(c.step(&mut t2), FlushStep::Busy);
        let mut t3 = c.begin();
        assert_eq!(c.step(&mut t3), FlushStep::Busy);
        assert_eq!(c.syncs_running(), 1);
        assert_eq!(c.sync_done(&mut t1, r1, g1, Ok(())), None);
        assert_eq!(c.step(&mut t1), FlushStep::Done(FlushOutcome::Synced));
        assert_eq!(c.step(&mut t2), FlushStep::Done(FlushOutcome::Synced));
        assert_eq!(c.step(&mut t3), FlushStep::Done(FlushOutcome::Shared));
        // Rule 3 against the committed sync that sampled the most.
        assert_eq!(c.flush(|| panic!("nothing to sync")), FlushOutcome::Elided);
    }

    /// The earlier sync fails after the later one succeeded: the failure
    /// latches and every waiter fails, including the flush whose own sync
    /// "succeeded" (its error may have gone to the other sync).
    #[test]
    fn earlier_sync_failure_fails_later_success() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 4);
        let ((mut t1, r1, g1), (mut t2, r2, g2)) = two_syncs(&c);
        let mut t3 = c.begin();
        assert_eq!(c.sync_done(&mut t2, r2, g2, Ok(())), None);
        assert_eq!(c.step(&mut t3), FlushStep::Busy);
        assert_eq!(
            c.sync_done(&mut t1, r1, g1, Err(libc::EIO)),
            Some(FlushOutcome::Failed(libc::EIO))
        );
        let latched = FlushStep::Done(FlushOutcome::Latched(libc::EIO));
        assert_eq!(c.step(&mut t2), latched);
        assert_eq!(c.step(&mut t3), latched);
        assert_eq!(c.flushes_inside(), 0);
        assert_eq!(c.latched(), Some(libc::EIO));
    }

    /// A later sync failing while an earlier one's success is pending:
    /// the earlier success commits only once the later sync ended, and then
    /// the latch has already been set, so nothing passes on it.
    #[test]
    fn later_sync_failure_fails_pending_earlier_success() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 4);
        let ((mut t1, r1, g1), (mut t2, r2, g2)) = two_syncs(&c);
        // t1's sync returns first, but t2's sync started before that and
        // may yet report the error for t1's pages.
        assert_eq!(c.sync_done(&mut t1, r1, g1, Ok(())), None);
        assert_eq!(c.step(&mut t1), FlushStep::Busy);
        assert_eq!(
            c.sync_done(&mut t2, r2, g2, Err(libc::ENOSPC)),
            Some(FlushOutcome::Failed(libc::ENOSPC))
        );
        assert_eq!(
            c.step(&mut t1),
            FlushStep::Done(FlushOutcome::Latched(libc::ENOSPC))
        );
    }

    /// A sync started after an earlier one *returned* cannot have taken its
    /// error: the earlier success commits without waiting for it.
    #[test]
    fn sync_started_after_return_does_not_hold_commit() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 4);
        c.write_completed();
        let (mut t1, r1, g1) = started(&c);
        assert_eq!(c.sync_done(&mut t1, r1, g1, Ok(())), None);
        c.write_completed();
        let (mut t2, r2, g2) = started(&c);
        assert_eq!(c.step(&mut t1), FlushStep::Done(FlushOutcome::Synced));
        assert_eq!(c.sync_done(&mut t2, r2, g2, Ok(())), None);
        assert_eq!(c.step(&mut t2), FlushStep::Done(FlushOutcome::Synced));
    }

    /// At most the limit of syncs run at once; a flush that finds no room
    /// waits, then starts its own sync once one ended.
    #[test]
    fn at_most_max_syncs_in_flight() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 2);
        let ((mut t1, r1, g1), (mut t2, r2, g2)) = two_syncs(&c);
        c.write_completed();
        let mut t3 = c.begin();
        assert_eq!(c.step(&mut t3), FlushStep::Busy);
        assert_eq!(c.syncs_running(), 2);
        assert_eq!(c.sync_done(&mut t1, r1, g1, Ok(())), None);
        let FlushStep::Start { round: r3, gen: g3 } = c.step(&mut t3) else {
            panic!("t3 should start a sync once there is room");
        };
        assert_eq!(g3, 3);
        assert_eq!(c.syncs_running(), 2);
        assert_eq!(c.sync_done(&mut t2, r2, g2, Ok(())), None);
        assert_eq!(c.sync_done(&mut t3, r3, g3, Ok(())), None);
        for t in [&mut t1, &mut t2, &mut t3] {
            assert_eq!(c.step(t), FlushStep::Done(FlushOutcome::Synced));
        }
    }

    /// With a limit of 1 the coordinator is the serial one: a flush that a
    /// running sync does not cover waits for it before starting its own.
    #[test]
    fn limit_one_is_serial() {
        let c = FlushCoordinator::with_limits(Sabotage::default(), 1);
        c.write_completed();
        let (mut t1, r1, g1) = started(&c);
        c.write_completed();
        let mut t2 = c.begin();
        assert_eq!(c.step(&mut t2), FlushStep::Busy);
        assert_eq!(c.sync_done(&mut t1, r1, g1, Ok(())), None);
        assert!(matches!(c.step(&mut t2), FlushStep::Start { .. }));
    }

    /// The same rules through the blocking API: a second flush's own sync
    /// returns while the first sync still runs, but the second flush stays
    /// inside the coordinator until the first sync ended, and fails with it.
    #[test]
    fn blocking_flush_waits_for_earlier_sync_and_fails_with_it() {
        for fail in [false, true] {
            let c = Arc::new(FlushCoordinator::with_limits(Sabotage::default(), 4));
            c.write_completed();
            let entered = Arc::new(Barrier::new(2));
            let release = Arc::new(Barrier::new(2));
            let t1 = {
                let (c, entered, release) = (c.clone(), entered.clone(), release.clone());
                std::thread::spawn(move || {
                    c.flush(|| {
                        entered.wait();
                        release.wait();
                        if fail {
                            Err(io::Error::from_raw_os_error(libc::EIO))
                        } else {
                            Ok(())
                        }
                    })
                })
            };
            entered.wait();
            c.write_completed();
            let t2 = {
                let c = c.clone();
                std::thread::spawn(move || c.flush(|| Ok(())))
            };
            // t2's sync ran concurrently and ended...
            while c.rounds_done() < 1 {
                std::thread::yield_now();
            }
            // ...but t2 is still waiting for t1's sync.
            assert_eq!(c.flushes_inside(), 2);
            assert!(!t2.is_finished());
            release.wait();
            if fail {
                assert_eq!(t1.join().unwrap(), FlushOutcome::Failed(libc::EIO));
                assert_eq!(t2.join().unwrap(), FlushOutcome::Latched(libc::EIO));
            } else {
                assert_eq!(t1.join().unwrap(), FlushOutcome::Synced);
                assert_eq!(t2.join().unwrap(), FlushOutcome::Synced);
            }
        }
    }
}

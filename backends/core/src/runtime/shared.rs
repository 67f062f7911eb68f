//! The part of a loop other threads reach: its mailbox of commands, its clock, its
//! counters. Connections reach it as their `Owner`, loop handles as their `LoopApi`,
//! timers as their `TimerOwner` (`doors.rs`): each sees only what it needs, and none of
//! those files depends on this one.

use super::command::Command;
use crate::clock::Clock;
use crate::conn::ConnShared;
use crate::driver::{DriverCounters, Waker};
use crate::inbox::{self, Mailbox};
use crate::loop_handle::{self, LoopApi, LoopHandle};
use crate::metrics::LoopMetrics;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

thread_local! {
    /// Connections the loop running on this thread must flush, put here by sends made on
    /// that thread (callbacks, timers, posted closures): no inbox, no lock, no wake-up,
    /// and no turn's delay. The loop takes them just before it flushes.
    static LOCAL_FLUSH: RefCell<Vec<Arc<ConnShared>>> = const { RefCell::new(Vec::new()) };
    /// The loop running on this thread.
    static CURRENT: RefCell<Option<Arc<LoopShared>>> = const { RefCell::new(None) };
}

/// The part of a loop other threads can reach.
pub struct LoopShared {
    index: usize,
    inbox: Mailbox<Command>,
    /// The loop's clock (its driver's): every deadline on this loop is measured against it.
    clock: Clock,
    counters: [AtomicU64; 9],
    stats: LoopStats,
}

/// The loop's own counters (written by the loop thread, read by anyone).
#[derive(Default)]
struct LoopStats {
    connections: AtomicUsize,
    timers_fired: AtomicU64,
    tasks_run: AtomicU64,
    task_panics: AtomicU64,
    /// Timers cancelled since the loop last purged its heap.
    cancelled: AtomicUsize,
    timer_entries: AtomicUsize,
    /// User timers scheduled and not yet over (fired once, cancelled, or dropped).
    pending_timers: AtomicUsize,
}

impl LoopShared {
    /// A loop's shared part on the system clock (the unit tests' loops).
    #[cfg(test)]
    pub(crate) fn new(index: usize, waker: Arc<dyn Waker>, held: bool) -> Arc<Self> {
        Self::with_clock(index, waker, held, Clock::system())
    }

    /// A loop's shared part, its deadlines measured against `clock` (its driver's).
    pub(crate) fn with_clock(
        index: usize,
        waker: Arc<dyn Waker>,
        held: bool,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            index,
            inbox: Mailbox::new(index, waker, held),
            clock,
            counters: Default::default(),
            stats: LoopStats::default(),
        })
    }

    /// A handle to this loop, for running closures and timers on it.
    pub fn handle(self: &Arc<Self>) -> LoopHandle {
        LoopHandle::from_api(Arc::clone(self) as Arc<dyn LoopApi>)
    }

    /// The loop's clock: deadlines for this loop (timers scheduled from any thread) are
    /// measured against it.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The loop's position in its event loop (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the calling thread is this loop's thread.
    pub fn is_current(&self) -> bool {
        self.inbox.is_current()
    }

    /// Whether the calling thread runs any loop (so it must never block on one).
    pub fn on_any_loop() -> bool {
        inbox::on_any_loop()
    }

    /// The calling thread (the loop's) runs this loop from now on.
    pub(crate) fn enter(self: &Arc<Self>) {
        self.inbox.enter();
        CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(self)));
        loop_handle::set_current(Some(self.handle()));
    }

    /// The calling thread runs no loop any more.
    pub(crate) fn leave() {
        Mailbox::<Command>::leave();
        LOCAL_FLUSH.with(|l| l.borrow_mut().clear());
        CURRENT.with(|c| c.borrow_mut().take());
        loop_handle::set_current(None);
    }

    /// The loop running on the calling thread, if any.
    pub fn current() -> Option<Arc<LoopShared>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Whether the loop has exited (its thread returned or is returning).
    pub fn is_stopped(&self) -> bool {
        self.inbox.is_stopped()
    }

    pub(crate) fn mark_stopped(&self) {
        self.inbox.mark_stopped();
    }

    /// Queues a command; wakes the loop unless the caller is the loop itself or a wake is
    /// already on its way. Returns `false` (and drops the command) if the loop is gone.
    pub(crate) fn push(&self, command: Command) -> bool {
        self.inbox.push(command)
    }

    /// Asks the loop to flush `conn`, which has bytes queued: from the loop's own thread
    /// straight onto its flush list (taken in the same turn), from any other thread
    /// through the inbox. `false` if the loop is gone.
    pub(crate) fn push_flush(&self, conn: &Arc<ConnShared>) -> bool {
        if !self.is_current() {
            return self.push(Command::Flush(Arc::clone(conn)));
        }
        if self.is_stopped() {
            return false;
        }
        LOCAL_FLUSH.with(|l| l.borrow_mut().push(Arc::clone(conn)));
        true
    }

    /// Moves the flushes asked for on this (the loop's) thread into `into`.
    pub(crate) fn take_local_flushes(into: &mut Vec<Arc<ConnShared>>) {
        LOCAL_FLUSH.with(|l| std::mem::swap(&mut *l.borrow_mut(), into));
    }

    /// Whether sends on this (the loop's) thread asked for flushes not taken yet.
    pub(crate) fn has_local_flushes() -> bool {
        LOCAL_FLUSH.with(|l| !l.borrow().is_empty())
    }

    /// Asks the loop to stop. Idempotent. A loop still held (never released) is
    /// abandoned: its thread exits without dispatching anything.
    pub fn request_stop(&self) {
        self.inbox.open_gate(false);
        self.push(Command::Stop);
    }

    /// Lets a held loop dispatch (mill-io's `EventLoop::run`); nothing for a loop
    /// released or stopped before.
    pub fn release(&self) {
        self.inbox.open_gate(true);
    }

    /// Whether the loop is held: built, not yet released nor stopped. Such a loop holds
    /// no connection and has taken no command.
    pub fn is_held(&self) -> bool {
        self.inbox.is_held()
    }

    /// Blocks the loop thread while the loop is held; `true` if it may dispatch, `false`
    /// if it was stopped before being released.
    pub(crate) fn wait_gate(&self) -> bool {
        self.inbox.wait_gate()
    }

    /// Queues a command like [`push`](Self::push); `Some(true)` if the loop is held (it
    /// takes the command once released), `None` if the loop is gone.
    pub(crate) fn push_held(&self, command: Command) -> Option<bool> {
        self.inbox.push_held(command)
    }

    /// On a held loop, takes the queued commands `pick` selects out of the inbox (to be
    /// dropped by the caller, outside the lock) and returns them; `None` if the loop is
    /// not held (it takes its commands itself).
    pub(crate) fn withdraw_if_held(
        &self,
        pick: impl FnMut(&Command) -> bool,
    ) -> Option<Vec<Command>> {
        self.inbox.withdraw_if_held(pick)
    }

    /// Takes every queued command (the loop calls this after each poll).
    pub(crate) fn drain(&self, into: &mut Vec<Command>) {
        self.inbox.drain(into);
    }

    /// Commands left behind when the loop exits are dropped (closing their sockets), and
    /// so is the waker: nothing wakes a loop that has exited.
    pub(crate) fn close_inbox(&self) -> Vec<Command> {
        self.inbox.close()
    }

    /// Whether the loop's own thread queued commands since it last drained the inbox
    /// (from a timer or posted closure, say): the loop polls without blocking then.
    pub(crate) fn has_local_work(&self) -> bool {
        self.inbox.has_local_work()
    }

    /// Queues a closure to run on the loop; `false` if the loop is gone.
    pub(crate) fn post(&self, f: Box<dyn FnOnce() + Send>) -> bool {
        self.push(Command::Post(f))
    }

    /// Counts a user timer that ran.
    pub(crate) fn count_timer_fired(&self, panicked: bool) {
        bump(&self.stats.timers_fired);
        if panicked {
            bump(&self.stats.task_panics);
        }
    }

    /// Counts a posted closure that ran.
    pub(crate) fn count_task_run(&self, panicked: bool) {
        bump(&self.stats.tasks_run);
        if panicked {
            bump(&self.stats.task_panics);
        }
    }

    /// Counts a new user timer as pending.
    pub(crate) fn timer_started(&self) {
        self.stats.pending_timers.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a user timer's count as pending (a one-shot timer started, a timer was
    /// cancelled, or it was dropped unfired).
    pub(crate) fn timer_finished(&self) {
        self.stats.pending_timers.fetch_sub(1, Ordering::Relaxed);
    }

    /// User timers of this loop scheduled and not over yet: one-shot timers that have not
    /// started, repeating timers not cancelled. A timer leaves the count when it starts
    /// (one-shot), is cancelled, or is dropped because the loop stopped.
    pub fn pending_timers(&self) -> usize {
        self.stats.pending_timers.load(Ordering::Relaxed)
    }

    pub(crate) fn note_timer_cancelled(&self) {
        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Timers cancelled since the last [`reset_cancelled_timers`](Self::reset_cancelled_timers).
    pub(crate) fn cancelled_timers(&self) -> usize {
        self.stats.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_cancelled_timers(&self) {
        self.stats.cancelled.store(0, Ordering::Relaxed);
    }

    /// This loop's counters: its driver's (as last published) and its own.
    pub fn loop_counters(&self) -> LoopMetrics {
        let s = &self.stats;
        LoopMetrics {
            driver: self.counters(),
            connections: s.connections.load(Ordering::Relaxed),
            timers_fired: s.timers_fired.load(Ordering::Relaxed),
            tasks_run: s.tasks_run.load(Ordering::Relaxed),
            task_panics: s.task_panics.load(Ordering::Relaxed),
            timer_entries: s.timer_entries.load(Ordering::Relaxed),
        }
    }

    /// Publishes the driver's counters and the number of connections the loop holds.
    /// Publishes how many entries the loop's timer heap holds.
    pub(crate) fn publish_timer_entries(&self, entries: usize) {
        self.stats.timer_entries.store(entries, Ordering::Relaxed);
    }

    pub(crate) fn publish_counters(&self, c: &DriverCounters, connections: usize) {
        self.stats.connections.store(connections, Ordering::Relaxed);
        let values = [
            c.enters,
            c.sqes,
            c.cqes,
            c.enobufs,
            c.cq_overflows,
            c.rearms,
            c.events,
            c.wakeups,
            c.recv_buffers_out,
        ];
        for (slot, v) in self.counters.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The driver counters as last published by the loop.
    pub fn counters(&self) -> DriverCounters {
        let v: Vec<u64> = self
            .counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        DriverCounters {
            enters: v[0],
            sqes: v[1],
            cqes: v[2],
            enobufs: v[3],
            cq_overflows: v[4],
            rearms: v[5],
            events: v[6],
            wakeups: v[7],
            recv_buffers_out: v[8],
        }
    }
}

/// Adds one to a counter only its loop thread writes (a load and a store: no locked
/// instruction on the hot path).
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

//! Loop services: timers and closures that run on a loop thread.
//!
//! A [`LoopHandle`] names one loop thread and can be cloned and used from any thread. It
//! runs closures there: [`post`](LoopHandle::post) (soon), [`schedule_once`]
//! (after a delay) and [`schedule_repeating`] (every period). Closures run on the loop
//! thread between I/O completions, one at a time, like every callback of that loop's
//! connections, so they must not block either.
//!
//! Timers share the loop's one timer heap with its connect and idle timeouts. A
//! [`TimerId`] cancels its timer from any thread in O(1); a cancelled timer never runs.
//!
//! [`schedule_once`]: LoopHandle::schedule_once
//! [`schedule_repeating`]: LoopHandle::schedule_repeating

use crate::clock::Clock;
use crate::error::{ConfigError, NetworkError, Result};
use crate::metrics::LoopMetrics;
use crate::runtime::timer::{deadline_after, TimerOwner, TimerState, UserTimer};
use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    /// The loop running on this thread, for [`LoopHandle::current`].
    static CURRENT: RefCell<Option<LoopHandle>> = const { RefCell::new(None) };
}

/// Sets (or clears) the loop the calling thread runs.
pub(crate) fn set_current(handle: Option<LoopHandle>) {
    CURRENT.with(|c| *c.borrow_mut() = handle);
}

/// What a handle needs of its loop (implemented by the runtime's `LoopShared`).
pub(crate) trait LoopApi: Send + Sync {
    /// The loop's position in its event loop.
    fn index(&self) -> usize;
    /// Whether the calling thread is the loop's.
    fn is_current(&self) -> bool;
    /// Whether the loop has exited.
    fn is_stopped(&self) -> bool;
    /// The clock the loop's deadlines are measured against.
    fn clock(&self) -> &Clock;
    /// Queues a closure; `false` if the loop is gone.
    fn post(&self, f: Box<dyn FnOnce() + Send>) -> bool;
    /// Queues a user timer; `false` if the loop is gone.
    fn schedule(&self, timer: UserTimer) -> bool;
    /// User timers that may still run.
    fn pending_timers(&self) -> usize;
    /// The loop's counters.
    fn metrics(&self) -> LoopMetrics;
    /// The loop as its timers see it.
    fn timer_owner(self: Arc<Self>) -> Arc<dyn TimerOwner>;
}

/// One loop thread, reachable from any thread: run closures and timers on it.
///
/// Get one from the event loop (`EventLoop::handle(i)` / `handles()` in the `ringmill`
/// crate), from a connection ([`ServerContext::loop_of`](crate::ServerContext::loop_of),
/// [`ConnSender::loop_handle`](crate::ConnSender::loop_handle)), or, on a loop thread,
/// from [`LoopHandle::current`]. Cloning is cheap.
///
/// Every closure runs on the loop thread, caught if it panics (the panic is logged and
/// counted in [`LoopMetrics::task_panics`]; the loop goes on). Closures queued after the
/// loop has stopped are refused with [`NetworkError::EventLoopGone`]; timers still
/// waiting when the loop stops are dropped without running.
///
/// ```no_run
/// # fn demo(handle: ringmill_core::LoopHandle) -> ringmill_core::Result<()> {
/// use std::time::Duration;
///
/// // Runs once, on the loop thread, about 100 ms from now.
/// let once = handle.schedule_once(Duration::from_millis(100), || println!("later"))?;
/// // Runs every second until cancelled.
/// let tick = handle.schedule_repeating(Duration::from_secs(1), || println!("tick"))?;
/// // Runs as soon as the loop gets to it.
/// handle.post(|| println!("soon"))?;
///
/// assert!(once.cancel(), "cancelled before it fired: it never runs");
/// tick.cancel();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<dyn LoopApi>,
}

impl LoopHandle {
    /// A handle to the loop behind `api`.
    pub(crate) fn from_api(api: Arc<dyn LoopApi>) -> Self {
        Self { shared: api }
    }

    /// The loop running on the calling thread, if it is a loop thread (in a callback, a
    /// timer or a posted closure).
    pub fn current() -> Option<LoopHandle> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The loop's position in its event loop (0-based); its thread is named
    /// `ringmill-loop-<index>`.
    pub fn index(&self) -> usize {
        self.shared.index()
    }

    /// Whether the calling thread is this loop's thread.
    pub fn is_current(&self) -> bool {
        self.shared.is_current()
    }

    /// Whether the loop has exited.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// Runs `f` on the loop thread as soon as it gets to it (never inline, even when
    /// called from the loop thread itself). Closures posted from one thread run in the
    /// order they were posted.
    ///
    /// Fails with [`NetworkError::EventLoopGone`] if the loop has stopped.
    pub fn post(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        if self.shared.post(Box::new(f)) {
            Ok(())
        } else {
            Err(Box::new(NetworkError::EventLoopGone))
        }
    }

    /// Runs `f` once on the loop thread, `delay` from now (at the earliest; timers are as
    /// precise as the loop's wake-ups). Timers due at the same time run in the order they
    /// were scheduled.
    ///
    /// Fails with [`NetworkError::EventLoopGone`] if the loop has stopped.
    pub fn schedule_once(
        &self,
        delay: Duration,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<TimerId> {
        let state = TimerState::new(Arc::clone(&self.shared).timer_owner());
        let at = deadline_after(self.shared.clock().now(), delay);
        self.push(UserTimer::once(Arc::clone(&state), at, Box::new(f)), state)
    }

    /// Runs `f` on the loop thread every `period`, first `period` from now, until the
    /// timer is cancelled.
    ///
    /// Ticks stay on the grid `start + k * period`: a late run does not push the next one
    /// back, and ticks missed while the loop was busy are skipped, not run in a burst. A
    /// run that panics ends the timer.
    ///
    /// Fails with [`NetworkError::Configuration`] for a zero `period`, and with
    /// [`NetworkError::EventLoopGone`] if the loop has stopped.
    pub fn schedule_repeating(
        &self,
        period: Duration,
        f: impl FnMut() + Send + 'static,
    ) -> Result<TimerId> {
        if period.is_zero() {
            return Err(Box::new(NetworkError::Configuration(ConfigError::Zero(
                "timer period",
            ))));
        }
        let state = TimerState::new(Arc::clone(&self.shared).timer_owner());
        let at = deadline_after(self.shared.clock().now(), period);
        let timer = UserTimer::repeating(Arc::clone(&state), at, period, Box::new(f));
        self.push(timer, state)
    }

    /// Cancels `timer` (of any loop): the same as [`TimerId::cancel`].
    pub fn cancel(&self, timer: &TimerId) -> bool {
        timer.cancel()
    }

    /// This loop's user timers that may still run: one-shot timers that have not started,
    /// repeating timers not cancelled.
    pub fn pending_timers(&self) -> usize {
        self.shared.pending_timers()
    }

    /// This loop's counters.
    pub fn metrics(&self) -> LoopMetrics {
        self.shared.metrics()
    }

    fn push(&self, timer: UserTimer, state: Arc<TimerState>) -> Result<TimerId> {
        if self.shared.schedule(timer) {
            Ok(TimerId { state })
        } else {
            Err(Box::new(NetworkError::EventLoopGone))
        }
    }
}

impl fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopHandle")
            .field("index", &self.index())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// A scheduled timer: cancel it, or ask whether it may still run.
///
/// Clones refer to the same timer. Dropping a `TimerId` does not cancel the timer.
///
/// ```no_run
/// # fn demo(handle: ringmill_core::LoopHandle) -> ringmill_core::Result<()> {
/// use std::time::Duration;
///
/// let timer = handle.schedule_once(Duration::from_secs(30), || println!("timed out"))?;
/// // ... the reply came in time:
/// if timer.cancel() {
///     // The closure will never run.
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TimerId {
    state: Arc<TimerState>,
}

impl TimerId {
    /// A timer of `on`'s loop that is over already: it never runs, is not pending, and
    /// `cancel` returns `false`. What an infallible scheduling call (such as mill-io's
    /// `EventLoop::schedule_once` shape) returns once the loop has stopped.
    pub fn over(on: &LoopHandle) -> TimerId {
        TimerId {
            state: TimerState::over(Arc::clone(&on.shared).timer_owner()),
        }
    }

    /// Cancels the timer, from any thread, in O(1).
    ///
    /// Returns `true` if the timer was waiting (or, for a repeating timer, waiting or
    /// running) and its closure will now never start again; `false` if a one-shot timer
    /// already started, the timer was already cancelled, or its loop stopped. A run
    /// already under way on the loop thread is not interrupted.
    pub fn cancel(&self) -> bool {
        self.state.cancel()
    }

    /// Whether the closure may still run (again): not yet fired (one-shot), not cancelled,
    /// loop not stopped.
    pub fn is_pending(&self) -> bool {
        self.state.is_pending()
    }

    /// The index of the loop the timer runs on.
    pub fn loop_index(&self) -> usize {
        self.state.owner().index()
    }
}

impl PartialEq for TimerId {
    fn eq(&self, other: &Self) -> bool {
        self.state.id() == other.state.id()
    }
}

impl Eq for TimerId {}

impl Hash for TimerId {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.state.id().hash(h);
    }
}

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerId({})", self.state.id())
    }
}

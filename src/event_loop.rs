//! The event loop: N loop threads, each with its own io_uring ring or `mio::Poll`.

use crate::compute::{ComputePool, ComputePoolMetrics, TaskPriority};
use crate::select;
use ringmill_core::driver::DriverCounters;
use ringmill_core::engine::LoopShared;
use ringmill_core::engine::{self, LoopSettings, LoopThread};
use ringmill_core::error::{Backend, ConfigError, NetworkError, Result};
use ringmill_core::loop_handle::{LoopHandle, TimerId};
use ringmill_core::metrics::LoopMetrics;
use ringmill_core::DriverConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Builds an [`EventLoop`].
#[derive(Debug, Clone)]
pub struct EventLoopBuilder {
    threads: usize,
    compute_threads: usize,
    backend: Backend,
    driver: DriverConfig,
    settings: LoopSettings,
}

impl Default for EventLoopBuilder {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self {
            threads: cores,
            compute_threads: cores,
            backend: Backend::Auto,
            driver: DriverConfig::default(),
            settings: LoopSettings::default(),
        }
    }
}

/// The most loop threads one event loop runs ([`EventLoopBuilder::threads`]).
pub const MAX_THREADS: usize = 4096;

impl EventLoopBuilder {
    /// Loop threads to run (default: the number of available cores; at most
    /// [`MAX_THREADS`]).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Threads of the compute pool behind [`EventLoop::spawn_compute`] (default: the number
    /// of available cores). They start on the first task.
    pub fn compute_threads(mut self, threads: usize) -> Self {
        self.compute_threads = threads;
        self
    }

    /// Readiness events fetched per wait (mio; default 1024). io_uring loops take every
    /// completion waiting, so this changes nothing there.
    pub fn events_capacity(mut self, events: usize) -> Self {
        self.driver.events_capacity = events;
        self
    }

    /// The backend: `Auto` (default; `RINGMILL_BACKEND` may override it), `Uring` or `Mio`.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Size of one receive buffer in each loop's pool (default 64 KiB): the most one
    /// kernel read fills.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.driver.buffer_size = bytes;
        self
    }

    /// Receive buffers per loop (a power of two, default 64; io_uring's provided buffer
    /// ring has this many entries).
    pub fn buffer_count(mut self, count: usize) -> Self {
        self.driver.buffer_count = count;
        self
    }

    /// Every driver setting at once.
    pub fn driver_config(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// How long `stop` lets queued output drain before closing connections anyway
    /// (default 5 s).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.settings.stop_timeout = timeout;
        self
    }

    /// How long a graceful close (`close`, end of stream, the idle timeout) may take before
    /// the connection is closed anyway (default 5 s): first writing what is queued, then,
    /// with the write side shut down, waiting for the peer's end of stream (input that
    /// still arrives is dropped), so that closing does not reset a peer that is still
    /// sending and lose the tail of the last answer.
    pub fn close_linger(mut self, linger: Duration) -> Self {
        self.settings.linger = linger;
        self
    }

    /// Whether the loop threads wait for [`EventLoop::run`] before they dispatch anything
    /// (default `false`).
    ///
    /// With `false` (ringmill's way), the loop threads serve from the moment
    /// [`build`](Self::build) returns: a server started on the loop accepts and calls its
    /// handler, timers fire and posted closures run, whether or not `run` is ever called
    /// (`run` only blocks its caller until [`EventLoop::stop`]).
    ///
    /// With `true` (mill-io's way, and what [`EventLoop::new`],
    /// [`EventLoop::new_low_latency`] and [`EventLoop::default`] build), the loop threads
    /// are built and then held: no callback of any kind runs until `run` is called (no
    /// `on_connect`, `on_data` or any other handler callback, no client connect completing,
    /// no timer, no posted closure). What arrives before is queued, not lost: a started
    /// server's listening socket takes connections into its backlog, a started client's
    /// connect waits, sends are queued, timers count from when they were scheduled and
    /// fire once `run` released the loop (at once, if already due), posted closures run
    /// in order. [`EventLoop::stop`] (or dropping the loop) before `run` releases the
    /// threads without dispatching anything: what was queued is dropped (listeners
    /// closed, clients' connects abandoned without a callback, timers and closures
    /// dropped unrun). Not held: the compute pool ([`EventLoop::spawn_compute`]), which
    /// runs tasks from the first one, as mill-io's does, and `on_event(Listening)`, which
    /// [`TcpServer::start`](crate::tcp::TcpServer::start) calls on its caller's thread.
    ///
    /// On a held loop, `TcpServer::start` returns without waiting for the loop to take the
    /// listener (a failure to take it is reported to the server's `on_error` once the
    /// loop runs), and `TcpServer::stop`, `TcpClient::disconnect`, `close()` and drop
    /// return at once: a held loop holds no connection, so no `on_disconnect` is owed;
    /// `TcpServer::stop` closes the server's listening sockets there and then.
    pub fn dispatch_on_run(mut self, on_run: bool) -> Self {
        self.settings.dispatch_on_run = on_run;
        self
    }

    /// Starts the loop threads on the chosen backend.
    ///
    /// Fails on a nonsensical setting, on `Backend::Uring` where io_uring cannot run (the
    /// error says why), or if no backend can start.
    pub fn build(self) -> Result<EventLoop> {
        if self.threads == 0 {
            return Err(Box::new(NetworkError::Configuration(ConfigError::Zero(
                "threads",
            ))));
        }
        if self.threads > MAX_THREADS {
            return Err(Box::new(NetworkError::Configuration(
                ConfigError::OutOfRange {
                    option: "threads",
                    reason: format!(
                        "{} is above the {MAX_THREADS} loops one event loop may run",
                        self.threads
                    ),
                },
            )));
        }
        if self.compute_threads == 0 {
            return Err(Box::new(NetworkError::Configuration(ConfigError::Zero(
                "compute_threads",
            ))));
        }
        if self.compute_threads > MAX_THREADS {
            return Err(Box::new(NetworkError::Configuration(
                ConfigError::OutOfRange {
                    option: "compute_threads",
                    reason: format!(
                        "{} is above the {MAX_THREADS} threads one compute pool may run",
                        self.compute_threads
                    ),
                },
            )));
        }
        self.driver
            .validate()
            .map_err(NetworkError::Configuration)?;
        let selected = select::start(self.backend, self.threads, &self.driver, &self.settings)?;
        Ok(EventLoop {
            shared: selected
                .loops
                .iter()
                .map(|l| Arc::clone(l.shared()))
                .collect(),
            handles: Mutex::new(selected.loops),
            backend: selected.backend,
            reason: selected.reason,
            description: selected.description,
            stopped: Mutex::new(false),
            stopped_cond: Condvar::new(),
            next: AtomicUsize::new(0),
            compute: ComputePool::new(self.compute_threads),
        })
    }
}

/// N loop threads serving servers and clients.
///
/// The threads start when the loop is built. A loop from [`EventLoop::builder`] serves
/// whatever is started on it from then on, and `run` only blocks the calling thread until
/// [`stop`](Self::stop). A loop from mill-io's constructors ([`new`](Self::new),
/// [`new_low_latency`](Self::new_low_latency), [`Default`]) dispatches nothing until `run`
/// is called, as mill-io's does; see [`EventLoopBuilder::dispatch_on_run`]. Dropping the
/// loop stops it.
///
/// Besides connections, the loop threads run timers and closures: [`schedule_once`],
/// [`schedule_repeating`] and [`post`] here (on the next thread, round robin), or on one
/// chosen thread through a [`LoopHandle`] from [`handle`](Self::handle), which any thread
/// may keep and clone.
///
/// ```no_run
/// use ringmill::EventLoop;
/// use std::time::Duration;
///
/// # fn main() -> ringmill::errors::Result<()> {
/// let event_loop = EventLoop::builder().threads(2).build()?;
/// let tick = event_loop.schedule_repeating(Duration::from_secs(1), || println!("tick"));
/// event_loop.schedule_once(Duration::from_secs(5), move || {
///     tick.cancel();
/// });
/// event_loop.spawn_compute(|| println!("on a compute thread"));
/// let first = event_loop.handle(0).expect("a loop thread");
/// std::thread::spawn(move || first.post(|| println!("on ringmill-loop-0")));
/// println!("{:?}", event_loop.metrics());
/// # Ok(())
/// # }
/// ```
///
/// [`schedule_once`]: Self::schedule_once
/// [`schedule_repeating`]: Self::schedule_repeating
/// [`post`]: Self::post
pub struct EventLoop {
    shared: Vec<Arc<LoopShared>>,
    handles: Mutex<Vec<LoopThread>>,
    backend: Backend,
    reason: String,
    description: String,
    stopped: Mutex<bool>,
    stopped_cond: Condvar,
    next: AtomicUsize,
    compute: ComputePool,
}

impl Default for EventLoop {
    /// An event loop with the default settings: one thread per core, backend `Auto`,
    /// dispatching nothing until [`run`](EventLoop::run) (mill-io's meaning; see
    /// [`EventLoopBuilder::dispatch_on_run`]).
    ///
    /// # Panics
    ///
    /// If no backend can start (not even mio), or `RINGMILL_BACKEND` names an unusable
    /// backend; use [`EventLoop::builder`] to handle that as an error.
    fn default() -> Self {
        match EventLoopBuilder::default().dispatch_on_run(true).build() {
            Ok(event_loop) => event_loop,
            Err(e) => panic!("ringmill: cannot start an event loop: {e}"),
        }
    }
}

impl EventLoop {
    /// A builder with the default settings.
    pub fn builder() -> EventLoopBuilder {
        EventLoopBuilder::default()
    }

    /// mill-io's constructor: an event loop whose callbacks run on `workers` threads.
    ///
    /// The arguments map onto the builder as follows:
    ///
    /// - `workers`: mill-io's pool of threads that run the handlers' callbacks. ringmill
    ///   runs callbacks on its loop threads, so this is the number of loop threads
    ///   ([`EventLoopBuilder::threads`]). mill-io sizes its compute pool by the number of
    ///   cores, not by `workers`, and so does this ([`EventLoopBuilder::compute_threads`]).
    /// - `events_capacity`: readiness events taken per wait
    ///   ([`EventLoopBuilder::events_capacity`]; mio only, io_uring takes every completion
    ///   waiting).
    /// - `poll_timeout_ms`: accepted and unused. mill-io's reactor wakes up at least this
    ///   often; a ringmill loop sleeps until there is something to do (I/O, a timer coming
    ///   due, or a wake-up from `send`, `post` or `stop` on another thread), so nothing
    ///   waits for a poll timeout and there is nothing for it to bound.
    ///
    /// As with mill-io, nothing is dispatched until [`run`](Self::run) is called: servers
    /// and clients may be started, timers scheduled and closures posted before it, and
    /// they take effect once `run` releases the loop threads
    /// ([`EventLoopBuilder::dispatch_on_run`] with `true`; builder loops serve from
    /// `build()` by default).
    ///
    /// The backend is `Auto` (`RINGMILL_BACKEND` applies). Fails as
    /// [`EventLoopBuilder::build`] does, including for `workers` or `events_capacity` of
    /// zero.
    pub fn new(workers: usize, events_capacity: usize, poll_timeout_ms: u64) -> Result<Self> {
        let _ = poll_timeout_ms;
        Self::builder()
            .threads(workers)
            .events_capacity(events_capacity)
            .dispatch_on_run(true)
            .build()
    }

    /// mill-io's low-latency constructor: callbacks run on the thread that does the I/O,
    /// with no hand-off to a pool. That is how every ringmill loop works, so this is one
    /// loop thread (mill-io's mode has one reactor thread); `events_capacity` and
    /// `poll_timeout_ms` as in [`new`](Self::new), and, as there, nothing is dispatched
    /// until [`run`](Self::run).
    pub fn new_low_latency(events_capacity: usize, poll_timeout_ms: u64) -> Result<Self> {
        Self::new(1, events_capacity, poll_timeout_ms)
    }

    /// Releases loop threads held for it (see [`EventLoopBuilder::dispatch_on_run`]), then
    /// blocks until [`stop`](Self::stop) is called (from any thread, before or during
    /// `run`) and waits for the loop threads to finish. After `stop`, it returns at once:
    /// a stopped loop stays stopped.
    pub fn run(&self) -> Result<()> {
        // Loops built to dispatch on run (mill-io's constructors) start now.
        for l in &self.shared {
            l.release();
        }
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            stopped = self
                .stopped_cond
                .wait(stopped)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(stopped);
        self.compute.stop(!LoopShared::on_any_loop());
        self.join()
    }

    /// Stops the loop: no more accepts, queued output gets up to the stop timeout to
    /// drain, every connection is closed (each with its `on_disconnect`), and the threads
    /// exit. Callable from any thread, any number of times. Called from outside the
    /// loop's threads, it returns once they have exited. A loop held for
    /// [`run`](Self::run) that never ran exits without dispatching anything.
    pub fn stop(&self) {
        {
            let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
            if !*stopped {
                *stopped = true;
                for l in &self.shared {
                    l.request_stop();
                }
            }
            self.stopped_cond.notify_all();
        }
        let off_loop = !LoopShared::on_any_loop();
        // Tasks already queued still run; the threads are joined unless this is one of
        // them or a loop thread (a loop thread must not wait for compute tasks).
        self.compute.stop(off_loop);
        if off_loop {
            let _ = self.join();
        }
    }

    fn join(&self) -> Result<()> {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        if engine::shutdown(handles) {
            Ok(())
        } else {
            Err(Box::new(NetworkError::InvalidState(
                "a loop thread panicked",
            )))
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend actually running: `Backend::Uring` or `Backend::Mio`, never `Auto`.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why this backend was chosen (for example, the reason io_uring was unavailable).
    pub fn backend_reason(&self) -> &str {
        &self.reason
    }

    /// How the backend is set up (ring flags and features, or the poller).
    pub fn backend_description(&self) -> &str {
        &self.description
    }

    /// Loop threads.
    pub fn threads(&self) -> usize {
        self.shared.len()
    }

    /// The backends' counters, summed over the loop threads.
    pub fn counters(&self) -> DriverCounters {
        self.shared
            .iter()
            .map(|l| l.counters())
            .fold(DriverCounters::default(), |a, b| a + b)
    }

    /// A snapshot of the loop's counters, summed over its threads: the drivers' counters
    /// (io_uring enters, CQEs, ENOBUFS; mio events and wake-ups), connections held, user
    /// timers fired, posted closures run, closures that panicked. Reading it takes no lock.
    pub fn metrics(&self) -> LoopMetrics {
        self.shared.iter().map(|l| l.loop_counters()).sum()
    }

    /// A handle to loop thread `index` (0-based, below [`threads`](Self::threads)), to run
    /// timers and closures on it from any thread.
    pub fn handle(&self, index: usize) -> Option<LoopHandle> {
        self.shared.get(index).map(|l| l.handle())
    }

    /// A handle to every loop thread, in index order.
    pub fn handles(&self) -> Vec<LoopHandle> {
        self.shared.iter().map(|l| l.handle()).collect()
    }

    /// Runs `f` once, `delay` from now, on the next loop thread (round robin); see
    /// [`LoopHandle::schedule_once`]. mill-io's shape: it returns the [`TimerId`] and has
    /// no error; once the loop has stopped, the timer it returns is already over (it never
    /// runs, and [`cancel_timer`](Self::cancel_timer) returns `false`). Use
    /// [`try_schedule_once`](Self::try_schedule_once) to be told.
    pub fn schedule_once(&self, delay: Duration, f: impl FnOnce() + Send + 'static) -> TimerId {
        let handle = self.next_handle();
        handle
            .schedule_once(delay, f)
            .unwrap_or_else(|_| TimerId::over(&handle))
    }

    /// Runs `f` every `interval` on the next loop thread (round robin), first `interval`
    /// from now, until cancelled; see [`LoopHandle::schedule_repeating`]. mill-io's shape:
    /// an `interval` below 1 ms (zero included) is taken as 1 ms, and once the loop has
    /// stopped the timer it returns is already over. Use
    /// [`try_schedule_repeating`](Self::try_schedule_repeating) to be told.
    pub fn schedule_repeating(
        &self,
        interval: Duration,
        f: impl FnMut() + Send + 'static,
    ) -> TimerId {
        let handle = self.next_handle();
        handle
            .schedule_repeating(interval.max(Duration::from_millis(1)), f)
            .unwrap_or_else(|_| TimerId::over(&handle))
    }

    /// [`schedule_once`](Self::schedule_once) that fails with
    /// [`NetworkError::EventLoopGone`] once the loop has stopped.
    pub fn try_schedule_once(
        &self,
        delay: Duration,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<TimerId> {
        self.next_handle().schedule_once(delay, f)
    }

    /// [`schedule_repeating`](Self::schedule_repeating) that fails with
    /// [`NetworkError::Configuration`] for a zero `period` and with
    /// [`NetworkError::EventLoopGone`] once the loop has stopped.
    pub fn try_schedule_repeating(
        &self,
        period: Duration,
        f: impl FnMut() + Send + 'static,
    ) -> Result<TimerId> {
        self.next_handle().schedule_repeating(period, f)
    }

    /// Cancels a timer (mill-io's name; the same as [`TimerId::cancel`]): `true` if it
    /// was pending and now never runs (again).
    pub fn cancel_timer(&self, timer: TimerId) -> bool {
        timer.cancel()
    }

    /// User timers scheduled on this loop's threads (from here, a [`LoopHandle`] or a
    /// handler) that may still run: one-shot timers not yet started, repeating timers not
    /// cancelled. A timer leaves the count when it starts (one-shot), is cancelled, or is
    /// dropped because the loop stopped. The loop's own deadlines (connect and idle
    /// timeouts, close lingers) are not counted.
    pub fn pending_timers(&self) -> usize {
        self.shared.iter().map(|l| l.pending_timers()).sum()
    }

    /// Runs `task` on the compute pool with [`TaskPriority::Normal`]: for CPU-heavy work
    /// that must not hold up a loop thread. See
    /// [`spawn_compute_with_priority`](Self::spawn_compute_with_priority).
    pub fn spawn_compute(&self, task: impl FnOnce() + Send + 'static) {
        self.spawn_compute_with_priority(task, TaskPriority::Normal);
    }

    /// Runs `task` on the compute pool: [`EventLoopBuilder::compute_threads`] threads
    /// (default: one per core), started on first use. Queued tasks run highest priority
    /// first, then in the order they came. A task that panics is caught and counted
    /// ([`ComputePoolMetrics::tasks_failed`]). When the loop stops, the tasks already
    /// queued still run, and the threads are joined; a task spawned after that does not
    /// run (it is counted in [`ComputePoolMetrics::tasks_rejected`] and logged).
    pub fn spawn_compute_with_priority(
        &self,
        task: impl FnOnce() + Send + 'static,
        priority: TaskPriority,
    ) {
        if !self.compute.spawn(Box::new(task), priority) {
            log::warn!("ringmill: spawn_compute after the event loop stopped: task dropped");
        }
    }

    /// The compute pool's counters (mill-io's name).
    pub fn get_compute_metrics(&self) -> Arc<ComputePoolMetrics> {
        self.compute.metrics()
    }

    /// Threads of the compute pool (started on its first task).
    pub fn compute_threads(&self) -> usize {
        self.compute.size()
    }

    /// Runs `f` on the next loop thread (round robin) as soon as it gets to it; see
    /// [`LoopHandle::post`].
    pub fn post(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.next_handle().post(f)
    }

    /// Cancels a timer; see [`TimerId::cancel`].
    pub fn cancel(&self, timer: &TimerId) -> bool {
        timer.cancel()
    }

    fn next_handle(&self) -> LoopHandle {
        self.next_loop().handle()
    }

    pub(crate) fn loops(&self) -> &[Arc<LoopShared>] {
        &self.shared
    }

    /// The loop for the next client, round robin.
    pub(crate) fn next_loop(&self) -> &Arc<LoopShared> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len();
        &self.shared[i]
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("backend", &self.backend)
            .field("reason", &self.reason)
            .field("threads", &self.shared.len())
            .finish()
    }
}

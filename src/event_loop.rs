//! The event loop: N loop threads, each with its own io_uring ring or `mio::Poll`.

use crate::select;
use ringmill_core::driver::DriverCounters;
use ringmill_core::error::{Backend, ConfigError, NetworkError, Result};
use ringmill_core::inbox::LoopShared;
use ringmill_core::loop_handle::{LoopHandle, TimerId};
use ringmill_core::metrics::LoopMetrics;
use ringmill_core::runtime::{self, LoopSettings, LoopThread};
use ringmill_core::DriverConfig;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Builds an [`EventLoop`].
#[derive(Debug, Clone)]
pub struct EventLoopBuilder {
    threads: usize,
    backend: Backend,
    driver: DriverConfig,
    settings: LoopSettings,
}

impl Default for EventLoopBuilder {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
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

    /// Receive buffers per loop (a power of two, default 256; io_uring's provided buffer
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
        })
    }
}

/// N loop threads serving servers and clients.
///
/// The threads start when the loop is built, and serve whatever is started on them; `run`
/// blocks the calling thread until [`stop`](Self::stop). Dropping the loop stops it.
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
/// let tick = event_loop.schedule_repeating(Duration::from_secs(1), || println!("tick"))?;
/// event_loop.schedule_once(Duration::from_secs(5), move || {
///     tick.cancel();
/// })?;
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
}

impl Default for EventLoop {
    /// An event loop with the default settings: one thread per core, backend `Auto`.
    ///
    /// # Panics
    ///
    /// If no backend can start (not even mio), or `RINGMILL_BACKEND` names an unusable
    /// backend; use [`EventLoop::builder`] to handle that as an error.
    fn default() -> Self {
        match EventLoopBuilder::default().build() {
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

    /// Blocks until [`stop`](Self::stop) is called (from any thread, before or during
    /// `run`), then waits for the loop threads to finish.
    pub fn run(&self) -> Result<()> {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            stopped = self
                .stopped_cond
                .wait(stopped)
                .unwrap_or_else(|e| e.into_inner());
        }
        drop(stopped);
        self.join()
    }

    /// Stops the loop: no more accepts, queued output gets up to the stop timeout to
    /// drain, every connection is closed (each with its `on_disconnect`), and the threads
    /// exit. Callable from any thread, any number of times. Called from outside the
    /// loop's threads, it returns once they have exited.
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
        if !LoopShared::on_any_loop() {
            let _ = self.join();
        }
    }

    fn join(&self) -> Result<()> {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        if runtime::shutdown(handles) {
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
        self.shared
            .get(index)
            .map(|l| LoopHandle::new(Arc::clone(l)))
    }

    /// A handle to every loop thread, in index order.
    pub fn handles(&self) -> Vec<LoopHandle> {
        self.shared
            .iter()
            .map(|l| LoopHandle::new(Arc::clone(l)))
            .collect()
    }

    /// Runs `f` once, `delay` from now, on the next loop thread (round robin); see
    /// [`LoopHandle::schedule_once`].
    pub fn schedule_once(
        &self,
        delay: Duration,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<TimerId> {
        self.next_handle().schedule_once(delay, f)
    }

    /// Runs `f` every `period` on the next loop thread (round robin), until cancelled;
    /// see [`LoopHandle::schedule_repeating`].
    pub fn schedule_repeating(
        &self,
        period: Duration,
        f: impl FnMut() + Send + 'static,
    ) -> Result<TimerId> {
        self.next_handle().schedule_repeating(period, f)
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
        LoopHandle::new(Arc::clone(self.next_loop()))
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

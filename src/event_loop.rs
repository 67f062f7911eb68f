//! The event loop: N loop threads, each with its own io_uring ring or `mio::Poll`.

use crate::select;
use ringmill_core::driver::DriverCounters;
use ringmill_core::error::{Backend, ConfigError, NetworkError, Result};
use ringmill_core::inbox::LoopShared;
use ringmill_core::runtime::{self, LoopHandle, LoopSettings};
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

impl EventLoopBuilder {
    /// Loop threads to run (default: the number of available cores).
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

    /// How long a graceful close (`close`, end of stream) waits for queued output to be
    /// written before closing anyway (default 5 s).
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
pub struct EventLoop {
    shared: Vec<Arc<LoopShared>>,
    handles: Mutex<Vec<LoopHandle>>,
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
            .fold(DriverCounters::default(), |a, b| DriverCounters {
                enters: a.enters + b.enters,
                sqes: a.sqes + b.sqes,
                cqes: a.cqes + b.cqes,
                enobufs: a.enobufs + b.enobufs,
                cq_overflows: a.cq_overflows + b.cq_overflows,
                rearms: a.rearms + b.rearms,
                events: a.events + b.events,
                wakeups: a.wakeups + b.wakeups,
                recv_buffers_out: a.recv_buffers_out + b.recv_buffers_out,
            })
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

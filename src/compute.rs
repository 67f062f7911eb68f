//! The event loop's compute pool: threads for CPU-heavy work, kept off the loop threads.
//!
//! Callbacks, timers and posted closures run on the loop threads and must not block;
//! [`EventLoop::spawn_compute`](crate::EventLoop::spawn_compute) runs a closure on one of
//! these threads instead. The pool starts on first use, runs tasks by [`TaskPriority`]
//! (first in, first out within a priority), catches a task that panics (counted in
//! [`ComputePoolMetrics::tasks_failed`]; the thread goes on), and is stopped with the
//! event loop: tasks already queued still run, then the threads are joined.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// How urgent a compute task is: higher runs first (mill-io's variants and order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskPriority {
    /// Runs when nothing more urgent is queued.
    Low = 0,
    /// The default of [`EventLoop::spawn_compute`](crate::EventLoop::spawn_compute).
    Normal = 1,
    /// Before `Normal` and `Low`.
    High = 2,
    /// Before everything else.
    Critical = 3,
}

/// The compute pool's counters (mill-io's `ComputePoolMetrics` getters). Read them with
/// the methods; they are updated as tasks come and go.
#[derive(Debug, Default)]
pub struct ComputePoolMetrics {
    tasks_submitted: AtomicU64,
    tasks_completed: AtomicU64,
    tasks_failed: AtomicU64,
    tasks_rejected: AtomicU64,
    active_workers: AtomicUsize,
    queue_depth: [AtomicUsize; 4],
    total_execution_time_ns: AtomicU64,
}

impl ComputePoolMetrics {
    /// Tasks accepted by `spawn_compute`.
    pub fn tasks_submitted(&self) -> u64 {
        self.tasks_submitted.load(Ordering::Relaxed)
    }

    /// Tasks that ran to the end.
    pub fn tasks_completed(&self) -> u64 {
        self.tasks_completed.load(Ordering::Relaxed)
    }

    /// Tasks that panicked (caught; the pool thread goes on).
    pub fn tasks_failed(&self) -> u64 {
        self.tasks_failed.load(Ordering::Relaxed)
    }

    /// Tasks refused because the event loop had stopped (they did not run).
    pub fn tasks_rejected(&self) -> u64 {
        self.tasks_rejected.load(Ordering::Relaxed)
    }

    /// Pool threads running a task now.
    pub fn active_workers(&self) -> usize {
        self.active_workers.load(Ordering::Relaxed)
    }

    /// Queued `Low` tasks.
    pub fn queue_depth_low(&self) -> usize {
        self.depth(TaskPriority::Low)
    }

    /// Queued `Normal` tasks.
    pub fn queue_depth_normal(&self) -> usize {
        self.depth(TaskPriority::Normal)
    }

    /// Queued `High` tasks.
    pub fn queue_depth_high(&self) -> usize {
        self.depth(TaskPriority::High)
    }

    /// Queued `Critical` tasks.
    pub fn queue_depth_critical(&self) -> usize {
        self.depth(TaskPriority::Critical)
    }

    /// Time spent running tasks, summed over the pool's threads, in nanoseconds.
    pub fn total_execution_time_ns(&self) -> u64 {
        self.total_execution_time_ns.load(Ordering::Relaxed)
    }

    fn depth(&self, p: TaskPriority) -> usize {
        self.queue_depth[p as usize].load(Ordering::Relaxed)
    }
}

type Task = Box<dyn FnOnce() + Send + 'static>;

struct Queued {
    priority: TaskPriority,
    seq: u64,
    task: Task,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    /// The max-heap's top is the highest priority, then the earliest queued.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Queued>,
    seq: u64,
    /// Set by `stop`: workers finish the queue, then exit; no more tasks are taken.
    stopping: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    ready: Condvar,
    metrics: Arc<ComputePoolMetrics>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pool: no thread until the first task.
pub(crate) struct ComputePool {
    size: usize,
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

thread_local! {
    static ON_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl ComputePool {
    /// A pool of `size` threads (at least one), started on first use.
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
                metrics: Arc::default(),
            }),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Threads the pool runs once started.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn metrics(&self) -> Arc<ComputePoolMetrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// Queues `task`; `false` (and the task is dropped unrun) once the pool has stopped.
    pub(crate) fn spawn(&self, task: Task, priority: TaskPriority) -> bool {
        let metrics = &self.inner.metrics;
        {
            let mut q = self.inner.lock();
            if q.stopping {
                metrics.tasks_rejected.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            q.seq += 1;
            let seq = q.seq;
            q.heap.push(Queued {
                priority,
                seq,
                task,
            });
            metrics.tasks_submitted.fetch_add(1, Ordering::Relaxed);
            metrics.queue_depth[priority as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.start_threads();
        self.inner.ready.notify_one();
        true
    }

    fn start_threads(&self) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        if !threads.is_empty() {
            return;
        }
        for i in 0..self.size {
            let inner = Arc::clone(&self.inner);
            match std::thread::Builder::new()
                .name(format!("ringmill-compute-{i}"))
                .spawn(move || work(&inner))
            {
                Ok(t) => threads.push(t),
                // Fewer threads than asked for still run every task; none at all cannot.
                Err(e) if !threads.is_empty() => {
                    log::warn!("ringmill: compute pool: thread {i} did not start: {e}");
                    break;
                }
                Err(e) => {
                    log::error!("ringmill: compute pool: no thread could start: {e}");
                    // Run what is queued here rather than never.
                    drop(threads);
                    run_queued_inline(&self.inner);
                    return;
                }
            }
        }
    }

    /// Stops taking tasks; the ones queued still run. Joins the threads unless called
    /// from one of them (or `join` is false), in which case they exit on their own once
    /// the queue is empty.
    pub(crate) fn stop(&self, join: bool) {
        self.inner.lock().stopping = true;
        self.inner.ready.notify_all();
        if !join || ON_POOL.with(|c| c.get()) {
            return;
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn work(inner: &Inner) {
    ON_POOL.with(|c| c.set(true));
    loop {
        let next = {
            let mut q = inner.lock();
            loop {
                if let Some(next) = q.heap.pop() {
                    break next;
                }
                if q.stopping {
                    return;
                }
                q = inner.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        run(inner, next);
    }
}

fn run_queued_inline(inner: &Inner) {
    loop {
        let Some(next) = inner.lock().heap.pop() else {
            return;
        };
        run(inner, next);
    }
}

fn run(inner: &Inner, queued: Queued) {
    let m = &inner.metrics;
    m.queue_depth[queued.priority as usize].fetch_sub(1, Ordering::Relaxed);
    m.active_workers.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let ok = catch_unwind(AssertUnwindSafe(queued.task)).is_ok();
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    m.total_execution_time_ns
        .fetch_add(nanos, Ordering::Relaxed);
    m.active_workers.fetch_sub(1, Ordering::Relaxed);
    if ok {
        m.tasks_completed.fetch_add(1, Ordering::Relaxed);
    } else {
        log::error!("ringmill: a compute task panicked; the pool goes on");
        m.tasks_failed.fetch_add(1, Ordering::Relaxed);
    }
}

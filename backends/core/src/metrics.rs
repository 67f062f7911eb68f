//! Counters cheap enough to leave on, and the snapshots that report them:
//! [`ServerMetrics`] for a server, [`LoopMetrics`] for an event loop.
//!
//! A service's traffic counters are striped: each thread adds to its own cache-line-sized
//! stripe with a relaxed atomic add (no lock, no allocation, no line shared between loop
//! threads), and a snapshot sums the stripes. A loop's own counters live in its
//! [`LoopShared`](crate::engine::LoopShared), written by the loop thread only.

use crate::driver::DriverCounters;
use std::cell::Cell;
use std::ops::Add;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a server's counters, from `TcpServer::metrics` (in the `ringmill`
/// crate). Counters only grow; `open` is a gauge.
///
/// ```
/// # use ringmill_core::metrics::ServerMetrics;
/// let m = ServerMetrics::default();
/// assert_eq!(m.bytes_in + m.bytes_out, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerMetrics {
    /// Connections open now, as `connection_count()` counts them: a closing connection
    /// until its `on_disconnect` has returned.
    pub open: usize,
    /// Connections accepted and admitted since the start.
    pub accepted: u64,
    /// Connections closed at accept because `max_connections` were open.
    pub refused_max_connections: u64,
    /// Connections closed at accept by the per-IP cap.
    pub refused_per_ip: u64,
    /// Connections closed at accept by the server's accept rate.
    pub refused_rate: u64,
    /// Connections closed at accept by their address's accept rate.
    pub refused_ip_rate: u64,
    /// Bytes received from peers (delivered to `on_data`, or held while reads are paused).
    pub bytes_in: u64,
    /// Bytes the kernel took for sending.
    pub bytes_out: u64,
    /// Of `bytes_out`, those written straight from the bytes being received, with no
    /// copy into the connection's queue (a handler answering with a slice of its
    /// `on_data` data, on a backend that can write during a receive).
    pub bytes_written_through: u64,
    /// Frames refused with `SendError::Backpressure`.
    pub backpressure_refusals: u64,
    /// Callbacks that returned an error (the connection was closed).
    pub handler_errors: u64,
    /// Callbacks that panicked (the connection was closed, the loop went on).
    pub handler_panics: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
}

/// A snapshot of an event loop's counters, from `EventLoop::metrics` (summed over its
/// loop threads) or [`LoopHandle::metrics`](crate::loop_handle::LoopHandle::metrics)
/// (one thread).
///
/// ```
/// # use ringmill_core::metrics::LoopMetrics;
/// let total = LoopMetrics::default() + LoopMetrics::default();
/// assert_eq!(total.connections, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopMetrics {
    /// The drivers' counters: io_uring enters, SQEs, CQEs, ENOBUFS; mio events, wakeups.
    pub driver: DriverCounters,
    /// Connections the loops hold now, over every server and client: open, connecting or
    /// closing. Updated once per loop iteration.
    pub connections: usize,
    /// User timers whose closure ran (panicking runs included).
    pub timers_fired: u64,
    /// Closures run through `post`.
    pub tasks_run: u64,
    /// Timer and posted closures that panicked (caught and logged; the loop went on).
    pub task_panics: u64,
    /// Entries in the loops' timer heaps now: connect, idle, handshake and linger
    /// deadlines, user timers (cancelled ones not yet purged included). Updated once per
    /// loop iteration.
    pub timer_entries: usize,
}

impl Add for DriverCounters {
    type Output = DriverCounters;

    /// Field by field sum (counters of several loops).
    fn add(self, b: DriverCounters) -> DriverCounters {
        DriverCounters {
            enters: self.enters + b.enters,
            sqes: self.sqes + b.sqes,
            cqes: self.cqes + b.cqes,
            enobufs: self.enobufs + b.enobufs,
            cq_overflows: self.cq_overflows + b.cq_overflows,
            rearms: self.rearms + b.rearms,
            events: self.events + b.events,
            wakeups: self.wakeups + b.wakeups,
            recv_buffers_out: self.recv_buffers_out + b.recv_buffers_out,
        }
    }
}

impl Add for LoopMetrics {
    type Output = LoopMetrics;

    /// Field by field sum (metrics of several loops).
    fn add(self, b: LoopMetrics) -> LoopMetrics {
        LoopMetrics {
            driver: self.driver + b.driver,
            connections: self.connections + b.connections,
            timers_fired: self.timers_fired + b.timers_fired,
            tasks_run: self.tasks_run + b.tasks_run,
            task_panics: self.task_panics + b.task_panics,
            timer_entries: self.timer_entries + b.timer_entries,
        }
    }
}

impl std::iter::Sum for LoopMetrics {
    fn sum<I: Iterator<Item = LoopMetrics>>(iter: I) -> LoopMetrics {
        iter.fold(LoopMetrics::default(), |a, b| a + b)
    }
}

/// What a service counts on its hot paths.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stat {
    BytesIn,
    BytesOut,
    BytesWrittenThrough,
    Backpressure,
    HandlerError,
    HandlerPanic,
    IdleTimeout,
}

const STATS: usize = 7;
const STRIPES: usize = 16;

/// One thread's stripe, alone on its cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Stripe([AtomicU64; STATS]);

/// A service's traffic counters, striped by thread.
#[derive(Default)]
pub(crate) struct ServiceStats {
    stripes: [Stripe; STRIPES],
}

impl std::fmt::Debug for ServiceStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceStats").finish_non_exhaustive()
    }
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe (`usize::MAX`: not chosen yet).
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe_index() -> usize {
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl ServiceStats {
    /// Adds `n` to `stat` (relaxed: a counter, nothing is ordered by it).
    #[inline]
    pub(crate) fn add(&self, stat: Stat, n: u64) {
        self.stripes[stripe_index()].0[stat as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over every stripe.
    pub(crate) fn get(&self, stat: Stat) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[stat as usize].load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stripes_sum_across_threads() {
        let stats = Arc::new(ServiceStats::default());
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let stats = Arc::clone(&stats);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        stats.add(Stat::BytesIn, 3);
                        stats.add(Stat::HandlerPanic, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(stats.get(Stat::BytesIn), 60_000);
        assert_eq!(stats.get(Stat::HandlerPanic), 20_000);
        assert_eq!(stats.get(Stat::BytesOut), 0);
    }

    #[test]
    fn driver_counters_add_field_by_field() {
        let a = DriverCounters {
            enters: 1,
            cqes: 2,
            wakeups: 3,
            ..Default::default()
        };
        let sum = a + a;
        assert_eq!((sum.enters, sum.cqes, sum.wakeups, sum.sqes), (2, 4, 6, 0));
    }
}

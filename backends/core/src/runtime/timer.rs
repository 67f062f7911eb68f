//! The loop's timers: one min-heap for connect timeouts, idle timeouts, close lingers and
//! accept back-off. Entries are validated when they fire (a connection may have gone
//! meanwhile), so nothing is ever removed early.

use crate::driver::{ListenerId, Slot};
use crate::id::ConnectionId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A client's connect deadline.
    Connect(Slot, ConnectionId),
    /// Check whether a connection has been idle too long.
    Idle(Slot, ConnectionId),
    /// A graceful close's deadline: close even if output is still queued.
    Linger(Slot, ConnectionId),
    /// Resume accepting after a resource error.
    ResumeAccept(ListenerId),
    /// The loop's stop deadline.
    Stop,
}

/// A min-heap of deadlines.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    seq: u64,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, kind)));
    }

    /// How long until the next deadline, from `now` (`None`: no timer).
    pub(crate) fn next_in(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(now))
    }

    /// Removes and returns a timer whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse((_, _, k))| k),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(now + Duration::from_secs(2), TimerKind::Stop);
        t.add(
            now + Duration::from_secs(1),
            TimerKind::ResumeAccept(ListenerId(1)),
        );
        assert_eq!(t.next_in(now), Some(Duration::from_secs(1)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(1)),
            Some(TimerKind::ResumeAccept(ListenerId(1)))
        );
        assert_eq!(t.pop_due(now + Duration::from_secs(1)), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(5)),
            Some(TimerKind::Stop)
        );
        assert_eq!(t.next_in(now), None);
    }
}

//! The loop's one source of time.
//!
//! Every timeout the core keeps (connect, idle, handshake, close linger, stop, accept
//! back-off, user timers) is measured against the [`Clock`] its loop's driver hands over
//! through [`Driver::clock`](crate::driver::Driver::clock). Real drivers use the system's
//! monotonic clock; a simulated driver uses a manual one and moves it forward itself, so
//! that a timeout of minutes is tested in microseconds and without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far a manual clock can be moved from its start: about a century.
pub const MANUAL_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A source of [`Instant`]s: the system's monotonic clock, or a manual one.
///
/// Cloning shares the clock: advancing a manual clock moves every clone.
#[derive(Clone, Default)]
pub struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<Manual>),
}

struct Manual {
    /// The real instant the manual clock started at; its time is `start + elapsed`.
    start: Instant,
    /// Nanoseconds advanced since `start`.
    elapsed: AtomicU64,
}

impl Clock {
    /// The system's monotonic clock ([`Instant::now`]).
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands still until [`advance`](Self::advance) moves it. It starts at
    /// the real instant of this call, so its instants mix with real ones only in the sense
    /// that both are `Instant`s: a loop uses one clock for all of its deadlines.
    pub fn manual() -> Self {
        Self(Source::Manual(Arc::new(Manual {
            start: Instant::now(),
            elapsed: AtomicU64::new(0),
        })))
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Source::Manual(_))
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.0 {
            Source::System => Instant::now(),
            Source::Manual(m) => m.start + Duration::from_nanos(m.elapsed.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock forward by `by` (it stops at [`MANUAL_LIMIT`] past its start,
    /// so that its instants never overflow); does nothing to the system clock, which moves
    /// by itself.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(m) = &self.0 {
            let limit = MANUAL_LIMIT.as_nanos() as u64;
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            let _ = m
                .elapsed
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                    Some(e.saturating_add(nanos).min(limit))
                });
        }
    }

    /// Moves a manual clock forward to `at` if `at` is later than its present; does
    /// nothing to the system clock.
    pub fn advance_to(&self, at: Instant) {
        let now = self.now();
        if at > now {
            self.advance(at - now);
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Manual(m) => write!(
                f,
                "Clock::Manual(+{:?})",
                Duration::from_nanos(m.elapsed.load(Ordering::Acquire))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        let shared = clock.clone();
        shared.advance(Duration::from_secs(3600));
        assert_eq!(clock.now(), t0 + Duration::from_secs(3600));
        clock.advance_to(t0 + Duration::from_secs(10));
        assert_eq!(
            clock.now(),
            t0 + Duration::from_secs(3600),
            "never backwards"
        );
        clock.advance_to(t0 + Duration::from_secs(7200));
        assert_eq!(clock.now(), t0 + Duration::from_secs(7200));
    }

    #[test]
    fn manual_clock_saturates() {
        let clock = Clock::manual();
        let t0 = clock.now();
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), t0 + MANUAL_LIMIT);
    }

    #[test]
    fn system_clock_ignores_advance() {
        let clock = Clock::system();
        assert!(!clock.is_manual());
        let before = Instant::now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() < before + Duration::from_secs(3600));
    }
}

//! Deadline arithmetic that never overflows: `now + delay`, and a repeating timer's next
//! tick on its grid.

use std::time::{Duration, Instant};

/// The deadline after `at` for a timer of `period`: `at + period`, or, when the loop is
/// behind by more than a period, the first tick of the same phase after `now`. Deadlines
/// stay on the grid `start + k * period`, so lateness never accumulates, and missed ticks
/// are skipped rather than run in a burst.
pub(super) fn next_deadline(at: Instant, period: Duration, now: Instant) -> Instant {
    let next = at.checked_add(period).unwrap_or_else(|| far_future(now));
    if next > now {
        return next;
    }
    let behind = now.duration_since(at).as_nanos();
    let ticks = behind / period.as_nanos() + 1;
    u64::try_from(period.as_nanos().saturating_mul(ticks))
        .ok()
        .and_then(|nanos| at.checked_add(Duration::from_nanos(nanos)))
        .unwrap_or_else(|| far_future(now))
}

/// `now + delay`, or a deadline a century away if that cannot be represented.
pub(crate) fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay).unwrap_or_else(|| far_future(now))
}

fn far_future(now: Instant) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(CENTURY).unwrap_or(now)
}

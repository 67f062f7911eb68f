//! What a run leaves behind: its trace (a hash of every event, for the replay check), the
//! last events in words (for a failure message), and the broken rules it found.

use super::rng::Fnv;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many recent events a failure message shows.
const TAIL: usize = 40;

/// The shared record of one run. Cloning shares it.
#[derive(Clone)]
pub struct Log(Arc<Mutex<Inner>>);

struct Inner {
    start: Instant,
    hash: Fnv,
    events: u64,
    tail: VecDeque<(u64, &'static str, u64, u64)>,
    violations: Vec<String>,
    counts: BTreeMap<&'static str, u64>,
    /// The last events when the first rule was broken.
    first_tail: Option<VecDeque<(u64, &'static str, u64, u64)>>,
}

impl Log {
    /// A log whose times count from `start` (the run's virtual time zero).
    pub fn new(start: Instant) -> Self {
        Log(Arc::new(Mutex::new(Inner {
            start,
            hash: Fnv::default(),
            events: 0,
            tail: VecDeque::with_capacity(TAIL),
            violations: Vec::new(),
            counts: BTreeMap::new(),
            first_tail: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event at `now`: `what` names it, `a` and `b` are its numbers (a slot,
    /// a length, a normalised connection number). Everything recorded goes into the
    /// trace hash, so two runs of one seed must record the same events in the same order.
    pub fn event(&self, now: Instant, what: &'static str, a: u64, b: u64) {
        self.record(now, what, a, b, true);
    }

    /// Records an event in the tail and the counts but not in the trace hash: for
    /// operations whose order within one turn the core does not fix today (it calls
    /// `unlisten` and `resume_accept` in the iteration order of a `HashMap`, which
    /// differs between runs), so that the replay check does not fail on an order no
    /// completion depends on.
    pub fn note(&self, now: Instant, what: &'static str, a: u64, b: u64) {
        self.record(now, what, a, b, false);
    }

    fn record(&self, now: Instant, what: &'static str, a: u64, b: u64, hashed: bool) {
        let mut inner = self.lock();
        let t = now.saturating_duration_since(inner.start).as_nanos() as u64;
        if hashed {
            inner.hash.write(&t.to_le_bytes());
            inner.hash.write(what.as_bytes());
            inner.hash.write(&a.to_le_bytes());
            inner.hash.write(&b.to_le_bytes());
            inner.events += 1;
        }
        *inner.counts.entry(what).or_default() += 1;
        if inner.tail.len() == TAIL {
            inner.tail.pop_front();
        }
        inner.tail.push_back((t, what, a, b));
    }

    /// Records a broken rule (the first few are kept in full).
    pub fn violation(&self, now: Instant, message: String) {
        let mut inner = self.lock();
        let t = Duration::from_nanos(now.saturating_duration_since(inner.start).as_nanos() as u64);
        if inner.first_tail.is_none() {
            inner.first_tail = Some(inner.tail.clone());
        }
        if inner.violations.len() < 20 {
            inner.violations.push(format!("at {t:?}: {message}"));
        }
    }

    /// Whether a rule was broken.
    pub fn failed(&self) -> bool {
        !self.lock().violations.is_empty()
    }

    /// The trace hash and the number of events recorded.
    pub fn trace(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.hash.value(), inner.events)
    }

    /// How many events of each kind were recorded.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().counts.clone()
    }

    /// The broken rules, in order.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// The last events before the first broken rule (or the end), oldest first, one per
    /// line.
    pub fn tail(&self) -> String {
        let inner = self.lock();
        let lines: Vec<String> = inner
            .first_tail
            .as_ref()
            .unwrap_or(&inner.tail)
            .iter()
            .map(|&(t, what, a, b)| format!("  {:>14?} {what} {a} {b}", Duration::from_nanos(t)))
            .collect();
        lines.join("\n")
    }
}

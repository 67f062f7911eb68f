//! Connection ids: 64-bit, process-wide, never reused.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Unique identifier of one connection, server-side or client-side.
///
/// Ids come from one process-wide counter, so an id is never given to two connections in
/// the same process: a stale id can only ever be refused, never reach a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    /// Wraps a raw id.
    pub fn new(id: u64) -> Self {
        ConnectionId(id)
    }

    /// The raw id.
    pub fn as_u64(&self) -> u64 {
        self.0
    }

    /// A fresh id, never handed out before in this process.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

//! The pieces the suite is built from, usable by a driver crate's own tests too: the
//! driver under test ([`Target`]), owned completions, polling with deadlines, an echo loop
//! driven by the `Driver` trait alone, echo clients, a deterministic generator and a
//! descriptor count.

mod echo;
mod events;
mod poll;
mod rng;
mod sockets;
mod target;

pub use echo::*;
pub use events::*;
pub use poll::*;
pub use rng::*;
pub use sockets::*;
pub use target::*;

use crate::config::DriverConfig;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// How long any single wait of the suite may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A short wait during which nothing may arrive: a check that something does *not*
/// happen, never a wait for something that should.
pub const QUIET: Duration = Duration::from_millis(100);

static SERIAL: RwLock<()> = RwLock::new(());

/// Held by every suite test that may run beside others.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held by a suite test that counts the process's descriptors or changes a signal
/// disposition: no other suite test of the binary runs meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERIAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open descriptors of this process, where the platform shows them (`/proc/self/fd`).
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count())
}

/// A configuration with small buffers, for tests that want short reads.
pub fn small_config() -> DriverConfig {
    DriverConfig {
        buffer_size: 4096,
        buffer_count: 16,
        ring_entries: 64,
        cq_entries: 256,
        ..DriverConfig::default()
    }
}

//! Loop settings that are not the driver's.

use std::time::Duration;

/// Loop settings that are not the driver's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopSettings {
    /// How long `stop` lets queued output drain before closing connections anyway.
    pub stop_timeout: Duration,
    /// How long a graceful close waits for queued output before closing anyway.
    pub linger: Duration,
    /// The loop threads dispatch nothing until [`LoopShared::release`](crate::engine::LoopShared::release) (mill-io's
    /// `EventLoop::run`); see `EventLoopBuilder::dispatch_on_run`.
    pub dispatch_on_run: bool,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self {
            stop_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(5),
            dispatch_on_run: false,
        }
    }
}

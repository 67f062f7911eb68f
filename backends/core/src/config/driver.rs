//! The per-loop settings a driver is built with.

use crate::error::ConfigError;

/// The most readiness events one wait may fetch ([`DriverConfig::events_capacity`]): the
/// event array is allocated up front, and more events per wait gain nothing.
pub const MAX_EVENTS_CAPACITY: usize = 1 << 20;

/// Per-loop settings handed to a driver when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Size of one receive buffer in the loop's pool (one kernel read fills at most this).
    pub buffer_size: usize,
    /// Receive buffers in the loop's pool (io_uring: provided buffer ring entries; a power
    /// of two).
    pub buffer_count: usize,
    /// Submission queue entries (io_uring).
    pub ring_entries: u32,
    /// Completion queue entries (io_uring); several times `ring_entries` so multishot
    /// completions have room.
    pub cq_entries: u32,
    /// Bytes read from one connection per readiness event before others get a turn (mio).
    pub read_budget: usize,
    /// Readiness events fetched per wait (mio; at most [`MAX_EVENTS_CAPACITY`]).
    pub events_capacity: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            buffer_size: 64 * 1024,
            // Few enough to stay in the caches: a buffer is back in the ring as soon as its
            // bytes were delivered, so a handful are in use at a time, and io_uring takes
            // them from the ring in order, so every one of them is touched in turn. 256
            // (16 MiB) cost the 4 KiB x 16 echo cells 15-25 % more CPU per message than 64
            // (4 MiB); 32 measured the same as 64. A batch that needs more waits for them
            // (`ENOBUFS`, then the receive is armed again).
            buffer_count: 64,
            ring_entries: 1024,
            cq_entries: 8192,
            read_budget: 256 * 1024,
            events_capacity: 1024,
        }
    }
}

impl DriverConfig {
    /// Checks that the settings make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.buffer_size == 0 {
            return Err(ConfigError::Zero("buffer_size"));
        }
        if self.buffer_size > u32::MAX as usize {
            return Err(ConfigError::OutOfRange {
                option: "buffer_size",
                reason: "must fit in 32 bits".into(),
            });
        }
        if !self.buffer_count.is_power_of_two() || self.buffer_count > 32768 {
            return Err(ConfigError::OutOfRange {
                option: "buffer_count",
                reason: format!("{} is not a power of two up to 32768", self.buffer_count),
            });
        }
        if self.ring_entries == 0 || self.cq_entries < self.ring_entries {
            return Err(ConfigError::OutOfRange {
                option: "cq_entries",
                reason: "the completion queue must be at least as large as the submission queue"
                    .into(),
            });
        }
        if self.read_budget == 0 {
            return Err(ConfigError::Zero("read_budget"));
        }
        if self.events_capacity == 0 {
            return Err(ConfigError::Zero("events_capacity"));
        }
        if self.events_capacity > MAX_EVENTS_CAPACITY {
            return Err(ConfigError::OutOfRange {
                option: "events_capacity",
                reason: format!(
                    "{} is above the {MAX_EVENTS_CAPACITY} events one wait can fetch",
                    self.events_capacity
                ),
            });
        }
        Ok(())
    }
}

//! Server, client and loop configuration.

mod client;
mod driver;
mod server;

pub use client::TcpClientConfig;
pub use driver::{DriverConfig, MAX_EVENTS_CAPACITY};
pub use server::{TcpServerConfig, TcpServerConfigBuilder};

use crate::error::ConfigError;
use std::time::Duration;

/// Default high watermark for servers and clients: 1 MiB.
pub const DEFAULT_HIGH_WATERMARK: usize = 1024 * 1024;
/// Default low watermark for servers and clients: 256 KiB.
pub const DEFAULT_LOW_WATERMARK: usize = 256 * 1024;
/// Default cap on one `on_data` chunk: 8 KiB.
pub const DEFAULT_BUFFER_SIZE: usize = 8192;
/// Default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Default deadline of a server connection's layer handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's outbound limits, checked on every send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// Sends are refused while this many bytes are queued.
    pub high: usize,
    /// `on_drained` once the queue falls to this after a refusal.
    pub low: usize,
    /// Largest frame.
    pub max_frame: usize,
}

impl Watermarks {
    /// Checked limits.
    pub fn new(high: usize, low: usize, max_frame: Option<usize>) -> Result<Self, ConfigError> {
        if high == 0 {
            return Err(ConfigError::Zero("high_watermark"));
        }
        if low > high {
            return Err(ConfigError::WatermarksInverted { low, high });
        }
        if let Some(max) = max_frame {
            if max == 0 {
                return Err(ConfigError::Zero("max_frame"));
            }
            if max > high {
                return Err(ConfigError::MaxFrameAboveHighWatermark {
                    max_frame: max,
                    high,
                });
            }
        }
        Ok(Self {
            high,
            low,
            max_frame: max_frame.unwrap_or(usize::MAX),
        })
    }
}

/// A keep-alive idle time that can work somewhere: whole seconds, at least one (a
/// sub-second value would be set as 0, which no system takes). An upper bound is the
/// system's to enforce: it is reported per connection, as mill-net does.
fn check_keep_alive(keep_alive: Option<Duration>) -> Result<(), ConfigError> {
    let Some(idle) = keep_alive else {
        return Ok(());
    };
    if idle.is_zero() {
        return Err(ConfigError::Zero("keep_alive"));
    }
    if idle < Duration::from_secs(1) {
        return Err(ConfigError::OutOfRange {
            option: "keep_alive",
            reason: format!(
                "{idle:?}: the idle time before the first probe is set in whole seconds, \
                 at least one"
            ),
        });
    }
    Ok(())
}

//! A client's configuration.

use super::{
    check_keep_alive, Watermarks, DEFAULT_BUFFER_SIZE, DEFAULT_HIGH_WATERMARK,
    DEFAULT_LOW_WATERMARK,
};
use crate::error::ConfigError;
use std::time::Duration;

/// Configuration for a `TcpClient` (`ringmill::tcp::TcpClient`).
#[derive(Clone, Debug)]
pub struct TcpClientConfig {
    /// How long the TCP handshake may take before the connect fails with `TimedOut`.
    pub connect_timeout: Duration,
    /// Queued outbound bytes at or above which sends get `SendError::Backpressure`.
    pub high_watermark: usize,
    /// Queued outbound bytes at or below which `on_drained` fires after a refused send.
    pub low_watermark: usize,
    /// `SO_KEEPALIVE` with this idle time before the first probe; `None` leaves it off.
    /// Whole seconds, at least one (validation refuses less). A value the system refuses
    /// (on Linux, more than 32,767 s) is reported per connection as
    /// `on_error(Some(id), Configuration(..))` and the connection goes on without it.
    pub keep_alive: Option<Duration>,
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// The largest chunk one `on_data` call receives.
    pub buffer_size: usize,
    /// Largest frame one send may carry (`None`: up to the high watermark).
    pub max_frame: Option<usize>,
    /// Close the connection if the peer sends nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for TcpClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            high_watermark: DEFAULT_HIGH_WATERMARK,
            low_watermark: DEFAULT_LOW_WATERMARK,
            keep_alive: None,
            nodelay: true,
            buffer_size: DEFAULT_BUFFER_SIZE,
            max_frame: None,
            idle_timeout: None,
        }
    }
}

impl TcpClientConfig {
    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Zero("connect_timeout"));
        }
        if self.buffer_size == 0 {
            return Err(ConfigError::Zero("buffer_size"));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::Zero("idle_timeout"));
        }
        check_keep_alive(self.keep_alive)?;
        Watermarks::new(self.high_watermark, self.low_watermark, self.max_frame).map(|_| ())
    }

    /// The outbound limits these options describe (call after `validate`).
    pub fn watermarks(&self) -> Watermarks {
        Watermarks {
            high: self.high_watermark,
            low: self.low_watermark,
            max_frame: self.max_frame.unwrap_or(usize::MAX),
        }
    }
}

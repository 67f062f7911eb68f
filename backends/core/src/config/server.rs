//! A server's configuration and its builder.

use super::{
    check_keep_alive, Watermarks, DEFAULT_BACKLOG, DEFAULT_BUFFER_SIZE, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HIGH_WATERMARK, DEFAULT_LOW_WATERMARK,
};
use crate::admission::{AdmissionConfig, RateLimit};
use crate::error::ConfigError;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Configuration for a `TcpServer` (`ringmill::tcp::TcpServer`).
///
/// Build it with [`TcpServerConfig::builder`]. [`TcpServerConfig::validate`] (called by
/// `TcpServer::new`) rejects contradictory values with a [`ConfigError`].
///
/// | option | default | applied to |
/// |---|---|---|
/// | `address` | `127.0.0.1:8080` | `bind` (one listener, shared by the loops) |
/// | `reuse_port` | `false` | `SO_REUSEPORT`: one listener per loop, the port shared with other sockets |
/// | `buffer_size` | 8 KiB | the largest chunk one `on_data` call receives |
/// | `max_connections` | unlimited | accept: extra connections are closed at once and reported |
/// | `no_delay` | `true` | `TCP_NODELAY` on every accepted socket |
/// | `keep_alive` | 60 s | `SO_KEEPALIVE` + `TCP_KEEPIDLE` on every accepted socket |
/// | `high_watermark` | 1 MiB | sends are refused while this many bytes are queued |
/// | `low_watermark` | 256 KiB | `on_drained` once the queue falls to it |
/// | `max_frame` | none | sends of a larger frame are refused with `FrameTooLarge` |
/// | `idle_timeout` | none | connections that send nothing for this long are closed |
/// | `handshake_timeout` | 10 s | connections whose layers' handshake is not done by then are closed |
/// | `backlog` | 1024 | `listen(2)` backlog |
/// | `only_v6` | `true` | an IPv6 address serves IPv6 only (`false`: `[::]` is dual stack) |
/// | `max_connections_per_ip` | unlimited | accept: more from one address are closed at once |
/// | `accept_rate` | unlimited | accept: token bucket for the whole server |
/// | `accept_rate_per_ip` | unlimited | accept: token bucket per address |
/// | `admission_exempt` / `exempt_loopback` | none / `false` | addresses free of the per-IP rules |
#[derive(Clone, Debug)]
pub struct TcpServerConfig {
    /// Address to bind to.
    pub address: SocketAddr,
    /// The largest chunk one `on_data` call receives.
    pub buffer_size: usize,
    /// Most connections open at once (`None`: unlimited).
    pub max_connections: Option<usize>,
    /// `TCP_NODELAY` on accepted sockets.
    pub no_delay: bool,
    /// `SO_KEEPALIVE` with this idle time before the first probe; `None` leaves it off.
    /// Whole seconds, at least one (validation refuses less). A value the system refuses
    /// (on Linux, more than 32,767 s) is reported per connection as
    /// `on_error(Some(id), Configuration(..))` and the connection goes on without it.
    pub keep_alive: Option<Duration>,
    /// Queued outbound bytes at or above which sends get `SendError::Backpressure`.
    pub high_watermark: usize,
    /// Queued outbound bytes at or below which `on_drained` fires after a refused send.
    pub low_watermark: usize,
    /// Largest frame one send may carry (`None`: up to the high watermark).
    pub max_frame: Option<usize>,
    /// Close connections that send nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose layers (TLS, ...) have not finished their handshake this
    /// long after it was accepted, however much the peer trickles in (`None`: no deadline
    /// but the idle timeout). Reported as `on_error(Io(TimedOut))`. Plain connections
    /// have no handshake.
    pub handshake_timeout: Option<Duration>,
    /// `listen(2)` backlog.
    pub backlog: u32,
    /// Per-IP cap, accept rates and their exemptions.
    pub admission: AdmissionConfig,
    /// For an IPv6 `address`: accept IPv6 only (`true`, `IPV6_V6ONLY`), or IPv4 too, as
    /// IPv4-mapped addresses (`false`: binding `[::]` is then dual stack). Ignored for an
    /// IPv4 address. The same on every OS, whatever its own default.
    pub only_v6: bool,
    /// Bind with `SO_REUSEPORT`: each loop gets its own listener and the kernel spreads
    /// connections over them, but any other socket of the same user that sets it too may
    /// bind the same address and take a share of the connections. Off by default: the
    /// address is then the server's alone (a second bind gets `AddrInUse`).
    pub reuse_port: bool,
}

impl Default for TcpServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            buffer_size: DEFAULT_BUFFER_SIZE,
            max_connections: None,
            no_delay: true,
            keep_alive: Some(Duration::from_secs(60)),
            high_watermark: DEFAULT_HIGH_WATERMARK,
            low_watermark: DEFAULT_LOW_WATERMARK,
            max_frame: None,
            idle_timeout: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            backlog: DEFAULT_BACKLOG,
            admission: AdmissionConfig::default(),
            only_v6: true,
            reuse_port: false,
        }
    }
}

impl TcpServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> TcpServerConfigBuilder {
        TcpServerConfigBuilder::new()
    }

    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.buffer_size == 0 {
            return Err(ConfigError::Zero("buffer_size"));
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::Zero("max_connections"));
        }
        if self.backlog == 0 {
            return Err(ConfigError::Zero("backlog"));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::Zero("idle_timeout"));
        }
        if self.handshake_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::Zero("handshake_timeout"));
        }
        check_keep_alive(self.keep_alive)?;
        if self.backlog > i32::MAX as u32 {
            return Err(ConfigError::OutOfRange {
                option: "backlog",
                reason: format!("{} does not fit listen(2)", self.backlog),
            });
        }
        if self.admission.max_per_ip == Some(0) {
            return Err(ConfigError::Zero("max_connections_per_ip"));
        }
        for (option, rate) in [
            ("accept_rate", self.admission.rate),
            ("accept_rate_per_ip", self.admission.rate_per_ip),
        ] {
            if let Some(rate) = rate {
                if !(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0 {
                    return Err(ConfigError::OutOfRange {
                        option,
                        reason: format!(
                            "{} per second with bursts of {} admits nothing",
                            rate.per_second, rate.burst
                        ),
                    });
                }
            }
        }
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

/// Builder for [`TcpServerConfig`]; every option not set keeps its default.
#[derive(Clone, Debug, Default)]
pub struct TcpServerConfigBuilder {
    config: TcpServerConfig,
}

impl TcpServerConfigBuilder {
    /// A builder starting from the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Address to bind to (port 0 picks a free port; see `TcpServer::local_addr`).
    pub fn address(mut self, address: SocketAddr) -> Self {
        self.config.address = address;
        self
    }

    /// The largest chunk one `on_data` call receives.
    pub fn buffer_size(mut self, size: usize) -> Self {
        self.config.buffer_size = size;
        self
    }

    /// Most connections open at once; extra ones are closed at once and reported.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = Some(max);
        self
    }

    /// `TCP_NODELAY` on accepted sockets.
    pub fn no_delay(mut self, enabled: bool) -> Self {
        self.config.no_delay = enabled;
        self
    }

    /// `SO_KEEPALIVE` with this idle time; `None` turns keep-alive off.
    pub fn keep_alive(mut self, duration: Option<Duration>) -> Self {
        self.config.keep_alive = duration;
        self
    }

    /// Outbound queue's high watermark, in bytes.
    pub fn high_watermark(mut self, bytes: usize) -> Self {
        self.config.high_watermark = bytes;
        self
    }

    /// Opt into sharing the port with other sockets (`SO_REUSEPORT`); see
    /// [`TcpServerConfig::reuse_port`].
    pub fn reuse_port(mut self, enabled: bool) -> Self {
        self.config.reuse_port = enabled;
        self
    }

    /// Outbound queue's low watermark, in bytes.
    pub fn low_watermark(mut self, bytes: usize) -> Self {
        self.config.low_watermark = bytes;
        self
    }

    /// Largest frame one send may carry; larger ones are refused with `FrameTooLarge`.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.config.max_frame = Some(bytes);
        self
    }

    /// Close connections that send nothing for this long.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// How long a connection's layers may take to finish their handshake (default 10 s;
    /// `None`: no deadline of its own). See [`TcpServerConfig::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// `listen(2)` backlog.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// For an IPv6 address, whether to accept IPv6 only (the default) or IPv4 too (dual
    /// stack: `[::]` then serves both, IPv4 peers showing as `::ffff:a.b.c.d`); see
    /// [`TcpServerConfig::only_v6`].
    pub fn only_v6(mut self, only_v6: bool) -> Self {
        self.config.only_v6 = only_v6;
        self
    }

    /// Most connections open at once from one IP address; more are closed at once and
    /// reported (`NetworkError::AdmissionRefused`).
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.config.admission.max_per_ip = Some(max);
        self
    }

    /// Accepts at most `per_second` connections per second on average (bursts of `burst`)
    /// for the whole server; more are closed at once and reported.
    pub fn accept_rate(mut self, per_second: f64, burst: u32) -> Self {
        self.config.admission.rate = Some(RateLimit::new(per_second, burst));
        self
    }

    /// Accepts at most `per_second` connections per second on average (bursts of `burst`)
    /// from each IP address; more are closed at once and reported.
    pub fn accept_rate_per_ip(mut self, per_second: f64, burst: u32) -> Self {
        self.config.admission.rate_per_ip = Some(RateLimit::new(per_second, burst));
        self
    }

    /// Exempts `ip` from the per-IP cap and the per-IP accept rate.
    pub fn admission_exempt(mut self, ip: IpAddr) -> Self {
        self.config.admission.exempt.push(ip);
        self
    }

    /// Exempts loopback addresses from the per-IP rules (for a daemon whose clients arrive
    /// through a local proxy such as Tor, which all share one address).
    pub fn exempt_loopback(mut self, exempt: bool) -> Self {
        self.config.admission.exempt_loopback = exempt;
        self
    }

    /// The configuration. It is checked by `TcpServer::new` (or call
    /// [`try_build`](Self::try_build) to check it here).
    pub fn build(self) -> TcpServerConfig {
        self.config
    }

    /// The configuration, if it is consistent.
    pub fn try_build(self) -> Result<TcpServerConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

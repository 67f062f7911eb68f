//! Admission control: whether an accepted connection may stay, decided once, at accept.
//!
//! Besides the global `max_connections` (kept by the service), a server may cap the
//! connections open from one IP address and limit the accept rate, globally and per IP,
//! with token buckets. Addresses on the allow-list (and, optionally, loopback addresses,
//! as a daemon behind a local Tor or proxy needs) are exempt from the per-IP rules; the
//! global rate and `max_connections` apply to everyone.
//!
//! The state is shared by every loop of the server behind one mutex, taken once per
//! accepted connection and once per close, and only when a per-IP rule or a rate is set.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket: `per_second` new connections on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained rate, connections per second.
    pub per_second: f64,
    /// Most connections accepted at once after a quiet period.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` connections per second, bursts of up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// The admission rules of a server. The default admits everyone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdmissionConfig {
    /// Most connections open at once from one IP address.
    pub max_per_ip: Option<usize>,
    /// Accept rate of the whole server.
    pub rate: Option<RateLimit>,
    /// Accept rate of each IP address.
    pub rate_per_ip: Option<RateLimit>,
    /// Addresses exempt from the per-IP rules.
    pub exempt: Vec<IpAddr>,
    /// Whether loopback addresses are exempt from the per-IP rules.
    pub exempt_loopback: bool,
}

impl AdmissionConfig {
    /// Whether no rule is set (so admission costs nothing).
    pub fn is_open(&self) -> bool {
        self.max_per_ip.is_none() && self.rate.is_none() && self.rate_per_ip.is_none()
    }

    fn exempts(&self, ip: IpAddr) -> bool {
        (self.exempt_loopback && ip.is_loopback()) || self.exempt.contains(&ip)
    }
}

/// Why a connection was refused at accept.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already has `max_connections_per_ip` connections open.
    PerIpLimit,
    /// The server's accept rate is exhausted.
    RateLimited,
    /// Its address's accept rate is exhausted.
    PerIpRateLimited,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::PerIpLimit => "too many connections from this address",
            Refusal::RateLimited => "accept rate limit reached",
            Refusal::PerIpRateLimited => "accept rate limit of this address reached",
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        // Each loop passes the time its last poll returned, which can be older than the
        // time another loop passed before it: moving `last` back would count the same
        // interval twice and admit more than the rate.
        if now <= self.last {
            return;
        }
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.last = now;
    }

    fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, limit: RateLimit) -> bool {
        self.tokens >= f64::from(limit.burst)
    }
}

#[derive(Debug)]
struct PerIp {
    open: usize,
    bucket: Option<Bucket>,
}

#[derive(Debug)]
struct State {
    global: Option<Bucket>,
    per_ip: HashMap<IpAddr, PerIp>,
    /// Map size after the last sweep of idle entries.
    swept_at: usize,
}

/// A server's admission state. See the module docs.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    state: Mutex<State>,
}

/// What admitting a connection took, to give back when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ticket {
    /// Nothing per-IP to give back.
    Free,
    /// One open connection counted against this address.
    Ip(IpAddr),
}

impl Admission {
    /// The state for `config`.
    pub fn new(config: AdmissionConfig) -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(State {
                global: config.rate.map(|r| Bucket::full(r, now)),
                per_ip: HashMap::new(),
                swept_at: 0,
            }),
            config,
        }
    }

    /// Decides whether a connection from `ip` may stay.
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        if self.config.is_open() {
            return Ok(Ticket::Free);
        }
        let ip = ip.to_canonical();
        let exempt = self.config.exempts(ip);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !exempt {
            if let Some(entry) = state.per_ip.get_mut(&ip) {
                if self.config.max_per_ip.is_some_and(|max| entry.open >= max) {
                    return Err(Refusal::PerIpLimit);
                }
            }
        }
        if let (Some(limit), Some(bucket)) = (self.config.rate, state.global.as_mut()) {
            if !bucket.take(limit, now) {
                return Err(Refusal::RateLimited);
            }
        }
        if exempt || (self.config.max_per_ip.is_none() && self.config.rate_per_ip.is_none()) {
            return Ok(Ticket::Free);
        }
        let rate = self.config.rate_per_ip;
        let entry = state.per_ip.entry(ip).or_insert_with(|| PerIp {
            open: 0,
            bucket: rate.map(|r| Bucket::full(r, now)),
        });
        if let (Some(limit), Some(bucket)) = (rate, entry.bucket.as_mut()) {
            if !bucket.take(limit, now) {
                return Err(Refusal::PerIpRateLimited);
            }
        }
        entry.open += 1;
        Self::sweep(&self.config, &mut state, now);
        Ok(Ticket::Ip(ip))
    }

    /// A connection admitted with `ticket` closed.
    pub(crate) fn release(&self, ticket: Ticket) {
        let Ticket::Ip(ip) = ticket else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = state.per_ip.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && entry.bucket.is_none() {
                state.per_ip.remove(&ip);
            }
        }
    }

    /// Forgets addresses with nothing open and a full bucket, whenever the map has doubled
    /// since the last sweep, so memory follows the addresses active now.
    fn sweep(config: &AdmissionConfig, state: &mut State, now: Instant) {
        if state.per_ip.len() < 2 * state.swept_at + 1024 {
            return;
        }
        state.per_ip.retain(|_, entry| {
            let idle = match (config.rate_per_ip, entry.bucket.as_mut()) {
                (Some(limit), Some(bucket)) => {
                    bucket.refill(limit, now);
                    bucket.is_full(limit)
                }
                _ => true,
            };
            entry.open > 0 || !idle
        });
        state.swept_at = state.per_ip.len();
    }

    /// Addresses currently tracked (for tests).
    #[cfg(test)]
    pub fn tracked_addresses(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .per_ip
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn open_config_admits_everyone_without_state() {
        let a = Admission::new(AdmissionConfig::default());
        for i in 0..100 {
            assert_eq!(a.admit(ip(i), Instant::now()), Ok(Ticket::Free));
        }
        assert_eq!(a.tracked_addresses(), 0);
    }

    #[test]
    fn per_ip_cap_counts_open_connections_per_address() {
        let a = Admission::new(AdmissionConfig {
            max_per_ip: Some(2),
            ..Default::default()
        });
        let now = Instant::now();
        let t1 = a.admit(ip(1), now).unwrap();
        let _t2 = a.admit(ip(1), now).unwrap();
        assert_eq!(a.admit(ip(1), now), Err(Refusal::PerIpLimit));
        assert!(
            a.admit(ip(2), now).is_ok(),
            "another address is not affected"
        );
        a.release(t1);
        assert!(
            a.admit(ip(1), now).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let a = Admission::new(AdmissionConfig {
            max_per_ip: Some(1),
            ..Default::default()
        });
        let now = Instant::now();
        a.admit(ip(9), now).unwrap();
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(127, 0, 0, 9).to_ipv6_mapped());
        assert_eq!(a.admit(mapped, now), Err(Refusal::PerIpLimit));
    }

    #[test]
    fn exempt_addresses_skip_per_ip_rules_but_not_the_global_rate() {
        let a = Admission::new(AdmissionConfig {
            max_per_ip: Some(1),
            rate: Some(RateLimit::new(1.0, 3)),
            exempt_loopback: true,
            ..Default::default()
        });
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(a.admit(ip(1), now), Ok(Ticket::Free));
        }
        assert_eq!(a.admit(ip(1), now), Err(Refusal::RateLimited));
    }

    #[test]
    fn token_buckets_refill_over_time() {
        let a = Admission::new(AdmissionConfig {
            rate_per_ip: Some(RateLimit::new(10.0, 2)),
            ..Default::default()
        });
        let t0 = Instant::now();
        assert!(a.admit(ip(1), t0).is_ok());
        assert!(a.admit(ip(1), t0).is_ok());
        assert_eq!(a.admit(ip(1), t0), Err(Refusal::PerIpRateLimited));
        assert!(a.admit(ip(2), t0).is_ok(), "buckets are per address");
        // 100 ms at 10/s gives one token back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(a.admit(ip(1), t1).is_ok());
        assert_eq!(a.admit(ip(1), t1), Err(Refusal::PerIpRateLimited));
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let a = Admission::new(AdmissionConfig {
            rate_per_ip: Some(RateLimit::new(1000.0, 1)),
            ..Default::default()
        });
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            let t = a.admit(addr, t0).unwrap();
            a.release(t);
        }
        // A second later every bucket is full again and nothing is open: a sweep drops them.
        let later = t0 + Duration::from_secs(1);
        for i in 0..5000u32 {
            let addr = IpAddr::from((i + 1_000_000).to_be_bytes());
            let t = a.admit(addr, later).unwrap();
            a.release(t);
        }
        assert!(
            a.tracked_addresses() < 9000,
            "idle addresses should have been swept: {}",
            a.tracked_addresses()
        );
    }
}

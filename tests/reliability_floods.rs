//! Issue 5, item 4: connection floods.
//!
//! - `max_connections` 100 and 5,100 connects kept open by the clients: never more than
//!   100 alive (counted from `on_connect`/`on_disconnect`), exactly 5,000 refused, each
//!   reported (`MaxConnectionsReached`) and counted (`metrics().refused_max_connections`);
//!   then every client goes away and the server serves 100 new clients.
//! - per-IP cap 20 under a flood from eight 127.0.0.x addresses (200 connects each) plus
//!   an exempt address: never more than 20 alive per address, the rest refused, reported
//!   and counted, the exempt address fully served; a freed address is admitted again.
//! - accept rates under a flood: the server-wide token bucket (100/s, burst 20) and the
//!   per-address one (50/s, burst 10, four addresses) admit no more than burst + rate x
//!   elapsed time, refuse and count the rest, and serve what they admitted.

mod common;
mod rel_support;

use common::*;
use rel_support::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts connections alive, in total and per address, and their peaks; echoes.
#[derive(Default)]
struct Flood {
    echo: EchoState,
    state: Shared<FloodState>,
}

#[derive(Debug, Default)]
struct FloodState {
    connects: usize,
    disconnects: usize,
    alive: usize,
    peak: usize,
    ip_alive: HashMap<IpAddr, usize>,
    ip_peak: HashMap<IpAddr, usize>,
    ip_admitted: HashMap<IpAddr, usize>,
    ids: HashMap<ConnectionId, IpAddr>,
    refusals: HashMap<String, usize>,
    other_errors: Vec<String>,
}

impl NetworkHandler for Flood {
    fn on_event(&self, _: &ServerContext, event: NetworkEvent) -> Result<()> {
        if let NetworkEvent::ConnectionEstablished(id, peer) = event {
            let ip = peer.ip();
            self.state.update(|s| {
                s.ids.insert(id, ip);
                *s.ip_admitted.entry(ip).or_default() += 1;
                let alive = s.ip_alive.entry(ip).or_default();
                *alive += 1;
                let alive = *alive;
                let peak = s.ip_peak.entry(ip).or_default();
                *peak = (*peak).max(alive);
            });
        }
        Ok(())
    }
    fn on_connect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        self.state.update(|s| {
            s.connects += 1;
            s.alive += 1;
            s.peak = s.peak.max(s.alive);
        });
        Ok(())
    }
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.echo.on_data(ctx, conn, data)
    }
    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.echo.on_drained(ctx, conn)
    }
    fn on_disconnect(&self, _: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.echo.on_disconnect(conn);
        // The per-address count drops here, before the place is given back.
        self.state.update(|s| {
            s.disconnects += 1;
            s.alive -= 1;
            if let Some(ip) = s.ids.remove(&conn) {
                *s.ip_alive.get_mut(&ip).unwrap() -= 1;
            }
        });
        Ok(())
    }
    fn on_error(&self, _: &ServerContext, conn: Option<ConnectionId>, e: NetworkError) {
        self.state.update(|s| match (&e, conn) {
            (NetworkError::MaxConnectionsReached(_), None) => {
                *s.refusals
                    .entry("MaxConnectionsReached".into())
                    .or_default() += 1
            }
            (NetworkError::AdmissionRefused { reason, .. }, None) => {
                *s.refusals.entry(format!("{reason:?}")).or_default() += 1
            }
            _ => s.other_errors.push(format!("{conn:?}: {e:?}")),
        });
    }
}

/// Connects `n` clients from each address in `sources`, from one thread per address, and
/// keeps them all.
fn flood(addr: SocketAddr, sources: &[[u8; 4]], n: usize) -> Vec<TcpStream> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = sources
        .iter()
        .map(|&src| {
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                let mine: Vec<TcpStream> = (0..n).map(|_| connect_from(src, addr)).collect();
                out.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("flood thread");
    }
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

/// Whether the server kept this client: it echoes a byte, or closes.
fn served(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"?").is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(1) => true,
        Ok(_) => false,
        Err(e) if is_timeout(&e) => panic!("neither echo nor close within {WAIT:?}"),
        Err(_) => false,
    }
}

fn addrs(first: u8, count: u8) -> Vec<[u8; 4]> {
    (first..first + count).map(|i| [127, 0, 0, i]).collect()
}

backend_matrix! {
    fn max_connections_holds_under_5000_extra_connects(backend: Backend) {
        const CAP: usize = 100;
        const EXTRA: usize = 5000;
        let _alone = exclusive();
        ensure_nofile(16384, 12000);
        let event_loop = event_loop(backend);
        let handler = Arc::new(Flood::default());
        let server = start_server(&event_loop, server_config().max_connections(CAP).build(), ArcHandler(Arc::clone(&handler)));
        let addr = addr_of(&server);

        let mut clients = flood(addr, &addrs(2, 8), (CAP + EXTRA) / 8 + 1);
        let total = clients.len();
        poll_until(Duration::from_secs(60), "every connect accepted or refused", || {
            let m = server.metrics();
            m.accepted + m.refused_max_connections >= total as u64
        });
        let m = server.metrics();
        assert_eq!(m.accepted, CAP as u64, "{m:?}");
        assert_eq!(m.refused_max_connections, (total - CAP) as u64, "{m:?}");
        handler.state.wait_until(WAIT, "every refusal reported", |s| {
            s.refusals.get("MaxConnectionsReached").copied().unwrap_or(0) == total - CAP
        });
        let served_now = clients.iter_mut().map(served).filter(|s| *s).count();
        assert_eq!(served_now, CAP, "clients served while full");
        handler.state.with(|s| {
            assert!(s.peak <= CAP, "{} alive at once, cap {CAP}", s.peak);
            assert_eq!(s.connects, CAP);
            assert!(s.other_errors.is_empty(), "{:?}", s.other_errors);
        });

        // Recovery: the flood leaves, new clients are served in full.
        drop(clients);
        handler.state.wait_until(WAIT, "the flood's connections closed", |s| s.disconnects == CAP);
        let mut fresh = flood(addr, &addrs(2, 4), CAP / 4);
        assert!(fresh.iter_mut().all(served), "a new client was refused after the flood");
        drop(fresh);
        handler.state.wait_until(WAIT, "all closed", |s| s.disconnects == 2 * CAP && s.alive == 0);
        handler.state.with(|s| assert!(s.peak <= CAP, "peak {}", s.peak));
        println!("{backend}: {total} connects, {} accepted, {} refused, peak {} alive", m.accepted, m.refused_max_connections, handler.state.with(|s| s.peak));
        server.stop().unwrap();
    }

    fn per_ip_cap_holds_under_a_flood_from_eight_addresses(backend: Backend) {
        const PER_IP: usize = 20;
        const EACH: usize = 200;
        let _alone = exclusive();
        ensure_nofile(16384, 4096);
        let event_loop = event_loop(backend);
        let handler = Arc::new(Flood::default());
        let exempt: IpAddr = [127, 0, 0, 50].into();
        let config = server_config().max_connections_per_ip(PER_IP).admission_exempt(exempt).build();
        let server = start_server(&event_loop, config, ArcHandler(Arc::clone(&handler)));
        let addr = addr_of(&server);

        let sources = addrs(20, 8);
        let mut clients = flood(addr, &sources, EACH);
        let mut exempt_clients = flood(addr, &[[127, 0, 0, 50]], 100);
        let refused = sources.len() * (EACH - PER_IP);
        poll_until(Duration::from_secs(60), "every connect accepted or refused", || {
            let m = server.metrics();
            m.accepted + m.refused_per_ip >= (clients.len() + exempt_clients.len()) as u64
        });
        let m = server.metrics();
        assert_eq!(m.refused_per_ip, refused as u64, "{m:?}");
        assert_eq!(m.accepted, (sources.len() * PER_IP + 100) as u64, "{m:?}");
        handler.state.wait_until(WAIT, "every refusal reported", |s| s.refusals.get("PerIpLimit").copied().unwrap_or(0) == refused);
        assert_eq!(clients.iter_mut().map(served).filter(|s| *s).count(), sources.len() * PER_IP);
        assert!(exempt_clients.iter_mut().all(served), "the exempt address must be served in full");
        handler.state.with(|s| {
            for src in &sources {
                let ip = IpAddr::from(*src);
                assert_eq!(s.ip_peak.get(&ip).copied(), Some(PER_IP), "{ip}: peak");
            }
            assert_eq!(s.ip_peak[&exempt], 100);
            assert!(s.other_errors.is_empty(), "{:?}", s.other_errors);
        });

        // Freeing one address's connections admits that address again.
        let first = IpAddr::from(sources[0]);
        clients.retain(|c| c.local_addr().unwrap().ip() != first);
        handler.state.wait_until(WAIT, "the first address's connections closed", |s| s.ip_alive.get(&first) == Some(&0));
        let mut again = flood(addr, &sources[..1], PER_IP);
        assert!(again.iter_mut().all(served), "a freed address must be admitted again");
        drop((clients, exempt_clients, again));
        handler.state.wait_until(WAIT, "all closed", |s| s.alive == 0 && s.connects == s.disconnects);
        handler.state.with(|s| {
            assert!(s.ip_peak.iter().all(|(ip, p)| *ip == exempt || *p <= PER_IP), "{:?}", s.ip_peak)
        });
        println!("{backend}: per-IP cap {PER_IP}: {} accepted, {} refused", m.accepted, m.refused_per_ip);
        server.stop().unwrap();
    }

    fn accept_rates_hold_under_a_flood(backend: Backend) {
        let _alone = exclusive();
        ensure_nofile(16384, 4096);
        // Server-wide: 100/s, bursts of 20; 1,000 connects from four addresses.
        let (rate, burst) = (100.0, 20usize);
        let event_loop = event_loop(backend);
        let handler = Arc::new(Flood::default());
        // The clock starts before the server: its buckets are full from its creation on.
        let start = Instant::now();
        let server = start_server(&event_loop, server_config().accept_rate(rate, burst as u32).build(), ArcHandler(Arc::clone(&handler)));
        let addr = addr_of(&server);
        let mut clients = flood(addr, &addrs(60, 4), 250);
        poll_until(Duration::from_secs(60), "every connect accepted or refused", || {
            let m = server.metrics();
            m.accepted + m.refused_rate >= 1000
        });
        let elapsed = start.elapsed().as_secs_f64();
        let m = server.metrics();
        let bound = burst as f64 + rate * elapsed;
        assert!(m.accepted as f64 <= bound + 1.0, "{} admitted in {elapsed:.2} s, bound {bound:.0}", m.accepted);
        assert!(m.accepted as usize >= burst, "the burst must be admitted: {m:?}");
        assert_eq!(m.accepted + m.refused_rate, 1000, "{m:?}");
        handler.state.wait_until(WAIT, "every refusal reported", |s| s.refusals.get("RateLimited").copied().unwrap_or(0) as u64 == m.refused_rate);
        assert_eq!(clients.iter_mut().map(served).filter(|s| *s).count() as u64, m.accepted);
        drop(clients);
        println!("{backend}: server rate {rate}/s burst {burst}: {} of 1000 admitted in {elapsed:.2} s", m.accepted);
        server.stop().unwrap();

        // Per address: 50/s, bursts of 10; 250 connects from each of four addresses.
        let (rate, burst) = (50.0, 10usize);
        let handler = Arc::new(Flood::default());
        let start = Instant::now();
        let server = start_server(&event_loop, server_config().accept_rate_per_ip(rate, burst as u32).build(), ArcHandler(Arc::clone(&handler)));
        let addr = addr_of(&server);
        let sources = addrs(70, 4);
        let mut clients = flood(addr, &sources, 250);
        poll_until(Duration::from_secs(60), "every connect accepted or refused", || {
            let m = server.metrics();
            m.accepted + m.refused_ip_rate >= 1000
        });
        let elapsed = start.elapsed().as_secs_f64();
        let m = server.metrics();
        let bound = burst as f64 + rate * elapsed;
        handler.state.wait_until(WAIT, "every admitted connection established", |s| s.connects as u64 == m.accepted);
        handler.state.with(|s| {
            for src in &sources {
                let n = s.ip_admitted.get(&IpAddr::from(*src)).copied().unwrap_or(0);
                assert!(n >= burst, "{src:?}: {n} admitted, below the burst");
                assert!(n as f64 <= bound + 1.0, "{src:?}: {n} admitted in {elapsed:.2} s, bound {bound:.0}");
            }
            assert!(s.other_errors.is_empty(), "{:?}", s.other_errors);
        });
        handler.state.wait_until(WAIT, "every refusal reported", |s| s.refusals.get("PerIpRateLimited").copied().unwrap_or(0) as u64 == m.refused_ip_rate);
        assert_eq!(clients.iter_mut().map(served).filter(|s| *s).count() as u64, m.accepted);
        drop(clients);
        handler.state.wait_until(WAIT, "all closed", |s| s.alive == 0);
        println!("{backend}: per-address rate {rate}/s burst {burst}: {} of 1000 admitted in {elapsed:.2} s", m.accepted);
        server.stop().unwrap();
    }
}

/// A handler shared with the test through an `Arc`.
struct ArcHandler<H>(Arc<H>);

impl<H: NetworkHandler> NetworkHandler for ArcHandler<H> {
    fn on_event(&self, ctx: &ServerContext, event: NetworkEvent) -> Result<()> {
        self.0.on_event(ctx, event)
    }
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.0.on_connect(ctx, conn)
    }
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.0.on_data(ctx, conn, data)
    }
    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.0.on_drained(ctx, conn)
    }
    fn on_disconnect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.0.on_disconnect(ctx, conn)
    }
    fn on_error(&self, ctx: &ServerContext, conn: Option<ConnectionId>, e: NetworkError) {
        self.0.on_error(ctx, conn, e)
    }
}

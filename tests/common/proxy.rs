//! A loopback fault proxy: forwards every connection it accepts to a target, shaping the
//! bytes on the way according to a mode that can change at any time.
//!
//! - [`Mode::Pass`]: forward as read.
//! - [`Mode::Split`]: forward in pieces of `min..=max` bytes, one write each (with
//!   `TCP_NODELAY`, so the receiver sees many small segments).
//! - [`Mode::Throttle`]: forward at about `bytes_per_sec` (pacing by sleeping between
//!   pieces; the tests never time anything).
//! - [`Mode::ResetAfter`]: after forwarding `n` bytes client-to-target on a connection,
//!   reset both sides of it (`SO_LINGER` 0 and close, so both get an RST).
//!
//! [`FaultProxy::stall`] stops forwarding in both directions (each pump holds at most the
//! chunk it has read, so TCP flow control pushes both ends back) until
//! [`FaultProxy::release`]. Modes and stalling apply to both directions; the reset counts
//! client-to-target bytes.
//!
//! Threads: one acceptor, two pumps per connection. Dropping the proxy shuts every socket
//! down and joins every thread.

use super::{Rng, Shared, WAIT};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the proxy shapes forwarded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward as read.
    Pass,
    /// Forward in pieces of `min..=max` bytes (random sizes), one write per piece.
    Split {
        /// Smallest piece (at least 1).
        min: usize,
        /// Largest piece.
        max: usize,
    },
    /// Forward at about this many bytes per second.
    Throttle {
        /// Bytes per second (at least 1).
        bytes_per_sec: usize,
    },
    /// After `n` bytes client-to-target on a connection, reset both sides of it.
    ResetAfter(usize),
}

/// Counters and state of the proxy, for tests to wait on.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: usize,
    /// Bytes read from clients.
    pub up_read: usize,
    /// Bytes written to the target.
    pub up_written: usize,
    /// Bytes read from the target.
    pub down_read: usize,
    /// Bytes written to clients.
    pub down_written: usize,
    /// Writes made to the target.
    pub up_writes: usize,
    /// Writes made to clients.
    pub down_writes: usize,
    /// The largest single write made, either direction.
    pub max_write: usize,
    /// Pumps holding bytes they may not forward because the proxy is stalled.
    pub stalled_pumps: usize,
    /// Connections reset by [`Mode::ResetAfter`].
    pub resets: usize,
    /// Pump threads finished.
    pub pumps_done: usize,
}

struct Control {
    mode: Mode,
    stalled: bool,
    stats: ProxyStats,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("mode", &self.mode)
            .field("stalled", &self.stalled)
            .field("stats", &self.stats)
            .finish()
    }
}

struct Inner {
    target: SocketAddr,
    control: Shared<Control>,
    closing: AtomicBool,
    sockets: Mutex<Vec<Arc<TcpStream>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    live: Arc<AtomicUsize>,
}

/// Counts a live proxy thread until dropped.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        LiveGuard(Arc::clone(live))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A loopback proxy in front of `target`; see the module docs.
pub struct FaultProxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy for `target` on `127.0.0.1:0`, in [`Mode::Pass`].
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("proxy bind");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            target,
            control: Shared::new(Control {
                mode: Mode::Pass,
                stalled: false,
                stats: ProxyStats::default(),
            }),
            closing: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
        });
        let acceptor = {
            let inner = Arc::clone(&inner);
            let guard = LiveGuard::new(&inner.live);
            std::thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || {
                    let _guard = guard;
                    accept_loop(inner, listener)
                })
                .expect("spawn proxy acceptor")
        };
        FaultProxy {
            inner,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the mode; pumps apply it from their next piece on.
    pub fn set_mode(&self, mode: Mode) {
        match mode {
            Mode::Split { min, max } => assert!(min >= 1 && min <= max, "bad split {mode:?}"),
            Mode::Throttle { bytes_per_sec } => assert!(bytes_per_sec >= 1),
            _ => {}
        }
        self.inner.control.update(|c| c.mode = mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.inner.control.with(|c| c.mode)
    }

    /// Stops forwarding (both directions) until [`release`](Self::release).
    pub fn stall(&self) {
        self.inner.control.update(|c| c.stalled = true);
    }

    /// Resumes forwarding after [`stall`](Self::stall).
    pub fn release(&self) {
        self.inner.control.update(|c| c.stalled = false);
    }

    /// A counter of the proxy's threads still running; it reads 0 once the proxy is
    /// dropped (drop joins every thread).
    pub fn live_threads(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.inner.live)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.inner.control.with(|c| c.stats.clone())
    }

    /// Waits until `cond` holds on the counters; panics after `timeout` naming `what`.
    pub fn wait(&self, timeout: Duration, what: &str, mut cond: impl FnMut(&ProxyStats) -> bool) {
        self.inner
            .control
            .wait_until(timeout, what, |c| cond(&c.stats))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Wake stalled pumps.
        self.inner.control.update(|c| c.stalled = false);
        // Wake the acceptor.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Wake pumps blocked in read or write.
        for s in self.inner.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self.inner.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut seed = 1u64;
    for client in listener.incoming() {
        if inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let client = match client {
            Ok(c) => c,
            Err(_) => continue,
        };
        let server = match TcpStream::connect_timeout(&inner.target, WAIT) {
            Ok(s) => s,
            Err(_) => {
                // Target gone: refuse this client with an RST.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let client = Arc::new(client);
        let server = Arc::new(server);
        {
            let mut sockets = inner.sockets.lock().unwrap();
            sockets.push(Arc::clone(&client));
            sockets.push(Arc::clone(&server));
        }
        inner.control.update(|c| c.stats.accepted += 1);
        let conn = Arc::new(ConnState {
            client: Arc::clone(&client),
            server: Arc::clone(&server),
            up_forwarded: Mutex::new(0),
            reset: AtomicBool::new(false),
        });
        let mut threads = inner.threads.lock().unwrap();
        // Both pumps count as live before either starts.
        let guards = [LiveGuard::new(&inner.live), LiveGuard::new(&inner.live)];
        for (up, guard) in [true, false].into_iter().zip(guards) {
            let inner2 = Arc::clone(&inner);
            let conn = Arc::clone(&conn);
            seed += 1;
            let rng = Rng::new(seed);
            threads.push(
                std::thread::Builder::new()
                    .name(
                        if up {
                            "fault-proxy-up"
                        } else {
                            "fault-proxy-down"
                        }
                        .into(),
                    )
                    .spawn(move || {
                        let _guard = guard;
                        pump(&inner2, &conn, up, rng);
                        inner2.control.update(|c| c.stats.pumps_done += 1);
                    })
                    .expect("spawn proxy pump"),
            );
        }
    }
}

struct ConnState {
    client: Arc<TcpStream>,
    server: Arc<TcpStream>,
    up_forwarded: Mutex<usize>,
    reset: AtomicBool,
}

impl ConnState {
    /// Both sockets get `SO_LINGER` 0; reads are shut down so the other pump wakes up and
    /// drops its handles; the last handle to go closes the socket with an RST.
    fn reset(&self, inner: &Inner) {
        if self.reset.swap(true, Ordering::SeqCst) {
            return;
        }
        for s in [&self.client, &self.server] {
            let _ = socket2::SockRef::from(&**s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Read);
        }
        // Forget them so only the pumps hold the sockets.
        inner
            .sockets
            .lock()
            .unwrap()
            .retain(|s| !Arc::ptr_eq(s, &self.client) && !Arc::ptr_eq(s, &self.server));
        inner.control.update(|c| c.stats.resets += 1);
    }
}

fn pump(inner: &Inner, conn: &ConnState, up: bool, mut rng: Rng) {
    let (src, dst) = if up {
        (&*conn.client, &*conn.server)
    } else {
        (&*conn.server, &*conn.client)
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match (&*src).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if conn.reset.load(Ordering::SeqCst) || inner.closing.load(Ordering::SeqCst) {
            return;
        }
        inner.control.update(|c| {
            if up {
                c.stats.up_read += n
            } else {
                c.stats.down_read += n
            }
        });
        if !forward(inner, conn, up, dst, &buf[..n], &mut rng) {
            return;
        }
    }
    if conn.reset.load(Ordering::SeqCst) || inner.closing.load(Ordering::SeqCst) {
        return;
    }
    // Pass the end of stream on.
    let _ = dst.shutdown(Shutdown::Write);
}

/// Forwards `data` to `dst` under the current mode; `false` when the connection is done.
fn forward(
    inner: &Inner,
    conn: &ConnState,
    up: bool,
    dst: &TcpStream,
    mut data: &[u8],
    rng: &mut Rng,
) -> bool {
    while !data.is_empty() {
        // Wait out a stall, holding at most this chunk.
        let mode = {
            let control = &inner.control;
            let mut g = control.lock();
            if g.stalled {
                g.stats.stalled_pumps += 1;
                control.cond.notify_all();
                while g.stalled && !inner.closing.load(Ordering::SeqCst) {
                    g = control.cond.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                g.stats.stalled_pumps -= 1;
                control.cond.notify_all();
            }
            g.mode
        };
        if inner.closing.load(Ordering::SeqCst) || conn.reset.load(Ordering::SeqCst) {
            return false;
        }
        let mut piece = match mode {
            Mode::Pass | Mode::ResetAfter(_) => data.len(),
            Mode::Split { min, max } => rng.range(min, max).min(data.len()),
            Mode::Throttle { bytes_per_sec } => (bytes_per_sec / 50).max(1).min(data.len()),
        };
        if let (true, Mode::ResetAfter(limit)) = (up, mode) {
            let done = *conn.up_forwarded.lock().unwrap();
            if done >= limit {
                conn.reset(inner);
                return false;
            }
            piece = piece.min(limit - done);
        }
        if (&*dst).write_all(&data[..piece]).is_err() {
            return false;
        }
        inner.control.update(|c| {
            if up {
                c.stats.up_written += piece;
                c.stats.up_writes += 1;
            } else {
                c.stats.down_written += piece;
                c.stats.down_writes += 1;
            }
            c.stats.max_write = c.stats.max_write.max(piece);
        });
        data = &data[piece..];
        if up {
            let mut done = conn.up_forwarded.lock().unwrap();
            *done += piece;
            if let Mode::ResetAfter(limit) = mode {
                if *done >= limit {
                    drop(done);
                    conn.reset(inner);
                    return false;
                }
            }
        }
        if let Mode::Throttle { bytes_per_sec } = mode {
            // Pacing, not synchronisation.
            let secs = piece as f64 / bytes_per_sec as f64;
            std::thread::sleep(Duration::from_secs_f64(secs.min(1.0)));
        }
    }
    true
}

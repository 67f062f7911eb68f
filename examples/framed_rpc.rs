//! A coinswap-style daemon: length-prefixed request/reply frames, an idle timeout, a
//! periodic status timer, per-IP admission, blocking work on worker threads that reply
//! through `ConnSender`, and a graceful stop on Ctrl-C.
//!
//! ```text
//! cargo run --release --example framed_rpc [ADDR]            # default 127.0.0.1:7200
//! cargo run --release --example framed_rpc -- client [ADDR]  # a few requests, printed
//! ```
//!
//! Wire format: every frame is a 4-byte big-endian length followed by that many bytes of
//! payload, at most [`MAX_FRAME`] (10 MiB). Requests and replies:
//!
//! | request | reply | where |
//! |---|---|---|
//! | `ping` | `pong` | on the loop |
//! | `echo <bytes>` | `<bytes>` | on the loop |
//! | `work <bytes>` | `done <16 hex digits>` ([`digest`] of the bytes) | on a worker thread |
//! | `stats` | `requests=N jobs=N ticks=N` | on the loop |
//! | anything else | `error unknown request` | on the loop |
//!
//! A frame announcing more than 10 MiB gets `error frame of N bytes over the limit` and
//! the connection is closed (frames before it were answered). Connections silent for the
//! idle timeout are closed; at most [`Settings::max_per_ip`] connections per address, and
//! a per-address accept rate. Ctrl-C (SIGINT) or SIGTERM: stop taking work, let the
//! workers finish and their replies go out, close every connection, exit.

use ringmill::errors::{NetworkError, Result, SendError};
use ringmill::tcp::{
    ConnSender, ConnectionId, NetworkHandler, ServerContext, ServerMetrics, TcpServer,
    TcpServerConfig,
};
use ringmill::{EventLoop, TimerId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Largest frame payload, either way.
pub const MAX_FRAME: usize = 10 * 1024 * 1024;
const SHARDS: usize = 16;

/// What the daemon is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Close connections that send nothing for this long.
    pub idle_timeout: Duration,
    /// Period of the status timer.
    pub status_every: Duration,
    /// Print a status line at each tick, and errors (idle timeouts, refusals) as they come.
    pub verbose: bool,
    /// Most connections open at once from one address.
    pub max_per_ip: usize,
    /// Accepts per second allowed from one address, and the burst above it.
    pub accept_rate_per_ip: (f64, u32),
    /// Threads doing blocking work.
    pub workers: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7200)),
            idle_timeout: Duration::from_secs(60),
            status_every: Duration::from_secs(10),
            verbose: true,
            max_per_ip: 8,
            accept_rate_per_ip: (20.0, 40),
            workers: 2,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// A frame: the payload's length (u32, big-endian), then the payload.
///
/// # Panics
///
/// If `payload` is over [`MAX_FRAME`].
pub fn encode(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_FRAME, "frame over MAX_FRAME");
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The first frame in `buf`: `Ok(Some(total bytes))`, `Ok(None)` if it is not all there
/// yet, `Err(announced length)` if it is over [`MAX_FRAME`].
pub fn frame_len(buf: &[u8]) -> std::result::Result<Option<usize>, usize> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(len);
    }
    Ok((buf.len() >= 4 + len).then_some(4 + len))
}

/// The stand-in for blocking work: FNV-1a over the bytes, then a long chain of mixing
/// rounds (a few milliseconds of CPU).
pub fn digest(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    for _ in 0..1_000_000 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    h
}

// ---------------------------------------------------------------------------------------
// The handler
// ---------------------------------------------------------------------------------------

/// A job for the worker threads: the request's bytes and where the reply goes.
struct Job {
    reply_to: ConnSender,
    data: Vec<u8>,
}

/// What the handler, the timers and the workers share.
struct State {
    /// Each connection's undecoded bytes, sharded by connection id.
    conns: Vec<Mutex<HashMap<ConnectionId, Conn>>>,
    /// The worker threads' queue; `None` once stopping.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    requests: AtomicU64,
    jobs_queued: AtomicU64,
    jobs_done: AtomicU64,
    ticks: AtomicU64,
    verbose: bool,
}

#[derive(Default)]
struct Conn {
    buf: Vec<u8>,
    /// Reads are paused until `on_drained` (a reply was refused for backpressure).
    blocked: bool,
}

impl State {
    fn conns(&self, conn: ConnectionId) -> MutexGuard<'_, HashMap<ConnectionId, Conn>> {
        self.conns[(conn.as_u64() % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The daemon's [`NetworkHandler`].
pub struct Handler {
    state: Arc<State>,
}

/// What became of one request.
enum Answer {
    Done,
    /// The reply was refused for backpressure: keep the request, answer it later.
    Blocked,
}

impl Handler {
    /// Answers every whole frame at the start of `input`; returns the bytes consumed and
    /// whether it stopped for backpressure.
    fn serve(
        &self,
        ctx: &ServerContext,
        conn: ConnectionId,
        input: &[u8],
    ) -> Result<(usize, bool)> {
        let mut consumed = 0;
        loop {
            match frame_len(&input[consumed..]) {
                Ok(None) => return Ok((consumed, false)),
                Ok(Some(total)) => {
                    let payload = &input[consumed + 4..consumed + total];
                    match self.answer(ctx, conn, payload)? {
                        Answer::Done => consumed += total,
                        Answer::Blocked => return Ok((consumed, true)),
                    }
                }
                Err(len) => {
                    let reply = format!("error frame of {len} bytes over the limit");
                    let _ = ctx.send_to(conn, &encode(reply.as_bytes()));
                    ctx.close_connection_gracefully(conn)?;
                    return Ok((input.len(), false));
                }
            }
        }
    }

    fn answer(&self, ctx: &ServerContext, conn: ConnectionId, request: &[u8]) -> Result<Answer> {
        let state = &self.state;
        let reply: Vec<u8> = if request == b"ping" {
            b"pong".to_vec()
        } else if let Some(data) = request.strip_prefix(b"echo ") {
            data.to_vec()
        } else if request == b"stats" {
            format!(
                "requests={} jobs={} ticks={}",
                state.requests.load(Ordering::Relaxed),
                state.jobs_done.load(Ordering::Relaxed),
                state.ticks.load(Ordering::Relaxed)
            )
            .into_bytes()
        } else if let Some(data) = request.strip_prefix(b"work ") {
            // Blocking work never runs on the loop: a worker thread replies later.
            let Some(reply_to) = ctx.sender(conn) else {
                return Ok(Answer::Done);
            };
            let jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let queued = match jobs.as_ref() {
                Some(tx) => tx
                    .send(Job {
                        reply_to,
                        data: data.to_vec(),
                    })
                    .is_ok(),
                None => false,
            };
            drop(jobs);
            if queued {
                state.requests.fetch_add(1, Ordering::Relaxed);
                state.jobs_queued.fetch_add(1, Ordering::Relaxed);
                return Ok(Answer::Done);
            }
            b"error shutting down".to_vec()
        } else {
            b"error unknown request".to_vec()
        };
        match ctx.send_to(conn, &encode(&reply)) {
            Ok(()) => {}
            Err(e) => match e.downcast_ref::<NetworkError>() {
                Some(NetworkError::Send(SendError::Backpressure)) => return Ok(Answer::Blocked),
                // Closing or closed already.
                Some(NetworkError::ConnectionNotFound(_)) => {}
                _ => return Err(e),
            },
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Answer::Done)
    }
}

impl NetworkHandler for Handler {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        let mut conns = self.state.conns(conn);
        let c = conns.entry(conn).or_default();
        c.buf.extend_from_slice(data);
        let (consumed, blocked) = self.serve(ctx, conn, &c.buf)?;
        c.buf.drain(..consumed);
        if c.buf.capacity() > 64 * 1024 && c.buf.len() < 1024 {
            c.buf.shrink_to(1024); // Do not keep a large frame's memory around.
        }
        c.blocked = blocked;
        if blocked {
            if let Some(sender) = ctx.sender(conn) {
                sender.pause_reads();
            }
        }
        Ok(())
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let mut conns = self.state.conns(conn);
        let Some(c) = conns.get_mut(&conn).filter(|c| c.blocked) else {
            return Ok(());
        };
        let (consumed, blocked) = self.serve(ctx, conn, &c.buf)?;
        c.buf.drain(..consumed);
        c.blocked = blocked;
        if !blocked {
            if let Some(sender) = ctx.sender(conn) {
                sender.resume_reads();
            }
        }
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.state.conns(conn).remove(&conn);
        Ok(())
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        if !self.state.verbose {
            return;
        }
        match error {
            NetworkError::IdleTimeout(id) => eprintln!("framed_rpc: {id} idle, closed"),
            NetworkError::AdmissionRefused { peer, reason } => {
                eprintln!("framed_rpc: refused {peer}: {reason:?}")
            }
            other => eprintln!("framed_rpc: {conn:?}: {other}"),
        }
    }
}

/// A worker thread: takes jobs until the queue closes, replies through the connection's
/// `ConnSender` (from this thread: the loop is never blocked).
fn worker(jobs: Arc<Mutex<mpsc::Receiver<Job>>>, state: Arc<State>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else {
            return; // Queue closed and drained.
        };
        let reply = format!("done {:016x}", digest(&job.data));
        state.jobs_done.fetch_add(1, Ordering::Relaxed);
        match job.reply_to.send(&encode(reply.as_bytes())) {
            Ok(()) | Err(SendError::Closed) => {}
            Err(SendError::Backpressure) => {
                // The client queues work faster than it reads its replies: drop it
                // rather than buffer without bound.
                eprintln!(
                    "framed_rpc: {} reads too slowly, closing",
                    job.reply_to.id()
                );
                job.reply_to.close();
            }
            Err(e) => eprintln!("framed_rpc: reply to {}: {e}", job.reply_to.id()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------------

/// A running daemon: its server, its status timer, its worker threads.
pub struct Daemon {
    server: Arc<TcpServer<Handler>>,
    state: Arc<State>,
    status: TimerId,
    workers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// The server configuration for `settings`.
    pub fn config(settings: &Settings) -> TcpServerConfig {
        let (rate, burst) = settings.accept_rate_per_ip;
        TcpServerConfig::builder()
            .address(settings.addr)
            .idle_timeout(settings.idle_timeout)
            .max_connections_per_ip(settings.max_per_ip)
            .accept_rate_per_ip(rate, burst)
            // A reply may be a whole 10 MiB frame (echo): the queue must take one.
            .max_frame(MAX_FRAME + 4)
            .high_watermark(16 * 1024 * 1024)
            .low_watermark(4 * 1024 * 1024)
            .buffer_size(64 * 1024)
            .build()
    }

    /// Binds, starts serving on `event_loop`, starts the workers and the status timer.
    pub fn start(event_loop: &EventLoop, settings: &Settings) -> Result<Daemon> {
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(State {
            conns: (0..SHARDS).map(|_| Mutex::default()).collect(),
            jobs: Mutex::new(Some(tx)),
            requests: AtomicU64::new(0),
            jobs_queued: AtomicU64::new(0),
            jobs_done: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            verbose: settings.verbose,
        });
        let server = Arc::new(TcpServer::new(
            Self::config(settings),
            Handler {
                state: Arc::clone(&state),
            },
        )?);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..settings.workers.max(1))
            .map(|i| {
                let (rx, state) = (Arc::clone(&rx), Arc::clone(&state));
                std::thread::Builder::new()
                    .name(format!("framed-rpc-worker-{i}"))
                    .spawn(move || worker(rx, state))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        server.start(event_loop)?;
        let (s, srv, print) = (Arc::clone(&state), Arc::clone(&server), settings.verbose);
        let status = event_loop.schedule_repeating(settings.status_every, move || {
            let tick = s.ticks.fetch_add(1, Ordering::Relaxed) + 1;
            if print {
                let m = srv.metrics();
                println!(
                    "status #{tick}: open={} accepted={} refused_per_ip={} refused_ip_rate={} \
                     idle_timeouts={} bytes_in={} bytes_out={} requests={} jobs={}/{}",
                    m.open,
                    m.accepted,
                    m.refused_per_ip,
                    m.refused_ip_rate,
                    m.idle_timeouts,
                    m.bytes_in,
                    m.bytes_out,
                    s.requests.load(Ordering::Relaxed),
                    s.jobs_done.load(Ordering::Relaxed),
                    s.jobs_queued.load(Ordering::Relaxed),
                );
            }
        })?;
        Ok(Daemon {
            server,
            state,
            status,
            workers,
        })
    }

    /// The address the daemon listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr().expect("bound")
    }

    /// The server's counters.
    pub fn metrics(&self) -> ServerMetrics {
        self.server.metrics()
    }

    /// Status timer ticks so far.
    pub fn ticks(&self) -> u64 {
        self.state.ticks.load(Ordering::Relaxed)
    }

    /// `work` requests handed to the workers so far.
    pub fn jobs_queued(&self) -> u64 {
        self.state.jobs_queued.load(Ordering::Relaxed)
    }

    /// Stops gracefully: no more work is taken (`error shutting down`), the workers finish
    /// what is queued and their replies are queued on the connections, then the server
    /// stops accepting and closes every connection after writing what is queued to it.
    pub fn shutdown(self) -> Result<()> {
        self.status.cancel();
        drop(
            self.state
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        for w in self.workers {
            let _ = w.join();
        }
        self.server.stop()
    }
}

// ---------------------------------------------------------------------------------------
// Ctrl-C
// ---------------------------------------------------------------------------------------

/// SIGINT and SIGTERM set a flag (the only thing a signal handler may safely do here);
/// a repeating timer on the loop polls it.
#[cfg(unix)]
mod signals {
    use std::sync::atomic::{AtomicBool, Ordering};

    static STOP: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }

    /// Installs the handler for SIGINT and SIGTERM.
    pub fn install() -> std::io::Result<()> {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid
            // value (no flags, no restorer); the fields that matter are set below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: `sa_mask` is a valid, writable `sigset_t` owned by `action`.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: `action` is fully initialised and outlives the call; the handler only
            // stores to an atomic, which is async-signal-safe; the old action is not asked
            // for (null).
            if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Whether a stop was asked for.
    pub fn requested() -> bool {
        STOP.load(Ordering::SeqCst)
    }
}

/// Elsewhere Ctrl-C keeps its default action (the process ends at once).
#[cfg(not(unix))]
mod signals {
    pub fn install() -> std::io::Result<()> {
        Ok(())
    }

    pub fn requested() -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------
// main: the daemon, or a small client
// ---------------------------------------------------------------------------------------

#[allow(dead_code)] // The smoke test includes this file for the daemon only.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("client") => client(args.get(1).map(String::as_str)),
        addr => daemon(addr),
    };
    if let Err(e) = result {
        eprintln!("framed_rpc: {e}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn daemon(addr: Option<&str>) -> Result<()> {
    let mut settings = Settings::default();
    if let Some(addr) = addr {
        settings.addr = addr.parse()?;
    }
    signals::install()?;
    let event_loop = EventLoop::builder().build()?;
    let daemon = Daemon::start(&event_loop, &settings)?;
    println!(
        "framed_rpc listening on {} (backend: {}; idle timeout {:?}; {} per address)",
        daemon.local_addr(),
        event_loop.backend(),
        settings.idle_timeout,
        settings.max_per_ip
    );
    let (stop_tx, stop_rx) = mpsc::channel();
    let watch = event_loop.schedule_repeating(Duration::from_millis(100), move || {
        if signals::requested() {
            let _ = stop_tx.send(());
        }
    })?;
    let _ = stop_rx.recv();
    watch.cancel();
    println!("framed_rpc: stopping");
    let metrics = daemon.metrics();
    daemon.shutdown()?;
    event_loop.stop();
    println!(
        "framed_rpc: stopped ({} accepted, {} bytes in, {} bytes out)",
        metrics.accepted, metrics.bytes_in, metrics.bytes_out
    );
    Ok(())
}

/// Sends a few requests with a plain blocking socket and prints the replies.
#[allow(dead_code)]
fn client(addr: Option<&str>) -> Result<()> {
    use std::io::{Read, Write};
    let addr: SocketAddr = addr.unwrap_or("127.0.0.1:7200").parse()?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    for request in [
        &b"ping"[..],
        b"echo hello",
        b"work some bytes",
        b"stats",
        b"nonsense",
    ] {
        stream.write_all(&encode(request))?;
        let mut header = [0u8; 4];
        stream.read_exact(&mut header)?;
        let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut reply)?;
        println!(
            "{} -> {}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

//! A coinswap-style daemon: length-prefixed request/reply frames (the shipped
//! [`LengthPrefixed`] layer), an idle timeout, a periodic status timer, per-IP admission,
//! blocking work on worker threads that reply through `ConnSender`, a bounded work queue,
//! and a graceful stop on Ctrl-C (`signal-hook`) in bounded time.
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
//! Work is bounded: at most [`Settings::max_jobs_per_conn`] jobs waiting or running per
//! connection and [`Settings::max_jobs`] in all; a `work` request over either limit gets
//! `error busy` at once. The jobs of a connection that closed are dropped unrun.
//!
//! A frame announcing more than 10 MiB closes the connection (frames before it were
//! answered; the layer reports `FrameTooLarge` to `on_error`). Connections silent for the
//! idle timeout are closed; at most [`Settings::max_per_ip`] connections per address, and
//! a per-address accept rate. Ctrl-C (SIGINT) or SIGTERM: stop taking work, let the
//! workers finish what is queued within [`Settings::stop_grace`] (later jobs are answered
//! `error shutting down`), close every connection after its replies, exit. A second Ctrl-C
//! exits at once.

use ringmill::errors::{NetworkError, Result, SendError};
use ringmill::layer::LengthPrefixed;
use ringmill::tcp::{
    ConnSender, ConnectionId, NetworkHandler, ServerContext, ServerMetrics, TcpServer,
    TcpServerConfig,
};
use ringmill::{EventLoop, TimerId};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Most jobs waiting or running for one connection.
    pub max_jobs_per_conn: usize,
    /// Most jobs waiting for a worker, all connections together.
    pub max_jobs: usize,
    /// How long a stop lets the workers go on with queued jobs; later ones are answered
    /// `error shutting down` without being run.
    pub stop_grace: Duration,
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
            max_jobs_per_conn: 4,
            max_jobs: 64,
            stop_grace: Duration::from_secs(5),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Frames (for clients: the server's frames are cut and prefixed by `LengthPrefixed`)
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
    /// The connection's count of jobs waiting or running, released when this one is done.
    outstanding: Arc<AtomicUsize>,
}

/// What the handler, the timers and the workers share.
struct State {
    /// Each connection's state, sharded by connection id.
    conns: Vec<Mutex<HashMap<ConnectionId, Conn>>>,
    /// The worker threads' queue (bounded: `max_jobs`); `None` once stopping.
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    max_jobs_per_conn: usize,
    /// Set by a stop: past it, workers answer queued jobs without running them.
    stop_deadline: Mutex<Option<Instant>>,
    requests: AtomicU64,
    jobs_queued: AtomicU64,
    jobs_done: AtomicU64,
    jobs_dropped: AtomicU64,
    ticks: AtomicU64,
    verbose: bool,
}

#[derive(Default)]
struct Conn {
    /// Requests not answered yet because a reply was refused for backpressure; reads are
    /// paused meanwhile, so this holds at most what one read delivered.
    waiting: VecDeque<Vec<u8>>,
    /// Jobs of this connection waiting or running.
    jobs: Arc<AtomicUsize>,
}

impl State {
    fn conns(&self, conn: ConnectionId) -> MutexGuard<'_, HashMap<ConnectionId, Conn>> {
        self.conns[(conn.as_u64() % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The daemon's [`NetworkHandler`]: it gets whole frames from the `LengthPrefixed` layer,
/// and what it sends is framed by the same layer.
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
    fn answer(
        &self,
        ctx: &ServerContext,
        conn: ConnectionId,
        c: &Conn,
        request: &[u8],
    ) -> Result<Answer> {
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
            match self.queue(ctx, conn, c, data) {
                Ok(()) => {
                    state.requests.fetch_add(1, Ordering::Relaxed);
                    return Ok(Answer::Done);
                }
                Err(refusal) => refusal.to_vec(),
            }
        } else {
            b"error unknown request".to_vec()
        };
        match ctx.try_send_to(conn, &reply) {
            Ok(()) | Err(SendError::Closed) => {}
            Err(SendError::Backpressure) => return Ok(Answer::Blocked),
            Err(e) => return Err(e.into()),
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Answer::Done)
    }

    /// Hands a job to the workers, or says why not.
    fn queue(
        &self,
        ctx: &ServerContext,
        conn: ConnectionId,
        c: &Conn,
        data: &[u8],
    ) -> std::result::Result<(), &'static [u8]> {
        let state = &self.state;
        let Some(reply_to) = ctx.sender(conn) else {
            return Err(b"error closed");
        };
        if c.jobs.fetch_add(1, Ordering::Relaxed) >= state.max_jobs_per_conn {
            c.jobs.fetch_sub(1, Ordering::Relaxed);
            return Err(b"error busy");
        }
        let job = Job {
            reply_to,
            data: data.to_vec(),
            outstanding: Arc::clone(&c.jobs),
        };
        let jobs = state.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let refused = match jobs.as_ref().map(|tx| tx.try_send(job)) {
            Some(Ok(())) => None,
            Some(Err(mpsc::TrySendError::Full(_))) => Some(&b"error busy"[..]),
            Some(Err(mpsc::TrySendError::Disconnected(_))) | None => {
                Some(&b"error shutting down"[..])
            }
        };
        drop(jobs);
        if let Some(refusal) = refused {
            c.jobs.fetch_sub(1, Ordering::Relaxed);
            return Err(refusal);
        }
        state.jobs_queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Answers the connection's waiting requests in order; stops at the first reply refused
    /// for backpressure. Returns whether all were answered.
    fn answer_waiting(
        &self,
        ctx: &ServerContext,
        conn: ConnectionId,
        c: &mut Conn,
    ) -> Result<bool> {
        while let Some(request) = c.waiting.front() {
            match self.answer(ctx, conn, c, request)? {
                Answer::Done => {
                    c.waiting.pop_front();
                }
                Answer::Blocked => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl NetworkHandler for Handler {
    fn on_connect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.state.conns(conn).insert(conn, Conn::default());
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, frame: &[u8]) -> Result<()> {
        let mut conns = self.state.conns(conn);
        let Some(c) = conns.get_mut(&conn) else {
            return Ok(());
        };
        if !c.waiting.is_empty() {
            // Answers are held back: keep the order.
            c.waiting.push_back(frame.to_vec());
            return Ok(());
        }
        if let Answer::Blocked = self.answer(ctx, conn, c, frame)? {
            c.waiting.push_back(frame.to_vec());
            if let Some(sender) = ctx.sender(conn) {
                sender.pause_reads();
            }
        }
        Ok(())
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let mut conns = self.state.conns(conn);
        let Some(c) = conns.get_mut(&conn).filter(|c| !c.waiting.is_empty()) else {
            return Ok(());
        };
        if self.answer_waiting(ctx, conn, c)? {
            if let Some(sender) = ctx.sender(conn) {
                sender.resume_reads();
            }
        }
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        // Its queued jobs see the closed sender and are dropped by the workers.
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
        if job.reply_to.is_closed() {
            // Nobody to answer: do not spend the work.
            state.jobs_dropped.fetch_add(1, Ordering::Relaxed);
            job.outstanding.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let late = state
            .stop_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|deadline| Instant::now() >= deadline);
        let reply = if late {
            state.jobs_dropped.fetch_add(1, Ordering::Relaxed);
            "error shutting down".to_string()
        } else {
            let reply = format!("done {:016x}", digest(&job.data));
            state.jobs_done.fetch_add(1, Ordering::Relaxed);
            reply
        };
        job.outstanding.fetch_sub(1, Ordering::Relaxed);
        match job.reply_to.send(reply.as_bytes()) {
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
    stop_grace: Duration,
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
            // A reply over the layer's cap is refused at the send (FrameTooLarge) instead
            // of failing the connection.
            .max_frame(MAX_FRAME)
            // A reply may be a whole 10 MiB frame (echo): the queue must take one.
            .high_watermark(16 * 1024 * 1024)
            .low_watermark(4 * 1024 * 1024)
            .buffer_size(64 * 1024)
            .build()
    }

    /// Binds, starts serving on `event_loop`, starts the workers and the status timer.
    pub fn start(event_loop: &EventLoop, settings: &Settings) -> Result<Daemon> {
        let (tx, rx) = mpsc::sync_channel(settings.max_jobs.max(1));
        let state = Arc::new(State {
            conns: (0..SHARDS).map(|_| Mutex::default()).collect(),
            jobs: Mutex::new(Some(tx)),
            max_jobs_per_conn: settings.max_jobs_per_conn.max(1),
            stop_deadline: Mutex::new(None),
            requests: AtomicU64::new(0),
            jobs_queued: AtomicU64::new(0),
            jobs_done: AtomicU64::new(0),
            jobs_dropped: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            verbose: settings.verbose,
        });
        let server = Arc::new(
            TcpServer::new(
                Self::config(settings),
                Handler {
                    state: Arc::clone(&state),
                },
            )?
            .with_layer(|| Box::new(LengthPrefixed::new(MAX_FRAME))),
        );
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
        let status = event_loop.try_schedule_repeating(settings.status_every, move || {
            let tick = s.ticks.fetch_add(1, Ordering::Relaxed) + 1;
            if print {
                let m = srv.metrics();
                println!(
                    "status #{tick}: open={} accepted={} refused_per_ip={} refused_ip_rate={} \
                     idle_timeouts={} bytes_in={} bytes_out={} requests={} jobs={}/{} dropped={}",
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
                    s.jobs_dropped.load(Ordering::Relaxed),
                );
            }
        })?;
        Ok(Daemon {
            server,
            state,
            status,
            workers,
            stop_grace: settings.stop_grace,
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

    /// Jobs dropped unrun so far: their connection had closed, or a stop's grace period
    /// had passed.
    pub fn jobs_dropped(&self) -> u64 {
        self.state.jobs_dropped.load(Ordering::Relaxed)
    }

    /// Stops gracefully, in bounded time: no more work is taken (`error shutting down`);
    /// the workers go on with what is queued for [`Settings::stop_grace`], then answer the
    /// rest `error shutting down` unrun (the queue holds at most [`Settings::max_jobs`]);
    /// then the server stops accepting and closes every connection after writing what is
    /// queued to it.
    pub fn shutdown(self) -> Result<()> {
        self.status.cancel();
        *self
            .state
            .stop_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.stop_grace);
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

/// SIGINT, SIGTERM (and SIGQUIT on Unix) set `stop`; a second one while `stop` is set ends
/// the process at once (exit code 1). `signal-hook` does the async-signal-safe part.
fn install_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::TERM_SIGNALS;
    for &signal in TERM_SIGNALS {
        // Registered first, so it sees the flag before the second handler sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(stop))?;
        signal_hook::flag::register(signal, Arc::clone(stop))?;
    }
    Ok(())
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
    let stop = Arc::new(AtomicBool::new(false));
    install_signals(&stop)?;
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
    let watch = event_loop.try_schedule_repeating(Duration::from_millis(100), move || {
        if stop.load(Ordering::SeqCst) {
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

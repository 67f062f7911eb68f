//! The soak on Linux (see `soak.rs` for how to run it).
//!
//! The process runs the server; it starts itself again as the load generator (`--load`),
//! so each side has its own descriptor table. The load generator keeps `--conns`
//! connections open from 16 loopback source addresses (127.0.0.10 to 127.0.0.25), on two
//! threads with `mio`. Each connection sends messages of random sizes (1 byte to 16 KiB,
//! sometimes 64 KiB), one at a time, and checks every echoed byte; after a random number
//! of messages it closes (FIN), or resets itself (`SO_LINGER` 0) in the middle of a
//! message, and is replaced by a new one. One connection in 32 goes through a fault
//! proxy (in the load process, one thread per direction) that resets both sides after a
//! random number of bytes.
//!
//! At the end the load generator finishes its messages and closes everything; then the
//! server checks: no echoed byte corrupted, no message lost on a connection nobody reset,
//! `on_connect` == `on_disconnect`, no unexpected `on_error`, and, after a warm-up round
//! at the same scale measured the same way, resident memory back to its baseline and,
//! after `stop`, the descriptor count back to what it was before the event loop existed.
//! One summary line; exit status 0 only if every check passed.

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use ringmill::errors::{NetworkError, Result, SendError};
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
use ringmill::{Backend, EventLoop};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SOURCES: u8 = 16;
const LOAD_THREADS: usize = 2;
/// One new connection in this many goes through the fault proxy.
const PROXIED_ONE_IN: u64 = 32;

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let secs: u64 = get("--secs").map_or(60, |s| s.parse().expect("--secs"));
    let conns: usize = get("--conns").map_or(10_000, |s| s.parse().expect("--conns"));
    raise_nofile(2 * conns as u64 + 4096);
    if args.iter().any(|a| a == "--load") {
        let addr: SocketAddr = get("--addr").expect("--addr").parse().expect("--addr");
        let seed: u64 = get("--seed").map_or(1, |s| s.parse().expect("--seed"));
        let stats = load(addr, conns, Duration::from_secs(secs), seed);
        println!("{}", stats.line());
        return;
    }
    let backend = match get("--backend").as_deref() {
        Some("uring") => Backend::Uring,
        Some("mio") => Backend::Mio,
        Some("auto") | None => Backend::Auto,
        Some(other) => panic!("--backend uring|mio|auto, not {other}"),
    };
    std::process::exit(if serve(backend, conns, secs) { 0 } else { 1 });
}

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Books {
    connects: AtomicU64,
    disconnects: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
    stash: Mutex<HashMap<ConnectionId, Vec<u8>>>,
}

struct SoakEcho(Arc<Books>);

impl NetworkHandler for SoakEcho {
    fn on_connect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        self.0.connects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.0.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut stash = self.0.stash.lock().unwrap();
        if let Some(pending) = stash.get_mut(&conn) {
            pending.extend_from_slice(data);
            return Ok(());
        }
        match ctx.send_to(conn, data) {
            Err(e) if is_backpressure(&*e) => {
                stash.insert(conn, data.to_vec());
                if let Some(s) = ctx.sender(conn) {
                    s.pause_reads();
                }
                Ok(())
            }
            other => other,
        }
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let mut stash = self.0.stash.lock().unwrap();
        if let Some(pending) = stash.remove(&conn) {
            match ctx.send_to(conn, &pending) {
                Ok(()) => {
                    if let Some(s) = ctx.sender(conn) {
                        s.resume_reads();
                    }
                }
                Err(e) if is_backpressure(&*e) => {
                    stash.insert(conn, pending);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_disconnect(&self, _: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.0.stash.lock().unwrap().remove(&conn);
        self.0.disconnects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_error(&self, _: &ServerContext, _: Option<ConnectionId>, error: NetworkError) {
        let kind = match &error {
            NetworkError::Io(_) => match error.io_error() {
                Some(e) => format!("Io({:?})", e.kind()),
                None => format!("{error:?}").chars().take(40).collect(),
            },
            other => format!("{other:?}").chars().take(40).collect(),
        };
        *self.0.errors.lock().unwrap().entry(kind).or_default() += 1;
    }
}

/// The `on_error` kinds a peer that resets produces; the soak's clients reset on purpose.
const PEER_GONE: [&str; 2] = ["Io(ConnectionReset)", "Io(BrokenPipe)"];

fn is_backpressure(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    matches!(e.downcast_ref::<SendError>(), Some(SendError::Backpressure))
}

/// Runs the server and two load rounds (warm-up, then the soak); prints the summary and
/// returns whether every check passed.
fn serve(backend: Backend, conns: usize, secs: u64) -> bool {
    let fds_before = fd_count();
    let event_loop = EventLoop::builder()
        .backend(backend)
        .build()
        .unwrap_or_else(|e| panic!("event loop: {e}"));
    let name = event_loop.backend().to_string();
    let books = Arc::new(Books::default());
    let config = TcpServerConfig::builder()
        .address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .backlog(4096)
        .high_watermark(256 * 1024)
        .low_watermark(64 * 1024)
        .build();
    let server = TcpServer::new(config, SoakEcho(Arc::clone(&books))).expect("server");
    server.start(&event_loop).expect("start");
    let addr = server.local_addr().expect("local_addr");

    let mut failures: Vec<String> = Vec::new();
    let settle = |what: &str, failures: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.connection_count() > 0
            || books.connects.load(Ordering::SeqCst) != books.disconnects.load(Ordering::SeqCst)
        {
            if Instant::now() > deadline {
                failures.push(format!(
                    "{what}: {} connections still open, {} on_connect vs {} on_disconnect",
                    server.connection_count(),
                    books.connects.load(Ordering::SeqCst),
                    books.disconnects.load(Ordering::SeqCst)
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(20)); // polling the books, not a handshake
        }
    };

    // Warm-up: the same load for a short while, so the baseline includes what the process
    // keeps once it has served this many connections (allocator caches, tables).
    let warm = run_load(addr, conns, 5, 7);
    if warm.get("corrupted") != 0 || warm.get("lost") != 0 || warm.get("failed") != 0 {
        failures.push(format!("warm-up: {}", warm.line()));
    }
    settle("warm-up", &mut failures);
    let rss_base = rss_kib();
    let connects_warm = books.connects.load(Ordering::SeqCst);

    let soak = run_load(addr, conns, secs, 11);
    settle("soak", &mut failures);
    let rss_end = rss_kib();
    let connects = books.connects.load(Ordering::SeqCst);
    let disconnects = books.disconnects.load(Ordering::SeqCst);
    for key in ["corrupted", "lost", "failed"] {
        if soak.get(key) != 0 {
            failures.push(format!("{key} = {}", soak.get(key)));
        }
    }
    if soak.get("messages") == 0 {
        failures.push("no message echoed".into());
    }
    if connects != disconnects {
        failures.push(format!(
            "on_connect {connects} != on_disconnect {disconnects}"
        ));
    }
    // A peer that resets (the RST closes, the proxy's resets, and a FIN close with unread
    // echo in the client's buffer, which its kernel answers with RST) is reported to
    // `on_error` as `Io(ConnectionReset)` or `Io(BrokenPipe)`, as mill-net does: expected
    // here. Any other error is a failure.
    let mut errors = books.errors.lock().unwrap().clone();
    let peer_resets: u64 = PEER_GONE.iter().filter_map(|k| errors.get(*k)).sum();
    errors.retain(|kind, _| !PEER_GONE.contains(&kind.as_str()));
    if !errors.is_empty() {
        failures.push(format!("on_error: {errors:?}"));
    }
    // Memory back to the baseline (both measured with the allocator's free pages handed
    // back): within an eighth of it plus 16 MiB for allocator noise.
    let rss_allowed = rss_base + rss_base / 8 + 16 * 1024;
    if rss_end > rss_allowed {
        failures.push(format!(
            "RSS {rss_end} KiB after the soak, baseline {rss_base} KiB (allowed {rss_allowed})"
        ));
    }
    server.stop().expect("server stop");
    drop(server);
    event_loop.stop();
    drop(event_loop);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count() > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20)); // polling /proc, not a handshake
    }
    let fds_after = fd_count();
    if fds_after > fds_before {
        failures.push(format!(
            "descriptors: {fds_before} before, {fds_after} after"
        ));
    }

    let pass = failures.is_empty();
    println!(
        "soak backend={name} secs={secs} conns={conns} connects={} disconnects={} \
         messages={} bytes={} fin_closes={} rst_closes={} proxy_resets={} \
         reset_reports={peer_resets} corrupted={} lost={} fds={fds_before}->{fds_after} rss_kib={rss_base}->{rss_end} result={}{}",
        connects - connects_warm,
        disconnects - connects_warm,
        soak.get("messages"),
        soak.get("bytes"),
        soak.get("fin"),
        soak.get("rst"),
        soak.get("proxy_resets"),
        soak.get("corrupted"),
        soak.get("lost"),
        if pass { "PASS" } else { "FAIL" },
        if pass {
            String::new()
        } else {
            format!(" failures: {}", failures.join("; "))
        }
    );
    pass
}

/// Starts this program as the load generator and returns its statistics.
fn run_load(addr: SocketAddr, conns: usize, secs: u64, seed: u64) -> Stats {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([
            "--load",
            "--addr",
            &addr.to_string(),
            "--secs",
            &secs.to_string(),
        ])
        .args(["--conns", &conns.to_string(), "--seed", &seed.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the load generator");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut stats = Stats::default();
    match text.lines().last() {
        Some(line) if out.status.success() => stats.parse(line),
        _ => {
            stats.add("failed", 1);
            eprintln!("soak: load generator failed ({}): {text}", out.status);
        }
    }
    stats
}

// ---------------------------------------------------------------------------------------
// Load side
// ---------------------------------------------------------------------------------------

/// Named counters, printed as `key=value` pairs.
#[derive(Default, Clone)]
struct Stats(Vec<(String, u64)>);

impl Stats {
    fn add(&mut self, key: &str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v += n,
            None => self.0.push((key.to_string(), n)),
        }
    }
    fn get(&self, key: &str) -> u64 {
        self.0.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
    }
    fn merge(&mut self, other: &Stats) {
        for (k, v) in &other.0 {
            self.add(k, *v);
        }
    }
    fn line(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
    fn parse(&mut self, line: &str) {
        for pair in line.split_whitespace() {
            if let Some((k, v)) = pair.split_once('=') {
                if let Ok(v) = v.parse() {
                    self.add(k, v);
                }
            }
        }
    }
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a connection will end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Close (FIN) after its last message's echo.
    Fin,
    /// Reset itself in the middle of its last message.
    Rst,
}

struct Conn {
    stream: MioStream,
    token: usize,
    proxied: bool,
    connected: bool,
    msg: Vec<u8>,
    written: usize,
    echoed: usize,
    msgs_left: u32,
    plan: Plan,
}

/// One load thread: `n` connections until `deadline`, then finish and close.
fn load_thread(
    addr: SocketAddr,
    proxy: SocketAddr,
    n: usize,
    deadline: Instant,
    seed: u64,
) -> Stats {
    let mut stats = Stats::default();
    let mut rng = Rng(seed);
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(4096);
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let mut next_token = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let open = |slot: usize, rng: &mut Rng, next_token: &mut usize, poll: &Poll| -> Conn {
        let proxied = rng.below(PROXIED_ONE_IN) == 0;
        let src = [127, 0, 0, 10 + (slot % SOURCES as usize) as u8];
        let target = if proxied { proxy } else { addr };
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.set_tcp_nodelay(true).unwrap();
        bind_no_port(&socket);
        socket
            .bind(&SockAddr::from(SocketAddr::from((src, 0))))
            .expect("bind a source address");
        match socket.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => panic!("connect: {e}"),
        }
        let mut stream = MioStream::from_std(socket.into());
        *next_token += 1;
        let token = (*next_token << 16) | slot;
        poll.registry()
            .register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        let plan = if rng.below(4) == 0 {
            Plan::Rst
        } else {
            Plan::Fin
        };
        Conn {
            stream,
            token,
            proxied,
            connected: false,
            msg: Vec::new(),
            written: 0,
            echoed: 0,
            msgs_left: 1 + rng.below(40) as u32,
            plan,
        }
    };
    let new_msg = |rng: &mut Rng| -> Vec<u8> {
        let len = if rng.below(50) == 0 {
            64 * 1024
        } else {
            1 + rng.below(16 * 1024) as usize
        };
        let mut v = vec![0u8; len];
        for chunk in v.chunks_mut(8) {
            let r = rng.next().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        v
    };
    for (slot, c) in conns.iter_mut().enumerate() {
        *c = Some(open(slot, &mut rng, &mut next_token, &poll));
    }
    let mut finishing = false;
    let hard_stop = deadline + Duration::from_secs(30);
    loop {
        let now = Instant::now();
        if !finishing && now >= deadline {
            finishing = true;
        }
        if finishing && conns.iter().all(|c| c.is_none()) {
            break;
        }
        if now >= hard_stop {
            let left = conns.iter().filter(|c| c.is_some()).count();
            stats.add("failed", 1);
            eprintln!("soak load: {left} connections did not finish");
            break;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for ev in events.iter() {
            let slot = ev.token().0 & 0xffff;
            let Some(conn) = conns[slot].as_mut() else {
                continue;
            };
            if conn.token != ev.token().0 {
                continue; // an event of the connection this slot had before
            }
            // Returns how the connection ended, if it did.
            let ended: Option<&str> = 'step: loop {
                if !conn.connected {
                    match conn.stream.peer_addr() {
                        Ok(_) => conn.connected = true,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                            match conn.stream.take_error() {
                                Ok(None) => break 'step None,
                                Ok(Some(e)) | Err(e) => {
                                    eprintln!("soak load: connect failed: {e}");
                                    break 'step Some("connect_failed");
                                }
                            }
                        }
                        Err(_) => break 'step Some("connect_failed"),
                    }
                }
                // Start a message.
                if conn.msg.is_empty() {
                    if finishing || conn.msgs_left == 0 {
                        break 'step Some("fin");
                    }
                    conn.msg = new_msg(&mut rng);
                    conn.written = 0;
                    conn.echoed = 0;
                    conn.msgs_left -= 1;
                }
                // Write what is left of it.
                while conn.written < conn.msg.len() {
                    match conn.stream.write(&conn.msg[conn.written..]) {
                        Ok(k) => conn.written += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break 'step Some("cut"),
                    }
                }
                if conn.plan == Plan::Rst
                    && conn.msgs_left == 0
                    && !finishing
                    && conn.written > conn.msg.len() / 2
                {
                    break 'step Some("rst");
                }
                // Read and check the echo.
                let mut progressed = false;
                loop {
                    match conn.stream.read(&mut buf) {
                        Ok(0) => break 'step Some("cut"),
                        Ok(k) => {
                            if conn.echoed + k > conn.written
                                || buf[..k] != conn.msg[conn.echoed..conn.echoed + k]
                            {
                                break 'step Some("corrupted");
                            }
                            conn.echoed += k;
                            stats.add("bytes", k as u64);
                            progressed = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break 'step Some("cut"),
                    }
                }
                if conn.echoed == conn.msg.len() {
                    stats.add("messages", 1);
                    conn.msg.clear();
                    continue 'step; // next message (or the end)
                }
                if !progressed || conn.written < conn.msg.len() {
                    break 'step None;
                }
            };
            let Some(end) = ended else { continue };
            let conn = conns[slot].take().unwrap();
            let mut stream = conn.stream;
            let _ = poll.registry().deregister(&mut stream);
            match end {
                "fin" => {
                    stats.add("fin", 1);
                    let _ = stream.shutdown(Shutdown::Write);
                }
                "rst" => {
                    stats.add("rst", 1);
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                }
                "cut" if conn.proxied => stats.add("proxy_cut", 1),
                "cut" => stats.add("lost", 1),
                "corrupted" => stats.add("corrupted", 1),
                _ => stats.add("failed", 1),
            }
            drop(stream);
            if !finishing {
                conns[slot] = Some(open(slot, &mut rng, &mut next_token, &poll));
            }
        }
    }
    stats
}

/// The load generator: the fault proxy and the load threads.
fn load(addr: SocketAddr, n: usize, secs: Duration, seed: u64) -> Stats {
    let proxy = FaultProxy::start(addr, seed);
    let deadline = Instant::now() + secs;
    let threads: Vec<_> = (0..LOAD_THREADS)
        .map(|t| {
            let proxy_addr = proxy.addr;
            let share = n / LOAD_THREADS + usize::from(t < n % LOAD_THREADS);
            std::thread::spawn(move || {
                load_thread(addr, proxy_addr, share, deadline, seed * 1000 + t as u64)
            })
        })
        .collect();
    let mut stats = Stats::default();
    for t in threads {
        stats.merge(&t.join().expect("load thread"));
    }
    stats.add("proxy_resets", proxy.stop());
    stats
}

/// A fault proxy: forwards each connection to the server and resets both sides after a
/// random number of client-to-server bytes. One thread per direction.
struct FaultProxy {
    addr: SocketAddr,
    closing: Arc<AtomicBool>,
    resets: Arc<AtomicU64>,
    acceptor: std::thread::JoinHandle<()>,
}

impl FaultProxy {
    fn start(target: SocketAddr, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().unwrap();
        let closing = Arc::new(AtomicBool::new(false));
        let resets = Arc::new(AtomicU64::new(0));
        let (c, r) = (Arc::clone(&closing), Arc::clone(&resets));
        let acceptor = std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0x5eed);
            for client in listener.incoming() {
                if c.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let limit = 1 + rng.below(256 * 1024) as usize;
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let r = Arc::clone(&r);
                let small = || std::thread::Builder::new().stack_size(64 * 1024);
                let _ = small().spawn(move || pump(c2, s2, Some((limit, r))));
                let _ = small().spawn(move || pump(server, client, None));
            }
        });
        Self {
            addr,
            closing,
            resets,
            acceptor,
        }
    }

    fn stop(self) -> u64 {
        self.closing.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        let _ = self.acceptor.join();
        self.resets.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to`; with a limit, resets both after that many bytes.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<(usize, Arc<AtomicU64>)>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut moved = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n;
        if let Some((limit, resets)) = &limit {
            if moved + n >= *limit {
                n = limit - moved;
                let _ = to.write_all(&buf[..n]);
                for s in [&from, &to] {
                    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                    let _ = s.shutdown(Shutdown::Read);
                }
                resets.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        moved += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------
// Process resources
// ---------------------------------------------------------------------------------------

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// Resident memory in KiB, after handing the allocator's free memory back to the system
/// (so the figure follows live memory, not the peak's leftovers).
fn rss_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Raises `RLIMIT_NOFILE` to `want` (the hard limit too, where the process may).
fn raise_nofile(want: u64) {
    let lim = libc::rlimit {
        rlim_cur: want as libc::rlim_t,
        rlim_max: want as libc::rlim_t,
    };
    // SAFETY: a valid rlimit; failing (no privilege to raise the hard limit) changes
    // nothing, and the soft limit is raised as far as the hard one allows below.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `cur` is a valid, writable rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
        cur.rlim_cur = cur.rlim_max;
        // SAFETY: a valid rlimit with the soft limit at the hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &cur) };
    }
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port of a bound socket is picked at `connect`, for the
/// whole 4-tuple, so many connections can share a source address.
fn bind_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

//! The echo servers, one per subcommand invocation, each on one thread of work:
//!
//! - `tokio`: multi-thread runtime with 1 worker, a task per connection reading into an
//!   8 KiB buffer and writing it back (`write_all`);
//! - `monoio`: io_uring driver, one runtime, a task per connection with an 8 KiB owned
//!   buffer (monoio's own echo example);
//! - `mill-net`: mill-net 4.0 + mill-io 4.0, `EventLoop::default()` (pool mode; one worker
//!   under `taskset -c 0`), the README's echo handler (`ctx.send_to(conn, data)`);
//! - `ringmill-uring` / `ringmill-mio`: one loop thread on that backend, the same handler;
//! - `plain-mio`: the reference loop of [`crate::plain`] (one thread, one 64 KiB buffer,
//!   written straight back from it), the limit a library's loop is held against.
//!
//! With `THREADS` above 1 (`server KIND PORT THREADS`, the runner's `--threads`), ringmill
//! runs that many loop threads and tokio that many workers; monoio stays one runtime, the
//! plain loop one thread, and mill-net's pool sizes itself to the CPUs it may use.
//!
//! Every server sets TCP_NODELAY and allows 20,000 connections (the plain loop has no
//! limit); buffer sizes are each
//! library's default (tokio and monoio have none, so 8 KiB, as in their examples).
//!
//! Protocol with the runner: the server prints `READY <description>` on stdout once it
//! accepts; each line `stats` on stdin is answered with `allocs <count>`; end of stdin ends
//! the process. For profiling (`benches/peer/profile.sh`), a line `counters` is answered
//! with one line `counters allocs=N` followed, for the ringmill servers, by the loops'
//! driver counters (`enters=`, `sqes=`, `cqes=`, `events=`, `wakeups=`, `rearms=`,
//! `enobufs=`) and the server's `bytes_in=` and `bytes_out=`, summed over the loop threads.

use crate::{alloc, proc};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// What a ringmill server adds to the `counters` answer (set once it has started).
static COUNTERS: OnceLock<Box<dyn Fn() -> String + Send + Sync>> = OnceLock::new();

/// Every server kind, in the order the runner interleaves them.
pub const KINDS: [&str; 6] = [
    "tokio",
    "monoio",
    "mill-net",
    "plain-mio",
    "ringmill-uring",
    "ringmill-mio",
];

/// The reference the ratios are taken against.
pub const BASELINE: &str = "tokio";

/// The plain loop: the limit the ringmill servers are held against.
pub const PLAIN: &str = "plain-mio";

/// The ringmill servers (the ones `--base` builds from another checkout too).
pub const RINGMILL: [&str; 2] = ["ringmill-uring", "ringmill-mio"];

/// Threads doing the work in `kind` when the runner asks for `threads`.
pub fn workers(kind: &str, threads: usize) -> usize {
    match kind.split('@').next().unwrap_or(kind) {
        "monoio" | "plain-mio" => 1,
        _ => threads,
    }
}

/// Connections every server allows (the idle-memory test opens 10,000).
const MAX_CONNS: usize = 20_000;

/// Echo buffer of the servers that take one (tokio and monoio).
const BUF: usize = 8 * 1024;

/// `server KIND PORT [THREADS]`.
pub fn main(kind: &str, port: u16, threads: usize) -> Result<(), String> {
    if threads == 0 {
        return Err("THREADS must be at least 1".into());
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if let Ok(cpus) = std::env::var("PEER_PIN_CPUS") {
        let n: usize = cpus.parse().map_err(|_| "bad PEER_PIN_CPUS")?;
        proc::pin_to_first(n)?;
    }
    proc::raise_nofile();
    // End the process when the runner goes away (its end of our stdin closes).
    // One reused line buffer, so answering `stats` allocates nothing in the window.
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin().lock();
        let mut line = String::with_capacity(64);
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.trim() == "stats" => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "allocs {}", alloc::count());
                    let _ = out.flush();
                }
                Ok(_) if line.trim() == "counters" => {
                    // Read before formatting, so this answer's own allocations fall
                    // after the count.
                    let allocs = alloc::count();
                    let extra = COUNTERS.get().map(|f| f()).unwrap_or_default();
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "counters allocs={allocs}{extra}");
                    let _ = out.flush();
                }
                Ok(_) => {}
            }
        }
        std::process::exit(0);
    });
    match kind {
        "tokio" => tokio_server(addr, threads),
        "monoio" => monoio_server(addr),
        "mill-net" => millnet_server(addr),
        "plain-mio" => crate::plain::run(addr, |_| {
            let buffer = match std::env::var("PEER_PLAIN_BUF") {
                Ok(b) => format!("one {b} B read buffer (PEER_PLAIN_BUF)"),
                Err(_) => "one 64 KiB read buffer".to_string(),
            };
            ready(&format!("plain mio loop, 1 thread: epoll edge-triggered, {buffer} written straight back, only the unwritten tail queued per connection"))
        }),
        "ringmill-uring" => ringmill_server(addr, ringmill::Backend::Uring, threads),
        "ringmill-mio" => ringmill_server(addr, ringmill::Backend::Mio, threads),
        other => Err(format!(
            "unknown server {other}; one of {}",
            KINDS.join(", ")
        )),
    }
}

fn ready(description: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY {description}");
    let _ = out.flush();
}

fn tokio_server(addr: SocketAddr, threads: usize) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| e.to_string())?;
        ready(&format!(
            "tokio multi-thread runtime, {threads} worker{}",
            if threads == 1 { "" } else { "s" }
        ));
        loop {
            let (mut stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

fn monoio_server(addr: SocketAddr) -> Result<(), String> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .map_err(|e| format!("monoio io_uring runtime: {e}"))?;
    rt.block_on(async move {
        let listener = monoio::net::TcpListener::bind(addr).map_err(|e| e.to_string())?;
        ready("monoio io_uring driver, 1 runtime");
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            monoio::spawn(async move {
                let mut stream = stream;
                let mut buf: Vec<u8> = Vec::with_capacity(BUF);
                loop {
                    let (res, b) = stream.read(buf).await;
                    buf = b;
                    match res {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let (res, b) = stream.write_all(buf).await;
                    buf = b;
                    if res.is_err() {
                        return;
                    }
                    buf.clear();
                }
            });
        }
    })
}

fn millnet_server(addr: SocketAddr) -> Result<(), String> {
    use mill_net::tcp::{
        config::TcpServerConfig, traits::*, ConnectionId, ServerContext, TcpServer,
    };
    use std::sync::Arc;

    struct Echo;
    impl NetworkHandler for Echo {
        fn on_data(
            &self,
            ctx: &ServerContext,
            conn: ConnectionId,
            data: &[u8],
        ) -> mill_io::error::Result<()> {
            ctx.send_to(conn, data)
        }
    }

    let event_loop = Arc::new(mill_io::EventLoop::default());
    let config = TcpServerConfig::builder()
        .address(addr)
        .max_connections(MAX_CONNS)
        .no_delay(true)
        .build();
    let server = Arc::new(TcpServer::new(config, Echo).map_err(|e| e.to_string())?);
    Arc::clone(&server)
        .start(&event_loop, event_loop.alloc_token())
        .map_err(|e| e.to_string())?;
    ready("mill-net 4.0 on mill-io 4.0, EventLoop::default() (pool mode)");
    event_loop.run().map_err(|e| e.to_string())
}

fn ringmill_server(
    addr: SocketAddr,
    backend: ringmill::Backend,
    threads: usize,
) -> Result<(), String> {
    use ringmill::errors::Result;
    use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};

    struct Echo;
    impl NetworkHandler for Echo {
        fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
            ctx.send_to(conn, data)
        }
    }

    // For profiling only (`benches/peer/PROFILE.md`): the loop's receive buffers and the
    // server's `on_data` chunk, when set; the comparison runs the defaults.
    let env_size = |name: &str| -> std::result::Result<Option<usize>, String> {
        match std::env::var(name) {
            Err(_) => Ok(None),
            Ok(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(format!("{name}={v}: a number above 0")),
            },
        }
    };
    let mut builder = ringmill::EventLoop::builder()
        .threads(threads)
        .backend(backend);
    if let Some(n) = env_size("PEER_RINGMILL_BUFFER_COUNT")? {
        builder = builder.buffer_count(n);
    }
    if let Some(n) = env_size("PEER_RINGMILL_BUFFER_SIZE")? {
        builder = builder.buffer_size(n);
    }
    let event_loop = builder
        .build()
        .map_err(|e| format!("ringmill {backend}: {e}"))?;
    let mut config = TcpServerConfig::builder()
        .address(addr)
        .max_connections(MAX_CONNS)
        .no_delay(true);
    if let Some(n) = env_size("PEER_RINGMILL_CHUNK")? {
        config = config.buffer_size(n);
    }
    let config = config.build();
    let server = std::sync::Arc::new(TcpServer::new(config, Echo).map_err(|e| e.to_string())?);
    server.start(&event_loop).map_err(|e| e.to_string())?;
    let handles = event_loop.handles();
    let counted = std::sync::Arc::clone(&server);
    let _ = COUNTERS.set(Box::new(move || {
        let d = handles
            .iter()
            .map(|h| h.metrics().driver)
            .fold(ringmill::DriverCounters::default(), |a, b| a + b);
        let m = counted.metrics();
        format!(
            " enters={} sqes={} cqes={} events={} wakeups={} rearms={} enobufs={} bytes_in={} bytes_out={}",
            d.enters, d.sqes, d.cqes, d.events, d.wakeups, d.rearms, d.enobufs, m.bytes_in, m.bytes_out
        )
    }));
    let overrides: String = [
        "PEER_RINGMILL_BUFFER_COUNT",
        "PEER_RINGMILL_BUFFER_SIZE",
        "PEER_RINGMILL_CHUNK",
    ]
    .iter()
    .filter_map(|name| std::env::var(name).ok().map(|v| format!(", {name}={v}")))
    .collect();
    ready(&format!(
        "ringmill {}, {threads} loop thread{}: {}{overrides}",
        event_loop.backend(),
        if threads == 1 { "" } else { "s" },
        event_loop.backend_description()
    ));
    event_loop.run().map_err(|e| e.to_string())
}

//! ringmill beside a tokio runtime: the loop threads do the network I/O, tokio tasks do
//! the asynchronous work of each connection and reply through a `ConnSender`.
//!
//! ```text
//! cargo run --release --example tokio_bridge [ADDR]     # default 127.0.0.1:7300
//! nc 127.0.0.1 7300                                     # type lines, get them back upper-cased
//! ```
//!
//! The pattern (docs/TOKIO.md explains it):
//!
//! - Each connection gets a tokio task and a bounded channel to it, made in `on_connect`.
//!   `on_data` (here: one line per call, from the `LineDelimited` layer) hands the line
//!   over with `try_send`: it never blocks the loop. A full channel is answered `busy` at
//!   once, so a client cannot queue work without bound.
//! - The task awaits whatever it needs (here a short `tokio::time::sleep` stands for a
//!   database or HTTP call) and replies with `ConnSender::send`, which never blocks either.
//! - Backpressure: when the reply is refused (`SendError::Backpressure`, the client does not
//!   read), the task awaits a `tokio::sync::Notify` that the connection's `on_drained`
//!   notifies, then sends again. A notify that comes before the task waits is kept, so
//!   none is lost.
//! - `on_disconnect` drops the channel's sender: the task finishes and ends; replies to a
//!   closed connection are refused with `SendError::Closed` and dropped.
//!
//! ringmill's loops and the tokio runtime run on their own threads; neither blocks the
//! other. Nothing here needs tokio's multi-thread runtime: the runtime is a current-thread
//! one on a thread of its own.

use ringmill::errors::{NetworkError, Result};
use ringmill::layer::LineDelimited;
use ringmill::tcp::{
    ConnSender, ConnectionId, NetworkHandler, SendError, ServerContext, TcpServer, TcpServerConfig,
};
use ringmill::EventLoop;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// Lines waiting for one connection's task; more are answered `busy`.
pub const QUEUE: usize = 32;
/// Longest line accepted (the `LineDelimited` layer closes the connection past it).
pub const MAX_LINE: usize = 4096;

/// What the handler keeps per connection.
struct Conn {
    lines: mpsc::Sender<Vec<u8>>,
    drained: Arc<Notify>,
}

/// The handler: hands each line to its connection's tokio task.
pub struct Bridge {
    runtime: tokio::runtime::Handle,
    conns: Mutex<HashMap<ConnectionId, Conn>>,
}

impl Bridge {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NetworkHandler for Bridge {
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let Some(sender) = ctx.sender(conn) else {
            return Ok(()); // Closed already.
        };
        let (lines, rx) = mpsc::channel(QUEUE);
        let drained = Arc::new(Notify::new());
        self.runtime
            .spawn(connection_task(rx, sender, Arc::clone(&drained)));
        self.conns().insert(conn, Conn { lines, drained });
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, line: &[u8]) -> Result<()> {
        let full = match self.conns().get(&conn) {
            Some(c) => c.lines.try_send(line.to_vec()).is_err(),
            None => false,
        };
        if full {
            match ctx.try_send_to(conn, b"busy") {
                Ok(()) | Err(SendError::Closed) | Err(SendError::Backpressure) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn on_drained(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        if let Some(c) = self.conns().get(&conn) {
            c.drained.notify_one();
        }
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        // Dropping the sender ends the task once it has seen the lines already queued.
        self.conns().remove(&conn);
        Ok(())
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        eprintln!("tokio_bridge: {conn:?}: {error}");
    }
}

/// One connection's task: each line, in order, is worked on and answered.
async fn connection_task(
    mut lines: mpsc::Receiver<Vec<u8>>,
    reply_to: ConnSender,
    drained: Arc<Notify>,
) {
    while let Some(line) = lines.recv().await {
        if reply_to.is_closed() {
            return; // Nobody to answer: skip the rest.
        }
        let reply = work(line).await;
        if !send(&reply_to, &drained, &reply).await {
            return;
        }
    }
}

/// The asynchronous work: waits a little (a stand-in for I/O), then upper-cases the line.
async fn work(line: Vec<u8>) -> Vec<u8> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    line.to_ascii_uppercase()
}

/// Sends `frame`, waiting for `on_drained` while the connection's queue is full. Returns
/// whether the connection is still there.
async fn send(reply_to: &ConnSender, drained: &Notify, frame: &[u8]) -> bool {
    loop {
        match reply_to.send(frame) {
            Ok(()) => return true,
            Err(SendError::Backpressure) => drained.notified().await,
            Err(_) => return false, // Closed, or failed: the connection is gone.
        }
    }
}

/// A running bridge: the server on ringmill's loop, the runtime on its own thread.
pub struct Running {
    /// The server (started).
    pub server: TcpServer<Bridge>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the server, then the runtime (its tasks are dropped).
    pub fn stop(mut self) -> Result<()> {
        self.server.stop()?;
        drop(self.stop.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.join().map_err(|_| "the tokio thread panicked")?;
        }
        Ok(())
    }
}

/// Starts a tokio runtime on its own thread and the server on `event_loop`.
pub fn start(event_loop: &EventLoop, addr: SocketAddr) -> Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("tokio".into())
        .spawn(move || {
            // The runtime drives the spawned tasks until told to stop.
            let _ = runtime.block_on(stopped);
        })?;
    let config = TcpServerConfig::builder()
        .address(addr)
        .idle_timeout(Duration::from_secs(300))
        .build();
    let bridge = Bridge {
        runtime: handle,
        conns: Mutex::default(),
    };
    let server =
        TcpServer::new(config, bridge)?.with_layer(|| Box::new(LineDelimited::new(MAX_LINE)));
    server.start(event_loop)?;
    Ok(Running {
        server,
        stop: Some(stop),
        runtime: Some(thread),
    })
}

#[allow(dead_code)] // The smoke test includes this file for `start` only.
fn main() {
    if let Err(e) = run() {
        eprintln!("tokio_bridge: {e}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn run() -> Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7300".to_string())
        .parse()?;
    let event_loop = EventLoop::builder().build()?;
    let running = start(&event_loop, addr)?;
    println!(
        "tokio_bridge listening on {} (backend: {})",
        running.server.local_addr()?,
        event_loop.backend()
    );
    event_loop.run()
}

//! Keep-alive HTTP/1.1 "hello world", for load generators such as wrk.
//!
//! ```text
//! cargo run --release --example http_hello [ADDR]        # default 127.0.0.1:8080
//! RINGMILL_BACKEND=mio cargo run --release --example http_hello
//! curl -i http://127.0.0.1:8080/
//! wrk -t1 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Requests are framed across reads by `request.rs` (the head parsed by `httparse`): a
//! request line and headers split over any number of TCP segments, `Content-Length`
//! bodies (read and skipped), several pipelined requests in one segment (answered in
//! order, in one write), `Connection: close` and HTTP/1.0 (answered, then closed).
//! `GET /` (or `HEAD /`, or any method with a body) gets `Hello, World!`; other paths get
//! 404. `Transfer-Encoding` (chunked bodies) is not supported: 501.
//!
//! Hostile input gets a bounded answer, then a close: a head over 8 KiB or with more than
//! 64 fields gets 431, a body over 1 MiB gets 413, more than 8 empty lines before a
//! request line (a CRLF flood) or anything malformed gets 400, another HTTP version gets
//! 505. So a connection never buffers more than one request's limits plus one read.
//! Connections silent for 30 s are closed, and at most 10,000 are open at once (more are
//! closed on arrival).
//!
//! When the client pipelines faster than it reads, the answers are held back: reads are
//! paused on `SendError::Backpressure` and resumed in `on_drained`, so memory stays bounded.

use ringmill::errors::{NetworkError, Result, SendError};
use ringmill::tcp::{
    ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig, TcpServerConfigBuilder,
};
use ringmill::EventLoop;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[path = "request.rs"]
pub mod request;

use request::{parse, Parse, Request};

/// Connections silent for this long are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 10_000;

const BODY: &[u8] = b"Hello, World!";
const NOT_FOUND: &[u8] = b"Not Found\n";
const SHARDS: usize = 16;

/// The handler: per-connection parse state, sharded by connection id so that loop threads
/// rarely touch the same lock.
pub struct HttpHello {
    shards: Vec<Mutex<HashMap<ConnectionId, Conn>>>,
}

/// What is kept between reads of one connection.
#[derive(Default)]
struct Conn {
    /// Bytes received and not answered yet (an incomplete request, or requests held back
    /// while the client does not read).
    buf: Vec<u8>,
    /// Reads are paused until `on_drained`.
    blocked: bool,
}

impl Default for HttpHello {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpHello {
    /// A handler with no connections.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, conn: ConnectionId) -> MutexGuard<'_, HashMap<ConnectionId, Conn>> {
        self.shards[(conn.as_u64() % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The server configuration the example uses (the smoke test uses it too).
pub fn config(addr: SocketAddr) -> TcpServerConfigBuilder {
    TcpServerConfig::builder()
        .address(addr)
        .no_delay(true)
        .idle_timeout(IDLE_TIMEOUT)
        .max_connections(MAX_CONNECTIONS)
}

impl NetworkHandler for HttpHello {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        let mut shard = self.shard(conn);
        let state = shard.entry(conn).or_default();
        if state.buf.is_empty() {
            // The common case: whole requests in one read, answered without a copy.
            let served = serve(ctx, conn, data)?;
            if served.blocked {
                state.buf.extend_from_slice(data);
            } else {
                state.buf.extend_from_slice(&data[served.consumed..]);
            }
            state.blocked = served.blocked;
        } else {
            state.buf.extend_from_slice(data);
            let served = serve(ctx, conn, &state.buf)?;
            state.buf.drain(..served.consumed);
            state.blocked = served.blocked;
        }
        if state.blocked {
            if let Some(sender) = ctx.sender(conn) {
                sender.pause_reads();
            }
        }
        Ok(())
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let mut shard = self.shard(conn);
        let Some(state) = shard.get_mut(&conn) else {
            return Ok(());
        };
        if !state.blocked {
            return Ok(());
        }
        let served = serve(ctx, conn, &state.buf)?;
        state.buf.drain(..served.consumed);
        state.blocked = served.blocked;
        if !served.blocked {
            if let Some(sender) = ctx.sender(conn) {
                sender.resume_reads();
            }
        }
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.shard(conn).remove(&conn);
        Ok(())
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        eprintln!("http_hello: {conn:?}: {error}");
    }
}

/// What [`serve`] did with its input.
struct Served {
    /// Bytes of the input answered (whole requests).
    consumed: usize,
    /// The answers were refused for backpressure: nothing was consumed, try again later.
    blocked: bool,
}

/// Answers every complete request at the start of `input` with one write; leaves a
/// partial request for the next read.
fn serve(ctx: &ServerContext, conn: ConnectionId, input: &[u8]) -> Result<Served> {
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut close = false;
    while !close {
        match parse(&input[consumed..]) {
            Parse::Partial => break,
            Parse::Request(req) => {
                consumed += req.len;
                close = !req.keep_alive;
                respond(&mut out, &req, close);
            }
            Parse::Bad(status) => {
                // Whatever follows a malformed request cannot be framed: answer, close.
                consumed = input.len();
                close = true;
                error_response(&mut out, status);
            }
        }
    }
    match ctx.try_send_to(conn, &out) {
        // `Closed`: closing already, nothing more to answer.
        Ok(()) | Err(SendError::Closed) => {}
        Err(SendError::Backpressure) => {
            return Ok(Served {
                consumed: 0,
                blocked: true,
            })
        }
        Err(e) => return Err(e.into()),
    }
    if close {
        ctx.close_connection_gracefully(conn)?;
    }
    Ok(Served {
        consumed,
        blocked: false,
    })
}

fn respond(out: &mut Vec<u8>, req: &Request<'_>, close: bool) {
    let (status, body) = if req.target == b"/" {
        ("200 OK", BODY)
    } else {
        ("404 Not Found", NOT_FOUND)
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nServer: ringmill\r\nContent-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !req.head {
        out.extend_from_slice(body);
    }
}

fn error_response(out: &mut Vec<u8>, status: u16) {
    let reason = match status {
        400 => "Bad Request",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "HTTP Version Not Supported",
    };
    let body = format!("{status} {reason}\n");
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {reason}\r\nServer: ringmill\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

#[allow(dead_code)] // The smoke test includes this file for its handler only.
fn main() {
    if let Err(e) = run() {
        eprintln!("http_hello: {e}");
        std::process::exit(1);
    }
}

#[allow(dead_code)]
fn run() -> Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string())
        .parse()?;
    let event_loop = EventLoop::builder().build()?;
    let server = TcpServer::new(config(addr).build(), HttpHello::new())?;
    server.start(&event_loop)?;
    println!(
        "http_hello listening on http://{}/ ({} loop threads)",
        server.local_addr()?,
        event_loop.threads()
    );
    println!(
        "backend: {} ({})",
        event_loop.backend(),
        event_loop.backend_reason()
    );
    event_loop.run()
}

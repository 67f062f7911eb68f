//! Keep-alive HTTP/1.1 "hello world", for load generators such as wrk.
//!
//! ```text
//! cargo run --release --example http_hello [ADDR]        # default 127.0.0.1:8080
//! RINGMILL_BACKEND=mio cargo run --release --example http_hello
//! curl -i http://127.0.0.1:8080/
//! wrk -t1 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! Requests are parsed properly across reads: a request line and headers split over any
//! number of TCP segments, `Content-Length` bodies (read and skipped), several pipelined
//! requests in one segment (answered in order, in one write), `Connection: close` and
//! HTTP/1.0 (answered, then closed). `GET /` (or `HEAD /`, or any method with a body)
//! gets `Hello, World!`; other paths get 404; malformed requests get 400 (or 413, 431,
//! 501, 505) and the connection is closed. `Transfer-Encoding` (chunked bodies) is not
//! supported: 501.
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

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

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
    TcpServerConfig::builder().address(addr).no_delay(true)
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
    match ctx.send_to(conn, &out) {
        Ok(()) => {}
        Err(e) => match e.downcast_ref::<NetworkError>() {
            Some(NetworkError::Send(SendError::Backpressure)) => {
                return Ok(Served {
                    consumed: 0,
                    blocked: true,
                })
            }
            // Closing already: nothing more to answer.
            Some(NetworkError::ConnectionNotFound(_)) => {}
            _ => return Err(e),
        },
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

/// One parsed request.
#[derive(Debug)]
struct Request<'a> {
    /// `HEAD`: answer without a body.
    head: bool,
    target: &'a [u8],
    keep_alive: bool,
    /// Bytes of the request: head, blank line, body.
    len: usize,
}

#[derive(Debug)]
enum Parse<'a> {
    /// Not all of the request is here yet.
    Partial,
    Request(Request<'a>),
    /// Malformed or unsupported: the status to answer with.
    Bad(u16),
}

/// Parses the request at the start of `buf`.
fn parse(buf: &[u8]) -> Parse<'_> {
    // Empty lines before a request line are ignored (RFC 9112, 2.2).
    let skip = buf.chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
    let rest = &buf[skip..];
    let Some(head_len) = find(rest, b"\r\n\r\n") else {
        return if rest.len() > MAX_HEAD {
            Parse::Bad(431)
        } else {
            Parse::Partial
        };
    };
    if head_len > MAX_HEAD {
        return Parse::Bad(431);
    }
    // Every line of the head, the last one included, ends in CRLF; a bare LF is refused.
    let mut lines = rest[..head_len + 1].split(|&b| b == b'\n');
    let Some(request_line) = lines.next().and_then(|l| l.strip_suffix(b"\r")) else {
        return Parse::Bad(400);
    };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Bad(400);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) || target.is_empty() {
        return Parse::Bad(400);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        v if v.starts_with(b"HTTP/") => return Parse::Bad(505),
        _ => return Parse::Bad(400),
    };
    let mut content_length: Option<usize> = None;
    let (mut close, mut keep_alive) = (false, false);
    for line in lines {
        let Some(line) = line.strip_suffix(b"\r") else {
            return Parse::Bad(400); // bare LF
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parse::Bad(400);
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Parse::Bad(400); // includes whitespace before the colon, obs-fold
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_length(value) else {
                return Parse::Bad(400);
            };
            if content_length.is_some_and(|m| m != n) {
                return Parse::Bad(400);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Parse::Bad(501);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let body = content_length.unwrap_or(0);
    if body > MAX_BODY {
        return Parse::Bad(413);
    }
    let len = skip + head_len + 4 + body;
    if buf.len() < len {
        return Parse::Partial;
    }
    Parse::Request(Request {
        head: method == b"HEAD",
        target,
        keep_alive: !close && (http11 || keep_alive),
        len,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |i| i + 1);
    &s[start..end]
}

fn parse_length(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Characters allowed in a method or header name (RFC 9110, 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> Request<'_> {
        match parse(buf) {
            Parse::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_heads_bodies_and_connection_options() {
        let r = request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET");
        assert_eq!(
            (r.target, r.keep_alive, r.len, r.head),
            (&b"/"[..], true, 27, false)
        );
        let r = request(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET");
        assert_eq!((r.target, r.len), (&b"/x"[..], 42));
        assert!(!request(b"GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n").keep_alive);
        assert!(!request(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(request(b"HEAD / HTTP/1.1\r\n\r\n").head);
        assert_eq!(request(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").len, 22);
    }

    #[test]
    fn waits_for_the_whole_request() {
        let full = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert!(
                matches!(parse(&full[..cut]), Parse::Partial),
                "cut at {cut}"
            );
        }
        assert_eq!(request(full).len, full.len());
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        let bad = |b: &[u8]| match parse(b) {
            Parse::Bad(s) => s,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(b)
            ),
        };
        assert_eq!(bad(b"GET /\r\n\r\n"), 400);
        assert_eq!(bad(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad(b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"), 400);
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(bad(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(bad(&vec![b'a'; MAX_HEAD + 1]), 431);
    }
}

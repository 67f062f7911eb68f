//! Smoke tests of the examples: each example's handler (the example file itself, included
//! as a module) served on each backend and driven by plain std clients.

mod common;

#[allow(dead_code)]
#[path = "../examples/http_hello/main.rs"]
mod http_hello;

#[allow(dead_code)]
#[path = "../examples/chat.rs"]
mod chat;

#[allow(dead_code)]
#[path = "../examples/framed_rpc.rs"]
mod framed_rpc;

#[cfg(feature = "tls")]
#[allow(dead_code)]
#[path = "../examples/tls_echo.rs"]
mod tls_echo;

#[allow(dead_code)]
#[path = "../examples/tokio_bridge.rs"]
mod tokio_bridge;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// http_hello
// ---------------------------------------------------------------------------------------

/// One HTTP response as a client sees it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (with a body unless `head`), failing the test after [`WAIT`].
fn read_response(reader: &mut BufReader<TcpStream>, head: bool) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let mut parts = line.trim_end().splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let l = line.trim_end_matches("\r\n");
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = r
        .header("content-length")
        .expect("content-length")
        .parse()
        .unwrap();
    if !head {
        r.body = vec![0; len];
        reader.read_exact(&mut r.body).expect("body");
    }
    r
}

fn http_client(server: &TcpServer<http_hello::HttpHello>) -> (TcpStream, BufReader<TcpStream>) {
    let stream = connect(addr_of(server));
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn http_server(event_loop: &EventLoop) -> TcpServer<http_hello::HttpHello> {
    let config = http_hello::config("127.0.0.1:0".parse().unwrap()).build();
    start_server(event_loop, config, http_hello::HttpHello::new())
}

backend_matrix! {
    /// Keep-alive: pipelined requests in one write, a request split byte by byte, a body
    /// split across writes followed by another request, HEAD, 404; all answered in order on
    /// one connection.
    fn http_hello_keep_alive_and_pipelining(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = http_server(&event_loop);
        let (mut stream, mut reader) = http_client(&server);
        let get = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        stream.write_all(&[&get[..], &get[..], &get[..]].concat()).unwrap();
        for _ in 0..3 {
            let r = read_response(&mut reader, false);
            assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
            assert_eq!(r.header("connection"), None);
        }
        for b in get.iter() {
            stream.write_all(&[*b]).unwrap();
        }
        assert_eq!(read_response(&mut reader, false).status, 200);

        let post = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET / HTTP/";
        stream.write_all(&post[..30]).unwrap();
        stream.write_all(&post[30..]).unwrap();
        stream.write_all(b"HEAD / HTTP/1.1\r\n\r\nGET /missing HTTP/1.1\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 200, "the body is not taken for a request");
        let r = read_response(&mut reader, true);
        assert_eq!((r.status, r.header("content-length")), (200, Some("13")));
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 404);
        assert_eq!(server.connection_count(), 1);
    }

    /// `Connection: close`, HTTP/1.0 and malformed requests: answered, then closed.
    fn http_hello_closes_when_asked_or_confused(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = http_server(&event_loop);
        for (request, status) in [
            (&b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..], 200),
            (b"GET / HTTP/1.0\r\n\r\n", 200),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        ] {
            let (mut stream, mut reader) = http_client(&server);
            stream.write_all(request).unwrap();
            let r = read_response(&mut reader, false);
            assert_eq!(r.status, status, "{}", String::from_utf8_lossy(request));
            assert_eq!(r.header("connection"), Some("close"));
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).expect("EOF after the answer");
            assert!(rest.is_empty(), "one answer only, got {:?}", String::from_utf8_lossy(&rest));
        }
        poll_until(WAIT, "connections closed", || server.connection_count() == 0);
    }

    /// Hostile input gets a bounded answer and a close: a head that never ends (431), a
    /// head with too many fields (431), a body over the limit (413), a flood of empty
    /// lines (400). The example's configuration bounds idle time and connections.
    fn http_hello_bounds_hostile_requests(backend: Backend) {
        let config = http_hello::config("127.0.0.1:0".parse().unwrap()).build();
        assert_eq!(config.idle_timeout, Some(http_hello::IDLE_TIMEOUT));
        assert_eq!(config.max_connections, Some(http_hello::MAX_CONNECTIONS));
        let event_loop = event_loop(backend);
        let server = http_server(&event_loop);
        use http_hello::request::{MAX_EMPTY_LINES, MAX_HEAD, MAX_HEADERS};
        let mut endless = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        endless.resize(MAX_HEAD + 4096, b'a');
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1)).into_bytes();
        let crlf_flood = b"\r\n".repeat(64 * 1024);
        assert!(crlf_flood.len() > 2 * MAX_EMPTY_LINES);
        for (what, request, status) in [
            ("a head that never ends", endless, 431),
            ("too many header fields", many, 431),
            ("a body over the limit", b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n".to_vec(), 413),
            ("a CRLF flood", crlf_flood, 400),
        ] {
            let (stream, mut reader) = http_client(&server);
            // The server may answer and close before it has read everything.
            let writer = std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.write_all(&request);
                stream
            });
            let r = read_response(&mut reader, false);
            assert_eq!(r.status, status, "{what}");
            assert_eq!(r.header("connection"), Some("close"), "{what}");
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            assert!(rest.is_empty(), "{what}: one answer only, got {:?}", String::from_utf8_lossy(&rest));
            drop(writer.join().unwrap());
        }
        poll_until(WAIT, "connections closed", || server.connection_count() == 0);
    }

    /// A client that pipelines many requests without reading: once its socket buffers
    /// are full the server's answers are refused for backpressure and the server stops
    /// reading; the queue stays bounded, and every answer arrives, in order, once the
    /// client reads.
    fn http_hello_pipelining_without_reading_is_bounded(backend: Backend) {
        let event_loop = event_loop(backend);
        let high = 16 * 1024;
        let config = http_hello::config("127.0.0.1:0".parse().unwrap())
            .high_watermark(high)
            .low_watermark(4 * 1024)
            .build();
        let conns = std::sync::Arc::new(Shared::new(Vec::new()));
        let handler = Tap {
            inner: http_hello::HttpHello::new(),
            conns: std::sync::Arc::clone(&conns),
        };
        let server = start_server(&event_loop, config, handler);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small fixed receive buffer: the kernel cannot absorb the answers.
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.connect_timeout(&addr_of(&server).into(), WAIT).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        // Answers (about 100 bytes each) for more than the server's socket send buffer can
        // ever hold (the kernel's tcp_wmem maximum) plus the client's receive buffer.
        let n = (wmem_max() + (4 << 20)) / 9600 * 100;
        let writer = std::thread::spawn(move || {
            let mut stream = stream;
            let batch = b"GET / HTTP/1.1\r\n\r\n".repeat(100);
            for _ in 0..n / 100 {
                stream.write_all(&batch).unwrap();
            }
            stream
        });
        poll_until(WAIT, "an answer refused for backpressure", || {
            server.metrics().backpressure_refusals > 0
        });
        for i in 0..n {
            let r = read_response(&mut reader, false);
            assert_eq!((i, r.status), (i, 200));
        }
        let _stream = writer.join().unwrap();
        let id = conns.with(|v| v[0]);
        let peak = server.context().sender(id).expect("still open").peak_queued_bytes();
        // One batch of answers may go past the high watermark: at most one read's worth
        // (8 KiB of requests, about 450 answers).
        assert!(peak <= high + 64 * 1024, "queue peaked at {peak} bytes");
    }
}

// ---------------------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------------------

/// A chat member: a std client with a line reader.
struct Member {
    stream: TcpStream,
    lines: BufReader<TcpStream>,
    /// The name the room gave it (`conn#N`).
    name: String,
}

impl Member {
    fn join(server: &TcpServer<chat::Chat>) -> Member {
        Member::join_with(connect(addr_of(server)))
    }

    fn join_with(stream: TcpStream) -> Member {
        let mut lines = BufReader::new(stream.try_clone().unwrap());
        let welcome = read_line(&mut lines);
        let name = welcome
            .strip_prefix("* welcome, you are ")
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| panic!("unexpected welcome {welcome:?}"))
            .to_string();
        Member {
            stream,
            lines,
            name,
        }
    }

    fn say(&mut self, text: &[u8]) {
        self.stream.write_all(text).unwrap();
    }

    /// The next chat line (announcements starting with `*` are skipped).
    fn next_message(&mut self) -> String {
        loop {
            let line = read_line(&mut self.lines);
            if !line.starts_with('*') {
                return line;
            }
        }
    }

    /// Reads until the announcement `* {what}`, failing on any chat line before it.
    fn expect_notice(&mut self, what: &str) {
        loop {
            let line = read_line(&mut self.lines);
            if line == format!("* {what}") {
                return;
            }
            assert!(
                line.starts_with('*'),
                "{} got {line:?} before * {what}",
                self.name
            );
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .expect("a line within the deadline");
    assert!(n > 0, "connection closed");
    line.trim_end_matches('\n').to_string()
}

backend_matrix! {
    /// Three members: each line goes to the two others, never back to its sender, whole
    /// even when it arrives in pieces; a line over the limit disconnects its sender, which
    /// the others are told.
    fn chat_relays_lines_to_everyone_else(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(
            &event_loop,
            chat::config("127.0.0.1:0".parse().unwrap()).build(),
            chat::Chat::new(),
        );
        let mut a = Member::join(&server);
        let mut b = Member::join(&server);
        a.expect_notice(&format!("{} joined", b.name));
        let mut c = Member::join(&server);
        a.expect_notice(&format!("{} joined", c.name));
        b.expect_notice(&format!("{} joined", c.name));

        a.say(b"hello\r\n");
        assert_eq!(b.next_message(), format!("[{}] hello", a.name));
        assert_eq!(c.next_message(), format!("[{}] hello", a.name));
        b.say(b"sp");
        b.say(b"lit\n\nand more\n");
        // a's next message is b's, so a never got its own line back.
        assert_eq!(a.next_message(), format!("[{}] split", b.name));
        assert_eq!(a.next_message(), format!("[{}] and more", b.name));
        assert_eq!(c.next_message(), format!("[{}] split", b.name));
        assert_eq!(c.next_message(), format!("[{}] and more", b.name));

        c.say(&vec![b'x'; chat::MAX_LINE + 1]);
        assert_eq!(
            read_line(&mut c.lines),
            format!("* line over {} bytes, bye", chat::MAX_LINE)
        );
        let mut rest = Vec::new();
        c.lines.read_to_end(&mut rest).expect("EOF after the notice");
        a.expect_notice(&format!("{} left", c.name));
        b.expect_notice(&format!("{} left", c.name));
        a.say(b"still here\n");
        assert_eq!(b.next_message(), format!("[{}] still here", a.name));
    }
}

// ---------------------------------------------------------------------------------------
// framed_rpc
// ---------------------------------------------------------------------------------------

fn rpc_settings() -> framed_rpc::Settings {
    framed_rpc::Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        idle_timeout: Duration::from_secs(30),
        status_every: Duration::from_millis(10),
        verbose: false,
        ..Default::default()
    }
}

/// Reads one reply frame.
fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let header = read_exact_within(stream, 4, WAIT);
    let len = u32::from_be_bytes(header.try_into().unwrap()) as usize;
    read_exact_within(stream, len, WAIT)
}

fn rpc(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(&framed_rpc::encode(request)).unwrap();
    read_frame(stream)
}

backend_matrix! {
    /// Requests answered on the loop and on worker threads, frames split across writes
    /// and batched in one, a frame of the full 10 MiB, the periodic timer ticking.
    fn framed_rpc_answers_requests(backend: Backend) {
        let event_loop = event_loop(backend);
        let daemon = framed_rpc::Daemon::start(&event_loop, &rpc_settings()).expect("start");
        let mut s = connect(daemon.local_addr());
        assert_eq!(rpc(&mut s, b"ping"), b"pong");
        // One frame byte by byte, then three frames in one write.
        for b in framed_rpc::encode(b"echo split") {
            s.write_all(&[b]).unwrap();
        }
        assert_eq!(read_frame(&mut s), b"split");
        let batch = [
            framed_rpc::encode(b"work abc"),
            framed_rpc::encode(b"nonsense"),
            framed_rpc::encode(b"echo x"),
        ]
        .concat();
        s.write_all(&batch).unwrap();
        let mut replies = vec![read_frame(&mut s), read_frame(&mut s), read_frame(&mut s)];
        // The work reply comes from a worker thread: it may arrive after the others.
        replies.sort();
        let done = format!("done {:016x}", framed_rpc::digest(b"abc")).into_bytes();
        let mut want = vec![done, b"error unknown request".to_vec(), b"x".to_vec()];
        want.sort();
        assert_eq!(replies, want);

        let big = pattern(3, framed_rpc::MAX_FRAME - 5);
        let request = [&b"echo "[..], &big].concat();
        let writer = {
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || w.write_all(&framed_rpc::encode(&request)).unwrap())
        };
        assert_bytes_eq(&read_frame(&mut s), &big, "10 MiB echo");
        writer.join().unwrap();

        poll_until(WAIT, "two status ticks", || daemon.ticks() >= 2);
        let stats = String::from_utf8(rpc(&mut s, b"stats")).unwrap();
        assert!(stats.starts_with("requests=6 jobs=1 ticks="), "{stats}");
        daemon.shutdown().unwrap();
        assert!(read_to_eof(&mut s, WAIT).is_empty());
    }

    /// A frame announcing more than 10 MiB: the frames before it are answered, then the
    /// connection is closed (the LengthPrefixed layer refuses the frame).
    fn framed_rpc_refuses_oversize_frames(backend: Backend) {
        let event_loop = event_loop(backend);
        let daemon = framed_rpc::Daemon::start(&event_loop, &rpc_settings()).expect("start");
        let mut s = connect(daemon.local_addr());
        let mut bytes = framed_rpc::encode(b"ping");
        bytes.extend_from_slice(&(framed_rpc::MAX_FRAME as u32 + 1).to_be_bytes());
        bytes.extend_from_slice(b"more");
        s.write_all(&bytes).unwrap();
        assert_eq!(read_frame(&mut s), b"pong");
        match try_read_to_eof(&mut s, WAIT) {
            Ok(rest) => assert!(rest.is_empty(), "{rest:?}"),
            Err((rest, e)) => assert!(rest.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        daemon.shutdown().unwrap();
    }

    /// Work is bounded per connection: of many `work` requests sent at once, each gets
    /// either its result or `error busy`, in order of completion, and the counters agree;
    /// a stop with no grace answers what is still queued without running it.
    fn framed_rpc_bounds_work_and_stops_with_queued_jobs(backend: Backend) {
        let event_loop = event_loop(backend);
        let settings = framed_rpc::Settings {
            max_jobs_per_conn: 2,
            workers: 1,
            stop_grace: Duration::ZERO,
            ..rpc_settings()
        };
        let daemon = framed_rpc::Daemon::start(&event_loop, &settings).expect("start");
        let mut s = connect(daemon.local_addr());
        let n = 12;
        let batch: Vec<u8> = (0..n).flat_map(|i| framed_rpc::encode(format!("work {i}").as_bytes())).collect();
        s.write_all(&batch).unwrap();
        let replies: Vec<String> = (0..n).map(|_| String::from_utf8(read_frame(&mut s)).unwrap()).collect();
        let done: Vec<&String> = replies.iter().filter(|r| r.starts_with("done ")).collect();
        let busy = replies.iter().filter(|r| *r == "error busy").count();
        assert_eq!(done.len() + busy, n, "{replies:?}");
        assert!(!done.is_empty(), "{replies:?}");
        let digests: Vec<String> = (0..n).map(|i| format!("done {:016x}", framed_rpc::digest(format!("{i}").as_bytes()))).collect();
        assert!(done.iter().all(|d| digests.contains(d)), "{replies:?}");
        assert_eq!(daemon.jobs_queued(), done.len() as u64);

        // Queue two jobs, then stop at once: each is answered (its result if a worker had
        // taken it already, else `error shutting down`), and the stop returns.
        s.write_all(&[framed_rpc::encode(b"work a"), framed_rpc::encode(b"work b")].concat()).unwrap();
        poll_until(WAIT, "both jobs queued", || daemon.jobs_queued() == done.len() as u64 + 2);
        daemon.shutdown().unwrap();
        for _ in 0..2 {
            let reply = String::from_utf8(read_frame(&mut s)).unwrap();
            assert!(reply.starts_with("done ") || reply == "error shutting down", "{reply}");
        }
        assert!(read_to_eof(&mut s, WAIT).is_empty());
    }

    /// Idle connections are closed; a third connection from one address is refused while
    /// two are open (`max_per_ip = 2`).
    fn framed_rpc_idle_timeout_and_per_ip_limit(backend: Backend) {
        let event_loop = event_loop(backend);
        let settings = framed_rpc::Settings {
            idle_timeout: Duration::from_millis(200),
            max_per_ip: 2,
            ..rpc_settings()
        };
        let daemon = framed_rpc::Daemon::start(&event_loop, &settings).expect("start");
        let mut idle = connect(daemon.local_addr());
        read_to_eof(&mut idle, WAIT);
        poll_until(WAIT, "idle timeout counted", || daemon.metrics().idle_timeouts == 1);
        poll_until(WAIT, "idle connection gone", || daemon.metrics().open == 0);

        let mut a = connect(daemon.local_addr());
        let mut b = connect(daemon.local_addr());
        assert_eq!(rpc(&mut a, b"ping"), b"pong");
        assert_eq!(rpc(&mut b, b"ping"), b"pong");
        let mut c = connect(daemon.local_addr());
        let _ = c.write_all(&framed_rpc::encode(b"ping"));
        match try_read_to_eof(&mut c, WAIT) {
            Ok(got) => assert!(got.is_empty(), "the third connection was served"),
            Err((got, e)) => assert!(got.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert_eq!(daemon.metrics().refused_per_ip, 1);
        assert_eq!(rpc(&mut a, b"ping"), b"pong", "the others are still served");
        daemon.shutdown().unwrap();
    }

    /// Graceful stop: work already queued is finished and its reply delivered before the
    /// connection is closed; then nothing listens.
    fn framed_rpc_graceful_shutdown_delivers_queued_work(backend: Backend) {
        let event_loop = event_loop(backend);
        let daemon = framed_rpc::Daemon::start(&event_loop, &rpc_settings()).expect("start");
        let addr = daemon.local_addr();
        let mut s = connect(addr);
        s.write_all(&framed_rpc::encode(b"work late")).unwrap();
        poll_until(WAIT, "the work queued", || daemon.jobs_queued() == 1);
        daemon.shutdown().unwrap();
        let want = format!("done {:016x}", framed_rpc::digest(b"late")).into_bytes();
        assert_eq!(read_frame(&mut s), want);
        assert!(read_to_eof(&mut s, WAIT).is_empty());
        assert!(TcpStream::connect_timeout(&addr, WAIT).is_err(), "still listening");
    }
}

backend_matrix! {
    /// A member that does not read never holds the room up: once its queue is full, lines
    /// for it are dropped (the others still get every line), and when it catches up it is
    /// told how many it missed: what it received plus that count is every line.
    fn chat_drops_lines_for_a_member_that_does_not_read(backend: Backend) {
        let event_loop = event_loop(backend);
        let server = start_server(
            &event_loop,
            chat::config("127.0.0.1:0".parse().unwrap()).build(),
            chat::Chat::new(),
        );
        let mut a = Member::join(&server);
        let mut b = Member::join(&server);
        a.expect_notice(&format!("{} joined", b.name));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small fixed receive buffer: the kernel cannot absorb what the room sends.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect_timeout(&addr_of(&server).into(), WAIT).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut slow = Member::join_with(stream);
        a.expect_notice(&format!("{} joined", slow.name));
        b.expect_notice(&format!("{} joined", slow.name));

        // In lockstep with b, which reads: b's queue never holds more than one line. The
        // slow member is sent more than the server's socket send buffer can ever hold
        // (the kernel's tcp_wmem maximum) plus the queue's high watermark.
        let total = (wmem_max() + (2 << 20)) / 3000;
        let filler = "x".repeat(3000);
        for i in 0..total {
            a.say(format!("{i} {filler}\n").as_bytes());
            assert_eq!(b.next_message(), format!("[{}] {i} {filler}", a.name));
        }
        poll_until(WAIT, "refusals for the slow member", || {
            server.metrics().backpressure_refusals > 0
        });
        let mut received = 0;
        let dropped: usize = loop {
            let line = read_line(&mut slow.lines);
            if let Some(rest) = line.strip_prefix("* ") {
                if let Some(n) = rest.strip_suffix(" lines dropped: you read too slowly") {
                    break n.parse().unwrap();
                }
                continue;
            }
            assert_eq!(line, format!("[{}] {received} {filler}", a.name), "in order, no gap");
            received += 1;
        };
        assert!(dropped > 0);
        assert_eq!(received + dropped, total, "{received} received, {dropped} dropped");
    }
}

/// The most a TCP socket's send buffer can grow to (Linux: the third field of tcp_wmem).
fn wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Delegates to a handler, noting connection ids.
struct Tap<H> {
    inner: H,
    conns: std::sync::Arc<Shared<Vec<ConnectionId>>>,
}

impl<H: NetworkHandler> NetworkHandler for Tap<H> {
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.conns.update(|v| v.push(conn));
        self.inner.on_connect(ctx, conn)
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.inner.on_data(ctx, conn, data)
    }

    fn on_drained(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.inner.on_drained(ctx, conn)
    }

    fn on_disconnect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.inner.on_disconnect(ctx, conn)
    }
}

// ---------------------------------------------------------------------------------------
// tls_echo
// ---------------------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls_echo_smoke {
    use super::*;
    use ringmill::layer::tls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    /// A rustls client trusting the committed test CA.
    fn client_config() -> Arc<rustls::ClientConfig> {
        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls/ca.pem");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    backend_matrix! {
        /// The example's server, with the test certificate, echoes through TLS to a rustls
        /// client that verifies it, and ends with close_notify when it stops.
        fn tls_echo_round_trip(backend: Backend) {
            let event_loop = event_loop(backend);
            let (cert, key) = tls_echo::test_certificate();
            let tls = tls_echo::tls_config(&cert, &key).expect("the test certificate loads");
            let server = tls_echo::server("127.0.0.1:0".parse().unwrap(), tls).unwrap();
            server.start(&event_loop).unwrap();
            let conn = rustls::ClientConnection::new(client_config(), ServerName::try_from("localhost").unwrap()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, connect(addr_of(&server)));
            for message in [&b"hello"[..], &[7u8; 40_000]] {
                tls.write_all(message).unwrap();
                let mut echo = vec![0u8; message.len()];
                tls.read_exact(&mut echo).unwrap();
                assert_bytes_eq(&echo, message, "echo through TLS");
            }
            server.stop().unwrap();
            let mut rest = Vec::new();
            let end = tls.read_to_end(&mut rest);
            assert!(end.is_ok() && rest.is_empty(), "{backend}: not a clean TLS end: {end:?}");
            event_loop.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------
// tokio_bridge
// ---------------------------------------------------------------------------------------

backend_matrix! {
    /// Lines go to the connection's tokio task and come back upper-cased, in order; lines
    /// past the task's queue are answered `busy` at once (every line gets one answer);
    /// a second connection has its own task.
    fn tokio_bridge_answers_from_tasks(backend: Backend) {
        let event_loop = event_loop(backend);
        let running = tokio_bridge::start(&event_loop, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = addr_of(&running.server);
        let mut a = connect(addr);
        let mut a_lines = BufReader::new(a.try_clone().unwrap());
        a.write_all(b"hello\nworld\n").unwrap();
        assert_eq!(read_line(&mut a_lines), "HELLO");
        assert_eq!(read_line(&mut a_lines), "WORLD");

        let n = 200;
        let batch: String = (0..n).map(|i| format!("line {i}\n")).collect();
        a.write_all(batch.as_bytes()).unwrap();
        let answers: Vec<String> = (0..n).map(|_| read_line(&mut a_lines)).collect();
        let worked: Vec<&String> = answers.iter().filter(|l| *l != "busy").collect();
        assert!(worked.len() >= tokio_bridge::QUEUE.min(n), "{answers:?}");
        let mut expected = (0..n).map(|i| format!("LINE {i}"));
        for line in &worked {
            assert!(expected.any(|e| &e == *line), "out of order or unknown: {line} in {answers:?}");
        }

        let mut b = connect(addr);
        let mut b_lines = BufReader::new(b.try_clone().unwrap());
        b.write_all(b"second\n").unwrap();
        assert_eq!(read_line(&mut b_lines), "SECOND");
        drop((a, a_lines, b, b_lines));
        poll_until(WAIT, "connections closed", || running.server.connection_count() == 0);
        running.stop().unwrap();
        event_loop.stop();
    }
}

//! Shared parts of the criterion benches: a ringmill echo server per backend and a load
//! generator that is not ringmill (plain `mio`, driven from the bench thread).

#![allow(dead_code)]

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use ringmill::errors::Result;
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
use ringmill::{Backend, EventLoop};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The backends every network bench runs on, with the name used in bench ids.
pub const BACKENDS: [(Backend, &str); 2] = [(Backend::Uring, "io_uring"), (Backend::Mio, "mio")];

/// How long a load generator waits without progress before it gives up with a panic.
const STALL: Duration = Duration::from_secs(10);

/// Raises the soft open-file limit to the hard one (benches open 2,000+ sockets).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// Echoes every byte back.
pub struct Echo;

impl NetworkHandler for Echo {
    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        ctx.send_to(conn, data)
    }
}

/// Reads and drops everything (for the broadcast bench, where the server only sends).
pub struct Sink;

impl NetworkHandler for Sink {
    fn on_data(&self, _ctx: &ServerContext, _conn: ConnectionId, _data: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// A ringmill server on one loop thread of `backend`, on an ephemeral loopback port.
pub struct Server<H: NetworkHandler> {
    /// The server (kept alive for the bench).
    pub server: TcpServer<H>,
    /// Its event loop (one thread).
    pub event_loop: EventLoop,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl<H: NetworkHandler> Server<H> {
    /// Starts the server, or `None` (with a note on stderr) when `backend` is unavailable.
    pub fn start(backend: Backend, handler: H) -> Option<Self> {
        let event_loop = match EventLoop::builder().threads(1).backend(backend).build() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped: backend {backend} unavailable: {e}");
                return None;
            }
        };
        let config = TcpServerConfig::builder()
            .address("127.0.0.1:0".parse().unwrap())
            .build();
        let server = TcpServer::new(config, handler).expect("server config");
        server.start(&event_loop).expect("server start");
        let addr = server.local_addr().expect("local addr");
        Some(Server {
            server,
            event_loop,
            addr,
        })
    }
}

impl<H: NetworkHandler> Drop for Server<H> {
    fn drop(&mut self) {
        let _ = self.server.stop();
        self.event_loop.stop();
    }
}

/// One client connection of the load generator.
struct Conn {
    stream: TcpStream,
    /// Bytes of the current outgoing batch not yet written.
    unsent: usize,
    /// Bytes received that do not yet make a whole message.
    partial: usize,
    /// Messages sent and not yet echoed.
    in_flight: usize,
}

/// `n` plain mio client connections to one server, driven by [`Clients::echo`].
pub struct Clients {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    out: Vec<u8>,
    inbuf: Vec<u8>,
}

impl Clients {
    /// Opens `n` connections to `addr` (blocking connects, then non-blocking mio streams)
    /// and makes sure each one is accepted by exchanging one byte with an echo server
    /// (`echo_check`) or not.
    pub fn connect(addr: SocketAddr, n: usize, echo_check: bool) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            if echo_check {
                s.write_all(b"x")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
            }
            s.set_nonblocking(true)?;
            let mut stream = TcpStream::from_std(s);
            poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            conns.push(Conn {
                stream,
                unsent: 0,
                partial: 0,
                in_flight: 0,
            });
        }
        Ok(Clients {
            poll,
            events: Events::with_capacity(1024),
            conns,
            out: Vec::new(),
            inbuf: vec![0; 256 * 1024],
        })
    }

    /// Number of connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Sends `total` messages of `size` bytes spread over the connections, at most `depth`
    /// in flight per connection, and waits until every one has been echoed back. Returns the
    /// time it took.
    pub fn echo(&mut self, total: u64, size: usize, depth: usize) -> Duration {
        if self.out.len() < size * depth {
            self.out = (0..size * depth).map(|i| i as u8).collect();
        }
        let start = Instant::now();
        let mut issued = 0u64;
        let mut done = 0u64;
        // Fill the pipeline: up to `depth` messages per connection, round robin.
        'fill: for _ in 0..depth {
            for c in self.conns.iter_mut() {
                if issued == total {
                    break 'fill;
                }
                c.in_flight += 1;
                c.unsent += size;
                issued += 1;
            }
        }
        for i in 0..self.conns.len() {
            flush(&mut self.conns[i], &self.out);
        }
        let mut last = Instant::now();
        while done < total {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(100)))
                .expect("poll");
            if self.events.is_empty() {
                assert!(
                    last.elapsed() < STALL,
                    "load generator: no progress for {STALL:?} ({done}/{total} echoed)"
                );
                continue;
            }
            last = Instant::now();
            for ev in self.events.iter() {
                let c = &mut self.conns[ev.token().0];
                if ev.is_writable() {
                    flush(c, &self.out);
                }
                if !ev.is_readable() {
                    continue;
                }
                loop {
                    match c.stream.read(&mut self.inbuf) {
                        Ok(0) => panic!("load generator: server closed a connection"),
                        Ok(n) => {
                            c.partial += n;
                            let msgs = c.partial / size;
                            c.partial %= size;
                            c.in_flight -= msgs;
                            done += msgs as u64;
                            // Keep `depth` in flight while messages remain to be issued.
                            let more = ((total - issued) as usize).min(msgs);
                            issued += more as u64;
                            c.in_flight += more;
                            c.unsent += more * size;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => panic!("load generator: read: {e}"),
                    }
                }
                flush(c, &self.out);
            }
        }
        start.elapsed()
    }

    /// Reads until every connection has received `size` more bytes (for broadcast).
    pub fn receive_all(&mut self, size: usize) {
        let mut waiting = self.conns.len();
        for c in self.conns.iter_mut() {
            c.in_flight = size;
        }
        let mut last = Instant::now();
        while waiting > 0 {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(100)))
                .expect("poll");
            if self.events.is_empty() {
                assert!(
                    last.elapsed() < STALL,
                    "broadcast: {waiting} connections still waiting after {STALL:?}"
                );
            }
            last = Instant::now();
            for ev in self.events.iter() {
                let c = &mut self.conns[ev.token().0];
                if !ev.is_readable() {
                    continue;
                }
                loop {
                    match c.stream.read(&mut self.inbuf) {
                        Ok(0) => panic!("broadcast: server closed a connection"),
                        Ok(n) => {
                            assert!(n <= c.in_flight, "broadcast: more bytes than sent");
                            c.in_flight -= n;
                            if c.in_flight == 0 && n > 0 {
                                waiting -= 1;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => panic!("broadcast: read: {e}"),
                    }
                }
            }
        }
    }
}

/// Writes as much of `c`'s pending batch as the socket takes.
fn flush(c: &mut Conn, out: &[u8]) {
    while c.unsent > 0 {
        let n = c.unsent.min(out.len());
        match c.stream.write(&out[..n]) {
            Ok(w) => c.unsent -= w,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("load generator: write: {e}"),
        }
    }
}

//! Differential test: the same scripted clients against an io_uring loop and a mio loop
//! must produce the same per-connection traces (callback order, concatenated bytes, how the
//! connection ended).
//!
//! Each script (random message sizes, pipelining, half-close, reset, server-side close) is
//! generated from a seed; its first 4 bytes name it, so the traces of both runs can be
//! matched whatever ids the connections got.

use ringmill::errors::{NetworkError, Result};
use ringmill::tcp::{ConnectionId, NetworkHandler, ServerContext, TcpServer, TcpServerConfig};
use ringmill::{Backend, EventLoop};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const SCRIPTS: u32 = 40;
const CLOSE_MARK: &[u8] = b"\0CLOSE\0";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Connect,
    /// Consecutive `on_data` calls, collapsed: chunk boundaries are not promised.
    Data(Vec<u8>),
    Error(String),
    Disconnect,
}

#[derive(Default)]
struct Traces {
    by_conn: Mutex<HashMap<ConnectionId, Vec<Event>>>,
    closed: Mutex<usize>,
    cond: Condvar,
}

struct Recorder(Arc<Traces>);

impl Recorder {
    fn push(&self, conn: ConnectionId, event: Event) {
        let mut map = self.0.by_conn.lock().unwrap();
        let trace = map.entry(conn).or_default();
        match (trace.last_mut(), event) {
            (Some(Event::Data(bytes)), Event::Data(more)) => bytes.extend_from_slice(&more),
            (_, event) => trace.push(event),
        }
    }
}

impl NetworkHandler for Recorder {
    fn on_connect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.push(conn, Event::Connect);
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.push(conn, Event::Data(data.to_vec()));
        let ends_with_mark = {
            let map = self.0.by_conn.lock().unwrap();
            matches!(map[&conn].last(), Some(Event::Data(b)) if b.ends_with(CLOSE_MARK))
        };
        ctx.send_to(conn, data)?;
        if ends_with_mark {
            ctx.close_connection(conn)?;
        }
        Ok(())
    }

    fn on_disconnect(&self, _ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        self.push(conn, Event::Disconnect);
        *self.0.closed.lock().unwrap() += 1;
        self.0.cond.notify_all();
        Ok(())
    }

    fn on_error(&self, _ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError) {
        if let Some(conn) = conn {
            let class = match (&error, error.io_error()) {
                (NetworkError::Io(_), Some(io)) => format!("io:{:?}", io.kind()),
                (other, _) => format!("{other:?}").split('(').next().unwrap().to_string(),
            };
            self.push(conn, Event::Error(class));
        }
    }
}

/// A small deterministic generator (xorshift), so scripts are the same on both runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Client shuts down its write side, reads everything, sees EOF.
    HalfClose,
    /// Client asks the server to close (after echoing what it sent).
    ServerClose,
    /// Client aborts with RST after its last echo.
    Reset,
}

/// Runs script `n` against `addr`; returns the bytes the client sent.
fn run_script(addr: SocketAddr, n: u32) -> Vec<u8> {
    let mut rng =
        Rng(0x9E37_79B9_7F4A_7C15 ^ (u64::from(n) + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let ending = match rng.below(3) {
        0 => Ending::HalfClose,
        1 => Ending::ServerClose,
        _ => Ending::Reset,
    };
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut sent = n.to_be_bytes().to_vec();
    let mut expected = n.to_be_bytes().len();
    stream.write_all(&n.to_be_bytes()).unwrap();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        // Pipelining: several messages before reading the echoes.
        let pipelined = 1 + rng.below(4);
        for _ in 0..pipelined {
            let cap = if rng.below(4) == 0 { 200_000 } else { 2_000 };
            let len = 1 + rng.below(cap) as usize;
            let msg: Vec<u8> = (0..len).map(|i| (i as u64 ^ rng.0) as u8 | 1).collect();
            stream.write_all(&msg).unwrap();
            sent.extend_from_slice(&msg);
            expected += len;
        }
        read_exact_len(&mut stream, expected);
        expected = 0;
    }
    match ending {
        Ending::HalfClose => {
            stream.shutdown(Shutdown::Write).unwrap();
            read_to_eof(&mut stream);
        }
        Ending::ServerClose => {
            stream.write_all(CLOSE_MARK).unwrap();
            sent.extend_from_slice(CLOSE_MARK);
            read_exact_len(&mut stream, CLOSE_MARK.len());
            read_to_eof(&mut stream);
        }
        Ending::Reset => {
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
    sent
}

fn read_exact_len(stream: &mut TcpStream, len: usize) {
    let mut buf = vec![0; len];
    stream
        .read_exact(&mut buf)
        .expect("echo within the deadline");
}

fn read_to_eof(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("EOF within the deadline");
    assert!(rest.is_empty(), "unexpected bytes before EOF");
}

/// Runs every script against a server on `backend`; returns traces keyed by script.
fn traces(backend: Backend) -> BTreeMap<u32, Vec<Event>> {
    let event_loop = EventLoop::builder()
        .threads(2)
        .backend(backend)
        .build()
        .unwrap_or_else(|e| panic!("{backend} event loop: {e}"));
    let traces = Arc::new(Traces::default());
    let config = TcpServerConfig::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .build();
    let server = TcpServer::new(config, Recorder(Arc::clone(&traces))).unwrap();
    server.start(&event_loop).unwrap();
    let addr = server.local_addr().unwrap();

    let clients: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                (0..SCRIPTS)
                    .filter(|n| n % 4 == t)
                    .map(|n| (n, run_script(addr, n)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let sent: HashMap<u32, Vec<u8>> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("client thread"))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = traces.closed.lock().unwrap();
    while *closed < SCRIPTS as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{backend}: only {} of {SCRIPTS} connections closed",
            *closed
        );
        closed = traces.cond.wait_timeout(closed, left).unwrap().0;
    }
    drop(closed);
    event_loop.stop();

    let by_conn = std::mem::take(&mut *traces.by_conn.lock().unwrap());
    let mut out = BTreeMap::new();
    for (_, trace) in by_conn {
        let Some(Event::Data(bytes)) = trace.get(1) else {
            panic!("{backend}: trace without data: {trace:?}");
        };
        let script = u32::from_be_bytes(bytes[..4].try_into().unwrap());
        // What the server received must be exactly what the client sent (a reset may
        // cut the tail, but only after everything was echoed, so nothing is lost here).
        assert_eq!(
            bytes, &sent[&script],
            "{backend}: script {script}: bytes differ"
        );
        out.insert(script, trace);
    }
    assert_eq!(out.len(), SCRIPTS as usize);
    out
}

#[test]
#[cfg_attr(
    not(all(target_os = "linux", feature = "uring")),
    ignore = "skipped: io_uring driver not built"
)]
fn uring_and_mio_traces_are_identical() {
    let uring = traces(Backend::Uring);
    let mio = traces(Backend::Mio);
    for script in 0..SCRIPTS {
        assert_eq!(
            uring[&script], mio[&script],
            "script {script}: io_uring and mio traces differ"
        );
    }
}

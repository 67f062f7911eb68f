//! A tiny echo loop driving the `Driver` trait directly (no core), and std clients.
#![allow(dead_code)]

use ringmill_core::driver::{Completion, Driver, Flow, ListenerId, Slot};
use ringmill_core::DriverConfig;
use ringmill_uring::UringDriver;
use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A completion copied out of the sink.
#[derive(Debug)]
pub enum Ev {
    Accepted(io::Result<(TcpStream, SocketAddr)>),
    Received(Slot, io::Result<Vec<u8>>),
    Sent(Slot, io::Result<usize>),
    Connected(Slot, io::Result<()>),
    Closed(Slot),
}

/// Copies a completion.
pub fn own(c: Completion<'_>) -> Ev {
    match c {
        Completion::Accepted { result, .. } => Ev::Accepted(result),
        Completion::Received { slot, result } => Ev::Received(slot, result.map(<[u8]>::to_vec)),
        Completion::Sent { slot, result } => Ev::Sent(slot, result),
        Completion::Connected { slot, result } => Ev::Connected(slot, result),
        Completion::Closed { slot } => Ev::Closed(slot),
    }
}

/// Small deterministic PRNG (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            let x = self.next().to_le_bytes();
            let take = (len - v.len()).min(8);
            v.extend_from_slice(&x[..take]);
        }
        v
    }
}

/// How the echo loop treats receives.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Answer `Flow::Pause` to every n-th `Received` of a connection, resume two polls later.
    pub pause_every: Option<u64>,
    /// Call `pause_recv` after every n-th `Received` of a connection, resume two polls later.
    pub pause_recv_every: Option<u64>,
}

#[derive(Default)]
struct EchoConn {
    /// Bytes received and not handed to `send` yet.
    out: Vec<u8>,
    /// The buffer of the send in flight and how much of it the kernel took so far.
    sending: Option<(Vec<u8>, usize)>,
    eof: bool,
    closing: bool,
    received: u64,
    /// Polls left before resuming a paused receive.
    paused_for: Option<u32>,
}

/// Statistics of one echo run.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoStats {
    pub accepted: u64,
    pub closed: u64,
    pub bytes: u64,
    pub pauses: u64,
}

/// The echo loop: listens on 127.0.0.1:0, echoes every byte, closes on EOF once flushed.
pub struct Echo {
    pub driver: UringDriver,
    pub addr: SocketAddr,
    conns: HashMap<u32, EchoConn>,
    free: Vec<u32>,
    next: u32,
    policy: Policy,
    pub stats: EchoStats,
}

impl Echo {
    pub fn new(config: &DriverConfig, policy: Policy) -> Echo {
        let mut driver = UringDriver::new(config).expect("io_uring driver setup");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        driver.listen(ListenerId(1), listener).unwrap();
        Echo {
            driver,
            addr,
            conns: HashMap::new(),
            free: Vec::new(),
            next: 0,
            policy,
            stats: EchoStats::default(),
        }
    }

    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// One poll and the reactions to it.
    pub fn turn(&mut self, timeout: Duration) {
        let mut evs = Vec::new();
        let policy = self.policy;
        let conns = &mut self.conns;
        let mut pauses = 0;
        self.driver
            .poll(Some(timeout), |c| {
                let mut flow = Flow::Continue;
                if let Completion::Received { slot, .. } = &c {
                    if let Some(conn) = conns.get(&slot.0) {
                        assert!(
                            conn.paused_for.is_none(),
                            "Received on {slot:?} while its receive is paused"
                        );
                    }
                }
                if let Completion::Received {
                    slot,
                    result: Ok(data),
                } = &c
                {
                    if !data.is_empty() {
                        if let Some(conn) = conns.get_mut(&slot.0) {
                            conn.received += 1;
                            if let Some(n) = policy.pause_every {
                                if conn.received % n == 0 {
                                    flow = Flow::Pause;
                                    conn.paused_for = Some(2);
                                    pauses += 1;
                                }
                            }
                        }
                    }
                }
                evs.push(own(c));
                flow
            })
            .expect("poll");
        self.stats.pauses += pauses;
        for ev in evs {
            self.handle(ev);
        }
        self.act();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Accepted(Ok((stream, _peer))) => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.next += 1;
                    self.next - 1
                });
                self.driver.register(Slot(slot), stream).expect("register");
                self.driver.recv(Slot(slot));
                self.conns.insert(slot, EchoConn::default());
                self.stats.accepted += 1;
            }
            Ev::Accepted(Err(e)) => panic!("accept failed: {e}"),
            Ev::Received(slot, result) => {
                let conn = self
                    .conns
                    .get_mut(&slot.0)
                    .unwrap_or_else(|| panic!("Received for unknown slot {slot:?}"));
                assert!(!conn.closing, "Received after close on {slot:?}");
                assert!(!conn.eof, "Received after EOF on {slot:?}");
                match result {
                    Ok(data) if data.is_empty() => conn.eof = true,
                    Ok(data) => {
                        self.stats.bytes += data.len() as u64;
                        conn.out.extend_from_slice(&data);
                        if let Some(n) = self.policy.pause_recv_every {
                            if conn.received % n == 0 && conn.paused_for.is_none() {
                                conn.paused_for = Some(2);
                                self.stats.pauses += 1;
                                self.driver.pause_recv(slot);
                            }
                        }
                    }
                    Err(e) => panic!("receive failed on {slot:?}: {e}"),
                }
            }
            Ev::Sent(slot, result) => {
                let conn = self.conns.get_mut(&slot.0).expect("Sent for unknown slot");
                assert!(!conn.closing, "Sent after close on {slot:?}");
                let n = result.unwrap_or_else(|e| panic!("send failed on {slot:?}: {e}"));
                let (buf, off) = conn.sending.as_mut().expect("Sent with no send in flight");
                *off += n;
                assert!(*off <= buf.len());
                if *off == buf.len() {
                    conn.sending = None;
                } else {
                    let rest = IoSlice::new(&buf[*off..]);
                    // SAFETY: the buffer stays in `conn.sending`, unchanged, until `Sent`
                    // or `Closed`.
                    unsafe { self.driver.send(slot, &[rest]) };
                }
            }
            Ev::Connected(slot, r) => panic!("unexpected Connected {slot:?} {r:?}"),
            Ev::Closed(slot) => {
                let conn = self.conns.remove(&slot.0).expect("Closed for unknown slot");
                assert!(conn.closing, "Closed without close on {slot:?}");
                self.free.push(slot.0);
                self.stats.closed += 1;
            }
        }
    }

    fn act(&mut self) {
        for (&slot, conn) in self.conns.iter_mut() {
            if conn.closing {
                continue;
            }
            if let Some(left) = conn.paused_for.as_mut() {
                if *left == 0 {
                    conn.paused_for = None;
                    self.driver.recv(Slot(slot));
                } else {
                    *left -= 1;
                }
            }
            if conn.sending.is_none() && !conn.out.is_empty() {
                let buf = std::mem::take(&mut conn.out);
                let slice = IoSlice::new(&buf);
                // SAFETY: `buf` moves into `conn.sending` (its heap block does not move)
                // and stays there unchanged until `Sent` or `Closed`.
                unsafe { self.driver.send(Slot(slot), &[slice]) };
                conn.sending = Some((buf, 0));
            }
            if conn.eof && conn.out.is_empty() && conn.sending.is_none() {
                conn.closing = true;
                self.driver.close(Slot(slot));
            }
        }
    }

    /// Turns until `done` says so; panics with `what` after `limit`.
    pub fn run_until(&mut self, limit: Duration, what: &str, mut done: impl FnMut(&Echo) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "deadline passed waiting for {what}: stats {:?}, {} open, counters {:?}",
                self.stats,
                self.conns.len(),
                self.driver.counters()
            );
            self.turn(Duration::from_millis(50));
        }
    }
}

/// Sends `data` to `addr`, half-closes, reads the echo until EOF and returns it.
pub fn echo_client(addr: SocketAddr, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let len = data.len();
    let w = thread::spawn(move || -> io::Result<()> {
        let mut rng = Rng::new(len as u64);
        let mut off = 0;
        while off < data.len() {
            // Uneven writes so chunk boundaries vary.
            let n = (1 + rng.below(64 * 1024) as usize).min(data.len() - off);
            writer.write_all(&data[off..off + n])?;
            off += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut got = Vec::with_capacity(len);
    stream.read_to_end(&mut got)?;
    w.join().expect("writer thread")?;
    Ok(got)
}

/// Runs `clients` echo clients (each with its own random payload of up to `max_len`
/// bytes) against a fresh echo loop with `config` and `policy`; every byte must come back
/// intact. Returns the loop's stats and driver counters.
pub fn echo_run(
    config: &DriverConfig,
    policy: Policy,
    clients: usize,
    max_len: usize,
    seed: u64,
) -> (EchoStats, ringmill_core::driver::DriverCounters) {
    let mut echo = Echo::new(config, policy);
    let addr = echo.addr;
    let (tx, rx) = mpsc::channel();
    for i in 0..clients {
        let tx = tx.clone();
        let mut rng = Rng::new(seed + i as u64);
        let len = rng.below(max_len as u64 + 1) as usize;
        let data = rng.bytes(len);
        thread::spawn(move || {
            let result = echo_client(addr, data.clone()).map(|got| (got == data, got.len(), len));
            let _ = tx.send((i, result));
        });
    }
    drop(tx);
    let mut finished = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while finished < clients || echo.open() > 0 {
        assert!(
            Instant::now() < deadline,
            "echo run timed out: {finished}/{clients} clients done, stats {:?}, counters {:?}",
            echo.stats,
            echo.driver.counters()
        );
        echo.turn(Duration::from_millis(20));
        while let Ok((i, result)) = rx.try_recv() {
            let (same, got, want) = result.unwrap_or_else(|e| panic!("client {i} failed: {e}"));
            assert_eq!(got, want, "client {i}: echoed length");
            assert!(same, "client {i}: echoed bytes differ");
            finished += 1;
        }
    }
    assert_eq!(echo.stats.accepted, clients as u64);
    assert_eq!(echo.stats.closed, clients as u64);
    (echo.stats, echo.driver.counters())
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

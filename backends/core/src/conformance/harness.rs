//! The pieces the suite is built from, usable by a driver crate's own tests too: owned
//! completions, polling with deadlines, an echo loop driven by the `Driver` trait alone,
//! echo clients, a deterministic generator and a descriptor count.

use crate::config::DriverConfig;
use crate::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot};
use crate::slots::SlotTable;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait of the suite may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A short wait during which nothing may arrive: a check that something does *not*
/// happen, never a wait for something that should.
pub const QUIET: Duration = Duration::from_millis(100);

static SERIAL: RwLock<()> = RwLock::new(());

/// Held by every suite test that may run beside others.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held by a suite test that counts the process's descriptors or changes a signal
/// disposition: no other suite test of the binary runs meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERIAL
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open descriptors of this process, where the platform shows them (`/proc/self/fd`).
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count())
}

/// An owned copy of a [`Completion`].
#[derive(Debug)]
pub enum Ev {
    /// [`Completion::Accepted`].
    Accepted(ListenerId, io::Result<(TcpStream, SocketAddr)>),
    /// [`Completion::Connected`].
    Connected(Slot, io::Result<()>),
    /// [`Completion::Received`], the bytes copied.
    Received(Slot, io::Result<Vec<u8>>),
    /// [`Completion::Sent`].
    Sent(Slot, io::Result<usize>),
    /// [`Completion::Closed`].
    Closed(Slot),
}

impl Ev {
    /// Copies `completion`.
    pub fn from_completion(completion: Completion<'_>) -> Self {
        match completion {
            Completion::Accepted { listener, result } => Ev::Accepted(listener, result),
            Completion::Connected { slot, result } => Ev::Connected(slot, result),
            Completion::Received { slot, result } => Ev::Received(slot, result.map(<[u8]>::to_vec)),
            Completion::Sent { slot, result } => Ev::Sent(slot, result),
            Completion::Closed { slot } => Ev::Closed(slot),
        }
    }

    /// The connection the completion is about.
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Ev::Accepted(..) => None,
            Ev::Connected(slot, _)
            | Ev::Received(slot, _)
            | Ev::Sent(slot, _)
            | Ev::Closed(slot) => Some(*slot),
        }
    }

    /// Whether this is the end of stream of `slot`.
    pub fn is_eof_of(&self, of: Slot) -> bool {
        matches!(self, Ev::Received(slot, Ok(bytes)) if *slot == of && bytes.is_empty())
    }
}

/// The bytes `evs` received for `slot`, in order.
pub fn received_bytes(evs: &[Ev], slot: Slot) -> Vec<u8> {
    let mut bytes = Vec::new();
    for ev in evs {
        if let Ev::Received(s, Ok(b)) = ev {
            if *s == slot {
                bytes.extend_from_slice(b);
            }
        }
    }
    bytes
}

/// A non-blocking listener on a free loopback port, handed to `driver` as `id`.
pub fn listen<D: Driver>(driver: &mut D, id: ListenerId) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback listener");
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    driver.listen(id, listener).expect("listen");
    addr
}

/// A connected pair made without the driver: (the peer, the non-blocking server side).
/// Other connections waiting on the (blocking) `listener` are dropped.
pub fn socket_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let me = peer.local_addr().unwrap();
    loop {
        let (server, from) = listener.accept().unwrap();
        if from == me {
            server.set_nonblocking(true).unwrap();
            return (peer, server);
        }
    }
}

/// A fresh, non-blocking, unconnected TCP socket for `addr`'s family.
pub fn tcp_socket(addr: SocketAddr) -> socket2::Socket {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    socket.set_nonblocking(true).unwrap();
    socket
}

/// One `poll` with `timeout`; every completion is copied and answered by `answer`.
pub fn poll_once<D: Driver>(
    driver: &mut D,
    timeout: Duration,
    answer: &mut dyn FnMut(&Ev) -> Flow,
) -> Vec<Ev> {
    let mut out = Vec::new();
    driver
        .poll(Some(timeout), |completion| {
            let ev = Ev::from_completion(completion);
            let flow = answer(&ev);
            out.push(ev);
            flow
        })
        .expect("poll");
    out
}

/// Polls (answering `Continue`) until `done` holds for the completions collected so far;
/// fails the test after [`DEADLINE`].
pub fn poll_until<D: Driver>(driver: &mut D, mut done: impl FnMut(&[Ev]) -> bool) -> Vec<Ev> {
    poll_until_answering(driver, &mut |_| Flow::Continue, &mut done)
}

/// Like [`poll_until`], with `answer` deciding the flow.
pub fn poll_until_answering<D: Driver>(
    driver: &mut D,
    answer: &mut dyn FnMut(&Ev) -> Flow,
    done: &mut dyn FnMut(&[Ev]) -> bool,
) -> Vec<Ev> {
    let deadline = Instant::now() + DEADLINE;
    let mut all = Vec::new();
    while !done(&all) {
        let now = Instant::now();
        assert!(
            now < deadline,
            "deadline passed waiting for completions; got {all:?}"
        );
        let evs = poll_once(
            driver,
            (deadline - now).min(Duration::from_millis(200)),
            answer,
        );
        all.extend(evs);
    }
    all
}

/// Polls a few times (two without blocking, one for [`QUIET`]) and fails if anything
/// arrives.
pub fn assert_quiet<D: Driver>(driver: &mut D, what: &str) {
    for timeout in [Duration::ZERO, Duration::ZERO, QUIET] {
        let evs = poll_once(driver, timeout, &mut |_| Flow::Continue);
        assert!(evs.is_empty(), "{what}: got {evs:?}");
    }
}

/// Closes `slot` and waits for its one `Closed`; any other completion of `slot` meanwhile,
/// or a second `Closed`, fails the test. Returns the completions of other slots.
pub fn close_and_wait<D: Driver>(driver: &mut D, slot: Slot) -> Vec<Ev> {
    driver.close(slot);
    let evs = poll_until(driver, |evs| {
        evs.iter()
            .any(|ev| matches!(ev, Ev::Closed(s) if *s == slot))
    });
    let mut others = Vec::new();
    let mut closed = 0;
    for ev in evs {
        match ev.slot() {
            Some(s) if s == slot => {
                assert!(matches!(ev, Ev::Closed(_)), "{ev:?} after close");
                closed += 1;
                assert_eq!(closed, 1, "a second Closed for {slot:?}");
            }
            _ => others.push(ev),
        }
    }
    for ev in poll_once(driver, Duration::ZERO, &mut |_| Flow::Continue) {
        assert_ne!(ev.slot(), Some(slot), "{ev:?} after Closed");
        others.push(ev);
    }
    others
}

/// Accepts one connection on `driver` (which must have a listener) and registers it as
/// `slot`, with receiving on. Returns the peer address the driver reported.
pub fn accept_as<D: Driver>(driver: &mut D, slot: Slot) -> SocketAddr {
    let evs = poll_until(driver, |evs| {
        evs.iter().any(|ev| matches!(ev, Ev::Accepted(..)))
    });
    let mut accepted = None;
    for ev in evs {
        match ev {
            Ev::Accepted(_, result) if accepted.is_none() => {
                accepted = Some(result.expect("accept"));
            }
            other => panic!("unexpected completion while accepting: {other:?}"),
        }
    }
    let (stream, peer) = accepted.unwrap();
    driver
        .register(slot, stream)
        .expect("register accepted stream");
    driver.recv(slot);
    peer
}

/// A small deterministic pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// How the echo loop treats its connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Answer `Flow::Pause` to every n-th non-empty `Received` of a connection; resume
    /// with `recv` two turns later.
    pub pause_every: Option<u64>,
    /// Call `pause_recv` after every n-th non-empty `Received` of a connection; resume
    /// two turns later.
    pub pause_recv_every: Option<u64>,
    /// Send each batch as slices of at most this many bytes (0: one slice).
    pub slice_len: usize,
}

#[derive(Default)]
struct EchoConn {
    /// Bytes received and not handed to `send` yet.
    out: Vec<u8>,
    /// The buffer of the send in flight and how much of it the kernel took so far.
    sending: Option<(Vec<u8>, usize)>,
    /// Whether a send of `sending` is in flight now.
    in_flight: bool,
    eof: bool,
    closing: bool,
    received: u64,
    /// Turns left before resuming a paused receive.
    paused_for: Option<u32>,
}

/// What an echo run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoStats {
    /// Connections accepted.
    pub accepted: u64,
    /// `Closed` completions.
    pub closed: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Receives paused.
    pub pauses: u64,
    /// `Sent` completions for fewer bytes than asked.
    pub short_sends: u64,
}

/// An echo loop on the calling thread: listens on a loopback port, echoes every byte and
/// closes a connection once the peer has shut down its side and everything is echoed.
/// Every completion is checked against the contract on the way.
pub struct Echo<D: Driver> {
    /// The driver under test.
    pub driver: D,
    /// The listening address.
    pub addr: SocketAddr,
    conns: SlotTable<EchoConn>,
    policy: Policy,
    /// What the loop saw so far.
    pub stats: EchoStats,
}

impl<D: Driver> Echo<D> {
    /// An echo loop over `driver`.
    pub fn new(mut driver: D, policy: Policy) -> Self {
        let addr = listen(&mut driver, ListenerId(1));
        Echo {
            driver,
            addr,
            conns: SlotTable::new(),
            policy,
            stats: EchoStats::default(),
        }
    }

    /// Connections open now.
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
            .poll(Some(timeout), |completion| {
                let mut flow = Flow::Continue;
                if let Completion::Received { slot, result } = &completion {
                    let conn = conns
                        .get_mut(*slot)
                        .unwrap_or_else(|| panic!("Received for unknown {slot:?}"));
                    assert!(!conn.closing, "Received for {slot:?} after close");
                    assert!(!conn.eof, "Received for {slot:?} after its end");
                    assert!(
                        conn.paused_for.is_none(),
                        "Received for {slot:?} while its receive is paused"
                    );
                    if matches!(result, Ok(data) if !data.is_empty()) {
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
                evs.push(Ev::from_completion(completion));
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
            Ev::Accepted(_, Ok((stream, _peer))) => {
                let slot = self.conns.alloc(EchoConn::default());
                self.driver.register(slot, stream).expect("register");
                self.driver.recv(slot);
                self.stats.accepted += 1;
            }
            Ev::Accepted(_, Err(e)) => panic!("accept failed: {e}"),
            Ev::Received(slot, result) => {
                let conn = self.conns.get_mut(slot).expect("checked in the sink");
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
                let conn = self
                    .conns
                    .get_mut(slot)
                    .unwrap_or_else(|| panic!("Sent for unknown {slot:?}"));
                assert!(!conn.closing, "Sent for {slot:?} after close");
                assert!(conn.in_flight, "Sent for {slot:?} without a send");
                conn.in_flight = false;
                let n = result.unwrap_or_else(|e| panic!("send failed on {slot:?}: {e}"));
                let (buf, off) = conn.sending.as_mut().expect("a send buffer");
                assert!(*off + n <= buf.len(), "Sent more than asked");
                if *off + n < buf.len() {
                    self.stats.short_sends += 1;
                }
                *off += n;
                if *off == buf.len() {
                    conn.sending = None;
                }
            }
            Ev::Connected(slot, r) => panic!("unexpected Connected {slot:?} {r:?}"),
            Ev::Closed(slot) => {
                let conn = self
                    .conns
                    .remove(slot)
                    .unwrap_or_else(|| panic!("Closed for unknown {slot:?}"));
                assert!(conn.closing, "Closed for {slot:?} without close");
                self.stats.closed += 1;
            }
        }
    }

    fn act(&mut self) {
        for (slot, conn) in self.conns.iter_mut() {
            if conn.closing {
                continue;
            }
            if let Some(left) = conn.paused_for.as_mut() {
                if *left == 0 {
                    conn.paused_for = None;
                    self.driver.recv(slot);
                } else {
                    *left -= 1;
                }
            }
            if conn.sending.is_none() && !conn.out.is_empty() {
                conn.sending = Some((std::mem::take(&mut conn.out), 0));
            }
            if let Some((buf, off)) = conn.sending.as_ref().filter(|_| !conn.in_flight) {
                let rest = &buf[*off..];
                let slices: Vec<IoSlice<'_>> = if self.policy.slice_len == 0 {
                    vec![IoSlice::new(rest)]
                } else {
                    rest.chunks(self.policy.slice_len)
                        .map(IoSlice::new)
                        .collect()
                };
                // SAFETY: `buf` stays in `conn.sending`, unchanged (its heap block does not
                // move with the `Vec` header), until this slot's `Sent` or `Closed`: the
                // connection's state is removed only on `Closed`, and `sending` is only
                // touched again after `Sent`.
                unsafe { self.driver.send(slot, &slices) };
                conn.in_flight = true;
            }
            if conn.eof && conn.out.is_empty() && conn.sending.is_none() {
                conn.closing = true;
                self.driver.close(slot);
            }
        }
    }
}

/// Sends `data` to `addr` in uneven writes, shuts down the write side, reads the echo
/// until end of stream and returns it.
pub fn echo_client(addr: SocketAddr, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    let mut writer = stream.try_clone()?;
    let len = data.len();
    let w = thread::spawn(move || -> io::Result<()> {
        let mut rng = Rng::new(len as u64);
        let mut off = 0;
        while off < data.len() {
            // Uneven writes so chunk boundaries vary.
            let n = (1 + rng.below(64 * 1024)).min(data.len() - off);
            writer.write_all(&data[off..off + n])?;
            off += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut got = Vec::with_capacity(len);
    let read = stream.read_to_end(&mut got);
    w.join().expect("client writer thread")?;
    read?;
    Ok(got)
}

/// Echoes each of `payloads` through an [`Echo`] over `driver`, one client thread per
/// payload, all at once; every byte must come back intact and every connection must
/// close. Returns what the loop saw and the driver's counters.
pub fn echo_run<D: Driver>(
    driver: D,
    policy: Policy,
    payloads: Vec<Vec<u8>>,
) -> (EchoStats, DriverCounters) {
    let mut echo = Echo::new(driver, policy);
    let addr = echo.addr;
    let clients = payloads.len();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (i, data) in payloads.into_iter().enumerate() {
        let tx = tx.clone();
        threads.push(thread::spawn(move || {
            let result =
                echo_client(addr, data.clone()).map(|got| (got == data, got.len(), data.len()));
            let _ = tx.send((i, result));
        }));
    }
    drop(tx);
    let mut finished = 0;
    let deadline = Instant::now() + DEADLINE * 2;
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
    for thread in threads {
        thread.join().expect("client thread");
    }
    assert_eq!(echo.stats.accepted, clients as u64);
    assert_eq!(echo.stats.closed, clients as u64);
    (echo.stats, echo.driver.counters())
}

/// Random payloads: one of each of `sizes`, then `random` more of up to `max` bytes.
pub fn payloads(seed: u64, sizes: &[usize], random: usize, max: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<Vec<u8>> = sizes.iter().map(|&n| rng.bytes(n)).collect();
    for _ in 0..random {
        let n = 1 + rng.below(max);
        out.push(rng.bytes(n));
    }
    out
}

/// A configuration with small buffers, for tests that want short reads.
pub fn small_config() -> DriverConfig {
    DriverConfig {
        buffer_size: 4096,
        buffer_count: 16,
        ring_entries: 64,
        cq_entries: 256,
        ..DriverConfig::default()
    }
}

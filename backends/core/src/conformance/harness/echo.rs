//! An echo loop driven by the `Driver` trait alone, and echo clients.

use super::*;
use crate::driver::{Completion, Driver, DriverCounters, Flow, ListenerId};
use crate::slots::SlotTable;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

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
    /// Echo a `Received` through its [`WriteNow`] when the driver offers one and nothing
    /// of the connection's is waiting, sending only what the socket did not take.
    pub write_now: bool,
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
    /// A send was made and its `Sent` not delivered yet (seen by the sink: `in_flight`
    /// changes only when the events are handled, after the poll).
    awaiting_sent: bool,
    /// `Received` events with bytes gathered by the sink and not handled yet.
    unhandled: u32,
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
    /// Bytes echoed through a `WriteNow` (with [`Policy::write_now`]).
    pub written_now: u64,
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
        let mut now_total = 0;
        self.driver
            .poll(Some(timeout), |mut completion| {
                let mut flow = Flow::Continue;
                let mut written = 0;
                if let Completion::Received {
                    slot,
                    result,
                    direct,
                } = &mut completion
                {
                    let conn = conns
                        .get_mut(*slot)
                        .unwrap_or_else(|| panic!("Received for unknown {slot:?}"));
                    assert!(!conn.closing, "Received for {slot:?} after close");
                    assert!(!conn.eof, "Received for {slot:?} after its end");
                    assert!(
                        conn.paused_for.is_none(),
                        "Received for {slot:?} while its receive is paused"
                    );
                    if let Some(now) = direct.as_mut() {
                        assert!(
                            !conn.awaiting_sent,
                            "rule 8: a WriteNow offered for {slot:?} with a send in flight"
                        );
                        assert!(
                            matches!(result, Ok(data) if !data.is_empty()),
                            "rule 8: a WriteNow offered with no bytes ({result:?})"
                        );
                        if let (true, Ok(data)) = (policy.write_now, &result) {
                            if conn.out.is_empty() && conn.sending.is_none() && conn.unhandled == 0
                            {
                                written = now.write_now(&[IoSlice::new(data)]).unwrap_or(0);
                                assert!(written <= data.len(), "WriteNow took more than given");
                                now_total += written as u64;
                            }
                        }
                    }
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
                if let Completion::Sent { slot, .. } = &completion {
                    if let Some(conn) = conns.get_mut(*slot) {
                        conn.awaiting_sent = false;
                    }
                }
                let mut ev = Ev::from_completion(completion);
                if let Ev::Received(_, Ok(bytes)) = &mut ev {
                    if written > 0 {
                        // What went out through `WriteNow` is echoed already (and an
                        // empty `Received` would read as end of stream).
                        bytes.drain(..written);
                        if bytes.is_empty() {
                            return flow;
                        }
                    }
                }
                if let Ev::Received(slot, Ok(bytes)) = &ev {
                    if let (false, Some(conn)) = (bytes.is_empty(), conns.get_mut(*slot)) {
                        conn.unhandled += 1;
                    }
                }
                evs.push(ev);
                flow
            })
            .expect("poll");
        self.stats.pauses += pauses;
        self.stats.bytes += now_total;
        self.stats.written_now += now_total;
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
                if matches!(&result, Ok(data) if !data.is_empty()) {
                    conn.unhandled -= 1;
                }
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
                conn.awaiting_sent = true;
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

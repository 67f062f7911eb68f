//! Shared pieces of the driver tests: owned copies of completions, a polling helper with a
//! deadline, a tiny echo server loop driven by the `Driver` trait alone, and echo clients.
#![allow(dead_code)]

use ringmill_core::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use ringmill_core::DriverConfig;
use ringmill_mio::MioDriver;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any single wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// An owned copy of a [`Completion`].
#[derive(Debug)]
pub enum Ev {
    Accepted(ListenerId, io::Result<(TcpStream, SocketAddr)>),
    Connected(Slot, io::Result<()>),
    Received(Slot, io::Result<Vec<u8>>),
    Sent(Slot, io::Result<usize>),
    Closed(Slot),
}

impl Ev {
    pub fn from_completion(completion: Completion<'_>) -> Self {
        match completion {
            Completion::Accepted { listener, result } => Ev::Accepted(listener, result),
            Completion::Connected { slot, result } => Ev::Connected(slot, result),
            Completion::Received { slot, result } => {
                Ev::Received(slot, result.map(|bytes| bytes.to_vec()))
            }
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
}

/// A fresh driver with `config`.
pub fn driver(config: &DriverConfig) -> MioDriver {
    MioDriver::new(config).expect("creating the mio driver")
}

/// A non-blocking listener on a free loopback port, handed to `driver` as `id`.
pub fn listen(driver: &mut MioDriver, id: ListenerId) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback listener");
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    driver.listen(id, listener).expect("listen");
    addr
}

/// One `poll` with `timeout`; every completion is copied and answered by `answer`.
pub fn poll_once(
    driver: &mut MioDriver,
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
pub fn poll_until(driver: &mut MioDriver, mut done: impl FnMut(&[Ev]) -> bool) -> Vec<Ev> {
    poll_until_answering(driver, &mut |_| Flow::Continue, &mut done)
}

/// Like [`poll_until`], with `answer` deciding the flow.
pub fn poll_until_answering(
    driver: &mut MioDriver,
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

/// Accepts one connection on `driver` (which must have a listener) and registers it as
/// `slot`, with receiving on.
pub fn accept_as(driver: &mut MioDriver, slot: Slot) {
    let evs = poll_until(driver, |evs| {
        evs.iter().any(|ev| matches!(ev, Ev::Accepted(..)))
    });
    let mut accepted = None;
    for ev in evs {
        match ev {
            Ev::Accepted(_, result) if accepted.is_none() => {
                accepted = Some(result.expect("accept").0);
            }
            other => panic!("unexpected completion while accepting: {other:?}"),
        }
    }
    driver
        .register(slot, accepted.unwrap())
        .expect("register accepted stream");
    driver.recv(slot);
}

/// A simple deterministic pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// How the echo server behaves.
#[derive(Clone, Debug, Default)]
pub struct EchoOptions {
    /// The driver's configuration.
    pub config: DriverConfig,
    /// Answer `Pause` to every non-empty `Received` and resume with `recv` after the poll.
    pub pause_every_read: bool,
    /// Send each outgoing batch as slices of at most this many bytes (0: one slice).
    pub slice_len: usize,
}

/// What the echo server saw, returned when it stops.
#[derive(Debug)]
pub struct EchoStats {
    pub accepted: usize,
    pub closed: usize,
    pub pauses: usize,
    pub short_sends: usize,
    pub counters: DriverCounters,
}

#[derive(Default)]
struct EchoConn {
    /// Bytes waiting to be sent.
    out: Vec<u8>,
    /// Bytes of the send in flight: kept alive and unchanged until its `Sent`.
    inflight: Vec<u8>,
    sending: bool,
    eof: bool,
    paused: bool,
    closing: bool,
}

/// An echo server running the driver on its own thread: it echoes every byte and closes
/// a connection once the peer has shut down its side and everything has been echoed.
pub struct EchoServer {
    pub addr: SocketAddr,
    waker: Arc<dyn Waker>,
    stop: Arc<AtomicBool>,
    stats: mpsc::Receiver<EchoStats>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(options: EchoOptions) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (setup_tx, setup_rx) = mpsc::channel();
        let (stats_tx, stats_rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let thread = thread::spawn(move || {
            let mut driver = driver(&options.config);
            let addr = listen(&mut driver, ListenerId(0));
            setup_tx.send((addr, driver.waker())).unwrap();
            let stats = run_echo(&mut driver, &options, &thread_stop);
            stats_tx.send(stats).unwrap();
        });
        let (addr, waker) = setup_rx
            .recv_timeout(DEADLINE)
            .expect("echo server did not start");
        Self {
            addr,
            waker,
            stop,
            stats: stats_rx,
            thread: Some(thread),
        }
    }

    /// Stops the server (closing every connection) and returns what it saw.
    pub fn stop(mut self) -> EchoStats {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake().expect("wake");
        let stats = self.stats.recv_timeout(DEADLINE);
        let thread = self.thread.take().unwrap();
        match stats {
            Ok(stats) => {
                thread.join().unwrap();
                stats
            }
            Err(_) => {
                if thread.is_finished() {
                    if let Err(panic) = thread.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                panic!("echo server did not stop before the deadline");
            }
        }
    }
}

fn run_echo(driver: &mut MioDriver, options: &EchoOptions, stop: &AtomicBool) -> EchoStats {
    let mut conns: Vec<Option<EchoConn>> = Vec::new();
    let mut free: Vec<u32> = Vec::new();
    let mut stats = EchoStats {
        accepted: 0,
        closed: 0,
        pauses: 0,
        short_sends: 0,
        counters: DriverCounters::default(),
    };
    let mut stopping = false;
    let mut stop_deadline = None;
    loop {
        if stop.load(Ordering::SeqCst) && !stopping {
            stopping = true;
            stop_deadline = Some(Instant::now() + DEADLINE);
            driver.unlisten(ListenerId(0));
            for (index, conn) in conns.iter_mut().enumerate() {
                if let Some(conn) = conn.as_mut().filter(|c| !c.closing) {
                    conn.closing = true;
                    driver.close(Slot(index as u32));
                }
            }
        }
        if stopping && conns.iter().all(Option::is_none) {
            stats.counters = driver.counters();
            return stats;
        }
        if let Some(deadline) = stop_deadline {
            assert!(Instant::now() < deadline, "connections did not close");
        }

        let mut evs = Vec::new();
        driver
            .poll(Some(Duration::from_secs(1)), |completion| {
                let ev = Ev::from_completion(completion);
                let mut flow = Flow::Continue;
                if let Ev::Received(slot, result) = &ev {
                    let conn = conns
                        .get_mut(slot.index())
                        .and_then(Option::as_mut)
                        .unwrap_or_else(|| panic!("Received for unknown {slot:?}"));
                    assert!(!conn.closing, "Received for {slot:?} after close");
                    assert!(!conn.paused, "Received for paused {slot:?}");
                    assert!(!conn.eof, "Received for {slot:?} after its end");
                    if options.pause_every_read && matches!(result, Ok(b) if !b.is_empty()) {
                        conn.paused = true;
                        flow = Flow::Pause;
                    }
                }
                evs.push(ev);
                flow
            })
            .expect("poll");

        for ev in evs {
            match ev {
                Ev::Accepted(_, result) => {
                    let (stream, _) = result.expect("accept failed");
                    if stopping {
                        continue;
                    }
                    let index = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        (conns.len() - 1) as u32
                    });
                    driver
                        .register(Slot(index), stream)
                        .expect("register accepted stream");
                    conns[index as usize] = Some(EchoConn::default());
                    driver.recv(Slot(index));
                    stats.accepted += 1;
                }
                Ev::Received(slot, Ok(bytes)) if bytes.is_empty() => {
                    conn_mut(&mut conns, slot).eof = true;
                    maybe_close(driver, &mut conns, slot);
                }
                Ev::Received(slot, Ok(bytes)) => {
                    conn_mut(&mut conns, slot).out.extend_from_slice(&bytes);
                    flush(driver, &mut conns, slot, options.slice_len);
                }
                Ev::Received(slot, Err(err)) => {
                    panic!("receive error on {slot:?}: {err}");
                }
                Ev::Sent(slot, result) => {
                    let conn = conn_mut(&mut conns, slot);
                    assert!(conn.sending, "Sent for {slot:?} without a send");
                    assert!(!conn.closing, "Sent for {slot:?} after close");
                    conn.sending = false;
                    let n = result.unwrap_or_else(|err| panic!("send error on {slot:?}: {err}"));
                    assert!(n <= conn.inflight.len(), "Sent more than asked");
                    if n < conn.inflight.len() {
                        stats.short_sends += 1;
                        // Re-issue the rest ahead of anything queued since.
                        let mut rest = conn.inflight.split_off(n);
                        rest.append(&mut conn.out);
                        conn.out = rest;
                    }
                    conn.inflight.clear();
                    flush(driver, &mut conns, slot, options.slice_len);
                    maybe_close(driver, &mut conns, slot);
                }
                Ev::Connected(slot, _) => panic!("unexpected Connected for {slot:?}"),
                Ev::Closed(slot) => {
                    let conn = conns[slot.index()].take().expect("Closed for unknown slot");
                    assert!(conn.closing, "Closed for {slot:?} without close");
                    free.push(slot.0);
                    stats.closed += 1;
                }
            }
        }

        for (index, conn) in conns.iter_mut().enumerate() {
            if let Some(conn) = conn.as_mut().filter(|c| c.paused && !c.closing) {
                conn.paused = false;
                stats.pauses += 1;
                driver.recv(Slot(index as u32));
            }
        }
    }
}

fn conn_mut(conns: &mut [Option<EchoConn>], slot: Slot) -> &mut EchoConn {
    conns[slot.index()]
        .as_mut()
        .unwrap_or_else(|| panic!("completion for unknown {slot:?}"))
}

fn flush(driver: &mut MioDriver, conns: &mut [Option<EchoConn>], slot: Slot, slice_len: usize) {
    let conn = conn_mut(conns, slot);
    if conn.sending || conn.closing || conn.out.is_empty() {
        return;
    }
    std::mem::swap(&mut conn.inflight, &mut conn.out);
    conn.sending = true;
    let slices: Vec<IoSlice<'_>> = if slice_len == 0 {
        vec![IoSlice::new(&conn.inflight)]
    } else {
        conn.inflight.chunks(slice_len).map(IoSlice::new).collect()
    };
    // SAFETY: `inflight` is neither changed nor dropped until this slot's `Sent` or
    // `Closed` (the connection state is only removed on `Closed`, and `inflight` is only
    // touched again after `Sent`); moving the `Vec` header does not move its bytes.
    unsafe { driver.send(slot, &slices) };
}

fn maybe_close(driver: &mut MioDriver, conns: &mut [Option<EchoConn>], slot: Slot) {
    let conn = conn_mut(conns, slot);
    if conn.eof && !conn.sending && conn.out.is_empty() && !conn.closing {
        conn.closing = true;
        driver.close(slot);
    }
}

/// Sends `data` to an echo server at `addr`, shuts down the write side, and checks that
/// exactly `data` comes back before the server closes.
pub fn echo_roundtrip(addr: SocketAddr, data: &[u8]) {
    let stream = TcpStream::connect(addr).expect("connect to echo server");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = stream;
    let echoed = thread::scope(|scope| {
        scope.spawn(move || {
            writer.write_all(data).expect("client write");
            writer.shutdown(Shutdown::Write).expect("client shutdown");
        });
        let mut echoed = Vec::with_capacity(data.len());
        reader
            .read_to_end(&mut echoed)
            .expect("client read (a timeout here means the echo stalled)");
        echoed
    });
    assert_eq!(echoed.len(), data.len(), "echo length differs");
    assert!(echoed == data, "echoed bytes differ");
}

/// Runs `job` on `count` threads at once and waits for all of them with a deadline,
/// re-raising the first failure.
pub fn run_concurrently(count: usize, job: impl Fn(usize) + Send + Sync + 'static) {
    let job = Arc::new(job);
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..count {
        let job = job.clone();
        let tx = tx.clone();
        threads.push(thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(i)));
            tx.send((i, result.is_ok())).unwrap();
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }));
    }
    let deadline = Instant::now() + DEADLINE * 2;
    let mut pending: VecDeque<usize> = (0..count).collect();
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, ok) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("clients {pending:?} did not finish in time"));
        pending.retain(|&p| p != i);
        if !ok {
            let err = threads.remove(i).join().unwrap_err();
            std::panic::resume_unwind(err);
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
}

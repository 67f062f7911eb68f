//! [`SimDriver`]: the driver contract, kept deterministically from a seed, with chaos.

use super::log::Log;
use super::rng::Rng;
use super::wire::Wire;
use crate::clock::Clock;
use crate::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls without progress after which a run is declared stuck.
const MAX_POLLS: u64 = 2_000_000;

/// One slot the driver holds, from `register`/`connect` until it reports `Closed`.
struct SlotState {
    /// A connect in progress, reported not before this instant.
    connecting: Option<Instant>,
    /// The core asked for `Received` (and did not pause since).
    receiving: bool,
    /// End of stream or an error was reported: no more `Received`, ever.
    recv_done: bool,
    /// A `Received` comes not before this instant (a slow network).
    recv_after: Instant,
    /// The send in flight.
    send: Option<InFlight>,
    /// `shutdown_write` was called.
    write_shut: bool,
    /// `close` was called: `Closed` is reported not before this instant.
    closing: Option<Instant>,
}

/// A send in flight: where the core's bytes are, and a copy to check they stay unchanged.
struct InFlight {
    bufs: Vec<(*const u8, usize)>,
    copy: Vec<u8>,
    after: Instant,
}

struct ListenerState {
    paused: bool,
    /// A connection taken from the wire while an error was reported in its place.
    held: Option<(TcpStream, SocketAddr)>,
}

#[derive(Clone, Copy)]
enum Ready {
    Closed(Slot),
    Connected(Slot),
    Sent(Slot),
    Received(Slot),
    Accepted(ListenerId),
}

/// A driver that keeps the [contract](crate::driver) deterministically from a seed, over
/// a [`Wire`]: every choice the contract leaves open (which ready completion comes first,
/// across slots; how a read is cut; how short a send is; how late a connect, a receive or
/// a `Closed` is; an `EMFILE` or `ECONNABORTED` on accept) is drawn from its generator, and
/// time is a manual [`Clock`] that moves only when nothing is ready. It checks the core's
/// side of the contract as it goes and records what the core breaks in the [`Log`].
pub struct SimDriver<W: Wire> {
    wire: W,
    clock: Clock,
    rng: Rng,
    log: Log,
    waker: Arc<SimWaker>,
    slots: BTreeMap<Slot, SlotState>,
    listeners: BTreeMap<ListenerId, ListenerState>,
    rbuf: Vec<u8>,
    polls: u64,
    counters: DriverCounters,
    /// Told when the driver is dropped (the loop thread is done with it).
    dropped: Option<std::sync::mpsc::Sender<()>>,
}

impl<W: Wire> Drop for SimDriver<W> {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.take() {
            let _ = tx.send(());
        }
    }
}

/// The simulated driver's waker: a flag the next `poll` reads.
struct SimWaker(AtomicBool);

impl Waker for SimWaker {
    fn wake(&self) -> io::Result<()> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}

impl<W: Wire> SimDriver<W> {
    /// A driver over `wire`, drawing its choices from `seed`, keeping time on `clock` (a
    /// manual one for a simulation) and recording into `log`.
    pub fn new(wire: W, seed: u64, clock: Clock, log: Log) -> Self {
        Self {
            wire,
            clock,
            rng: Rng::new(seed ^ 0xD21_5E7),
            log,
            waker: Arc::new(SimWaker(AtomicBool::new(false))),
            slots: BTreeMap::new(),
            listeners: BTreeMap::new(),
            rbuf: Vec::new(),
            polls: 0,
            counters: DriverCounters::default(),
            dropped: None,
        }
    }

    /// Sends `()` on `tx` when the driver is dropped.
    pub fn notify_drop(mut self, tx: std::sync::mpsc::Sender<()>) -> Self {
        self.dropped = Some(tx);
        self
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn broken(&self, message: String) {
        self.log
            .violation(self.now(), format!("driver contract: {message}"));
    }

    /// A short random delay, or none.
    fn jitter(&mut self, percent: u64, max_micros: u64) -> Duration {
        if self.rng.chance(percent) {
            Duration::from_micros(self.rng.range(1, max_micros))
        } else {
            Duration::ZERO
        }
    }

    /// The slot's state for an operation the core may only ask of a slot it handed over
    /// and has not closed.
    fn owned(&mut self, slot: Slot, op: &str) -> Option<&mut SlotState> {
        match self.slots.get(&slot) {
            None => {
                self.broken(format!(
                    "{op} on slot {} the driver does not hold",
                    slot.index()
                ));
                None
            }
            Some(s) if s.closing.is_some() => {
                self.broken(format!("{op} on slot {} after close", slot.index()));
                None
            }
            Some(_) => self.slots.get_mut(&slot),
        }
    }

    fn take_slot(&mut self, slot: Slot, op: &str) -> bool {
        if self.slots.contains_key(&slot) {
            self.broken(format!(
                "{op} reuses slot {} before the driver reported its Closed",
                slot.index()
            ));
            return false;
        }
        true
    }

    fn new_slot(&mut self, connecting: Option<Instant>) -> SlotState {
        SlotState {
            connecting,
            receiving: false,
            recv_done: false,
            recv_after: self.now(),
            send: None,
            write_shut: false,
            closing: None,
        }
    }

    /// What could be reported now, in a seeded order.
    fn ready(&mut self, now: Instant) -> Vec<Ready> {
        let mut ready = Vec::new();
        for (&slot, s) in &self.slots {
            if let Some(at) = s.closing {
                if at <= now {
                    ready.push(Ready::Closed(slot));
                }
                continue;
            }
            if s.connecting.is_some_and(|at| at <= now) {
                ready.push(Ready::Connected(slot));
            }
            if s.send.as_ref().is_some_and(|f| f.after <= now) {
                ready.push(Ready::Sent(slot));
            }
            if s.receiving && !s.recv_done && s.recv_after <= now {
                ready.push(Ready::Received(slot));
            }
        }
        for (&id, l) in &self.listeners {
            if !l.paused {
                ready.push(Ready::Accepted(id));
            }
        }
        for i in (1..ready.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            ready.swap(i, j);
        }
        ready
    }

    /// The next instant one of the driver's own delays ends.
    fn next_delay(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut note = |t: Instant| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for s in self.slots.values() {
            if let Some(at) = s.closing {
                note(at);
                continue;
            }
            if let Some(at) = s.connecting {
                note(at);
            }
            if let Some(f) = &s.send {
                note(f.after);
            }
            if s.receiving && !s.recv_done {
                note(s.recv_after);
            }
        }
        next
    }

    /// Reports some of what is ready; how many were reported.
    fn deliver<F>(&mut self, now: Instant, sink: &mut F) -> usize
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let ready = self.ready(now);
        if ready.is_empty() {
            return 0;
        }
        // Sometimes only part of what is ready, leaving the rest for a later poll.
        let budget = if self.rng.chance(50) {
            ready.len()
        } else {
            self.rng.size(1, ready.len())
        };
        let mut done = 0;
        for r in ready {
            if done == budget {
                break;
            }
            if self.report(r, now, sink) {
                done += 1;
            }
        }
        done
    }

    /// Reports one completion if it is really ready (the wire may have nothing yet).
    fn report<F>(&mut self, r: Ready, now: Instant, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        match r {
            Ready::Closed(slot) => {
                self.slots.remove(&slot);
                self.wire.close(slot);
                self.log.event(now, "closed", slot.index() as u64, 0);
                sink(Completion::Closed { slot });
                true
            }
            Ready::Connected(slot) => {
                let Some(result) = self.wire.connected(slot) else {
                    return false;
                };
                if let Some(s) = self.slots.get_mut(&slot) {
                    s.connecting = None;
                }
                let what = if result.is_ok() {
                    "connected"
                } else {
                    "connect-failed"
                };
                self.log.event(now, what, slot.index() as u64, 0);
                sink(Completion::Connected { slot, result });
                true
            }
            Ready::Sent(slot) => self.report_sent(slot, now, sink),
            Ready::Received(slot) => self.report_received(slot, now, sink),
            Ready::Accepted(id) => self.report_accepted(id, now, sink),
        }
    }

    fn report_sent<F>(&mut self, slot: Slot, now: Instant, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let Some(flight) = self.slots.get(&slot).and_then(|s| s.send.as_ref()) else {
            return false;
        };
        let total = flight.copy.len();
        let mut bytes = Vec::with_capacity(total);
        for &(ptr, len) in &flight.bufs {
            // SAFETY: `Driver::send`'s contract: the memory of every buffer handed to
            // `send` stays valid and unchanged until the driver reports `Sent` for the
            // slot (or `Closed`), which has not happened yet: this is where the simulated
            // kernel reads it, as a real one may at any time until then.
            bytes.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
        }
        if bytes != flight.copy {
            self.broken(format!(
                "the core changed the buffer of slot {}'s send while it was in flight",
                slot.index()
            ));
        }
        // A short send now and then.
        let want = if total > 1 && self.rng.chance(30) {
            self.rng.size(1, total - 1)
        } else {
            total
        };
        let result = if want == 0 {
            Ok(0)
        } else {
            match self.wire.write(slot, &bytes[..want]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                other => other,
            }
        };
        if let Some(s) = self.slots.get_mut(&slot) {
            s.send = None;
        }
        let (what, n) = match &result {
            Ok(n) if *n < total => ("short-send", *n as u64),
            Ok(n) => ("sent", *n as u64),
            Err(_) => ("send-error", 0),
        };
        self.log.event(now, what, slot.index() as u64, n);
        sink(Completion::Sent { slot, result });
        true
    }

    fn report_received<F>(&mut self, slot: Slot, now: Instant, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        // Reads split at random sizes; what arrived in several writes merges into one.
        let max = match self.rng.below(10) {
            0..=5 => self.rng.size(1, 64),
            6..=8 => self.rng.size(1, 4096),
            _ => 64 * 1024,
        };
        if self.rbuf.len() < max {
            self.rbuf.resize(max, 0);
        }
        let result = match self.wire.read(slot, &mut self.rbuf[..max]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            other => other,
        };
        let pause_after = self.jitter(15, 3_000);
        let s = self.slots.get_mut(&slot).expect("ready slot");
        s.recv_after = now + pause_after;
        let flow = match result {
            Ok(n) => {
                if n == 0 {
                    s.recv_done = true;
                }
                let what = if n == 0 { "eof" } else { "received" };
                self.log.event(now, what, slot.index() as u64, n as u64);
                sink(Completion::Received {
                    slot,
                    result: Ok(&self.rbuf[..n]),
                })
            }
            Err(e) => {
                s.recv_done = true;
                self.log.event(now, "recv-error", slot.index() as u64, 0);
                sink(Completion::Received {
                    slot,
                    result: Err(e),
                })
            }
        };
        if flow == Flow::Pause {
            if let Some(s) = self.slots.get_mut(&slot) {
                s.receiving = false;
            }
        }
        true
    }

    fn report_accepted<F>(&mut self, id: ListenerId, now: Instant, sink: &mut F) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let held = self.listeners.get_mut(&id).and_then(|l| l.held.take());
        let conn = match held {
            Some(conn) => conn,
            None => match self.wire.accept(id) {
                None => return false,
                Some(Err(e)) => return self.answer_accept(id, now, Err(e), sink),
                Some(Ok(conn)) => conn,
            },
        };
        // Now and then an error comes first; the connection waits for the next accept.
        let error = match self.rng.below(100) {
            0..=5 => Some(io::Error::from_raw_os_error(libc_emfile())),
            6..=8 => Some(io::Error::from(io::ErrorKind::ConnectionAborted)),
            _ => None,
        };
        if let Some(e) = error {
            if let Some(l) = self.listeners.get_mut(&id) {
                l.held = Some(conn);
            }
            return self.answer_accept(id, now, Err(e), sink);
        }
        self.answer_accept(id, now, Ok(conn), sink)
    }

    fn answer_accept<F>(
        &mut self,
        id: ListenerId,
        now: Instant,
        result: io::Result<(TcpStream, SocketAddr)>,
        sink: &mut F,
    ) -> bool
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let (what, tag) = match &result {
            Ok(_) => ("accepted", 0),
            Err(e) => ("accept-error", e.raw_os_error().unwrap_or(1000) as u64),
        };
        self.log.event(now, what, u64::from(id.0), tag);
        if sink(Completion::Accepted {
            listener: id,
            result,
        }) == Flow::Pause
        {
            if let Some(l) = self.listeners.get_mut(&id) {
                l.paused = true;
            }
        }
        true
    }
}

/// `EMFILE`, the error a process out of descriptors gets from `accept`.
fn libc_emfile() -> i32 {
    24
}

impl<W: Wire + 'static> Driver for SimDriver<W> {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn describe(&self) -> String {
        "simulated (seeded, virtual time)".to_string()
    }

    fn waker(&self) -> Arc<dyn Waker> {
        Arc::clone(&self.waker) as Arc<dyn Waker>
    }

    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        self.wire.listen(id, listener)?;
        self.listeners.insert(
            id,
            ListenerState {
                paused: false,
                held: None,
            },
        );
        Ok(())
    }

    fn resume_accept(&mut self, id: ListenerId) {
        self.log
            .note(self.now(), "resume-accept", u64::from(id.0), 0);
        if let Some(l) = self.listeners.get_mut(&id) {
            l.paused = false;
        }
    }

    fn unlisten(&mut self, id: ListenerId) {
        self.log.note(self.now(), "unlisten", u64::from(id.0), 0);
        if self.listeners.remove(&id).is_some() {
            self.wire.unlisten(id);
        }
    }

    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        self.log
            .event(self.now(), "register", slot.index() as u64, 0);
        if !self.take_slot(slot, "register") {
            return Err(io::Error::other("slot still held"));
        }
        self.wire.register(slot, stream)?;
        let state = self.new_slot(None);
        self.slots.insert(slot, state);
        Ok(())
    }

    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()> {
        self.log
            .event(self.now(), "connect", slot.index() as u64, 0);
        if !self.take_slot(slot, "connect") {
            return Err(io::Error::other("slot still held"));
        }
        self.wire.connect(slot, socket, addr)?;
        let at = self.now() + self.jitter(50, 20_000);
        let state = self.new_slot(Some(at));
        self.slots.insert(slot, state);
        Ok(())
    }

    fn recv(&mut self, slot: Slot) {
        self.log.event(self.now(), "recv", slot.index() as u64, 0);
        let delay = self.jitter(20, 2_000);
        let now = self.now();
        if let Some(s) = self.owned(slot, "recv") {
            if s.connecting.is_some() {
                return;
            }
            s.receiving = true;
            s.recv_after = now + delay;
        }
    }

    fn pause_recv(&mut self, slot: Slot) {
        self.log
            .event(self.now(), "pause-recv", slot.index() as u64, 0);
        if let Some(s) = self.owned(slot, "pause_recv") {
            s.receiving = false;
        }
    }

    unsafe fn send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]) {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.log
            .event(self.now(), "send-op", slot.index() as u64, len as u64);
        let after = self.now() + self.jitter(20, 5_000);
        let Some(s) = self.owned(slot, "send") else {
            return;
        };
        let problem = if s.send.is_some() {
            Some("a second send while one is in flight")
        } else if s.write_shut {
            Some("a send after shutdown_write")
        } else if s.connecting.is_some() {
            Some("a send before the connect completed")
        } else {
            None
        };
        if let Some(p) = problem {
            let index = slot.index();
            self.broken(format!("{p} on slot {index}"));
            return;
        }
        let copy: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        s.send = Some(InFlight {
            bufs: bufs.iter().map(|b| (b.as_ptr(), b.len())).collect(),
            copy,
            after,
        });
    }

    fn shutdown_write(&mut self, slot: Slot) {
        self.log
            .event(self.now(), "shutdown-write", slot.index() as u64, 0);
        let Some(s) = self.owned(slot, "shutdown_write") else {
            return;
        };
        if s.send.is_some() {
            let index = slot.index();
            self.broken(format!(
                "shutdown_write on slot {index} with a send in flight"
            ));
            return;
        }
        s.write_shut = true;
        self.wire.shutdown_write(slot);
    }

    fn close(&mut self, slot: Slot) {
        self.log.event(self.now(), "close", slot.index() as u64, 0);
        let at = self.now() + self.jitter(40, 30_000);
        let Some(s) = self.owned(slot, "close") else {
            return;
        };
        // Cancelled: nothing but `Closed` comes for the slot from now on.
        s.closing = Some(at);
        s.send = None;
        s.receiving = false;
        s.connecting = None;
    }

    fn poll<F>(&mut self, timeout: Option<Duration>, mut sink: F) -> io::Result<()>
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        self.polls += 1;
        self.counters.enters += 1;
        if self.polls > MAX_POLLS {
            self.broken(format!("no end after {MAX_POLLS} polls (a livelock?)"));
            return Err(io::Error::other("simulation stuck"));
        }
        let deadline = timeout.map(|t| self.now() + t);
        loop {
            let now = self.now();
            let acted = self.wire.run_until(now);
            let delivered = self.deliver(now, &mut sink);
            let woken = self.waker.0.swap(false, Ordering::AcqRel);
            if woken {
                self.counters.wakeups += 1;
            }
            if acted || delivered > 0 || woken || deadline.is_some_and(|d| d <= now) {
                return Ok(());
            }
            let next = match (self.next_delay(now), deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !self.wire.wait(&self.clock, next) {
                self.broken("the loop waits with no timeout and nothing can happen".into());
                return Err(io::Error::other("simulation has nothing left to do"));
            }
        }
    }

    fn counters(&self) -> DriverCounters {
        self.counters
    }
}

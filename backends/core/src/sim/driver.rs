//! [`SimDriver`]: the driver contract, kept deterministically from a seed, with chaos.

use super::log::Log;
use super::rng::Rng;
pub use super::state::Chaos;
use super::state::{InFlight, ListenerState, SlotState};
use super::wire::{Interest, Wire};
use crate::clock::Clock;
use crate::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls after which a simulation (manual clock) is declared stuck.
const MAX_POLLS: u64 = 2_000_000;

/// A driver that keeps the [contract](crate::driver) deterministically from a seed, over
/// a [`Wire`]: every choice the contract leaves open (which ready completion comes first,
/// across slots; how a read is cut; how short a send is; how late a connect, a receive or
/// a `Closed` is; an `EMFILE` or `ECONNABORTED` on accept) is drawn from its generator.
/// Over a [`MemoryWire`](super::MemoryWire) time is a manual [`Clock`] that moves only
/// when nothing is ready. It checks the core's side of the contract as it goes and
/// records what the core breaks in the [`Log`]; a broken call changes nothing (a send on
/// a slot it does not hold: no completion; a second send in flight: a failed `Sent`).
pub struct SimDriver<W: Wire> {
    pub(super) wire: W,
    pub(super) clock: Clock,
    pub(super) rng: Rng,
    pub(super) log: Log,
    pub(super) chaos: Chaos,
    waker: Arc<SimWaker>,
    pub(super) slots: BTreeMap<Slot, SlotState>,
    pub(super) listeners: BTreeMap<ListenerId, ListenerState>,
    pub(super) rbuf: Vec<u8>,
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

/// The simulated driver's waker: a flag the next `poll` reads, and the wire's way to
/// interrupt a blocked wait, if it has one.
struct SimWaker {
    flag: AtomicBool,
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Waker for SimWaker {
    fn wake(&self) -> io::Result<()> {
        self.flag.store(true, Ordering::Release);
        if let Some(notify) = &self.notify {
            notify();
        }
        Ok(())
    }
}

impl<W: Wire> SimDriver<W> {
    /// A driver over `wire`, drawing its choices from `seed`, keeping time on `clock` (a
    /// manual one for a simulation) and recording into `log`.
    pub fn new(wire: W, seed: u64, clock: Clock, log: Log) -> Self {
        let waker = Arc::new(SimWaker {
            flag: AtomicBool::new(false),
            notify: wire.notifier(),
        });
        Self {
            wire,
            clock,
            rng: Rng::new(seed ^ 0xD21_5E7),
            log,
            chaos: Chaos::default(),
            waker,
            slots: BTreeMap::new(),
            listeners: BTreeMap::new(),
            rbuf: Vec::new(),
            polls: 0,
            counters: DriverCounters::default(),
            dropped: None,
        }
    }

    /// Takes only the freedoms `chaos` allows.
    pub fn with_chaos(mut self, chaos: Chaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// Sends `()` on `tx` when the driver is dropped.
    pub fn notify_drop(mut self, tx: std::sync::mpsc::Sender<()>) -> Self {
        self.dropped = Some(tx);
        self
    }

    pub(super) fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(super) fn broken(&self, message: String) {
        self.log
            .violation(self.now(), format!("driver contract: {message}"));
    }

    /// A short random delay, or none.
    pub(super) fn jitter(&mut self, percent: u64, max_micros: u64) -> Duration {
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
            refused: 0,
            write_shut: false,
            closing: None,
        }
    }

    /// What the driver waits for on the wire: the slots and listeners whose next
    /// completion depends on the other side, not on one of the driver's own delays.
    fn interest(&self, now: Instant) -> Interest {
        let mut interest = Interest::default();
        for (&slot, s) in &self.slots {
            if s.closing.is_some() {
                continue;
            }
            if s.connecting.is_some_and(|at| at <= now)
                || s.send.as_ref().is_some_and(|f| f.after <= now)
            {
                interest.writes.push(slot);
            }
            if s.receiving && !s.recv_done && s.recv_after <= now {
                interest.reads.push(slot);
            }
        }
        for (&id, l) in &self.listeners {
            if !l.paused && l.held.is_none() {
                interest.accepts.push(id);
            }
        }
        interest
    }
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
            if s.send.is_some() {
                s.refused += 1;
            }
            let index = slot.index();
            self.broken(format!("{p} on slot {index}"));
            return;
        }
        let mut copy = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            copy.extend_from_slice(b);
        }
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
        if self.polls > MAX_POLLS && self.clock.is_manual() {
            self.broken(format!("no end after {MAX_POLLS} polls (a livelock?)"));
            return Err(io::Error::other("simulation stuck"));
        }
        let deadline = timeout.map(|t| crate::runtime::timer::deadline_after(self.now(), t));
        loop {
            let now = self.now();
            let acted = self.wire.run_until(now);
            let delivered = self.deliver(now, &mut sink);
            let woken = self.waker.flag.swap(false, Ordering::AcqRel);
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
            let interest = self.interest(now);
            if !self.wire.wait(&self.clock, next, &interest) {
                self.broken("the loop waits with no timeout and nothing can happen".into());
                return Err(io::Error::other("simulation has nothing left to do"));
            }
        }
    }

    fn counters(&self) -> DriverCounters {
        self.counters
    }
}

//! How the simulated driver reports: what is ready, in which order, cut how.

use super::driver::SimDriver;
use super::log::Log;
use super::rng::Rng;
use super::state::Ready;
use super::wire::Wire;
use crate::driver::{Completion, Flow, ListenerId, Slot, WriteNow};
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

/// The simulated socket written during a `Received` (rule 8 of the driver contract): it
/// takes all, a part, or (as a full socket would) nothing, at random.
struct SimWriteNow<'a, W: Wire> {
    wire: &'a mut W,
    rng: &'a mut Rng,
    log: &'a Log,
    short: bool,
    slot: Slot,
    now: Instant,
}

impl<W: Wire> WriteNow for SimWriteNow<'_, W> {
    fn write_now(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let want = match self.rng.below(10) {
            _ if bytes.is_empty() => 0,
            0 => 0,
            1..=3 if self.short && bytes.len() > 1 => self.rng.size(1, bytes.len() - 1),
            _ => bytes.len(),
        };
        let result = if want == 0 {
            Ok(0)
        } else {
            match self.wire.write(self.slot, &bytes[..want]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                other => other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0) as u64;
        self.log
            .event(self.now, "write-now", self.slot.index() as u64, n);
        result
    }
}

impl<W: Wire> SimDriver<W> {
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
            if s.refused > 0 {
                ready.push(Ready::Refused(slot));
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
    pub(super) fn next_delay(&self, now: Instant) -> Option<Instant> {
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
    pub(super) fn deliver<F>(&mut self, now: Instant, sink: &mut F) -> usize
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
            Ready::Refused(slot) => {
                if let Some(s) = self.slots.get_mut(&slot) {
                    s.refused -= 1;
                }
                self.log.event(now, "send-refused", slot.index() as u64, 0);
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a second send while one is in flight",
                );
                sink(Completion::Sent {
                    slot,
                    result: Err(e),
                });
                true
            }
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
        // A short send now and then.
        let want = if total > 1 && self.chaos.short_sends && self.rng.chance(30) {
            self.rng.size(1, total - 1)
        } else {
            total
        };
        let gathered;
        let bytes: &[u8] = match flight.bufs[..] {
            [] => &[],
            // SAFETY: `Driver::send`'s contract: the memory of every buffer handed to
            // `send` stays valid and unchanged until the driver reports `Sent` for the
            // slot (or `Closed`), which has not happened yet: this is where the simulated
            // kernel reads it, as a real one may at any time until then.
            [(ptr, len)] => unsafe { std::slice::from_raw_parts(ptr, len) },
            ref bufs => {
                let mut all = Vec::with_capacity(total);
                for &(ptr, len) in bufs {
                    // SAFETY: as above, for each buffer of the send.
                    all.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
                }
                gathered = all;
                &gathered
            }
        };
        let result = if want == 0 {
            Ok(0)
        } else {
            match self.wire.write(slot, &bytes[..want]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                other => other,
            }
        };
        if let Ok(n) = result {
            if bytes[..n] != flight.copy[..n] {
                self.broken(format!(
                    "the core changed the buffer of slot {}'s send while it was in flight",
                    slot.index()
                ));
            }
        }
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
        }
        .min(self.chaos.max_read.max(1));
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
        // Rule 8: a `WriteNow` while no send is in flight, most of the time.
        let offer = s.send.is_none() && self.rng.chance(85);
        let flow = match result {
            Ok(n) => {
                if n == 0 {
                    s.recv_done = true;
                }
                let what = if n == 0 { "eof" } else { "received" };
                self.log.event(now, what, slot.index() as u64, n as u64);
                let mut direct = SimWriteNow {
                    wire: &mut self.wire,
                    rng: &mut self.rng,
                    log: &self.log,
                    short: self.chaos.short_sends,
                    slot,
                    now,
                };
                sink(Completion::Received {
                    slot,
                    result: Ok(&self.rbuf[..n]),
                    direct: if offer && n > 0 {
                        Some(&mut direct)
                    } else {
                        None
                    },
                })
            }
            Err(e) => {
                s.recv_done = true;
                self.log.event(now, "recv-error", slot.index() as u64, 0);
                sink(Completion::Received {
                    slot,
                    result: Err(e),
                    direct: None,
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
        let roll = if self.chaos.accept_errors {
            self.rng.below(100)
        } else {
            100
        };
        let error = match roll {
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

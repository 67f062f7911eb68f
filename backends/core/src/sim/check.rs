//! The handler every simulated service runs: it plays an application (greets, answers,
//! closes, pauses, fails now and then, all drawn from the seed) and checks the behaviour
//! contract on every callback; and the checks between steps (queues, `stop()`).

use super::world::{Event, Side, World};
use crate::context::{ConnSender, ServerContext};
use crate::error::{NetworkError, NetworkEvent, Result};
use crate::handler::NetworkHandler;
use crate::id::ConnectionId;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

/// A handler that checks what the loop tells it against what the peers did.
pub(crate) struct Checker {
    world: Weak<Mutex<World>>,
    side: Side,
}

impl Checker {
    pub(super) fn new(world: Weak<Mutex<World>>, side: Side) -> Self {
        Self { world, side }
    }

    fn with<R: Default>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        match self.world.upgrade() {
            Some(world) => f(&mut world.lock().unwrap_or_else(|e| e.into_inner())),
            None => R::default(),
        }
    }
}

impl NetworkHandler for Checker {
    fn on_connect(&self, ctx: &ServerContext, id: ConnectionId) -> Result<()> {
        let addr = ctx.peer_addr(id);
        let sender = ctx.sender(id);
        self.with(|w| w.on_connect(self.side, ctx, id, addr, sender));
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, id: ConnectionId, data: &[u8]) -> Result<()> {
        let fail = self.with(|w| w.on_data(ctx, id, data));
        if fail {
            return Err(Box::new(NetworkError::InvalidState(
                "simulated handler error",
            )));
        }
        Ok(())
    }

    fn on_disconnect(&self, _: &ServerContext, id: ConnectionId) -> Result<()> {
        self.with(|w| w.on_disconnect(id));
        Ok(())
    }

    fn on_writable(&self, ctx: &ServerContext, id: ConnectionId) -> Result<()> {
        self.with(|w| w.on_writable(ctx, id));
        Ok(())
    }

    fn on_drained(&self, _: &ServerContext, id: ConnectionId) -> Result<()> {
        self.with(|w| {
            let now = w.clock.now();
            if let Some(p) = w.known(id, "on_drained", now) {
                w.log.event(now, "on_drained", w.peers[p].ordinal, 0);
            }
        });
        Ok(())
    }

    fn on_error(&self, _: &ServerContext, id: Option<ConnectionId>, error: NetworkError) {
        self.with(|w| {
            let now = w.clock.now();
            let tag = error_tag(&error);
            match id.and_then(|id| w.by_id.get(&id).copied()) {
                Some(p) if w.peers[p].disconnected => w.log.violation(
                    now,
                    format!(
                        "on_error for #{} after its on_disconnect: {error}",
                        w.peers[p].ordinal
                    ),
                ),
                Some(p) => w.log.event(now, "on_error", w.peers[p].ordinal, tag),
                None => w.log.event(now, "on_error", u64::MAX, tag),
            }
        });
    }

    fn on_event(&self, _: &ServerContext, event: NetworkEvent) -> Result<()> {
        let kind = match event {
            NetworkEvent::ConnectionEstablished(..) => 0,
            NetworkEvent::ConnectionClosed(_) => 1,
            NetworkEvent::Listening(_) => 2,
        };
        self.with(|w| {
            let now = w.clock.now();
            w.log.event(now, "on_event", kind, 0);
        });
        Ok(())
    }
}

/// A small number naming an error, for the trace.
fn error_tag(error: &NetworkError) -> u64 {
    match error {
        NetworkError::Io(_) => 1,
        NetworkError::Accept(_) => 2,
        NetworkError::Connect(_) => 3,
        NetworkError::MaxConnectionsReached(_) => 4,
        NetworkError::HandlerError(_) => 5,
        NetworkError::HandlerPanic(_) => 6,
        NetworkError::IdleTimeout(_) => 7,
        NetworkError::EventLoopGone => 8,
        NetworkError::Send(_) => 9,
        _ => 10,
    }
}

impl World {
    /// The peer of a connection the handler was told of, or a broken rule.
    fn known(&mut self, id: ConnectionId, what: &str, now: Instant) -> Option<usize> {
        let Some(&p) = self.by_id.get(&id) else {
            self.log
                .violation(now, format!("{what} for a connection without on_connect"));
            return None;
        };
        if self.peers[p].disconnected {
            let ordinal = self.peers[p].ordinal;
            self.log.violation(
                now,
                format!("{what} for #{ordinal} after its on_disconnect"),
            );
            return None;
        }
        Some(p)
    }

    fn on_connect(
        &mut self,
        side: Side,
        ctx: &ServerContext,
        id: ConnectionId,
        addr: Option<std::net::SocketAddr>,
        sender: Option<ConnSender>,
    ) {
        let now = self.clock.now();
        let Some(p) = addr.and_then(|a| self.by_addr.get(&a).copied()) else {
            self.log
                .violation(now, format!("on_connect for an unknown peer {addr:?}"));
            return;
        };
        let peer = &self.peers[p];
        if peer.side != side || peer.connected || self.by_id.contains_key(&id) {
            self.log.violation(
                now,
                format!("a second on_connect for the peer {} ({side:?})", peer.addr),
            );
            return;
        }
        if let Side::Server(s) = side {
            if self.servers[s].stopped {
                self.log.violation(
                    now,
                    format!("on_connect on server {s} after its stop() was acknowledged"),
                );
            }
        }
        self.next_ordinal += 1;
        let peer = &mut self.peers[p];
        peer.connected = true;
        peer.id = Some(id);
        peer.ordinal = self.next_ordinal;
        peer.sender = sender;
        self.by_id.insert(id, p);
        self.log
            .event(now, "on_connect", self.next_ordinal, p as u64);
        if self.rng.chance(40) {
            let len = self.rng.size(1, 200);
            self.offer(p, len, |f| ctx.try_send_to(id, f));
        }
        if self.rng.chance(10) {
            self.pause_inline(p, now);
        }
        if self.rng.chance(20) {
            self.later(p, ctx, id, now);
        }
    }

    /// Returns whether the handler fails this call (a simulated application error).
    fn on_data(&mut self, ctx: &ServerContext, id: ConnectionId, data: &[u8]) -> bool {
        let now = self.clock.now();
        let Some(p) = self.known(id, "on_data", now) else {
            return false;
        };
        let peer = &mut self.peers[p];
        let ordinal = peer.ordinal;
        let mut problems = Vec::new();
        if peer.paused {
            problems.push(format!(
                "on_data for #{ordinal} after its handler paused reads"
            ));
        }
        if peer.framed {
            match peer.frames_out.pop_front() {
                Some(len) if len == data.len() => {}
                other => problems.push(format!(
                    "#{ordinal} got {} bytes in one on_data where the next whole frame is {other:?} bytes",
                    data.len()
                )),
            }
        } else if data.is_empty() || data.len() > peer.chunk {
            problems.push(format!(
                "#{ordinal} got an on_data of {} bytes (chunk limit {})",
                data.len(),
                peer.chunk
            ));
        }
        if let Some(i) = super::rng::pattern_mismatch(peer.in_key, peer.delivered, data) {
            problems.push(format!(
                "#{ordinal} got a wrong byte at offset {} (lost, repeated or reordered bytes)",
                peer.delivered + i as u64
            ));
        }
        let start = peer.delivered;
        peer.delivered += data.len() as u64;
        self.log.event(now, "on_data", ordinal, data.len() as u64);
        for problem in problems {
            self.log.violation(now, problem);
        }
        if peer.echo && peer.accepted == start && !data.is_empty() {
            self.echo(p, ordinal, now, data, |f| ctx.try_send_to(id, f));
        }
        match self.rng.below(100) {
            0..=39 => {
                let len = self.rng.size(1, 300);
                self.offer(p, len, |f| ctx.try_send_to(id, f));
            }
            40..=42 => {
                self.log.event(now, "close-gracefully-inline", ordinal, 0);
                let _ = ctx.close_connection_gracefully(id);
            }
            43..=44 => {
                self.log.event(now, "close-inline", ordinal, 0);
                let _ = ctx.close_connection(id);
            }
            45..=46 => {
                self.log.event(now, "fail", ordinal, 0);
                return true;
            }
            47..=51 => self.pause_inline(p, now),
            52..=54 => self.later(p, ctx, id, now),
            _ => {}
        }
        false
    }

    /// Answers `data` with itself, in three sends: a slice of it (written through when
    /// the queue is empty), a copy of the next part (queued), and the rest as a slice
    /// again (queued behind the copy, as it must not overtake it). Stops at a refusal,
    /// after which the pattern no longer lines up.
    fn echo(
        &mut self,
        p: usize,
        ordinal: u64,
        now: Instant,
        data: &[u8],
        send: impl Fn(&[u8]) -> std::result::Result<(), crate::SendError>,
    ) {
        let a = self.rng.size(0, data.len());
        let b = self.rng.size(a, data.len());
        self.log.event(now, "echo", ordinal, data.len() as u64);
        let copy = data[a..b].to_vec();
        for piece in [&data[..a], &copy[..], &data[b..]] {
            if !piece.is_empty() && !self.offer_frame(p, piece, &send) {
                return;
            }
        }
    }

    /// The handler pauses reading from its own callback: no `on_data` may follow until
    /// it resumes, which it does a little later.
    pub(super) fn pause_inline(&mut self, p: usize, now: Instant) {
        let Some(sender) = self.peers[p].sender.clone() else {
            return;
        };
        self.log
            .event(now, "pause-inline", self.peers[p].ordinal, 0);
        sender.pause_reads();
        self.peers[p].paused = true;
        let at = now + Duration::from_millis(self.rng.range(0, 500));
        self.at(at, Event::Resume(p));
    }

    pub(super) fn resume(&mut self, p: usize, now: Instant) {
        if let Some(sender) = self.peers[p].sender.clone() {
            self.log.event(now, "resume", self.peers[p].ordinal, 0);
            self.peers[p].paused = false;
            sender.resume_reads();
        }
    }

    fn on_disconnect(&mut self, id: ConnectionId) {
        let now = self.clock.now();
        let Some(p) = self.known(id, "on_disconnect", now) else {
            return;
        };
        let peer = &mut self.peers[p];
        peer.disconnected = true;
        let ordinal = peer.ordinal;
        if !peer.gone {
            self.log.violation(
                now,
                format!("on_disconnect for #{ordinal} before the driver reported Closed"),
            );
        }
        self.log.event(now, "on_disconnect", ordinal, 0);
    }

    fn on_writable(&mut self, ctx: &ServerContext, id: ConnectionId) {
        let now = self.clock.now();
        let Some(p) = self.known(id, "on_writable", now) else {
            return;
        };
        let peer = &self.peers[p];
        let complete = if peer.framed {
            peer.frames_in.is_empty() && peer.decode.is_empty()
        } else {
            peer.got == peer.accepted
        };
        if !complete {
            self.log.violation(
                now,
                format!(
                    "on_writable for #{} (queue empty) while the peer has {} of {} bytes ({} frames missing)",
                    peer.ordinal,
                    peer.got,
                    peer.accepted,
                    peer.frames_in.len()
                ),
            );
        }
        self.log.event(now, "on_writable", peer.ordinal, 0);
        let paused = peer.paused;
        if self.rng.chance(25) {
            let len = self.rng.size(1, 300);
            self.offer(p, len, |f| ctx.try_send_to(id, f));
        }
        // Pausing from here too: with write-through this runs inside a receive, and a
        // later receive of the same batch must not reach `on_data`.
        if !paused && self.rng.chance(10) {
            self.pause_inline(p, now);
        }
    }
}

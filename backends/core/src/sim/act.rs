//! What the application and its other threads do between callbacks (sends, closes,
//! pauses, timers, posted closures), and the checks that hold between steps: queue
//! bounds, `stop()`'s acknowledgement, the end of a run.

use super::world::{Side, World};
use crate::context::ServerContext;
use crate::error::SendError;
use crate::id::ConnectionId;
use std::time::{Duration, Instant};

impl World {
    /// The handler leaves work on the loop: a timer (in the loop's virtual time) or a
    /// posted closure, which sends a frame when it runs.
    pub(super) fn later(&mut self, p: usize, ctx: &ServerContext, id: ConnectionId, now: Instant) {
        let world = self.me.clone();
        let run = move || {
            if let Some(world) = world.upgrade() {
                world.lock().unwrap_or_else(|e| e.into_inner()).run_later(p);
            }
        };
        let ordinal = self.peers[p].ordinal;
        if self.rng.chance(50) {
            let delay = Duration::from_millis(self.rng.range(0, 2_000));
            self.log
                .event(now, "schedule", ordinal, delay.as_millis() as u64);
            if ctx.schedule_once_for(id, delay, run).is_err() {
                self.log.violation(
                    now,
                    format!("schedule_once_for #{ordinal} failed inside its callback"),
                );
            }
        } else {
            self.log.event(now, "post", ordinal, 0);
            if ctx.post_to(id, run).is_err() {
                self.log.violation(
                    now,
                    format!("post_to #{ordinal} failed inside its callback"),
                );
            }
        }
    }

    /// A timer or posted closure of `p`'s handler runs (on the loop, in a turn).
    pub(super) fn run_later(&mut self, p: usize) {
        let now = self.clock.now();
        self.log.event(now, "later", self.peers[p].ordinal, 0);
        if !self.live(p) {
            return;
        }
        if let Some(sender) = self.peers[p].sender.clone() {
            let len = self.rng.size(1, 400);
            self.offer(p, len, |f| sender.send(f));
        }
    }

    /// Sends the next `len` bytes of `p`'s outbound pattern with `send`, and records them
    /// if they were accepted. Checks the queue bound right after.
    pub(super) fn offer(
        &mut self,
        p: usize,
        len: usize,
        send: impl FnOnce(&[u8]) -> std::result::Result<(), SendError>,
    ) -> bool {
        let frame = self.next_out_frame(p, len);
        self.offer_frame(p, &frame, send)
    }

    /// Offers `frame`, which must be the next `frame.len()` bytes of the pattern the
    /// core sends `p` (the next frame when framed).
    pub(super) fn offer_frame(
        &mut self,
        p: usize,
        frame: &[u8],
        send: impl FnOnce(&[u8]) -> std::result::Result<(), SendError>,
    ) -> bool {
        let now = self.clock.now();
        let len = frame.len();
        let result = send(frame);
        let peer = &mut self.peers[p];
        let ok = result.is_ok();
        if ok {
            peer.accepted += len as u64;
            peer.biggest_frame = peer.biggest_frame.max(len);
            if peer.framed {
                peer.frames_in.push_back(len);
            }
        }
        let tag = match result {
            Ok(()) => 0,
            Err(SendError::Backpressure) => 1,
            Err(SendError::Closed) => 2,
            Err(_) => 3,
        };
        self.log
            .event(now, "send", peer.ordinal, (len as u64) << 2 | tag);
        self.check_queue(p, now);
        ok
    }

    /// A queue holds at most the high watermark plus one frame (with layers, plus the
    /// framing's overhead of each queued frame).
    fn check_queue(&mut self, p: usize, now: Instant) {
        let peer = &self.peers[p];
        let Some(sender) = &peer.sender else {
            return;
        };
        let queued = sender.queued_bytes();
        let bound = peer.high.saturating_sub(1) + peer.biggest_frame;
        let bound = if peer.framed { 3 * bound + 2 } else { bound };
        if queued > bound {
            self.log.violation(
                now,
                format!(
                    "#{} queues {queued} bytes, over the high watermark {} plus one frame ({})",
                    peer.ordinal, peer.high, peer.biggest_frame
                ),
            );
        }
    }

    /// Between steps: every acknowledged `stop()` left nothing of its server, and every
    /// queue is within its bound.
    pub(super) fn check_stops(&mut self, now: Instant) {
        for s in 0..self.servers.len() {
            let acked = match &self.servers[s].stop_ack {
                Some(rx) => rx.try_recv().is_ok(),
                None => false,
            };
            if !acked {
                continue;
            }
            self.servers[s].stop_ack = None;
            self.servers[s].stopped = true;
            self.log.event(now, "stop-acknowledged", s as u64, 0);
            for p in 0..self.peers.len() {
                if self.side_of(p) == Side::Server(s) && self.live(p) {
                    let ordinal = self.peers[p].ordinal;
                    self.log.violation(
                        now,
                        format!(
                            "stop() of server {s} was acknowledged while #{ordinal} is open (no on_disconnect yet)"
                        ),
                    );
                }
            }
            let open = self.servers[s].service.connection_count();
            if open != 0 {
                self.log.violation(
                    now,
                    format!("stop() of server {s} was acknowledged with {open} connections counted open"),
                );
            }
        }
        for p in 0..self.peers.len() {
            if self.live(p) {
                self.check_queue(p, now);
            }
        }
    }

    /// Another thread acts on a random open connection.
    pub(super) fn act(&mut self, now: Instant) {
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|&p| self.live(p) && self.peers[p].sender.is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let p = live[self.rng.below(live.len() as u64) as usize];
        let sender = self.peers[p].sender.clone().expect("filtered");
        let ordinal = self.peers[p].ordinal;
        match self.rng.below(100) {
            0..=34 => {
                let max = (3 * self.peers[p].high).clamp(1, 5_000);
                let len = self.rng.size(1, max);
                self.log.event(now, "act-send", ordinal, len as u64);
                self.offer(p, len, |f| sender.send(f));
            }
            35..=44 => {
                self.log.event(now, "act-burst", ordinal, 0);
                for _ in 0..40 {
                    let len = self.rng.size(1, 200);
                    if !self.offer(p, len, |f| sender.send(f)) {
                        break;
                    }
                }
            }
            45..=52 => {
                self.log.event(now, "act-close", ordinal, 0);
                sender.close();
            }
            53..=60 => {
                self.log.event(now, "act-close-gracefully", ordinal, 0);
                sender.close_gracefully();
            }
            61..=66 => {
                self.log.event(now, "act-abort", ordinal, 0);
                sender.abort();
            }
            67..=80 => {
                self.log.event(now, "act-pause", ordinal, 0);
                sender.pause_reads();
            }
            _ => {
                // Half the time two threads resume at once: two commands in one turn.
                let twice = self.rng.chance(50);
                self.log.event(now, "act-resume", ordinal, u64::from(twice));
                self.peers[p].paused = false;
                sender.resume_reads();
                if twice {
                    sender.resume_reads();
                }
            }
        }
    }

    /// After the loop exited: every `on_connect` had its `on_disconnect`, every socket
    /// the core handed over was closed, every `stop()` was answered.
    pub(crate) fn finish(&mut self) {
        let now = self.clock.now();
        self.check_stops(now);
        for p in 0..self.peers.len() {
            if self.live(p) {
                let ordinal = self.peers[p].ordinal;
                self.log.violation(
                    now,
                    format!("#{ordinal} never got its on_disconnect (the loop exited)"),
                );
            }
        }
        if !self.handles.is_empty() {
            let n = self.handles.len();
            self.log.violation(
                now,
                format!("the loop exited with {n} sockets the driver never reported Closed"),
            );
        }
        for (s, server) in self.servers.iter().enumerate() {
            if server.stop_ack.is_some() {
                self.log
                    .violation(now, format!("stop() of server {s} was never acknowledged"));
            }
        }
    }
}

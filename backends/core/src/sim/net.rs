//! The memory network: how bytes move between the core's slots and the simulated peers,
//! and what the peers do on their own. Every byte a peer receives is checked on arrival.

use super::rng::{pattern, pattern_mismatch};
use super::scenario::{raw_fd, unbound_socket};
use super::world::{Event, Side, World};
use crate::driver::{ListenerId, Slot};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A peer stops writing while this much of what it sent is unread by the core.
const PEER_BACKLOG: usize = 64 * 1024;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The framing of framed connections: a big-endian `u16` length, then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl World {
    fn peer_of(&self, slot: Slot) -> io::Result<usize> {
        self.by_slot
            .get(&slot)
            .copied()
            .ok_or_else(|| io::Error::other("the simulation knows no such slot"))
    }

    pub(super) fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        let fd = raw_fd(&listener);
        let s = self
            .servers
            .iter()
            .position(|s| s.fd == fd && s.listening.is_none())
            .ok_or_else(|| io::Error::other("a listener the scenario did not make"))?;
        self.by_listener.insert(id, s);
        self.servers[s].listening = Some(id);
        self.servers[s].listener = Some(listener);
        Ok(())
    }

    pub(super) fn unlisten(&mut self, id: ListenerId) {
        if let Some(s) = self.by_listener.remove(&id) {
            self.servers[s].listening = None;
            self.servers[s].listener = None;
        }
    }

    pub(super) fn accept(&mut self, id: ListenerId) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        let s = *self.by_listener.get(&id)?;
        let p = self.servers[s].backlog.pop_front()?;
        let stream: TcpStream = unbound_socket().into();
        self.by_fd.insert(raw_fd(&stream), p);
        Some(Ok((stream, self.peers[p].addr)))
    }

    pub(super) fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        let p = self
            .by_fd
            .remove(&raw_fd(&stream))
            .ok_or_else(|| io::Error::other("a stream the simulation did not accept"))?;
        self.peers[p].slot = Some(slot);
        self.by_slot.insert(slot, p);
        self.handles.insert(slot, stream.into());
        Ok(())
    }

    pub(super) fn connect(
        &mut self,
        slot: Slot,
        socket: socket2::Socket,
        addr: SocketAddr,
    ) -> io::Result<()> {
        let p = *self
            .by_addr
            .get(&addr)
            .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        self.peers[p].slot = Some(slot);
        self.by_slot.insert(slot, p);
        self.handles.insert(slot, socket);
        let now = self.clock.now();
        let at = now + ms(self.rng.range(0, 500));
        let outcome = match self.rng.below(10) {
            0..=5 => {
                self.at(at, Event::Connect(p));
                Some((at, None))
            }
            6..=7 => Some((at, Some(io::ErrorKind::ConnectionRefused))),
            // No answer ever: the core's connect timeout must end it.
            _ => None,
        };
        self.connects.insert(slot, outcome);
        Ok(())
    }

    pub(super) fn connected(&mut self, slot: Slot) -> Option<io::Result<()>> {
        let (at, error) = (*self.connects.get(&slot)?)?;
        if at > self.clock.now() {
            return None;
        }
        self.connects.remove(&slot);
        Some(match error {
            None => Ok(()),
            Some(kind) => Err(io::Error::from(kind)),
        })
    }

    pub(super) fn read(&mut self, slot: Slot, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.peer_of(slot)?;
        let peer = &mut self.peers[p];
        if peer.reset {
            return Err(io::Error::from(io::ErrorKind::ConnectionReset));
        }
        if !peer.to_core.is_empty() {
            let n = buf.len().min(peer.to_core.len());
            for (dst, src) in buf.iter_mut().zip(peer.to_core.drain(..n)) {
                *dst = src;
            }
            return Ok(n);
        }
        if peer.eof_out {
            return Ok(0);
        }
        Err(io::Error::from(io::ErrorKind::WouldBlock))
    }

    pub(super) fn write(&mut self, slot: Slot, data: &[u8]) -> io::Result<usize> {
        let p = self.peer_of(slot)?;
        let now = self.clock.now();
        // Now and then the peer is found gone just as the core writes to it.
        if self.rng.chance(1) {
            self.peer_reset(p, now);
        }
        let peer = &mut self.peers[p];
        if peer.reset {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let free = peer.window - peer.unread;
        if free == 0 {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let n = data.len().min(free);
        peer.unread += n;
        self.arrive(p, &data[..n], now);
        let peer = &mut self.peers[p];
        if !peer.stalled && !peer.read_scheduled {
            peer.read_scheduled = true;
            let at = now + ms(self.rng.range(0, 50));
            self.at(at, Event::Read(p));
        }
        Ok(n)
    }

    /// Bytes from the core reach peer `p`: they must continue what the handler sent.
    fn arrive(&mut self, p: usize, data: &[u8], now: Instant) {
        let peer = &mut self.peers[p];
        let ordinal = peer.ordinal;
        let mut problems = Vec::new();
        if !peer.framed {
            if peer.got + data.len() as u64 > peer.accepted {
                problems.push(format!(
                    "peer of #{ordinal} received {} bytes, more than the {} sent to it",
                    peer.got + data.len() as u64,
                    peer.accepted
                ));
            } else if let Some(i) = pattern_mismatch(peer.out_key, peer.got, data) {
                problems.push(format!(
                    "peer of #{ordinal} received a wrong byte at offset {} (lost, repeated or reordered bytes)",
                    peer.got + i as u64
                ));
            }
            peer.got += data.len() as u64;
        } else {
            peer.got += data.len() as u64;
            peer.decode.extend_from_slice(data);
            while peer.decode.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([peer.decode[0], peer.decode[1]]));
                if peer.decode.len() < 2 + len {
                    break;
                }
                let payload: Vec<u8> = peer.decode.drain(..2 + len).skip(2).collect();
                match peer.frames_in.pop_front() {
                    Some(expected) if expected == len => {}
                    other => problems.push(format!(
                        "peer of #{ordinal} received a frame of {len} bytes, expected {other:?}"
                    )),
                }
                if pattern_mismatch(peer.out_key, peer.got_payload, &payload).is_some() {
                    problems.push(format!(
                        "peer of #{ordinal} received a frame with wrong bytes at payload offset {}",
                        peer.got_payload
                    ));
                }
                peer.got_payload += len as u64;
            }
        }
        self.log.event(now, "peer-got", p as u64, data.len() as u64);
        for problem in problems {
            self.log.violation(now, problem);
        }
    }

    pub(super) fn shutdown_write(&mut self, slot: Slot) {
        let Ok(p) = self.peer_of(slot) else {
            return;
        };
        let now = self.clock.now();
        self.log.event(now, "peer-sees-eof", p as u64, 0);
        // The core ends its stream only after a graceful close drained the queue: every
        // byte the handler got accepted has reached the peer by now.
        let peer = &self.peers[p];
        let complete = if peer.framed {
            peer.frames_in.is_empty() && peer.decode.is_empty()
        } else {
            peer.got == peer.accepted
        };
        if !complete {
            let message = format!(
                "the core ended #{}'s stream (a graceful close) before everything queued was written: the peer has {} of {} bytes ({} frames missing)",
                peer.ordinal,
                peer.got,
                peer.accepted,
                peer.frames_in.len()
            );
            self.log.violation(now, message);
        }
        self.peers[p].core_eof = true;
        if !self.peers[p].eof_out && self.rng.chance(80) {
            let at = now + ms(self.rng.range(0, 300));
            self.at(at, Event::Shutdown(p));
        }
    }

    pub(super) fn close(&mut self, slot: Slot) {
        self.handles.remove(&slot);
        self.connects.remove(&slot);
        if let Some(p) = self.by_slot.remove(&slot) {
            let peer = &mut self.peers[p];
            peer.gone = true;
            peer.slot = None;
        }
    }

    /// The peer's connection exists: it starts its plan.
    pub(super) fn peer_up(&mut self, p: usize, now: Instant) {
        self.peers[p].up = true;
        if self.peers[p].plan > 0 {
            let at = now + ms(self.rng.range(0, 100));
            self.at(at, Event::Write(p));
        } else if self.peers[p].plan_eof {
            let at = now + ms(self.rng.range(0, 300));
            self.at(at, Event::Shutdown(p));
        }
        if self.rng.chance(10) {
            let at = now + ms(self.rng.range(0, 5_000));
            self.at(at, Event::Reset(p));
        }
    }

    pub(super) fn peer_write(&mut self, p: usize, now: Instant) {
        let peer = &self.peers[p];
        if peer.gone || peer.reset || peer.eof_out || peer.written >= peer.plan {
            return;
        }
        if peer.to_core.len() > PEER_BACKLOG {
            let at = now + ms(self.rng.range(1, 100));
            self.at(at, Event::Write(p));
            return;
        }
        let left = (peer.plan - peer.written) as usize;
        let len = self
            .rng
            .size(1, if peer.framed { 300 } else { 500 })
            .min(left);
        let peer = &mut self.peers[p];
        let bytes = pattern(peer.in_key, peer.written, len);
        if peer.framed {
            peer.to_core.extend(frame(&bytes));
            peer.frames_out.push_back(len);
        } else {
            peer.to_core.extend(bytes);
        }
        peer.written += len as u64;
        let (more, eof) = (peer.written < peer.plan, peer.plan_eof);
        self.log.event(now, "peer-write", p as u64, len as u64);
        if self.rng.chance(2) {
            // A reset in the middle of the stream, right behind what was just written.
            self.peer_reset(p, now);
            return;
        }
        if more {
            let at = now + ms(self.rng.range(0, 200));
            self.at(at, Event::Write(p));
        } else if eof {
            let at = now + ms(self.rng.range(0, 300));
            self.at(at, Event::Shutdown(p));
        }
    }

    pub(super) fn peer_read(&mut self, p: usize, now: Instant) {
        let peer = &mut self.peers[p];
        peer.read_scheduled = false;
        if peer.unread > 0 {
            self.log
                .event(now, "peer-read", p as u64, peer.unread as u64);
            peer.unread = 0;
        }
    }

    pub(super) fn peer_shutdown(&mut self, p: usize, now: Instant) {
        let peer = &mut self.peers[p];
        if !peer.eof_out && !peer.reset {
            peer.eof_out = true;
            self.log.event(now, "peer-shutdown", p as u64, 0);
        }
    }

    pub(super) fn peer_reset(&mut self, p: usize, now: Instant) {
        let peer = &mut self.peers[p];
        if !peer.gone && !peer.reset {
            peer.reset = true;
            peer.to_core.clear();
            self.log.event(now, "peer-reset", p as u64, 0);
        }
    }

    /// Whether the peer is at the far end of a connection the handler was told of.
    pub(super) fn live(&self, p: usize) -> bool {
        self.peers[p].connected && !self.peers[p].disconnected
    }

    /// The side a peer belongs to, for stop checks.
    pub(super) fn side_of(&self, p: usize) -> Side {
        self.peers[p].side
    }
}

//! Where a received byte goes: from the driver's `Received` through the connection's
//! stack to `on_data`, and reading paused and resumed.
//!
//! One path for every connection. The stack decodes the bytes into the inbound queue,
//! except an empty stack, whose bytes go to the handler straight from the driver's buffer
//! (no copy). Delivery stops after the chunk being delivered when the user pauses reads;
//! what is left waits in the inbound queue, behind a cursor, until reads resume.

use super::callback::{self, Outcome};
use super::phase::Phase;
use super::stack::Decoded;
use super::state::{Op, State};
use crate::conn::CloseMode;
use crate::driver::{Flow, Slot, WriteNow};
use crate::error::NetworkError;
use crate::layer::Piece;
use crate::metrics::Stat;
use crate::write_through;
use std::io::{self, IoSlice};
use std::sync::Arc;

impl State {
    pub(super) fn on_received(
        &mut self,
        slot: Slot,
        result: io::Result<&[u8]>,
        direct: Option<&mut dyn WriteNow>,
    ) -> Flow {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Flow::Pause;
        };
        if conn.phase == Phase::Lingering {
            return self.on_lingering_received(slot, result);
        }
        if conn.phase != Phase::Open {
            // Draining or closing: nothing more is delivered.
            return Flow::Pause;
        }
        match result {
            Ok([]) => {
                conn.read_done = true;
                conn.receiving = false;
                if self.handshaking(slot) {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the layer handshake",
                    );
                    self.peer_left_handshake(slot, e, CloseMode::Flush);
                    return Flow::Pause;
                }
                let ended = self.conns.get_mut(slot).map(|c| c.stack.end_of_stream());
                if let Some(Err(e)) = ended {
                    self.end_of_stream_refused(slot, e);
                }
                self.begin_close(slot, CloseMode::Flush);
                Flow::Pause
            }
            Err(e) => {
                conn.read_done = true;
                conn.receiving = false;
                if self.handshaking(slot) {
                    self.peer_left_handshake(slot, e, CloseMode::Abort);
                    return Flow::Pause;
                }
                // A reset is reported too (mill-net's `Io(ConnectionReset)`), before the
                // `on_disconnect` that follows.
                self.report(slot, NetworkError::Io(e.into()));
                self.begin_close(slot, CloseMode::Abort);
                Flow::Pause
            }
            Ok(data) => {
                // Not `self.now`: that was taken before the poll, which may have slept
                // for as long as the idle timeout itself before these bytes came.
                conn.last_active = self.shared.clock().now();
                conn.service.count(Stat::BytesIn, data.len() as u64);
                self.receive(slot, data, direct)
            }
        }
    }

    /// Bytes from the socket: through the stack, then to the handler.
    fn receive(&mut self, slot: Slot, data: &[u8], direct: Option<&mut dyn WriteNow>) -> Flow {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Flow::Pause;
        };
        let step = match conn
            .stack
            .decode(&conn.shared, data, &mut conn.inbound.pieces)
        {
            Decoded::Through if conn.shared.read_paused() => {
                // Paused by a callback of this same poll (`on_writable`, `on_drained`, an
                // earlier delivery's): nothing more reaches `on_data` until reads resume.
                conn.inbound.pieces.push_stream(data);
                conn.receiving = false;
                return Flow::Pause;
            }
            Decoded::Through if conn.inbound.is_empty() => {
                return self.deliver_through(slot, data, direct)
            }
            Decoded::Through => {
                // Behind bytes still waiting (a driver that delivered during a pause):
                // they stay in order.
                conn.inbound.pieces.push_stream(data);
                return self.deliver_queued(slot);
            }
            Decoded::Broken => return Flow::Pause,
            Decoded::Step(step) => step,
        };
        if step.wrote {
            self.schedule_flush(slot);
        }
        if step.ready {
            self.ready(slot);
        }
        // What was decoded before an error still reaches the handler.
        let flow = match self.conns.get(slot) {
            Some(c) if c.phase == Phase::Open && c.established => self.deliver_queued(slot),
            // Still handshaking: keep reading.
            Some(c) if c.phase == Phase::Open && !c.shared.is_closed() => Flow::Continue,
            _ => Flow::Pause,
        };
        if let Err(e) = step.result {
            self.layer_failed(slot, e, CloseMode::Flush);
            return Flow::Pause;
        }
        flow
    }

    /// [`deliver`](Self::deliver)s `data` with a window open on it (`write_through`)
    /// when the driver offers to write now and nothing of the connection's is unsent, then
    /// writes what the handler sent back out of `data`, from `data`.
    fn deliver_through(
        &mut self,
        slot: Slot,
        data: &[u8],
        direct: Option<&mut dyn WriteNow>,
    ) -> Flow {
        let Some(direct) = direct else {
            return self.deliver(slot, data);
        };
        match self.conns.get(slot) {
            Some(c) if !c.in_flight && c.sent == c.sending.len() && c.stack.is_empty() => {
                write_through::open(Arc::as_ptr(&c.shared) as usize, data);
            }
            _ => return self.deliver(slot, data),
        }
        let flow = self.deliver(slot, data);
        let mut ranges = std::mem::take(&mut self.through);
        let total = write_through::close(&mut ranges);
        if total > 0 {
            self.write_through(slot, data, &ranges, total, direct);
        }
        self.through = ranges;
        // The callbacks of the write (`on_writable`, `on_drained`) may have closed the
        // connection or paused its reads.
        match self.conns.get_mut(slot) {
            Some(c) if c.phase == Phase::Open && !c.shared.is_closed() => {
                if c.shared.read_paused() {
                    c.receiving = false;
                    return Flow::Pause;
                }
                flow
            }
            _ => Flow::Pause,
        }
    }

    /// Writes the `ranges` of `data` the handler sent back during a delivery (`total`
    /// bytes, counted as queued) through `direct`, and queues what the socket did not
    /// take in front of anything queued since. A connection closed meanwhile gets them
    /// all queued, for its close to treat as any queued bytes.
    fn write_through(
        &mut self,
        slot: Slot,
        data: &[u8],
        ranges: &[(usize, usize)],
        total: usize,
        direct: &mut dyn WriteNow,
    ) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let mut written = 0;
        if conn.phase == Phase::Open && !conn.in_flight && !conn.shared.is_closed() {
            const MAX: usize = 8;
            let mut bufs = [IoSlice::new(&[]); MAX];
            let n = ranges.len().min(MAX);
            for (buf, &(at, len)) in bufs.iter_mut().zip(ranges) {
                *buf = IoSlice::new(&data[at..at + len]);
            }
            // An error is left for the ordinary send of the same bytes to report.
            written = direct.write_now(&bufs[..n]).unwrap_or(0);
            conn.service
                .count(Stat::BytesWrittenThrough, written as u64);
        }
        if written < total {
            let mut q = conn.shared.lock();
            // Frames queued meanwhile (rarely any) go behind; an empty queue keeps its
            // allocation.
            let behind = std::mem::take(&mut q.pending);
            let (mut front, behind) = if behind.is_empty() {
                (behind, None)
            } else {
                (
                    Vec::with_capacity(total - written + behind.len()),
                    Some(behind),
                )
            };
            let mut skip = written;
            for &(at, len) in ranges {
                let cut = skip.min(len);
                skip -= cut;
                front.extend_from_slice(&data[at + cut..at + len]);
            }
            if let Some(behind) = behind {
                front.extend_from_slice(&behind);
            }
            q.pending = front;
            q.scheduled = true;
            drop(q);
            self.schedule_flush(slot);
        }
        if written > 0 {
            self.wrote(slot, written);
        }
    }

    /// Hands `data` to `on_data` in chunks of at most the service's `buffer_size`, straight
    /// from the driver's buffer.
    fn deliver(&mut self, slot: Slot, data: &[u8]) -> Flow {
        let mut rest = data;
        while !rest.is_empty() {
            let Some(conn) = self.conns.get_mut(slot) else {
                return Flow::Pause;
            };
            let n = rest.len().min(conn.service.config.chunk);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let id = conn.id();
            let outcome = callback::call(|| conn.service.handler.on_data(&conn.ctx, id, chunk));
            if self.after_on_data(slot, outcome, rest) == Flow::Pause {
                return Flow::Pause;
            }
        }
        Flow::Continue
    }

    /// Hands the pieces waiting in the inbound queue to `on_data`: a frame whole, a stream
    /// run in chunks of at most the service's `buffer_size`. Stops (keeping the rest) when
    /// reads are paused.
    pub(super) fn deliver_queued(&mut self, slot: Slot) -> Flow {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return Flow::Pause;
            };
            if conn.phase != Phase::Open || conn.shared.is_closed() {
                return Flow::Pause;
            }
            // Paused before the first piece too: `on_connect` may pause reads when a
            // layer's handshake completes inside a read, before what followed it.
            if conn.shared.read_paused() {
                conn.receiving = false;
                return Flow::Pause;
            }
            let conn = &*conn;
            let inbound = &conn.inbound;
            let Some(piece) = inbound.pieces.get(inbound.next) else {
                if let Some(conn) = self.conns.get_mut(slot) {
                    if !conn.inbound.is_empty() {
                        conn.inbound.pieces.clear();
                        conn.inbound.next = 0;
                        conn.inbound.offset = 0;
                    }
                }
                return Flow::Continue;
            };
            let (chunk, next, offset) = match piece {
                Piece::Frame(frame) => (frame, inbound.next + 1, 0),
                Piece::Stream(bytes) => {
                    let rest = &bytes[inbound.offset..];
                    let n = rest.len().min(conn.service.config.chunk);
                    if n == rest.len() {
                        (rest, inbound.next + 1, 0)
                    } else {
                        (&rest[..n], inbound.next, inbound.offset + n)
                    }
                }
            };
            let id = conn.id();
            let outcome = callback::call(|| conn.service.handler.on_data(&conn.ctx, id, chunk));
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.inbound.next = next;
                conn.inbound.offset = offset;
            }
            // The pieces not yet delivered stay in the queue, behind the cursor.
            if self.after_on_data(slot, outcome, &[]) == Flow::Pause {
                return Flow::Pause;
            }
        }
    }

    /// Settles an `on_data` call and says whether delivery may go on. A failed or
    /// panicked handler is reported and its connection closed (see `after_callback`);
    /// once the connection is closing nothing more is delivered; once reads are paused,
    /// receiving stops and `rest`, the driver's bytes not yet delivered, waits in the
    /// inbound queue.
    fn after_on_data(&mut self, slot: Slot, outcome: Outcome, rest: &[u8]) -> Flow {
        if !self.after_callback(slot, outcome) {
            return Flow::Pause;
        }
        let Some(conn) = self.conns.get_mut(slot) else {
            return Flow::Pause;
        };
        if conn.phase != Phase::Open || conn.shared.is_closed() {
            // Closed from the callback: nothing more is delivered.
            return Flow::Pause;
        }
        if conn.shared.read_paused() {
            if !rest.is_empty() {
                conn.inbound.pieces.push_stream(rest);
            }
            conn.receiving = false;
            return Flow::Pause;
        }
        Flow::Continue
    }

    pub(super) fn pause(&mut self, slot: Slot) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.receiving && conn.shared.read_paused() {
            conn.receiving = false;
            self.ops.push(Op::PauseRecv(slot));
        }
    }

    pub(super) fn resume(&mut self, slot: Slot) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        // Closed meanwhile (say by the handler, during an earlier resume of the same turn):
        // nothing more is delivered, and receiving is not armed again.
        if conn.phase != Phase::Open || conn.read_done || conn.receiving || conn.shared.is_closed()
        {
            return;
        }
        if conn.shared.read_paused() {
            return; // Paused again since.
        }
        if !conn.inbound.is_empty() && self.deliver_queued(slot) == Flow::Pause {
            return;
        }
        self.start_receiving(slot);
    }
}

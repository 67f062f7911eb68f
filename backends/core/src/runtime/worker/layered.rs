//! Connections with layers: the loop's half of [`crate::layer`].
//!
//! A layered connection keeps a [`Layered`] next to its loop entry. Everything here runs on
//! the owning loop, so the layer stack needs no lock:
//!
//! - **Inbound**, `Received` bytes go through the stack; pieces for the handler wait in
//!   `app` (with a cursor, so a pause in the middle resumes where it stopped).
//! - **Outbound**, senders on any thread queue frames *raw* in the shared queue, with their
//!   lengths in `OutQueue::frames`. The loop encodes them at flush time, once the stack is
//!   ready; until then they are held there whole. Bytes the stack produces itself
//!   (handshakes, replies, `finish`) wait in `wire` until the next flush.
//! - **Accounting**: the shared queue's `queued` counts raw frames still in `pending`, plus
//!   the bytes in `wire`, plus the unsent part of the send in flight, so the watermarks,
//!   `on_drained`, `on_writable` and the drain-before-close logic work unchanged.

use super::{Conn, Phase, State};
use crate::driver::{Flow, Slot};
use crate::error::NetworkError;
use crate::inbox::CloseMode;
use crate::layer::{panic_of, Frames, Layer, LayerStack, Piece};
use crate::metrics::Stat;
use crate::runtime::callback;
use crate::runtime::timer::{deadline_after, TimerKind};
use std::io;

/// The loop's state for a connection with layers.
pub(super) struct Layered {
    stack: LayerStack,
    /// An outbound connection: a failure before the handshake is a connect failure.
    client: bool,
    /// A layer failed: nothing more is decoded, and no layer's `finish` runs.
    broken: bool,
    /// Encoding failed: nothing more is encoded; raw frames are dropped.
    failed: bool,
    /// The graceful close encoded the last frames and ran `finish`.
    sealed: bool,
    /// Bytes for the socket, not yet moved to the connection's send buffer.
    pub(super) wire: Vec<u8>,
    /// Raw frames taken from the shared queue, and their lengths.
    raw: Vec<u8>,
    lens: Vec<usize>,
    /// Decoded pieces for the handler, delivered from `next` (and `offset` bytes into it).
    app: Frames,
    next: usize,
    offset: usize,
}

impl Layered {
    /// The peer ended the stream: asks the layers whether it may end here (see
    /// [`Layer::end_of_stream`]). Nothing is asked once a layer failed.
    pub(super) fn end_of_stream(&mut self) -> io::Result<()> {
        if self.broken {
            return Ok(());
        }
        self.stack.end_of_stream()
    }

    pub(super) fn new(layers: Vec<Box<dyn Layer>>, client: bool) -> Box<Self> {
        Box::new(Self {
            stack: LayerStack::new(layers),
            client,
            broken: false,
            failed: false,
            sealed: false,
            wire: Vec::new(),
            raw: Vec::new(),
            lens: Vec::new(),
            app: Frames::new(),
            next: 0,
            offset: 0,
        })
    }

    /// Whether frames can be encoded now.
    fn ready(&mut self) -> bool {
        !self.failed && self.stack.is_ready() && self.stack.poisoned().is_ok()
    }

    /// Takes the raw frames queued in `conn`'s shared queue and encodes them into `wire`,
    /// once the stack is ready (dropping them if it failed). Keeps the accounting.
    fn encode_pending(&mut self, conn: &crate::conn::ConnShared) -> io::Result<()> {
        let ready = self.ready();
        {
            let mut q = conn.lock();
            if !ready && !self.failed {
                return Ok(()); // Held until the handshake is done.
            }
            if q.pending.is_empty() {
                return Ok(());
            }
            std::mem::swap(&mut q.pending, &mut self.raw);
            std::mem::swap(&mut q.frames, &mut self.lens);
        }
        let before = self.wire.len();
        let mut result = Ok(());
        if ready {
            let mut at = 0;
            for &len in &self.lens {
                if let Err(e) = self.stack.encode(&self.raw[at..at + len], &mut self.wire) {
                    result = Err(e);
                    break;
                }
                at += len;
            }
        }
        let (added, removed) = (self.wire.len() - before, self.raw.len());
        self.raw.clear();
        self.lens.clear();
        account(conn, added, removed);
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

/// `queued` gains `added` bytes (in `wire`) and loses `removed` (raw bytes taken).
fn account(conn: &crate::conn::ConnShared, added: usize, removed: usize) {
    if added == removed {
        return;
    }
    let mut q = conn.lock();
    q.queued = q.queued + added - removed;
    q.peak = q.peak.max(q.queued);
}

/// Before a send is issued: refills `conn.sending` (empty) with what the stack has for the
/// socket, encoding the queued frames first. An error is a failed layer: what was encoded
/// before it is still there to send.
pub(super) fn refill(conn: &mut Conn) -> io::Result<()> {
    let Some(layered) = conn.layers.as_deref_mut() else {
        return Ok(());
    };
    conn.shared.lock().scheduled = false;
    let result = layered.encode_pending(&conn.shared);
    std::mem::swap(&mut layered.wire, &mut conn.sending);
    result
}

/// A graceful close starts: encode the last frames (no more can come: the queue is
/// closed) and let every layer say goodbye. Returns the bytes now queued, and a layer's
/// error if one failed.
pub(super) fn seal(conn: &mut Conn) -> (usize, Option<io::Error>) {
    let mut error = None;
    if let Some(layered) = conn.layers.as_deref_mut() {
        if !layered.sealed {
            layered.sealed = true;
            let ready = layered.ready();
            if let Err(e) = layered.encode_pending(&conn.shared) {
                error = Some(e);
            }
            if !ready && !layered.failed {
                // Frames held for a handshake that will never finish: nothing will send
                // them.
                layered.failed = true;
                if let Err(e) = layered.encode_pending(&conn.shared) {
                    error.get_or_insert(e);
                }
            }
            if ready && error.is_none() && !layered.broken {
                let before = layered.wire.len();
                if let Err(e) = layered.stack.finish(&mut layered.wire) {
                    error = Some(e);
                }
                account(&conn.shared, layered.wire.len() - before, 0);
            }
        }
    }
    (conn.shared.lock().queued, error)
}

impl State {
    /// Whether `slot` is a layered connection whose handshake has not finished.
    pub(super) fn handshaking(&self, slot: Slot) -> bool {
        matches!(self.conns.get(slot.index()), Some(Some(c)) if c.layers.is_some() && !c.established)
    }

    /// TCP is up on a layered connection: start reading and the layers' handshakes;
    /// `on_connect` waits until every layer is ready.
    pub(super) fn open_layered(&mut self, slot: Slot) {
        let now = self.now;
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        conn.phase = Phase::Open;
        let id = conn.id();
        // The idle timeout covers the handshake too, so a peer that never finishes it
        // does not hold the connection forever.
        if let Some(idle) = conn.service.config.idle_timeout {
            self.timers
                .add(deadline_after(now, idle), TimerKind::Idle(slot, id));
        }
        // The idle timeout alone does not bound the handshake: a peer that trickles one
        // byte at a time keeps it from firing. An accepted connection gets a deadline of
        // its own (a client's connect timeout covers its handshake).
        let client = conn.layers.as_ref().is_some_and(|l| l.client);
        if let (false, Some(limit)) = (client, conn.service.config.handshake_timeout) {
            self.timers
                .add(deadline_after(now, limit), TimerKind::Handshake(slot, id));
        }
        let layered = conn.layers.as_deref_mut().expect("a layered connection");
        let before = layered.wire.len();
        let result = layered.stack.advance(&mut layered.wire);
        let added = layered.wire.len() - before;
        let ready = result.is_ok() && layered.stack.take_ready();
        // `is_ready` may have panicked.
        let result = result.and_then(|()| layered.stack.poisoned());
        account(&conn.shared, added, 0);
        if added > 0 {
            self.schedule_flush(slot);
        }
        if let Err(e) = result {
            self.layer_failed(slot, e, CloseMode::Flush);
            return;
        }
        if !conn_read_paused(self, slot) {
            if let Some(conn) = self.conns[slot.index()].as_mut() {
                conn.receiving = true;
                self.ops.push(super::Op::Recv(slot));
            }
        }
        if ready {
            self.layers_ready(slot);
        }
    }

    /// An accepted connection's handshake deadline came: if its layers are still
    /// handshaking, report `Io(TimedOut)` and abort it.
    pub(super) fn handshake_expired(&mut self, slot: Slot, id: crate::id::ConnectionId) {
        let Some(conn) = self.conns[slot.index()].as_ref() else {
            return;
        };
        if conn.id() != id || conn.phase != Phase::Open || !self.handshaking(slot) {
            return;
        }
        let limit = conn.service.config.handshake_timeout.unwrap_or_default();
        let e = io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the layer handshake did not finish within {limit:?}"),
        );
        self.layer_failed(slot, e, CloseMode::Abort);
    }

    /// Every layer is ready: `on_connect`, then the frames held meanwhile go out.
    fn layers_ready(&mut self, slot: Slot) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        if conn.layers.as_ref().is_some_and(|l| l.client) && !conn.counted {
            // Only now is the client connected (`is_connected`, `connection_count`).
            conn.service.try_admit();
            conn.counted = true;
        }
        conn.established = true;
        let outcome = super::announce_connect(conn);
        if !self.after_callback(slot, outcome) {
            return;
        }
        self.schedule_flush(slot);
    }

    /// Bytes from the socket on a layered connection: through the stack, then to the
    /// handler.
    pub(super) fn receive_layered(&mut self, slot: Slot, data: &[u8]) -> Flow {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return Flow::Pause;
        };
        let layered = conn.layers.as_deref_mut().expect("a layered connection");
        if layered.broken {
            return Flow::Pause;
        }
        let before = layered.wire.len();
        let result = layered
            .stack
            .decode(data, &mut layered.app, &mut layered.wire);
        let added = layered.wire.len() - before;
        let ready = layered.stack.take_ready();
        // `is_ready` may have panicked.
        let result = result.and_then(|()| layered.stack.poisoned());
        account(&conn.shared, added, 0);
        if added > 0 {
            self.schedule_flush(slot);
        }
        if ready {
            self.layers_ready(slot);
        }
        // What was decoded before an error still reaches the handler.
        let flow = match self.conns[slot.index()].as_ref() {
            Some(c) if c.phase == Phase::Open && c.established => self.deliver_layered(slot),
            // Still handshaking: keep reading.
            Some(c) if c.phase == Phase::Open && !c.shared.is_closed() => Flow::Continue,
            _ => Flow::Pause,
        };
        if let Err(e) = result {
            self.layer_failed(slot, e, CloseMode::Flush);
            return Flow::Pause;
        }
        flow
    }

    /// Hands the decoded pieces waiting for the handler to `on_data`: a frame whole, a
    /// stream run in chunks of at most the service's `buffer_size`. Stops (keeping the
    /// rest) when reads are paused.
    pub(super) fn deliver_layered(&mut self, slot: Slot) -> Flow {
        loop {
            let Some(conn) = self.conns[slot.index()].as_ref() else {
                return Flow::Pause;
            };
            let Some(layered) = conn.layers.as_deref() else {
                return Flow::Continue;
            };
            let Some(piece) = layered.app.get(layered.next) else {
                let layered = self.conns[slot.index()]
                    .as_mut()
                    .and_then(|c| c.layers.as_deref_mut())
                    .expect("checked above");
                layered.app.clear();
                layered.next = 0;
                layered.offset = 0;
                return Flow::Continue;
            };
            let (chunk, next, offset) = match piece {
                Piece::Frame(frame) => (frame, layered.next + 1, 0),
                Piece::Stream(bytes) => {
                    let rest = &bytes[layered.offset..];
                    let n = rest.len().min(conn.service.config.chunk);
                    if n == rest.len() {
                        (rest, layered.next + 1, 0)
                    } else {
                        (&rest[..n], layered.next, layered.offset + n)
                    }
                }
            };
            let id = conn.id();
            let outcome = callback::call(|| conn.service.handler.on_data(&conn.ctx, id, chunk));
            if let Some(layered) = self.conns[slot.index()]
                .as_mut()
                .and_then(|c| c.layers.as_deref_mut())
            {
                layered.next = next;
                layered.offset = offset;
            }
            // The pieces not yet delivered stay in `app`, behind the cursor: no stash.
            if self.after_on_data(slot, outcome, &[]) == Flow::Pause {
                return Flow::Pause;
            }
        }
    }

    /// A layer failed (or the peer left during the handshake): report it, then close.
    pub(super) fn layer_failed(&mut self, slot: Slot, error: io::Error, mode: CloseMode) {
        let Some(conn) = self.conns[slot.index()].as_mut() else {
            return;
        };
        let Some(layered) = conn.layers.as_deref_mut() else {
            return;
        };
        // Frames queued before the failure are still encoded and written (unless it was
        // the encoding that failed), but nothing more is decoded.
        layered.broken = true;
        if let Some(panic) = panic_of(&error) {
            // A panicking layer is treated like a panicking handler: nothing more of the
            // stack runs, the connection is aborted.
            let message = panic.to_string();
            layered.failed = true;
            conn.service.count(Stat::HandlerPanic, 1);
            self.report(slot, NetworkError::HandlerPanic(message));
            self.begin_close(slot, CloseMode::Abort);
            return;
        }
        let error = if layered.client && !conn.established {
            NetworkError::Connect(error.into())
        } else {
            NetworkError::Io(error.into())
        };
        self.report(slot, error);
        self.begin_close(slot, mode);
    }
}

/// How an error of a layer stack is reported: a panic as `HandlerPanic`, the rest as `Io`.
pub(super) fn network_error(error: io::Error) -> NetworkError {
    match panic_of(&error) {
        Some(panic) => NetworkError::HandlerPanic(panic.to_string()),
        None => NetworkError::Io(error.into()),
    }
}

impl State {
    /// A layer refused the peer's end of stream ([`Layer::end_of_stream`]): report it. A
    /// panic aborts the connection; an error lets it close as it would anyway.
    pub(super) fn end_of_stream_refused(&mut self, slot: Slot, error: io::Error) {
        if panic_of(&error).is_some() {
            self.layer_failed(slot, error, CloseMode::Abort);
        } else {
            self.report(slot, NetworkError::Io(error.into()));
        }
    }

    /// The graceful close's `seal` failed: report it; a panic turns the close into an
    /// abort (returned).
    pub(super) fn seal_failed(
        &mut self,
        slot: Slot,
        error: io::Error,
        mode: CloseMode,
    ) -> CloseMode {
        let mode = match panic_of(&error) {
            Some(_) => {
                if let Some(conn) = self.conns[slot.index()].as_ref() {
                    conn.service.count(Stat::HandlerPanic, 1);
                }
                CloseMode::Abort
            }
            None => mode,
        };
        self.report(slot, network_error(error));
        mode
    }
    /// The peer left (end of stream, or a read error) before every layer was ready: no
    /// `on_connect` ran, so no `on_disconnect` will tell; report it as `Io(e)` (an
    /// `UnexpectedEof` for an end of stream), client or server alike, then close.
    pub(super) fn peer_left_handshake(&mut self, slot: Slot, error: io::Error, mode: CloseMode) {
        if let Some(layered) = self.conns[slot.index()]
            .as_mut()
            .and_then(|c| c.layers.as_deref_mut())
        {
            layered.broken = true;
        }
        self.report(slot, NetworkError::Io(error.into()));
        self.begin_close(slot, mode);
    }
}

fn conn_read_paused(state: &State, slot: Slot) -> bool {
    match state.conns.get(slot.index()) {
        Some(Some(c)) => c.shared.read_paused(),
        _ => true,
    }
}

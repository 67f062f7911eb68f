//! The loop's side of a connection's layer stack ([`crate::layer`]).
//!
//! Every connection has a [`Stack`]; a plain connection's is empty. The receive and send
//! paths always go through it, and an empty stack is the identity at no cost: it holds no
//! allocation, received bytes reach the handler in the buffer the driver lent
//! ([`Decoded::Through`]), and queued frames go to the socket in the buffer they were
//! queued in (one swap, no copy). Everything here runs on the owning loop, so the layers
//! need no lock:
//!
//! - **Inbound**, `Received` bytes go through the layers; pieces for the handler wait in
//!   the connection's inbound queue (`receive.rs`), with a cursor, so a pause in the
//!   middle resumes where it stopped.
//! - **Outbound**, senders on any thread queue frames *raw* in the shared queue, with their
//!   lengths in `OutQueue::frames`. The loop encodes them at flush time, once the layers
//!   are ready; until then they are held there whole. Bytes the layers produce themselves
//!   (handshakes, replies, `finish`) wait in `wire` until the next flush.
//! - **Accounting**: the shared queue's `queued` counts raw frames still in `pending`, plus
//!   the bytes in `wire`, plus the unsent part of the send in flight, so the watermarks,
//!   `on_drained`, `on_writable` and the drain-before-close logic work unchanged.

use crate::conn::ConnShared;
use crate::layer::{Frames, Layer, LayerStack};
use std::io;

/// A connection's layers, as the loop drives them; empty (no allocation) for plain TCP.
pub(super) struct Stack(Option<Box<Layered>>);

/// The state of a non-empty stack.
struct Layered {
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
    wire: Vec<u8>,
    /// Raw frames taken from the shared queue, and their lengths.
    raw: Vec<u8>,
    lens: Vec<usize>,
}

/// What one step of the layers (start, decode) did.
pub(super) struct Step {
    /// Bytes for the socket were produced: the connection needs a flush.
    pub(super) wrote: bool,
    /// Every layer became ready just now: the connection is established.
    pub(super) ready: bool,
    /// A layer failed; what it produced before is kept.
    pub(super) result: io::Result<()>,
}

/// What decoding received bytes gave.
pub(super) enum Decoded {
    /// No layers: the bytes go to the handler as they are.
    Through,
    /// A layer failed before: the bytes are dropped, receiving stops.
    Broken,
    /// The layers took the bytes; pieces for the handler are in the inbound queue.
    Step(Step),
}

impl Stack {
    /// The stack of `layers` (bottom first); empty if there are none.
    pub(super) fn new(layers: Vec<Box<dyn Layer>>, client: bool) -> Self {
        if layers.is_empty() {
            return Self(None);
        }
        Self(Some(Box::new(Layered {
            stack: LayerStack::new(layers),
            client,
            broken: false,
            failed: false,
            sealed: false,
            wire: Vec::new(),
            raw: Vec::new(),
            lens: Vec::new(),
        })))
    }

    /// Whether the stack belongs to an outbound connection (and has layers).
    pub(super) fn is_client(&self) -> bool {
        self.0.as_ref().is_some_and(|l| l.client)
    }

    /// Whether the stack has no layers (plain TCP).
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether bytes for the socket wait for the next flush.
    pub(super) fn has_wire(&self) -> bool {
        self.0.as_ref().is_some_and(|l| !l.wire.is_empty())
    }

    /// TCP is up: starts the layers' handshakes. An empty stack is ready at once.
    pub(super) fn start(&mut self, conn: &ConnShared) -> Step {
        let Some(layered) = self.0.as_deref_mut() else {
            return Step {
                wrote: false,
                ready: true,
                result: Ok(()),
            };
        };
        let before = layered.wire.len();
        let result = layered.stack.advance(&mut layered.wire);
        let added = layered.wire.len() - before;
        let ready = result.is_ok() && layered.stack.take_ready();
        // `is_ready` may have panicked.
        let result = result.and_then(|()| layered.stack.poisoned());
        account(conn, added, 0);
        Step {
            wrote: added > 0,
            ready,
            result,
        }
    }

    /// Bytes from the socket: through the layers into `inbound`, or [`Decoded::Through`]
    /// for an empty stack (the caller hands them on as they are, without a copy).
    pub(super) fn decode(
        &mut self,
        conn: &ConnShared,
        data: &[u8],
        inbound: &mut Frames,
    ) -> Decoded {
        let Some(layered) = self.0.as_deref_mut() else {
            return Decoded::Through;
        };
        if layered.broken {
            return Decoded::Broken;
        }
        let before = layered.wire.len();
        let result = layered.stack.decode(data, inbound, &mut layered.wire);
        let added = layered.wire.len() - before;
        let ready = layered.stack.take_ready();
        // `is_ready` may have panicked.
        let result = result.and_then(|()| layered.stack.poisoned());
        account(conn, added, 0);
        Decoded::Step(Step {
            wrote: added > 0,
            ready,
            result,
        })
    }

    /// The peer ended the stream: asks the layers whether it may end here (see
    /// [`Layer::end_of_stream`]). Nothing is asked once a layer failed.
    pub(super) fn end_of_stream(&mut self) -> io::Result<()> {
        match self.0.as_deref_mut() {
            Some(layered) if !layered.broken => layered.stack.end_of_stream(),
            _ => Ok(()),
        }
    }

    /// A layer failed: nothing more is decoded. `false` for an empty stack.
    pub(super) fn break_down(&mut self) -> bool {
        match self.0.as_deref_mut() {
            Some(layered) => {
                layered.broken = true;
                true
            }
            None => false,
        }
    }

    /// A layer panicked: nothing of the stack runs again, nothing more is encoded.
    pub(super) fn poison(&mut self) {
        if let Some(layered) = self.0.as_deref_mut() {
            layered.broken = true;
            layered.failed = true;
        }
    }

    /// Before a send is issued: fills `sending` (empty) with what goes to the socket. An
    /// empty stack swaps the shared queue's bytes in (no copy); layers encode the queued
    /// frames first. An error is a failed layer: what was encoded before it is still
    /// there to send.
    pub(super) fn refill(&mut self, conn: &ConnShared, sending: &mut Vec<u8>) -> io::Result<()> {
        let Some(layered) = self.0.as_deref_mut() else {
            let mut q = conn.lock();
            q.scheduled = false;
            if !q.pending.is_empty() {
                std::mem::swap(&mut q.pending, sending);
            }
            return Ok(());
        };
        conn.lock().scheduled = false;
        let result = layered.encode_pending(conn);
        std::mem::swap(&mut layered.wire, sending);
        result
    }

    /// A graceful close starts: encode the last frames (no more can come: the queue is
    /// closed) and let every layer say goodbye. Returns the bytes now queued, and a layer's
    /// error if one failed; `None` for an empty stack (nothing changes).
    pub(super) fn seal(&mut self, conn: &ConnShared) -> Option<(usize, Option<io::Error>)> {
        let layered = self.0.as_deref_mut()?;
        let mut error = None;
        if !layered.sealed {
            layered.sealed = true;
            let ready = layered.ready();
            if let Err(e) = layered.encode_pending(conn) {
                error = Some(e);
            }
            if !ready && !layered.failed {
                // Frames held for a handshake that will never finish: nothing will send
                // them.
                layered.failed = true;
                if let Err(e) = layered.encode_pending(conn) {
                    error.get_or_insert(e);
                }
            }
            if ready && error.is_none() && !layered.broken {
                let before = layered.wire.len();
                if let Err(e) = layered.stack.finish(&mut layered.wire) {
                    error = Some(e);
                }
                account(conn, layered.wire.len() - before, 0);
            }
        }
        Some((conn.lock().queued, error))
    }
}

impl Layered {
    /// Whether frames can be encoded now.
    fn ready(&mut self) -> bool {
        !self.failed && self.stack.is_ready() && self.stack.poisoned().is_ok()
    }

    /// Takes the raw frames queued in `conn`'s shared queue and encodes them into `wire`,
    /// once the stack is ready (dropping them if it failed). Keeps the accounting.
    fn encode_pending(&mut self, conn: &ConnShared) -> io::Result<()> {
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
fn account(conn: &ConnShared, added: usize, removed: usize) {
    if added == removed {
        return;
    }
    let mut q = conn.lock();
    q.queued = q.queued + added - removed;
    q.peak = q.peak.max(q.queued);
}

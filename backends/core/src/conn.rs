//! The shared half of a connection: what any thread may touch (its outbound queue, its
//! flags), reached through the connection map or a [`ConnSender`](crate::ConnSender).
//!
//! The loop that owns the connection keeps the other half (socket state, the buffer being
//! sent) in its own slab; see `runtime`.

use crate::config::Watermarks;
use crate::driver::Slot;
use crate::error::SendError;
use crate::id::ConnectionId;
use crate::inbox;
use crate::loop_handle::LoopHandle;
use crate::metrics::{ServiceStats, Stat};
use crate::write_through;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

const NO_SLOT: u64 = u64::MAX;

/// How a close treats data still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Deliver what is queued (up to the loop's linger deadline), then close.
    Flush,
    /// Drop what is queued and close now.
    Abort,
    /// Write what the socket takes at once of what is queued, drop the rest and close
    /// now: mill-net's `close`. No linger, no waiting for the peer.
    Discard,
}

/// The outbound queue and its accounting, under the connection's lock.
#[derive(Debug)]
pub(crate) struct OutQueue {
    /// Bytes queued and not yet handed to the driver, whole frames back to back.
    pub(crate) pending: Vec<u8>,
    /// Bytes queued and not yet written: `pending` plus the unsent part of the send in flight.
    pub(crate) queued: usize,
    /// A send was refused since the queue last fell to the low watermark.
    pub(crate) refused: bool,
    /// A flush for this connection is already on its way to the loop.
    pub(crate) scheduled: bool,
    /// No more frames are accepted.
    pub(crate) closed: bool,
    /// The highest `queued` ever reached (for tests and metrics).
    pub(crate) peak: usize,
    /// The connection has layers: `pending` holds raw frames, encoded on the loop.
    pub(crate) layered: bool,
    /// With layers, the length of each raw frame in `pending`, in order.
    pub(crate) frames: Vec<usize>,
    /// The loop is done with the connection: it is out of the map and its
    /// `on_disconnect` (if owed) has returned. Waiters on `ended` watch this.
    pub(crate) finished: bool,
}

/// The loop that owns a connection, as the connection reaches it (implemented by the
/// runtime's `LoopShared`): what senders, closers and pausers on any thread ask of it.
pub(crate) trait Owner: Send + Sync {
    /// Asks for a flush of `conn`'s queue; `false` if the loop is gone.
    fn flush(&self, conn: &Arc<ConnShared>) -> bool;
    /// Asks for a close of `conn`; `false` if the loop is gone.
    fn close(&self, conn: &Arc<ConnShared>, mode: CloseMode) -> bool;
    /// Tells the loop that `conn`'s reads were paused or resumed.
    fn pause(&self, conn: &Arc<ConnShared>, paused: bool);
    /// A handle to the loop, to run closures and timers there.
    fn handle(self: Arc<Self>) -> LoopHandle;
}

/// One connection's shared state.
pub struct ConnShared {
    pub(crate) id: ConnectionId,
    pub(crate) marks: Watermarks,
    owner: OnceLock<Arc<dyn Owner>>,
    /// The peer's address, set before the connection is announced.
    peer: OnceLock<SocketAddr>,
    slot: AtomicU64,
    read_paused: AtomicBool,
    out: Mutex<OutQueue>,
    /// Signalled when `finished` is set.
    ended: Condvar,
    /// The service's counters (backpressure refusals are counted here, on any thread).
    stats: Arc<ServiceStats>,
}

impl std::fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnShared").field("id", &self.id).finish()
    }
}

impl ConnShared {
    pub(crate) fn new(id: ConnectionId, marks: Watermarks, stats: Arc<ServiceStats>) -> Arc<Self> {
        Arc::new(Self {
            id,
            marks,
            owner: OnceLock::new(),
            peer: OnceLock::new(),
            slot: AtomicU64::new(NO_SLOT),
            read_paused: AtomicBool::new(false),
            out: Mutex::new(OutQueue {
                pending: Vec::new(),
                queued: 0,
                refused: false,
                scheduled: false,
                closed: false,
                peak: 0,
                layered: false,
                frames: Vec::new(),
                finished: false,
            }),
            ended: Condvar::new(),
            stats,
        })
    }

    /// Records the peer's address (the first call wins).
    pub(crate) fn set_peer(&self, peer: SocketAddr) {
        let _ = self.peer.set(peer);
    }

    /// The peer's address: for an accepted connection the client's, for a client the
    /// address it connects to. Known from before `on_connect`.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.get().copied()
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OutQueue> {
        // A panic while holding this lock cannot leave the queue half-updated in a way
        // that matters (every update is a few plain assignments), so poisoning is ignored.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds the connection to the loop that owns it, at `slot`.
    pub(crate) fn attach(&self, owner: Arc<dyn Owner>, slot: Slot) {
        let _ = self.owner.set(owner);
        self.slot.store(slot.0, Ordering::Release);
    }

    /// A handle to the loop that owns the connection, once attached.
    pub(crate) fn loop_handle(&self) -> Option<LoopHandle> {
        self.owner.get().map(|owner| Arc::clone(owner).handle())
    }

    /// The slot on the owning loop, once attached.
    pub(crate) fn slot(&self) -> Option<Slot> {
        match self.slot.load(Ordering::Acquire) {
            NO_SLOT => None,
            s => Some(Slot(s)),
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued
    }

    /// The most bytes ever queued at once on this connection.
    pub fn peak_queued_bytes(&self) -> usize {
        self.lock().peak
    }

    /// Whether the connection refuses frames (closing or closed).
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Queues `frame` whole, or refuses it whole. See `ConnSender::send`.
    pub(crate) fn send(self: &Arc<Self>, frame: &[u8]) -> Result<(), SendError> {
        if frame.is_empty() {
            // Writes nothing, but a closed connection still says so.
            return if self.lock().closed {
                Err(SendError::Closed)
            } else {
                Ok(())
            };
        }
        if frame.len() > self.marks.max_frame {
            return Err(SendError::FrameTooLarge {
                len: frame.len(),
                max: self.marks.max_frame,
            });
        }
        let schedule = {
            let mut q = self.lock();
            if q.closed {
                return Err(SendError::Closed);
            }
            if q.queued >= self.marks.high {
                q.refused = true;
                drop(q);
                self.stats.add(Stat::Backpressure, 1);
                return Err(SendError::Backpressure);
            }
            if q.pending.is_empty()
                && !q.layered
                && write_through::defer(Arc::as_ptr(self) as usize, frame)
            {
                // Part of the bytes being delivered to this connection, on its loop: the
                // loop writes it from there when the delivery ends (`write_through`).
                q.queued += frame.len();
                q.peak = q.peak.max(q.queued);
                return Ok(());
            }
            q.pending.extend_from_slice(frame);
            if q.layered {
                q.frames.push(frame.len());
            }
            q.queued += frame.len();
            q.peak = q.peak.max(q.queued);
            !std::mem::replace(&mut q.scheduled, true)
        };
        if schedule {
            if let Some(owner) = self.owner.get() {
                if !owner.flush(self) {
                    // The loop is gone: nothing will ever write this.
                    let mut q = self.lock();
                    q.closed = true;
                    return Err(SendError::Closed);
                }
            }
            // Not attached yet (a client before its connect completes): the loop
            // flushes the queue once the connection is established.
        }
        Ok(())
    }

    /// Marks the connection as layered: from now on frames are queued raw, each with its
    /// length, for the loop to encode. `false` (and nothing changed) once a frame was
    /// accepted, since that frame would bypass the layers.
    pub(crate) fn set_layered(&self) -> bool {
        let mut q = self.lock();
        if q.peak > 0 || q.closed {
            return false;
        }
        q.layered = true;
        true
    }

    /// Asks the owning loop to close the connection.
    pub(crate) fn request_close(self: &Arc<Self>, mode: CloseMode) {
        // Refuse new frames at once; the owning loop does the rest (a client not started
        // yet is dropped when its connect command finds it closed).
        let owner = {
            // The owner is read under the lock: the loop attaches a client only after it
            // checked `closed` under the same lock (see the worker's `connect`).
            let mut q = self.lock();
            q.closed = true;
            self.owner.get()
        };
        if let Some(owner) = owner {
            if !owner.close(self, mode) {
                // The loop is gone; it closed everything it held on its way out.
                self.set_finished();
            }
        }
    }

    /// The loop is done with the connection (its `on_disconnect` has returned), or it
    /// never reached a loop: wakes whoever waits in [`wait_finished`](Self::wait_finished).
    pub(crate) fn set_finished(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.finished = true;
        drop(q);
        self.ended.notify_all();
    }

    /// Waits, up to `timeout`, until the owning loop is done with the connection (see
    /// [`set_finished`](Self::set_finished)). Returns at once for a connection that never
    /// reached a loop, or when called on a loop thread, which must never block (the loop
    /// that owns the connection may be the caller's own). Returns whether it finished.
    pub(crate) fn wait_finished(&self, timeout: Duration) -> bool {
        if self.owner.get().is_none() || inbox::on_any_loop() {
            return self.lock().finished;
        }
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        while !q.finished {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            q = self
                .ended
                .wait_timeout(q, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Whether the user asked to stop reading.
    pub(crate) fn read_paused(&self) -> bool {
        self.read_paused.load(Ordering::Acquire)
    }

    /// Pauses or resumes reading. The flag takes effect at once on the owning loop (after
    /// the chunk being delivered); the command wakes the loop to act on it.
    pub(crate) fn set_read_paused(self: &Arc<Self>, paused: bool) {
        self.read_paused.store(paused, Ordering::Release);
        if let Some(owner) = self.owner.get() {
            owner.pause(self, paused);
        }
    }
}

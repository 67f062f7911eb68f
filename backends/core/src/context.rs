//! What handlers and user threads use to act on connections: [`ServerContext`] and
//! [`ConnSender`].

use crate::conn::{CloseMode, ConnShared};
use crate::error::{NetworkError, Result, SendError};
use crate::id::ConnectionId;
use crate::loop_handle::{LoopHandle, TimerId};
use crate::map::ConnMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long [`ConnSender::close`] waits for the loop to deliver `on_disconnect`; only
/// reached when the loop is stuck (a callback that does not return).
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Context for handlers to act on the server or client that called them.
///
/// It can be cloned and used from any thread.
#[derive(Clone)]
pub struct ServerContext {
    service: Arc<dyn ServiceApi>,
}

/// What a context needs of its server or client (implemented by `Service`).
pub(crate) trait ServiceApi: Send + Sync {
    /// The open connections.
    fn conns(&self) -> &ConnMap<ConnShared>;
    /// Connections open now.
    fn connection_count(&self) -> usize;
    /// Tells the handler's `on_error`.
    fn report(&self, ctx: &ServerContext, conn: Option<ConnectionId>, error: NetworkError);
}

impl ServerContext {
    pub(crate) fn new(service: Arc<dyn ServiceApi>) -> Self {
        Self { service }
    }

    /// Sends `data` to one connection; see [`ConnSender::send`].
    ///
    /// Fails with [`NetworkError::ConnectionNotFound`] for an id that is not open (closing
    /// or closed, as with mill-net, where a closed connection leaves the map at once; or
    /// never existed: a stale id never reaches a newer connection), or with the
    /// [`SendError`] itself, as mill-net does: `e.downcast_ref::<SendError>()`.
    pub fn send_to(&self, conn_id: ConnectionId, data: &[u8]) -> Result<()> {
        match self.service.conns().get(conn_id) {
            Some(conn) => conn.send(data).map_err(|e| match e {
                SendError::Closed => Box::new(NetworkError::ConnectionNotFound(conn_id)) as _,
                e => Box::new(e) as _,
            }),
            None => Err(Box::new(NetworkError::ConnectionNotFound(conn_id))),
        }
    }

    /// Sends `data` to one connection, returning the [`SendError`] itself: nothing is
    /// allocated when the frame is refused, so a caller that expects refusals
    /// (backpressure) pays nothing for them. An id that is not open is
    /// [`SendError::Closed`].
    pub fn try_send_to(
        &self,
        conn_id: ConnectionId,
        data: &[u8],
    ) -> std::result::Result<(), SendError> {
        match self.service.conns().get(conn_id) {
            Some(conn) => conn.send(data),
            None => Err(SendError::Closed),
        }
    }

    /// The peer's address of `conn`: the client's for an accepted connection, the address
    /// connected to for a client. Known from `on_connect` on (on every backend); `None` if
    /// `conn` is not open (in `on_disconnect` it is gone already). A peer that reset its
    /// connection before the io_uring driver could ask its address shows as the unspecified
    /// address with port 0 (`0.0.0.0:0` or `[::]:0`); its first read reports the reset.
    pub fn peer_addr(&self, conn: ConnectionId) -> Option<std::net::SocketAddr> {
        self.service.conns().get(conn)?.peer_addr()
    }

    /// Sends `data` to every open connection. A connection that refuses it (backpressure,
    /// closing) is reported to `on_error` and skipped; the others still get the frame.
    pub fn broadcast(&self, data: &[u8]) -> Result<()> {
        let conns = self.service.conns().snapshot();
        for (id, conn) in conns {
            if let Err(e) = conn.send(data) {
                if matches!(e, SendError::Closed) {
                    continue;
                }
                let error = NetworkError::Send(e);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.service.report(self, Some(id), error)
                }));
            }
        }
        Ok(())
    }

    /// Closes one connection now, as mill-net does: what the socket takes at once of
    /// what is queued is written, the rest is dropped; see [`ConnSender::close`]. Closing
    /// an id that is not open does nothing.
    pub fn close_connection(&self, conn_id: ConnectionId) -> Result<()> {
        if let Some(conn) = self.service.conns().get(conn_id) {
            ConnSender::new(conn).close();
        }
        Ok(())
    }

    /// Closes one connection after writing everything queued to it (up to the loop's
    /// close linger); see [`ConnSender::close_gracefully`].
    pub fn close_connection_gracefully(&self, conn_id: ConnectionId) -> Result<()> {
        if let Some(conn) = self.service.conns().get(conn_id) {
            conn.request_close(CloseMode::Flush);
        }
        Ok(())
    }

    /// A sender for `conn`, usable from any thread; `None` if it is not open (closing or
    /// closed, or never existed).
    pub fn sender(&self, conn: ConnectionId) -> Option<ConnSender> {
        self.service
            .conns()
            .get(conn)
            .filter(|c| !c.is_closed())
            .map(ConnSender::new)
    }

    /// Connections open now. A closing connection counts until its `on_disconnect` has
    /// returned, except inside that `on_disconnect`, which sees only the others.
    pub fn connection_count(&self) -> usize {
        self.service.connection_count()
    }

    /// The loop that owns `conn` (where its callbacks run); `None` if it is not open (or
    /// is a client whose connect has not been started). In `on_disconnect` the connection
    /// is already gone from the map: use [`LoopHandle::current`] there.
    pub fn loop_of(&self, conn: ConnectionId) -> Option<LoopHandle> {
        let shared = self.service.conns().get(conn)?;
        shared.loop_handle()
    }

    /// Runs `f` on the loop that owns `conn`, as soon as it gets to it; see
    /// [`LoopHandle::post`]. From a user thread this is how work reaches a connection's
    /// loop, in order with its callbacks.
    ///
    /// Fails with [`NetworkError::ConnectionNotFound`] if `conn` is not open.
    pub fn post_to(&self, conn: ConnectionId, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.owner_of(conn)?.post(f)
    }

    /// Runs `f` once on the loop that owns `conn`, `delay` from now; see
    /// [`LoopHandle::schedule_once`]. The timer is not tied to the connection's life: it
    /// fires even if the connection closed meanwhile (cancel it in `on_disconnect`, or
    /// check [`sender`](Self::sender) in the closure).
    ///
    /// ```
    /// use ringmill_core::{ConnectionId, NetworkHandler, Result, ServerContext};
    /// use std::time::Duration;
    ///
    /// /// Says goodbye and closes each connection five seconds after it opens.
    /// struct Deadline;
    ///
    /// impl NetworkHandler for Deadline {
    ///     fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
    ///         let ctx2 = ctx.clone();
    ///         ctx.schedule_once_for(conn, Duration::from_secs(5), move || {
    ///             let _ = ctx2.send_to(conn, b"time is up\n");
    ///             let _ = ctx2.close_connection(conn);
    ///         })?;
    ///         Ok(())
    ///     }
    ///
    ///     fn on_data(&self, _: &ServerContext, _: ConnectionId, _: &[u8]) -> Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// ```
    ///
    /// Fails with [`NetworkError::ConnectionNotFound`] if `conn` is not open.
    pub fn schedule_once_for(
        &self,
        conn: ConnectionId,
        delay: Duration,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<TimerId> {
        self.owner_of(conn)?.schedule_once(delay, f)
    }

    /// Runs `f` every `period` on the loop that owns `conn`, until cancelled; see
    /// [`LoopHandle::schedule_repeating`]. Like [`schedule_once_for`](Self::schedule_once_for),
    /// the timer outlives the connection unless cancelled.
    ///
    /// Fails with [`NetworkError::ConnectionNotFound`] if `conn` is not open.
    pub fn schedule_repeating_for(
        &self,
        conn: ConnectionId,
        period: Duration,
        f: impl FnMut() + Send + 'static,
    ) -> Result<TimerId> {
        self.owner_of(conn)?.schedule_repeating(period, f)
    }

    /// Cancels a timer; see [`TimerId::cancel`].
    pub fn cancel_timer(&self, timer: &TimerId) -> bool {
        timer.cancel()
    }

    fn owner_of(&self, conn: ConnectionId) -> Result<LoopHandle> {
        self.loop_of(conn)
            .ok_or_else(|| Box::new(NetworkError::ConnectionNotFound(conn)) as _)
    }
}

impl fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerContext")
            .field("connections", &self.service.connection_count())
            .finish()
    }
}

/// Sends to one connection from any thread: handlers, timers, worker threads.
///
/// Cloning is cheap. A frame is queued whole or refused whole; frames sent from one
/// thread arrive in order; frames from different threads never interleave on the wire.
#[derive(Clone)]
pub struct ConnSender {
    conn: Arc<ConnShared>,
}

impl ConnSender {
    pub(crate) fn new(conn: Arc<ConnShared>) -> Self {
        Self { conn }
    }

    /// Queues `frame` for writing. Frames queued during one loop iteration leave together
    /// in one write.
    ///
    /// Accepted while fewer than `high_watermark` bytes are queued, even if `frame` takes
    /// the queue past it (so the queue never exceeds the high watermark plus one frame).
    /// Otherwise refused whole with [`SendError::Backpressure`], and
    /// [`on_drained`](crate::NetworkHandler::on_drained) fires once the queue falls to the
    /// low watermark. An empty frame queues nothing (`Ok`, or `Closed` once the connection
    /// is closed). A frame over `max_frame` is refused with
    /// [`SendError::FrameTooLarge`]; a closed connection refuses with [`SendError::Closed`].
    pub fn send(&self, frame: &[u8]) -> std::result::Result<(), SendError> {
        self.conn.send(frame)
    }

    /// Closes the connection now, as mill-net's `close` does: stops accepting frames,
    /// writes what the socket takes at once of what is queued and drops the rest, closes
    /// the socket (no linger, no waiting for the peer) and fires `on_disconnect` once.
    /// Later calls do nothing.
    ///
    /// Called from a thread that runs no event loop, it returns once `on_disconnect` has
    /// run (bounded by a generous deadline, in case the loop is stuck in a callback).
    /// Called on a loop thread (inside a callback) it cannot wait, since that loop may be
    /// the one that must deliver the disconnect: the close is under way when it returns,
    /// the connection already refuses frames and has no sender, and `on_disconnect`
    /// follows.
    ///
    /// To deliver everything queued first, use [`close_gracefully`](Self::close_gracefully).
    pub fn close(&self) {
        self.conn.request_close(CloseMode::Discard);
        self.conn.wait_finished(CLOSE_WAIT);
    }

    /// Stops accepting frames, writes everything queued (up to the loop's close linger,
    /// `EventLoopBuilder::close_linger`, 5 s by default), shuts the write side down and
    /// reads on until the peer's end of stream (so a peer still sending does not reset
    /// the connection and lose the tail of what was written), then closes and fires
    /// `on_disconnect` once. Returns at once. Later calls do nothing.
    pub fn close_gracefully(&self) {
        self.conn.request_close(CloseMode::Flush);
    }

    /// Drops whatever is queued, closes the socket now and fires `on_disconnect` once.
    pub fn abort(&self) {
        self.conn.request_close(CloseMode::Abort);
    }

    /// Stops reading from the socket once the chunk being delivered is done, so TCP flow
    /// control pushes the peer back. End of stream and read errors go unseen until
    /// [`resume_reads`](Self::resume_reads).
    pub fn pause_reads(&self) {
        self.conn.set_read_paused(true);
    }

    /// Undoes [`pause_reads`](Self::pause_reads); bytes that arrived meanwhile are
    /// delivered, in order.
    pub fn resume_reads(&self) {
        self.conn.set_read_paused(false);
    }

    /// The connection this sender writes to.
    pub fn id(&self) -> ConnectionId {
        self.conn.id()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.conn.queued_bytes()
    }

    /// The most bytes ever queued at once on this connection.
    pub fn peak_queued_bytes(&self) -> usize {
        self.conn.peak_queued_bytes()
    }

    /// The peer's address; see [`ServerContext::peer_addr`]. Stays known after the close.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.conn.peer_addr()
    }

    /// Whether the connection refuses frames (closing or closed).
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// The loop that owns the connection, to run timers and closures there; `None` for a
    /// client whose connect has not been started yet.
    pub fn loop_handle(&self) -> Option<LoopHandle> {
        self.conn.loop_handle()
    }
}

impl fmt::Debug for ConnSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnSender")
            .field("id", &self.conn.id())
            .finish()
    }
}

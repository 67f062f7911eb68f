//! The callbacks a user implements.

use crate::context::ServerContext;
use crate::error::{NetworkError, NetworkEvent, Result};
use crate::id::ConnectionId;

/// Handler for network events on TCP connections.
///
/// Every callback for one connection runs on the loop thread that owns the connection,
/// one at a time and in order: `on_connect` first, then `on_data` (and `on_writable`,
/// `on_drained`), then exactly one `on_disconnect`, after which nothing more comes for that
/// connection. Callbacks for different connections may run at the same time on different
/// loop threads, so the handler is `Send + Sync`.
///
/// Callbacks must not block: work that blocks belongs on the user's own threads, which
/// answer through a [`ConnSender`](crate::ConnSender).
///
/// An `Err` from `on_data` closes the connection and is reported through `on_error`. A
/// panic in any callback is caught, closes that connection, is reported through
/// `on_error`, and the loop goes on serving the others.
pub trait NetworkHandler: Send + Sync + 'static {
    /// Called for non-error events: a connection established or closed, a server listening.
    fn on_event(&self, ctx: &ServerContext, event: NetworkEvent) -> Result<()> {
        let _ = (ctx, event);
        Ok(())
    }

    /// Called once a connection is established, before any `on_data` for it.
    fn on_connect(&self, ctx: &ServerContext, conn_id: ConnectionId) -> Result<()> {
        let _ = (ctx, conn_id);
        Ok(())
    }

    /// Called with bytes received on a connection, in order. Chunk boundaries are not
    /// promised: one message may arrive in several chunks, several in one.
    fn on_data(&self, ctx: &ServerContext, conn_id: ConnectionId, data: &[u8]) -> Result<()>;

    /// Called exactly once per `on_connect`, whatever ended the connection; nothing comes
    /// after it for that connection.
    fn on_disconnect(&self, ctx: &ServerContext, conn_id: ConnectionId) -> Result<()> {
        let _ = (ctx, conn_id);
        Ok(())
    }

    /// Called when the connection's outbound queue has become empty: everything sent so
    /// far has been handed to the kernel.
    fn on_writable(&self, ctx: &ServerContext, conn_id: ConnectionId) -> Result<()> {
        let _ = (ctx, conn_id);
        Ok(())
    }

    /// Called once the outbound queue falls to the low watermark after a send was refused
    /// with [`SendError::Backpressure`](crate::SendError::Backpressure).
    fn on_drained(&self, ctx: &ServerContext, conn_id: ConnectionId) -> Result<()> {
        let _ = (ctx, conn_id);
        Ok(())
    }

    /// Called on errors: a connection's (`Some(id)`) or the server's (`None`).
    fn on_error(&self, ctx: &ServerContext, conn_id: Option<ConnectionId>, error: NetworkError) {
        let _ = (ctx, conn_id, error);
    }
}

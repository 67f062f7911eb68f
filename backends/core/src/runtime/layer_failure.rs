//! When a layer fails (or the peer leaves during a handshake): what is reported, and how
//! the connection closes.

use super::phase::Phase;
use super::state::State;
use crate::conn::CloseMode;
use crate::driver::Slot;
use crate::error::NetworkError;
use crate::id::ConnectionId;
use crate::layer::panic_of;
use crate::metrics::Stat;
use std::io;

impl State {
    /// An accepted connection's handshake deadline came: if its layers are still
    /// handshaking, report `Io(TimedOut)` and abort it.
    pub(super) fn handshake_expired(&mut self, slot: Slot, id: ConnectionId) {
        let Some(conn) = self.conns.get(slot) else {
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

    /// A layer failed (or the peer left during the handshake): report it, then close.
    pub(super) fn layer_failed(&mut self, slot: Slot, error: io::Error, mode: CloseMode) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        // Frames queued before the failure are still encoded and written (unless it was
        // the encoding that failed), but nothing more is decoded.
        if !conn.stack.break_down() {
            return;
        }
        if let Some(panic) = panic_of(&error) {
            // A panicking layer is treated like a panicking handler: nothing more of the
            // stack runs, the connection is aborted.
            let message = panic.to_string();
            conn.stack.poison();
            conn.service.count(Stat::HandlerPanic, 1);
            self.report(slot, NetworkError::HandlerPanic(message));
            self.begin_close(slot, CloseMode::Abort);
            return;
        }
        let error = if conn.stack.is_client() && !conn.established {
            NetworkError::Connect(error.into())
        } else {
            NetworkError::Io(error.into())
        };
        self.report(slot, error);
        self.begin_close(slot, mode);
    }

    /// A layer refused the peer's end of stream ([`Layer::end_of_stream`]): report it. A
    /// panic aborts the connection; an error lets it close as it would anyway.
    ///
    /// [`Layer::end_of_stream`]: crate::layer::Layer::end_of_stream
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
                if let Some(conn) = self.conns.get(slot) {
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
        if let Some(conn) = self.conns.get_mut(slot) {
            conn.stack.break_down();
        }
        self.report(slot, NetworkError::Io(error.into()));
        self.begin_close(slot, mode);
    }
}

/// How an error of a layer stack is reported: a panic as `HandlerPanic`, the rest as `Io`.
fn network_error(error: io::Error) -> NetworkError {
    match panic_of(&error) {
        Some(panic) => NetworkError::HandlerPanic(panic.to_string()),
        None => NetworkError::Io(error.into()),
    }
}

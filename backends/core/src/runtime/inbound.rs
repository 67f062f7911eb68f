//! Received pieces waiting for the handler (`receive.rs` delivers them).

use crate::layer::Frames;

/// Received pieces waiting for the handler: delivered from `next` (and `offset` bytes
/// into it). Holds no allocation until a pause (or a layer) leaves bytes here.
#[derive(Default)]
pub(super) struct Inbound {
    pub(super) pieces: Frames,
    pub(super) next: usize,
    pub(super) offset: usize,
}

impl Inbound {
    /// Drops what waits (the connection closes: nothing more is delivered).
    pub(super) fn clear(&mut self) {
        *self = Inbound::default();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

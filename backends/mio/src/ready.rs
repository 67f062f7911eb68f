//! Completions decided outside `poll` (by `send`, `connect` and `close`), waiting to be
//! delivered by the next `poll`.

use ringmill_core::driver::Slot;
use std::io;

/// A completion waiting for the next `poll`. Those of a connection carry its slot, with its
/// generation, so that one whose slot was closed meanwhile is dropped instead of delivered.
#[derive(Debug)]
pub(crate) enum Ready {
    /// A send that wrote something or failed right away.
    Sent {
        /// The connection.
        slot: Slot,
        /// The outcome.
        result: io::Result<usize>,
    },
    /// A send refused because one was in flight on the slot: reported as a failed `Sent`
    /// (see the driver contract), leaving the send in flight alone.
    Refused {
        /// The connection.
        slot: Slot,
    },
    /// A connect that finished (or failed) right away.
    Connected {
        /// The connection.
        slot: Slot,
        /// The outcome.
        result: io::Result<()>,
    },
    /// A closed connection.
    Closed {
        /// The slot, free for the core again once this is delivered.
        slot: Slot,
    },
}

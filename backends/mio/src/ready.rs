//! Completions decided outside `poll` (by `send`, `connect` and `close`), waiting to be
//! delivered by the next `poll`.

use ringmill_core::driver::Slot;
use std::io;

/// A completion waiting for the next `poll`. Those of a connection carry its generation so
/// that one whose slot was closed meanwhile is dropped instead of delivered.
#[derive(Debug)]
pub(crate) enum Ready {
    /// A send that wrote something or failed right away.
    Sent {
        /// The connection.
        slot: Slot,
        /// Its generation when the send was made.
        generation: u32,
        /// The outcome.
        result: io::Result<usize>,
    },
    /// A connect that finished (or failed) right away.
    Connected {
        /// The connection.
        slot: Slot,
        /// Its generation.
        generation: u32,
        /// The outcome.
        result: io::Result<()>,
    },
    /// A closed connection.
    Closed {
        /// The slot, free for the core again once this is delivered.
        slot: Slot,
    },
}

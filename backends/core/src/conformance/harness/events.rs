//! Owned completions.

use crate::driver::{Completion, ListenerId, Slot};
use std::io;
use std::net::{SocketAddr, TcpStream};

/// An owned copy of a [`Completion`].
#[derive(Debug)]
pub enum Ev {
    /// [`Completion::Accepted`].
    Accepted(ListenerId, io::Result<(TcpStream, SocketAddr)>),
    /// [`Completion::Connected`].
    Connected(Slot, io::Result<()>),
    /// [`Completion::Received`], the bytes copied.
    Received(Slot, io::Result<Vec<u8>>),
    /// [`Completion::Sent`].
    Sent(Slot, io::Result<usize>),
    /// [`Completion::Closed`].
    Closed(Slot),
}

impl Ev {
    /// Copies `completion`.
    pub fn from_completion(completion: Completion<'_>) -> Self {
        match completion {
            Completion::Accepted { listener, result } => Ev::Accepted(listener, result),
            Completion::Connected { slot, result } => Ev::Connected(slot, result),
            Completion::Received { slot, result, .. } => {
                Ev::Received(slot, result.map(<[u8]>::to_vec))
            }
            Completion::Sent { slot, result } => Ev::Sent(slot, result),
            Completion::Closed { slot } => Ev::Closed(slot),
        }
    }

    /// The connection the completion is about.
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Ev::Accepted(..) => None,
            Ev::Connected(slot, _)
            | Ev::Received(slot, _)
            | Ev::Sent(slot, _)
            | Ev::Closed(slot) => Some(*slot),
        }
    }

    /// Whether this is the end of stream of `slot`.
    pub fn is_eof_of(&self, of: Slot) -> bool {
        matches!(self, Ev::Received(slot, Ok(bytes)) if *slot == of && bytes.is_empty())
    }
}

/// The bytes `evs` received for `slot`, in order.
pub fn received_bytes(evs: &[Ev], slot: Slot) -> Vec<u8> {
    let mut bytes = Vec::new();
    for ev in evs {
        if let Ev::Received(s, Ok(b)) = ev {
            if *s == slot {
                bytes.extend_from_slice(b);
            }
        }
    }
    bytes
}

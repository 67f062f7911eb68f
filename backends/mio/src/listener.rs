//! Per-listener state and accepting.

use mio::net::TcpListener;
use ringmill_core::driver::{Completion, Flow, ListenerId};
use std::io;

/// Most connections accepted from one listener per poll before others get a turn; the rest
/// are accepted on the next poll.
const ACCEPT_BUDGET: usize = 256;

/// One listening socket.
pub(crate) struct Listener {
    /// The socket, registered with the loop's `Poll`.
    pub(crate) socket: TcpListener,
    /// A readable event was seen (or accepting was resumed) and accepting has not yet hit
    /// `WouldBlock`.
    pub(crate) ready: bool,
    /// The sink answered `Pause`; nothing is accepted until `resume_accept`.
    pub(crate) paused: bool,
    /// Accepting is queued for the next poll.
    pub(crate) queued: bool,
}

impl Listener {
    /// A listener around a registered socket.
    pub(crate) fn new(socket: TcpListener) -> Self {
        Self {
            socket,
            ready: false,
            paused: false,
            queued: false,
        }
    }

    /// Whether accepting should go on now.
    pub(crate) fn wants_accept(&self) -> bool {
        self.ready && !self.paused && !self.queued
    }

    /// Accepts until `WouldBlock`, a `Pause` answer, a failed accept, or the budget, and
    /// passes each outcome to `sink`. Returns how many completions were delivered and
    /// whether to try again on the next poll.
    ///
    /// After a failed accept the listener is tried again on the next poll rather than at
    /// once, so a persistent error (`EMFILE`) is reported once per poll, not in a tight loop;
    /// the sink backs off by answering `Pause`.
    pub(crate) fn accept_some<F>(&mut self, id: ListenerId, sink: &mut F) -> (usize, bool)
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = 0;
        for _ in 0..ACCEPT_BUDGET {
            let result = match self.socket.accept() {
                Ok((stream, peer)) => Ok((std::net::TcpStream::from(stream), peer)),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.ready = false;
                    return (delivered, false);
                }
                Err(err) => Err(err),
            };
            let failed = result.is_err();
            delivered += 1;
            if sink(Completion::Accepted {
                listener: id,
                result,
            }) == Flow::Pause
            {
                self.paused = true;
                return (delivered, false);
            }
            if failed {
                return (delivered, true);
            }
        }
        (delivered, true)
    }
}

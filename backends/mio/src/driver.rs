//! [`MioDriver`]: the [`Driver`] contract on top of a readiness poller.

use crate::conn::{write_out, Conn, RawBuf, SendStage, WriteOutcome};
use crate::listener::Listener;
use crate::reactor::Reactor;
use crate::ready::Ready;
use crate::waker::MioWaker;
use crate::{sys, token};
use mio::{Events, Interest, Poll};
use ringmill_core::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use ringmill_core::pool::BufferPool;
use ringmill_core::DriverConfig;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The mio driver: performs the non-blocking syscalls when readiness arrives and reports
/// their outcomes as the same completions the io_uring driver reports.
///
/// See the [crate docs](crate) for how each operation is carried out.
pub struct MioDriver {
    poll: Poll,
    events: Events,
    waker: Arc<MioWaker>,
    reactor: Reactor,
    /// The previous `poll` returned completions queued outside it without asking the poller.
    skipped_wait: bool,
}

impl std::fmt::Debug for MioDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioDriver")
            .field("buffer_size", &self.reactor.buffer_size())
            .field("read_budget", &self.reactor.read_budget())
            .field("events_capacity", &self.events.capacity())
            .field("counters", &self.reactor.counters)
            .finish_non_exhaustive()
    }
}

impl MioDriver {
    /// Creates the poller, its waker and the loop's receive buffer.
    ///
    /// Uses `buffer_size` (one receive buffer for the whole loop, from a buffer pool of
    /// one: each read is delivered before the next), `read_budget` and
    /// `events_capacity` from `config`; fails with `InvalidInput` if any of them is zero.
    pub fn new(config: &DriverConfig) -> io::Result<Self> {
        for (name, value) in [
            ("buffer_size", config.buffer_size),
            ("read_budget", config.read_budget),
            ("events_capacity", config.events_capacity),
        ] {
            if value == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} must not be zero"),
                ));
            }
        }
        let pool = BufferPool::new(config.buffer_size, 1)?;
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), token::WAKER)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(config.events_capacity),
            waker: Arc::new(MioWaker::new(waker)),
            reactor: Reactor::new(pool, config.read_budget),
            skipped_wait: false,
        })
    }

    /// Wraps, prepares and registers a stream as `slot`, and records it.
    fn add(&mut self, slot: Slot, stream: TcpStream, connecting: bool) -> io::Result<()> {
        if self.reactor.slots.get_at(slot.index()).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("slot {} is already in use", slot.index()),
            ));
        }
        let token = token::conn(slot).ok_or_else(|| too_large("slot", slot.index() as u32))?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        sys::prepare(&stream)?;
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let send = self.reactor.spare_sends.pop().unwrap_or_default();
        if let Err(conn) = self
            .reactor
            .slots
            .insert(slot, Conn::new(stream, connecting, send))
        {
            // Checked vacant above; a slot index out of the table's range lands here.
            let mut conn = conn;
            let _ = self.poll.registry().deregister(&mut conn.stream);
            return Err(too_large("slot", slot.index() as u32));
        }
        Ok(())
    }
}

fn too_large(what: &str, id: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} {id} does not fit in a poll token on this platform"),
    )
}

impl Driver for MioDriver {
    fn name(&self) -> &'static str {
        "mio"
    }

    fn describe(&self) -> String {
        format!(
            "mio ({}, edge-triggered; {} B receive buffer, {} B read budget, {} events per wait)",
            sys::SELECTOR,
            self.reactor.buffer_size(),
            self.reactor.read_budget(),
            self.events.capacity(),
        )
    }

    fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
    }

    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        if self.reactor.listeners.contains_key(&id) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("listener {} is already in use", id.0),
            ));
        }
        let token = token::listener(id).ok_or_else(|| too_large("listener", id.0))?;
        let mut socket = mio::net::TcpListener::from_std(listener);
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)?;
        self.reactor.listeners.insert(id, Listener::new(socket));
        Ok(())
    }

    fn resume_accept(&mut self, id: ListenerId) {
        if let Some(listener) = self.reactor.listeners.get_mut(&id) {
            listener.paused = false;
            // Connections may have queued up while paused without a new edge: look.
            listener.ready = true;
            self.reactor.queue_accept(id);
        }
    }

    fn unlisten(&mut self, id: ListenerId) {
        if let Some(mut listener) = self.reactor.listeners.remove(&id) {
            if let Err(err) = self.poll.registry().deregister(&mut listener.socket) {
                log::debug!("deregistering listener {}: {err}", id.0);
            }
        }
    }

    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        self.add(slot, stream, false)
    }

    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        let immediate = match socket.connect(&addr.into()) {
            Ok(()) => Some(Ok(())),
            Err(err) if sys::connect_in_progress(&err) => None,
            Err(err) => Some(Err(err)),
        };
        self.add(slot, socket.into(), immediate.is_none())?;
        if let Some(result) = immediate {
            self.reactor
                .ready
                .push_back(Ready::Connected { slot, result });
        }
        Ok(())
    }

    fn recv(&mut self, slot: Slot) {
        if let Some(conn) = self.reactor.slots.get_mut(slot) {
            conn.reading = true;
            // Data that arrived while paused raised no new edge: go on where reading stopped.
            self.reactor.queue_read(slot);
        }
    }

    fn pause_recv(&mut self, slot: Slot) {
        if let Some(conn) = self.reactor.slots.get_mut(slot) {
            conn.reading = false;
        }
    }

    unsafe fn send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]) {
        let Some(conn) = self.reactor.slots.get_mut(slot) else {
            log::error!("mio: send on slot {slot}, which the driver does not own: ignored");
            return;
        };
        if conn.send_stage != SendStage::Idle {
            log::error!("mio: second send on slot {slot} while one is in flight: refused");
            self.reactor.ready.push_back(Ready::Refused { slot });
            return;
        }
        conn.send.clear();
        for buf in bufs {
            // SAFETY: `send`'s caller keeps the memory valid and unchanged until this slot's
            // `Sent` or `Closed` is reported; the `RawBuf`s are cleared as soon as the send's
            // outcome is decided (before its `Sent` is reported) or the slot is closed.
            conn.send.push(unsafe { RawBuf::new(buf) });
        }
        conn.send_stage = SendStage::Waiting;
        if conn.connect_in_progress {
            return;
        }
        if let WriteOutcome::Finished(result) = write_out(&conn.stream, &conn.send) {
            conn.send_stage = SendStage::Decided;
            conn.send.clear();
            self.reactor.ready.push_back(Ready::Sent { slot, result });
        }
    }

    fn shutdown_write(&mut self, slot: Slot) {
        if let Some(conn) = self.reactor.slots.get_mut(slot) {
            if conn.send_stage != SendStage::Idle {
                log::error!("mio: shutdown_write on slot {slot} with a send in flight");
            }
            if let Err(err) = conn.stream.shutdown(std::net::Shutdown::Write) {
                log::debug!("mio: shutdown(SHUT_WR) of slot {slot}: {err}");
            }
        }
    }

    fn close(&mut self, slot: Slot) {
        let Some(mut conn) = self.reactor.slots.remove(slot) else {
            log::debug!("mio: close of slot {slot}, which the driver does not own: ignored");
            return;
        };
        if let Err(err) = self.poll.registry().deregister(&mut conn.stream) {
            log::debug!("mio: deregistering slot {slot}: {err}");
        }
        conn.send.clear();
        self.reactor
            .spare_sends
            .push(std::mem::take(&mut conn.send));
        drop(conn);
        self.reactor.ready.push_back(Ready::Closed { slot });
    }

    fn poll<F>(&mut self, timeout: Option<Duration>, mut sink: F) -> io::Result<()>
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        // `None` (also when `timeout` is too large to add): wait without limit.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        loop {
            let mut delivered = self.reactor.deliver_ready(&mut sink);
            delivered += self.reactor.run_pending(&mut sink);
            if delivered > 0 && !self.skipped_wait {
                // Completions queued since the last call (mostly sends that finished at
                // once) are enough for this turn: a zero-timeout wait after them comes back
                // empty in the common request/response case, and the next call waits anyway.
                // Every other turn still asks the poller, so no socket waits more than one
                // extra turn behind a connection that keeps finishing sends.
                self.skipped_wait = true;
                return Ok(());
            }
            self.skipped_wait = false;
            let wait = if delivered > 0 || !self.reactor.pending.is_empty() {
                Some(Duration::ZERO)
            } else {
                deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()))
            };
            self.reactor.counters.enters += 1;
            let mut woken = false;
            match self.poll.poll(&mut self.events, wait) {
                Ok(()) => {
                    for event in self.events.iter() {
                        let (n, wake) = self.reactor.handle_event(event, &mut sink);
                        delivered += n;
                        woken |= wake;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
            if delivered > 0 || woken {
                return Ok(());
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(());
            }
        }
    }

    fn counters(&self) -> DriverCounters {
        self.reactor.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<MioDriver>();
    }

    #[test]
    fn rejects_zero_sizes() {
        let config = DriverConfig {
            read_budget: 0,
            ..DriverConfig::default()
        };
        let err = MioDriver::new(&config).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn names_itself() {
        let driver = MioDriver::new(&DriverConfig::default()).unwrap();
        assert_eq!(driver.name(), "mio");
        assert!(driver.describe().starts_with("mio ("));
    }
}

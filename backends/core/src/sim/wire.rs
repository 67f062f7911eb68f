//! The seam under the simulated driver: how the bytes of a slot move.
//!
//! [`SimDriver`](super::SimDriver) decides *when* things happen (which completion comes
//! first, how a read is cut, how short a send is, how late a connect or a `Closed` is); a
//! [`Wire`] only moves bytes and reports what the other side did. [`MemoryWire`] moves
//! them in memory between the core's slots and the simulated peers of a scenario, in
//! virtual time. A wire over the real sockets the
//! core hands over (non-blocking syscalls, waiting in `poll(2)`) fits the same seam.

use super::world::World;
use crate::clock::Clock;
use crate::driver::{ListenerId, Slot};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How the bytes of the simulated driver's slots move. Every call returns at once.
pub trait Wire {
    /// Takes over a listening socket.
    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()>;
    /// Closes a listening socket; unknown ids are ignored.
    fn unlisten(&mut self, id: ListenerId);
    /// One connection waiting on `id`, if any.
    fn accept(&mut self, id: ListenerId) -> Option<io::Result<(TcpStream, SocketAddr)>>;
    /// Takes over an established stream as `slot`.
    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()>;
    /// Takes over an unconnected socket as `slot` and starts connecting it to `addr`.
    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()>;
    /// How `slot`'s connect ended, once it has.
    fn connected(&mut self, slot: Slot) -> Option<io::Result<()>>;
    /// Reads what arrived for `slot`: `Ok(0)` is end of stream, `WouldBlock` nothing yet.
    fn read(&mut self, slot: Slot, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes a prefix of `data` (at least one byte), or `WouldBlock` when full.
    fn write(&mut self, slot: Slot, data: &[u8]) -> io::Result<usize>;
    /// Ends `slot`'s sending side after what was written.
    fn shutdown_write(&mut self, slot: Slot);
    /// Closes `slot`'s socket.
    fn close(&mut self, slot: Slot);
    /// Lets the other side act up to `now` (peers write and read, a scenario calls the
    /// core's API); whether anything happened that the loop must see.
    fn run_until(&mut self, now: Instant) -> bool;
    /// Waits until something of `interest` may be ready, a wake, or `deadline` (`None`:
    /// no limit): a memory wire moves `clock` to its next event or the deadline. `false`
    /// if nothing can ever happen (no deadline and nothing scheduled).
    fn wait(&mut self, clock: &Clock, deadline: Option<Instant>, interest: &Interest) -> bool;
    /// What a wake from another thread must call to end a blocked [`wait`](Self::wait)
    /// (`None`: waits never block).
    fn notifier(&self) -> Option<Arc<dyn Fn() + Send + Sync>> {
        None
    }
}

/// What the driver waits for: slots it would read or write, listeners it would accept on.
#[derive(Debug, Default)]
pub struct Interest {
    /// Slots with a receive wanted.
    pub reads: Vec<Slot>,
    /// Slots with a send or a connect waiting.
    pub writes: Vec<Slot>,
    /// Listeners accepting.
    pub accepts: Vec<ListenerId>,
}

/// A [`Wire`] that moves bytes in memory, to and from a scenario's simulated peers.
pub struct MemoryWire(Arc<Mutex<World>>);

impl MemoryWire {
    /// A wire to `world`'s peers.
    pub(crate) fn new(world: Arc<Mutex<World>>) -> Self {
        MemoryWire(world)
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Wire for MemoryWire {
    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        self.world().listen(id, listener)
    }

    fn unlisten(&mut self, id: ListenerId) {
        self.world().unlisten(id)
    }

    fn accept(&mut self, id: ListenerId) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        self.world().accept(id)
    }

    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        self.world().register(slot, stream)
    }

    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()> {
        self.world().connect(slot, socket, addr)
    }

    fn connected(&mut self, slot: Slot) -> Option<io::Result<()>> {
        self.world().connected(slot)
    }

    fn read(&mut self, slot: Slot, buf: &mut [u8]) -> io::Result<usize> {
        self.world().read(slot, buf)
    }

    fn write(&mut self, slot: Slot, data: &[u8]) -> io::Result<usize> {
        self.world().write(slot, data)
    }

    fn shutdown_write(&mut self, slot: Slot) {
        self.world().shutdown_write(slot)
    }

    fn close(&mut self, slot: Slot) {
        self.world().close(slot)
    }

    fn run_until(&mut self, now: Instant) -> bool {
        // The scenario's actions call the core's API, which must not find the world
        // locked: `World::run_until` unlocks around them, so it takes the mutex itself.
        World::run_until(&self.0, now)
    }

    fn wait(&mut self, clock: &Clock, deadline: Option<Instant>, _: &Interest) -> bool {
        let next = self.world().next_event();
        let to = match (next, deadline) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        clock.advance_to(to);
        true
    }
}

//! [`SocketWire`]: the simulated driver's bytes over the real sockets the core hands over,
//! with non-blocking syscalls, waiting in `poll(2)` when nothing is ready. With it the
//! simulated driver runs the driver conformance suite (`tests/sim_conformance.rs`) with
//! its seeded chaos (reordered completions, split reads, short sends, late connects,
//! receives and `Closed`), against real peers.

use super::wire::{Interest, Wire};
use crate::clock::Clock;
use crate::driver::{ListenerId, Slot};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

/// A [`Wire`] over real, non-blocking sockets.
pub struct SocketWire {
    socks: BTreeMap<Slot, socket2::Socket>,
    listeners: BTreeMap<ListenerId, TcpListener>,
    /// Slots whose last write found the socket full: the next write waits until
    /// `poll(2)` reports room (the kernel's writability threshold), as an edge-triggered
    /// driver does, rather than squeezing a few bytes into whatever just freed up.
    full: BTreeSet<Slot>,
    /// An eventfd a wake from another thread writes to, ending a blocked `poll(2)`.
    wake: Arc<OwnedFd>,
}

impl SocketWire {
    /// A wire with no socket yet.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; a valid descriptor is owned below, an error is returned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Self {
            socks: BTreeMap::new(),
            listeners: BTreeMap::new(),
            full: BTreeSet::new(),
            wake,
        })
    }

    fn sock(&self, slot: Slot) -> io::Result<&socket2::Socket> {
        self.socks
            .get(&slot)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no socket for the slot"))
    }
}

/// Retries `f` while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl Wire for SocketWire {
    fn listen(&mut self, id: ListenerId, listener: TcpListener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        self.listeners.insert(id, listener);
        Ok(())
    }

    fn unlisten(&mut self, id: ListenerId) {
        self.listeners.remove(&id);
    }

    fn accept(&mut self, id: ListenerId) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        let listener = self.listeners.get(&id)?;
        match retry(|| listener.accept()) {
            Ok((stream, peer)) => Some(stream.set_nonblocking(true).map(|()| (stream, peer))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn register(&mut self, slot: Slot, stream: TcpStream) -> io::Result<()> {
        stream.set_nonblocking(true)?;
        self.socks.insert(slot, stream.into());
        Ok(())
    }

    fn connect(&mut self, slot: Slot, socket: socket2::Socket, addr: SocketAddr) -> io::Result<()> {
        socket.set_nonblocking(true)?;
        match retry(|| socket.connect(&addr.into())) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        self.socks.insert(slot, socket);
        Ok(())
    }

    fn connected(&mut self, slot: Slot) -> Option<io::Result<()>> {
        let sock = match self.sock(slot) {
            Ok(sock) => sock,
            Err(e) => return Some(Err(e)),
        };
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => return Some(Err(e)),
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(_) => Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn read(&mut self, slot: Slot, buf: &mut [u8]) -> io::Result<usize> {
        let mut sock = self.sock(slot)?;
        retry(|| sock.read(buf))
    }

    fn write(&mut self, slot: Slot, data: &[u8]) -> io::Result<usize> {
        if self.full.contains(&slot) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let sock = self.sock(slot)?;
        let result = retry(|| sock.send_with_flags(data, libc::MSG_NOSIGNAL));
        let full = match &result {
            Ok(n) => *n < data.len(),
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        };
        if full {
            self.full.insert(slot);
        }
        result
    }

    fn shutdown_write(&mut self, slot: Slot) {
        if let Ok(sock) = self.sock(slot) {
            let _ = sock.shutdown(Shutdown::Write);
        }
    }

    fn close(&mut self, slot: Slot) {
        self.socks.remove(&slot);
        self.full.remove(&slot);
    }

    fn run_until(&mut self, _: Instant) -> bool {
        false
    }

    fn wait(&mut self, clock: &Clock, deadline: Option<Instant>, interest: &Interest) -> bool {
        let mut fds = vec![libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut add = |fd: RawFd, events: libc::c_short| match fds.iter_mut().find(|p| p.fd == fd) {
            Some(p) => p.events |= events,
            None => fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            }),
        };
        let mut writers = Vec::new();
        for slot in &interest.reads {
            if let Some(s) = self.socks.get(slot) {
                add(s.as_raw_fd(), libc::POLLIN);
            }
        }
        for slot in &interest.writes {
            if let Some(s) = self.socks.get(slot) {
                add(s.as_raw_fd(), libc::POLLOUT);
                writers.push((*slot, s.as_raw_fd()));
            }
        }
        for id in &interest.accepts {
            if let Some(l) = self.listeners.get(id) {
                add(l.as_raw_fd(), libc::POLLIN);
            }
        }
        let timeout = match deadline {
            None => -1,
            Some(at) => {
                let left = at.saturating_duration_since(clock.now());
                // Rounded up, so that the deadline has passed when poll returns.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        // An interrupted wait simply returns; the driver's loop waits again.
        for (slot, fd) in writers {
            let room = fds.iter().any(|p| {
                p.fd == fd && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
            });
            if room {
                self.full.remove(&slot);
            }
        }
        if n > 0 && fds[0].revents != 0 {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into `count` from the eventfd we own (non-blocking).
            let _ = unsafe {
                libc::read(
                    self.wake.as_raw_fd(),
                    count.as_mut_ptr().cast::<libc::c_void>(),
                    count.len(),
                )
            };
        }
        true
    }

    fn notifier(&self) -> Option<Arc<dyn Fn() + Send + Sync>> {
        let wake = Arc::clone(&self.wake);
        Some(Arc::new(move || {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from `one` to the eventfd `wake` keeps open.
            let _ = unsafe {
                libc::write(
                    wake.as_raw_fd(),
                    one.as_ptr().cast::<libc::c_void>(),
                    one.len(),
                )
            };
        }))
    }
}

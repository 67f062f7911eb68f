//! Outbound connections: a client's connect, its timeout, and its outcome.

use super::callback;
use super::phase::{Conn, Phase};
use super::stack::Stack;
use super::state::{Op, State};
use super::timer::{deadline_after, TimerKind};
use super::worker::Worker;
use crate::conn::{ConnShared, Owner};
use crate::driver::{Driver, Slot};
use crate::error::NetworkError;
use crate::layer::Layer;
use crate::service::Service;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

impl<D: Driver> Worker<D> {
    /// Takes a client's socket and connects it (or registers it as it is, if it is
    /// connected already), under `timeout`, which covers its layers' handshakes too.
    pub(super) fn connect(
        &mut self,
        service: Arc<Service>,
        shared: Arc<ConnShared>,
        socket: socket2::Socket,
        addr: SocketAddr,
        timeout: Duration,
        layers: Vec<Box<dyn Layer>>,
    ) {
        let ctx = service.context();
        if self.state.stopping {
            shared.lock().closed = true;
            service.conns.remove(shared.id);
            callback::call_quiet(|| {
                service
                    .handler
                    .on_error(&ctx, Some(shared.id), NetworkError::EventLoopGone)
            });
            shared.set_finished();
            return;
        }
        shared.set_peer(addr);
        // A client made from a stream that is connected already is registered as it is
        // and established at once (its layers' handshakes still run, under the timeout).
        let connected = socket.peer_addr().is_ok();
        let slot = self.state.next_slot();
        {
            // Checked and attached under the queue's lock, which `request_close` takes to
            // mark the connection closed before it looks for an owner to tell: a close
            // either is seen here, or finds the owner and reaches this loop.
            let q = shared.lock();
            if q.closed {
                drop(q);
                // Disconnected before it was started.
                service.conns.remove(shared.id);
                shared.set_finished();
                return;
            }
            shared.attach(Arc::clone(&self.state.shared) as Arc<dyn Owner>, slot);
        }
        let taken = if connected {
            self.driver.register(slot, socket.into())
        } else {
            self.driver.connect(slot, socket, addr)
        };
        if let Err(e) = taken {
            shared.lock().closed = true;
            service.conns.remove(shared.id);
            callback::call_quiet(|| {
                service
                    .handler
                    .on_error(&ctx, Some(shared.id), NetworkError::Connect(e.into()))
            });
            shared.set_finished();
            return;
        }
        let id = shared.id;
        let stack = Stack::new(layers, true);
        let conn = Conn::new(
            shared,
            service,
            Phase::Connecting,
            addr,
            self.state.now,
            stack,
        );
        self.state.insert(slot, conn);
        self.state.timers.add(
            deadline_after(self.state.now, timeout),
            TimerKind::Connect(slot, id),
        );
        if connected {
            self.state.on_connected(slot, Ok(()));
        }
    }
}

impl State {
    pub(super) fn on_connected(&mut self, slot: Slot, result: io::Result<()>) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.phase != Phase::Connecting {
            return;
        }
        match result {
            // Counted as connected once its layers are ready (at once without layers).
            Ok(()) => self.open(slot),
            Err(e) => {
                conn.shared.lock().closed = true;
                conn.phase = Phase::Closing;
                self.report(slot, NetworkError::Connect(e.into()));
                self.ops.push(Op::Close(slot));
            }
        }
    }
}

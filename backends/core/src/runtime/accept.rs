//! Accepting: listeners, admission (`max_connections`, per-IP caps and rates), the
//! accepted connection's socket options and layers, and the back-off after resource
//! errors (`EMFILE`, `ENOBUFS`).

use super::callback::{self, Outcome};
use super::phase::{Conn, Phase};
use super::stack::Stack;
use super::state::{Listener, Op, State, ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN};
use super::timer::TimerKind;
use super::worker::Worker;
use crate::conn::{ConnShared, Owner};
use crate::driver::{Driver, Flow, ListenerId};
use crate::error::{ConfigError, NetworkError};
use crate::id::ConnectionId;
use crate::layer::Layer;
use crate::service::Service;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

impl<D: Driver> Worker<D> {
    pub(super) fn listen(
        &mut self,
        service: Arc<Service>,
        listener: TcpListener,
    ) -> io::Result<()> {
        let id = ListenerId(self.state.next_listener);
        self.state.next_listener += 1;
        self.driver.listen(id, listener)?;
        let ctx = service.context();
        self.state.listeners.insert(
            id,
            Listener {
                service,
                ctx,
                paused: false,
            },
        );
        Ok(())
    }

    /// Opens a connection accepted this turn: admission, socket options, layers, the
    /// driver's `register`, then `on_connect` (once its layers are ready).
    pub(super) fn open_accepted(
        &mut self,
        listener: ListenerId,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let Some(l) = self.state.listeners.get(&listener) else {
            return; // Unlistened meanwhile: dropping the stream closes it.
        };
        let service = Arc::clone(&l.service);
        if self.state.stopping || service.is_stopped() {
            return;
        }
        let ticket = match service.admit(peer, self.state.now) {
            Ok(ticket) => ticket,
            Err(error) => {
                drop(stream);
                let ctx = l.ctx.clone();
                callback::call_quiet(|| service.handler.on_error(&ctx, None, error));
                return;
            }
        };
        let option_errors = apply_socket_options(&stream, &service);
        let layers = match build_layers(&service) {
            Ok(layers) => layers,
            Err(error) => {
                drop(stream);
                service.release();
                service.release_place(ticket);
                let ctx = service.context();
                callback::call_quiet(|| service.handler.on_error(&ctx, None, error));
                return;
            }
        };
        let id = ConnectionId::next();
        if !option_errors.is_empty() {
            let ctx = service.context();
            for error in option_errors {
                callback::call_quiet(|| service.handler.on_error(&ctx, Some(id), error));
            }
        }
        let shared = ConnShared::new(id, service.config.marks, Arc::clone(&service.stats));
        shared.set_peer(peer);
        if !layers.is_empty() {
            shared.set_layered();
        }
        let slot = self.state.next_slot();
        shared.attach(Arc::clone(&self.state.shared) as Arc<dyn Owner>, slot);
        if let Err(e) = self.driver.register(slot, stream) {
            service.release();
            service.release_place(ticket);
            let ctx = service.context();
            callback::call_quiet(|| {
                service
                    .handler
                    .on_error(&ctx, None, NetworkError::Accept(e.into()))
            });
            return;
        }
        service.conns.insert(id, Arc::clone(&shared));
        let stack = Stack::new(layers, false);
        let conn = Conn::new(shared, service, Phase::Open, peer, self.state.now, stack);
        self.state.insert(slot, Conn { ticket, ..conn });
        self.state.open(slot);
    }
}

/// Builds an accepted connection's layers (none for a service without layers). A factory
/// that panics refuses the connection.
fn build_layers(service: &Service) -> Result<Vec<Box<dyn Layer>>, NetworkError> {
    let Some(factories) = service.layer_factories() else {
        return Ok(Vec::new());
    };
    let mut layers = Vec::with_capacity(factories.len());
    match callback::call(|| {
        layers.extend(factories.iter().map(|factory| factory()));
        Ok(())
    }) {
        Outcome::Ok => Ok(layers),
        Outcome::Failed(msg) | Outcome::Panicked(msg) => {
            Err(NetworkError::HandlerPanic(format!("layer factory: {msg}")))
        }
    }
}

/// Applies the service's socket options to an accepted socket; what the system refused,
/// as `Configuration` errors for `on_error` (the connection goes on without the option,
/// as mill-net's does).
fn apply_socket_options(stream: &TcpStream, service: &Service) -> Vec<NetworkError> {
    let sock = socket2::SockRef::from(stream);
    let opts = service.config.socket;
    let mut errors = Vec::new();
    let refused = |option: &'static str, e: io::Error| {
        NetworkError::Configuration(ConfigError::Rejected {
            option,
            reason: format!("the system refused it on an accepted socket: {e}"),
        })
    };
    if let Err(e) = sock.set_tcp_nodelay(opts.no_delay) {
        errors.push(refused("TCP_NODELAY", e));
    }
    if let Some(idle) = opts.keep_alive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
            errors.push(refused("SO_KEEPALIVE", e));
        }
    }
    errors
}

/// Accept errors that concern one connection only: skip it and go on accepting.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::InvalidInput
    )
}

impl State {
    pub(super) fn on_accepted(
        &mut self,
        listener: ListenerId,
        result: io::Result<(TcpStream, SocketAddr)>,
    ) -> Flow {
        match result {
            Ok((stream, peer)) => {
                // A successful accept ends an episode of resource errors. This is done
                // here, in completion order, and not when the stream is opened later in
                // the turn: an error that followed it in the same poll would otherwise be
                // forgotten and reported again on the next retry.
                self.accept_backoff = ACCEPT_BACKOFF_MIN;
                self.accept_error_reported = false;
                self.accepted.push((listener, stream, peer));
                Flow::Continue
            }
            Err(e) if is_per_connection(&e) => {
                log::debug!("ringmill: accept: skipped: {e}");
                Flow::Continue
            }
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning, and try
                // again later (or as soon as one of our connections closes).
                let Some(l) = self.listeners.get_mut(&listener) else {
                    return Flow::Pause;
                };
                l.paused = true;
                let backoff = self.accept_backoff;
                self.accept_backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                self.timers.add(
                    self.shared.clock().now() + backoff,
                    TimerKind::ResumeAccept(listener),
                );
                if !self.accept_error_reported {
                    self.accept_error_reported = true;
                    log::warn!("ringmill: accept failed, backing off: {e}");
                    let (service, ctx) = (&l.service, &l.ctx);
                    callback::call_quiet(|| {
                        service
                            .handler
                            .on_error(ctx, None, NetworkError::Accept(e.into()))
                    });
                }
                Flow::Pause
            }
        }
    }

    pub(super) fn resume_accepting(&mut self, id: ListenerId) {
        if let Some(l) = self.listeners.get_mut(&id) {
            if l.paused {
                l.paused = false;
                self.ops.push(Op::ResumeAccept(id));
            }
        }
    }
}

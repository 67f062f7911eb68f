//! What a loop does with each command from its inbox (`command.rs`); a command that
//! arrives after the loop finished is refused (its waiters told, its sockets closed).

use super::callback;
use super::command::Command;
use super::state::State;
use super::worker::Worker;
use crate::driver::Driver;
use crate::error::NetworkError;
use std::io;
use std::sync::Arc;

impl<D: Driver> Worker<D> {
    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Flush(shared) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.schedule_flush(slot);
                }
            }
            Command::Close(shared, mode) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.begin_close(slot, mode);
                }
            }
            Command::Pause(shared) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.pause(slot);
                }
            }
            Command::Resume(shared) => {
                if let Some(slot) = self.state.slot_of(&shared) {
                    self.state.resume(slot);
                }
            }
            Command::Listen {
                service,
                listener,
                ack,
            } => {
                let result = if self.state.stopping || service.is_stopped() {
                    Err(io::Error::other("event loop is stopping"))
                } else {
                    self.listen(Arc::clone(&service), listener)
                };
                if let Err(std::sync::mpsc::SendError(Err(e))) = ack.send(result) {
                    // Nobody waits (the server was started on a held loop): the server
                    // hears of it here.
                    if !self.state.stopping && !service.is_stopped() {
                        log::error!("ringmill: a loop could not take a listener: {e}");
                        let ctx = service.context();
                        callback::call_quiet(|| {
                            service
                                .handler
                                .on_error(&ctx, None, NetworkError::Io(e.into()))
                        });
                    }
                }
            }
            Command::StopService { service, ack } => {
                self.stop_service(&service);
                // Answered once its last connection here is gone (see `ack_stops`).
                self.state.stop_acks.push((service, ack));
            }
            Command::Connect {
                service,
                conn,
                socket,
                addr,
                timeout,
                layers,
                refused,
            } => {
                if !self.state.stopping && !conn.is_closed() {
                    // Before the connect: the connection goes on without those options.
                    let ctx = service.context();
                    for error in refused {
                        callback::call_quiet(|| {
                            service.handler.on_error(&ctx, Some(conn.id), error)
                        });
                    }
                }
                self.connect(service, conn, socket, addr, timeout, layers)
            }
            Command::Post(task) => {
                let ok = callback::call_task("posted closure", task);
                self.state.shared.count_task_run(!ok);
            }
            Command::Timer(timer) => self.state.timers.add_user(timer, &*self.state.shared),
            Command::Stop => self.stop(),
        }
    }
}

impl State {
    /// A command that arrived after the loop finished: undo what it asked for.
    pub(super) fn refuse(&mut self, command: Command) {
        match command {
            Command::Listen { ack, .. } => {
                let _ = ack.send(Err(io::Error::other("event loop has stopped")));
            }
            Command::StopService { ack, .. } => {
                let _ = ack.send(());
            }
            Command::Connect { service, conn, .. } => {
                conn.lock().closed = true;
                service.conns.remove(conn.id);
                let ctx = service.context();
                callback::call_quiet(|| {
                    service
                        .handler
                        .on_error(&ctx, Some(conn.id), NetworkError::EventLoopGone)
                });
                conn.set_finished();
            }
            Command::Close(conn, _) => conn.set_finished(),
            Command::Flush(conn) | Command::Pause(conn) | Command::Resume(conn) => {
                conn.lock().closed = true;
            }
            // Dropping a timer marks it done; a posted closure is dropped unrun.
            Command::Post(_) | Command::Timer(_) | Command::Stop => {}
        }
    }
}

//! Stopping: a service on this loop (`TcpServer::stop`), the whole loop
//! (`EventLoop::stop`), and a loop whose driver failed for good.

use super::timer::{deadline_after, TimerKind};
use super::worker::Worker;
use crate::conn::CloseMode;
use crate::driver::{Driver, ListenerId};
use crate::service::Service;
use std::sync::Arc;

impl<D: Driver> Worker<D> {
    /// Stops `service` here: no more accepts, its connections closed after writing what
    /// is queued, without waiting for their peers.
    pub(super) fn stop_service(&mut self, service: &Arc<Service>) {
        let ids: Vec<ListenerId> = self
            .state
            .listeners
            .iter()
            .filter(|(_, l)| Arc::ptr_eq(&l.service, service))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.state.listeners.remove(&id);
            self.driver.unlisten(id);
        }
        for slot in self.state.conns.slots() {
            let Some(conn) = self.state.conns.get_mut(slot) else {
                continue;
            };
            if Arc::ptr_eq(&conn.service, service) {
                conn.linger = false;
                self.state.begin_close(slot, CloseMode::Flush);
            }
        }
    }

    /// Stops the loop: no more accepts, every connection closed after writing what is
    /// queued (bounded by the stop timeout), then the loop exits.
    pub(super) fn stop(&mut self) {
        if self.state.stopping {
            return;
        }
        self.state.stopping = true;
        for (id, _) in std::mem::take(&mut self.state.listeners) {
            self.driver.unlisten(id);
        }
        // The deadline counts from now: the turn's clock was read before this turn's
        // work, which can be long under load, and would end the stop early.
        self.state.now = self.state.shared.clock().now();
        let deadline = deadline_after(self.state.now, self.state.settings.stop_timeout);
        self.state.timers.add(deadline, TimerKind::Stop);
        for slot in self.state.conns.slots() {
            self.state.begin_close(slot, CloseMode::Flush);
        }
    }

    /// The driver failed for good: report every connection closed without its help.
    pub(super) fn abandon(&mut self) {
        for slot in self.state.conns.slots() {
            self.state.finish_close(slot);
        }
        for (id, _) in std::mem::take(&mut self.state.listeners) {
            self.driver.unlisten(id);
        }
    }
}

//! A loop thread that died of a panic no callback guard covers: everything that would
//! wait for it is told it is gone.

use super::shared::LoopShared;
use super::worker::Worker;
use crate::driver::Driver;
use crate::error::NetworkError;

impl<D: Driver> Worker<D> {
    /// Called once `run` unwound. Marks the loop stopped (senders and posters are refused
    /// from now on), refuses what waits in its inbox, and closes every connection without
    /// the driver: `on_error(EventLoopGone)`, then `on_disconnect` where `on_connect` ran.
    /// Sockets close when the driver is dropped, after this.
    pub(crate) fn died(&mut self) {
        let state = &mut self.state;
        state.stopping = true;
        for command in state.shared.close_inbox() {
            state.refuse(command);
        }
        for slot in state.conns.slots() {
            let Some(conn) = state.conns.get_mut(slot) else {
                continue;
            };
            conn.shared.lock().closed = true;
            if conn.in_flight {
                // The kernel may still read the buffer of a send in flight: it must outlive
                // the driver, so it is leaked (once, on a dead loop).
                std::mem::forget(std::mem::take(&mut conn.sending));
            }
            let established = conn.established;
            if established {
                state.report(slot, NetworkError::EventLoopGone);
            }
            state.finish_close(slot);
        }
        state.listeners.clear();
        state.shared.publish_counters(&self.driver.counters(), 0);
        LoopShared::leave();
    }
}

//! Keeping the loop's own bookkeeping bounded by what is alive.

use super::state::State;
use crate::driver::Slot;
use crate::id::ConnectionId;

impl State {
    /// A connection was closed (and removed from `conns`): let the timer heap drop the
    /// deadlines of closed connections when enough have piled up
    /// ([`Timers::connection_closed`](crate::runtime::timer::Timers::connection_closed)).
    pub(super) fn forget_timers_of_closed(&mut self) {
        let conns = &self.conns;
        let is_live = |slot: Slot, id: ConnectionId| conns.get(slot).is_some_and(|c| c.id() == id);
        self.timers.connection_closed(self.conns.len(), is_live);
    }
}

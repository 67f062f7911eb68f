//! The loop's tables and the step that turns readiness into completions.

use crate::conn::{write_out, Conn, RawBuf, SendStage, WriteOutcome};
use crate::listener::Listener;
use crate::ready::Ready;
use crate::token::{self, Target};
use mio::event::Event;
use ringmill_core::driver::{self, Completion, DriverCounters, Flow, ListenerId, Slot};
use ringmill_core::pool::{BufId, BufferPool};
use ringmill_core::slots::SlotTable;
use std::collections::{HashMap, VecDeque};
use std::io;

/// Work left over by one poll for the next: a connection or listener that is still ready
/// but stopped because its budget ran out (or, for listeners, after a failed accept or a
/// resume). Nothing tells an edge-triggered poller about it again, so it is kept here, and
/// the next poll does not block while there is any.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Work {
    /// Go on reading from a connection (dropped if the slot was closed meanwhile).
    Read(Slot),
    /// Go on accepting on a listener.
    Accept(ListenerId),
}

/// Everything the event handlers touch, apart from the `Poll` and its `Events`.
pub(crate) struct Reactor {
    /// The connections, by slot.
    pub(crate) slots: SlotTable<Conn>,
    /// Send storage of closed connections, reused by the next ones.
    pub(crate) spare_sends: Vec<Vec<RawBuf>>,
    /// The listeners.
    pub(crate) listeners: HashMap<ListenerId, Listener>,
    /// The loop's receive buffer pool, of which the driver uses one buffer (`buf`): each
    /// read is delivered before the next, so one is enough.
    pool: BufferPool,
    /// The receive buffer, lent to the sink for each read.
    buf: BufId,
    /// Bytes read from one connection per poll.
    read_budget: usize,
    /// Completions waiting for the next poll.
    pub(crate) ready: VecDeque<Ready>,
    /// Work carried over to the next poll.
    pub(crate) pending: VecDeque<Work>,
    /// The driver's counters.
    pub(crate) counters: DriverCounters,
}

impl Reactor {
    /// Empty tables, the receive buffer taken from `pool`, and the given read budget.
    ///
    /// # Panics
    ///
    /// If `pool` has no free buffer.
    pub(crate) fn new(mut pool: BufferPool, read_budget: usize) -> Self {
        let buf = pool
            .take()
            .expect("a receive buffer pool with a free buffer");
        Self {
            slots: SlotTable::new(),
            spare_sends: Vec::new(),
            listeners: HashMap::new(),
            pool,
            buf,
            read_budget,
            ready: VecDeque::new(),
            pending: VecDeque::new(),
            counters: DriverCounters::default(),
        }
    }

    /// The receive buffer's size.
    pub(crate) fn buffer_size(&self) -> usize {
        self.pool.buf_size()
    }

    /// The read budget.
    pub(crate) fn read_budget(&self) -> usize {
        self.read_budget
    }

    /// Queues a read of `slot` for the next poll if it is readable and wanted.
    pub(crate) fn queue_read(&mut self, slot: Slot) {
        if let Some(conn) = self.slots.get_mut(slot) {
            if conn.wants_read() {
                conn.read_queued = true;
                self.pending.push_back(Work::Read(slot));
            }
        }
    }

    /// Queues accepting on `id` for the next poll.
    pub(crate) fn queue_accept(&mut self, id: ListenerId) {
        if let Some(listener) = self.listeners.get_mut(&id) {
            if listener.wants_accept() {
                listener.queued = true;
                self.pending.push_back(Work::Accept(id));
            }
        }
    }

    /// Delivers the completions queued outside `poll`, dropping those of connections closed
    /// since. Returns how many were delivered.
    pub(crate) fn deliver_ready<F>(&mut self, sink: &mut F) -> usize
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = 0;
        while let Some(ready) = self.ready.pop_front() {
            let completion = match ready {
                Ready::Sent { slot, result } => match self.slots.get_mut(slot) {
                    Some(conn) => {
                        conn.send_stage = SendStage::Idle;
                        Completion::Sent { slot, result }
                    }
                    None => continue,
                },
                Ready::Refused { slot } if self.slots.contains(slot) => Completion::Sent {
                    slot,
                    result: Err(driver::second_send_refused()),
                },
                Ready::Connected { slot, result } if self.slots.contains(slot) => {
                    Completion::Connected { slot, result }
                }
                Ready::Closed { slot } => Completion::Closed { slot },
                _ => continue,
            };
            sink(completion);
            delivered += 1;
        }
        delivered
    }

    /// Goes on with the work the previous poll left over. Returns how many completions
    /// were delivered.
    pub(crate) fn run_pending<F>(&mut self, sink: &mut F) -> usize
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        let mut delivered = 0;
        for _ in 0..self.pending.len() {
            let Some(work) = self.pending.pop_front() else {
                break;
            };
            match work {
                Work::Read(slot) => {
                    if let Some(conn) = self.slots.get_mut(slot) {
                        conn.read_queued = false;
                        delivered += read(
                            slot,
                            conn,
                            self.pool.slice_mut(self.buf),
                            self.read_budget,
                            &mut self.pending,
                            sink,
                        );
                    }
                }
                Work::Accept(id) => {
                    if let Some(listener) = self.listeners.get_mut(&id) {
                        listener.queued = false;
                        delivered += accept(id, listener, &mut self.pending, sink);
                    }
                }
            }
        }
        delivered
    }

    /// Handles one readiness event. Returns how many completions were delivered and
    /// whether it was a wake-up.
    pub(crate) fn handle_event<F>(&mut self, event: &Event, sink: &mut F) -> (usize, bool)
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        self.counters.events += 1;
        match token::decode(event.token()) {
            Some(Target::Waker) => {
                self.counters.wakeups += 1;
                (0, true)
            }
            Some(Target::Listener(id)) => {
                let Some(listener) = self.listeners.get_mut(&id) else {
                    return (0, false);
                };
                listener.ready = true;
                (accept(id, listener, &mut self.pending, sink), false)
            }
            Some(Target::Conn { index, generation }) => {
                let Some((slot, conn)) = self.slots.get_at_mut(index as usize) else {
                    return (0, false);
                };
                if !token::names(slot, index, generation) {
                    // An event for an earlier use of the slot.
                    return (0, false);
                }
                let mut delivered = 0;
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                if readable {
                    conn.readable = true;
                }
                if event.is_read_closed() || event.is_error() {
                    conn.read_closed = true;
                }
                if conn.connect_in_progress {
                    let Some(result) = connect_outcome(conn, event) else {
                        return (0, false);
                    };
                    conn.connect_in_progress = false;
                    let failed = result.is_err();
                    sink(Completion::Connected { slot, result });
                    delivered += 1;
                    if failed {
                        return (delivered, false);
                    }
                }
                if writable && conn.send_stage == SendStage::Waiting {
                    if let WriteOutcome::Finished(result) = write_out(&conn.stream, &conn.send) {
                        conn.send_stage = SendStage::Idle;
                        conn.send.clear();
                        sink(Completion::Sent { slot, result });
                        delivered += 1;
                    }
                }
                delivered += read(
                    slot,
                    conn,
                    self.pool.slice_mut(self.buf),
                    self.read_budget,
                    &mut self.pending,
                    sink,
                );
                (delivered, false)
            }
            None => (0, false),
        }
    }
}

/// Reads from `conn` if it wants to, within the budget, and queues the rest for the next
/// poll. Returns how many completions were delivered.
fn read<F>(
    slot: Slot,
    conn: &mut Conn,
    buf: &mut [u8],
    budget: usize,
    pending: &mut VecDeque<Work>,
    sink: &mut F,
) -> usize
where
    F: FnMut(Completion<'_>) -> Flow,
{
    if !conn.wants_read() {
        return 0;
    }
    let (delivered, more) = conn.read_some(slot, buf, budget, sink);
    if more {
        conn.read_queued = true;
        pending.push_back(Work::Read(slot));
    }
    delivered
}

/// Accepts on `listener` if it wants to, and queues the rest for the next poll. Returns
/// how many completions were delivered.
fn accept<F>(
    id: ListenerId,
    listener: &mut Listener,
    pending: &mut VecDeque<Work>,
    sink: &mut F,
) -> usize
where
    F: FnMut(Completion<'_>) -> Flow,
{
    if !listener.wants_accept() {
        return 0;
    }
    let (delivered, more) = listener.accept_some(id, sink);
    if more {
        listener.queued = true;
        pending.push_back(Work::Accept(id));
    }
    delivered
}

/// Whether an outbound connect finished, after an event on its socket: `None` while it is
/// still in progress (a spurious wake-up).
fn connect_outcome(conn: &Conn, event: &Event) -> Option<io::Result<()>> {
    match conn.stream.take_error() {
        Ok(Some(err)) | Err(err) => return Some(Err(err)),
        Ok(None) => {}
    }
    match conn.stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(err)
            if err.kind() == io::ErrorKind::NotConnected
                || crate::sys::connect_in_progress(&err) =>
        {
            // Hung up without a pending error: the connect failed all the same.
            (event.is_error() || event.is_write_closed()).then_some(Err(err))
        }
        Err(err) => Some(Err(err)),
    }
}

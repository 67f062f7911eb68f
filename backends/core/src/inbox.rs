//! A loop's mailbox: commands from other threads (and from callbacks on the loop itself),
//! and the waker that makes a sleeping loop read them.

use crate::conn::ConnShared;
use crate::driver::{DriverCounters, Waker};
use crate::service::Service;
use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

thread_local! {
    /// The id of the loop running on this thread (0: none).
    static CURRENT_LOOP: Cell<usize> = const { Cell::new(0) };
}

static NEXT_LOOP_ID: AtomicUsize = AtomicUsize::new(1);

/// How a close treats data still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Deliver what is queued (up to the loop's linger deadline), then close.
    Flush,
    /// Drop what is queued and close now.
    Abort,
}

/// Work for a loop.
pub(crate) enum Command {
    /// The connection has queued bytes to write.
    Flush(Arc<ConnShared>),
    /// Close the connection.
    Close(Arc<ConnShared>, CloseMode),
    /// Stop delivering the connection's bytes.
    Pause(Arc<ConnShared>),
    /// Deliver the connection's bytes again.
    Resume(Arc<ConnShared>),
    /// Accept connections for a service on this listener.
    Listen {
        service: Arc<Service>,
        listener: TcpListener,
        ack: mpsc::SyncSender<std::io::Result<()>>,
    },
    /// Stop a service on this loop: stop its listeners, close its connections.
    StopService {
        service: Arc<Service>,
        ack: mpsc::SyncSender<()>,
    },
    /// Connect a client.
    Connect {
        service: Arc<Service>,
        conn: Arc<ConnShared>,
        socket: socket2::Socket,
        addr: SocketAddr,
        timeout: Duration,
    },
    /// Stop the loop: close everything, then exit.
    Stop,
}

/// The part of a loop other threads can reach.
pub struct LoopShared {
    id: usize,
    index: usize,
    inbox: Mutex<Inbox>,
    notified: AtomicBool,
    stopped: AtomicBool,
    counters: [AtomicU64; 9],
}

/// The commands, and the waker while the loop runs.
struct Inbox {
    commands: Vec<Command>,
    /// Dropped when the loop exits: the waker owns an OS resource (an eventfd, a pipe),
    /// and this `LoopShared` can outlive the loop by a long time (connections reach it,
    /// and the connection map frees them lazily through epoch-deferred destruction).
    waker: Option<Arc<dyn Waker>>,
}

impl LoopShared {
    pub(crate) fn new(index: usize, waker: Arc<dyn Waker>) -> Arc<Self> {
        Arc::new(Self {
            id: NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed),
            index,
            inbox: Mutex::new(Inbox {
                commands: Vec::new(),
                waker: Some(waker),
            }),
            notified: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            counters: Default::default(),
        })
    }

    /// The loop's position in its event loop (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Whether the calling thread is this loop's thread.
    pub fn is_current(&self) -> bool {
        CURRENT_LOOP.with(|c| c.get()) == self.id
    }

    /// Whether the calling thread runs any loop (so it must never block on one).
    pub fn on_any_loop() -> bool {
        CURRENT_LOOP.with(|c| c.get()) != 0
    }

    pub(crate) fn enter(&self) {
        CURRENT_LOOP.with(|c| c.set(self.id));
    }

    pub(crate) fn leave() {
        CURRENT_LOOP.with(|c| c.set(0));
    }

    /// Whether the loop has exited (its thread returned or is returning).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Queues a command; wakes the loop unless the caller is the loop itself or a wake is
    /// already on its way. Returns `false` (and drops the command) if the loop is gone.
    pub(crate) fn push(&self, command: Command) -> bool {
        let waker = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_stopped() {
                return false;
            }
            inbox.commands.push(command);
            if !self.is_current() && !self.notified.swap(true, Ordering::AcqRel) {
                inbox.waker.clone()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            if let Err(e) = waker.wake() {
                log::error!("waking loop {} failed: {e}", self.index);
            }
        }
        true
    }

    /// Asks the loop to stop. Idempotent.
    pub fn request_stop(&self) {
        self.push(Command::Stop);
    }

    /// Takes every queued command (the loop calls this after each poll).
    pub(crate) fn drain(&self, into: &mut Vec<Command>) {
        // Reset before taking, so a command pushed after the take wakes the loop again.
        self.notified.store(false, Ordering::Release);
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut inbox.commands, into);
    }

    /// Commands left behind when the loop exits are dropped (closing their sockets), and
    /// so is the waker: nothing wakes a loop that has exited.
    pub(crate) fn close_inbox(&self) -> Vec<Command> {
        let (commands, waker) = {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            self.stopped.store(true, Ordering::Release);
            (std::mem::take(&mut inbox.commands), inbox.waker.take())
        };
        drop(waker);
        commands
    }

    pub(crate) fn publish_counters(&self, c: &DriverCounters) {
        let values = [
            c.enters,
            c.sqes,
            c.cqes,
            c.enobufs,
            c.cq_overflows,
            c.rearms,
            c.events,
            c.wakeups,
            c.recv_buffers_out,
        ];
        for (slot, v) in self.counters.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The driver counters as last published by the loop.
    pub fn counters(&self) -> DriverCounters {
        let v: Vec<u64> = self
            .counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        DriverCounters {
            enters: v[0],
            sqes: v[1],
            cqes: v[2],
            enobufs: v[3],
            cq_overflows: v[4],
            rearms: v[5],
            events: v[6],
            wakeups: v[7],
            recv_buffers_out: v[8],
        }
    }
}

//! A loop's mailbox: work from other threads (and from callbacks on the loop itself), the
//! waker that makes a sleeping loop read it, and the gate a held loop waits at. Generic
//! over what is mailed: the runtime's commands (`runtime/command.rs`) are the runtime's
//! own; this file knows nothing of connections or services.
//!
//! Also here: which loop, if any, the calling thread runs.

use crate::driver::Waker;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

thread_local! {
    /// The id of the loop running on this thread (0: none).
    static CURRENT_LOOP: Cell<usize> = const { Cell::new(0) };
}

static NEXT_LOOP_ID: AtomicUsize = AtomicUsize::new(1);

/// Whether the calling thread runs any loop (so it must never block on one).
pub(crate) fn on_any_loop() -> bool {
    CURRENT_LOOP.with(|c| c.get()) != 0
}

/// Whether a loop held at its gate may dispatch (mill-io's loops wait for `run()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Built, waiting for [`Mailbox::open_gate`]: the thread has not polled yet and
    /// nothing in the mailbox was taken.
    Held,
    /// Dispatching.
    Open,
    /// Stopped before it was released: the thread exits without dispatching anything,
    /// dropping what was queued.
    Abandoned,
}

/// What is mailed, and the waker while the loop runs.
struct Inner<C> {
    /// Kept under the mailbox's lock, so whoever sees `Held` there acts before the loop
    /// can take anything.
    gate: Gate,
    items: Vec<C>,
    /// Dropped when the loop exits: the waker owns an OS resource (an eventfd, a pipe),
    /// and the mailbox can outlive the loop by a long time (connections reach it, and the
    /// connection map frees them lazily through epoch-deferred destruction).
    waker: Option<Arc<dyn Waker>>,
}

/// One loop's mailbox of `C`.
pub(crate) struct Mailbox<C> {
    /// The loop's identity for [`is_current`](Self::is_current).
    id: usize,
    index: usize,
    inner: Mutex<Inner<C>>,
    notified: AtomicBool,
    stopped: AtomicBool,
    /// Something was mailed by the loop's own thread since the last drain: the next poll
    /// must not block (nothing wakes a loop for its own mail).
    local: AtomicBool,
    /// Signalled when the gate opens.
    gate_opened: Condvar,
}

impl<C> Mailbox<C> {
    /// The mailbox of loop `index`, waking it with `waker`; `held` loops wait at the gate.
    pub(crate) fn new(index: usize, waker: Arc<dyn Waker>, held: bool) -> Self {
        Self {
            id: NEXT_LOOP_ID.fetch_add(1, Ordering::Relaxed),
            index,
            inner: Mutex::new(Inner {
                gate: if held { Gate::Held } else { Gate::Open },
                items: Vec::new(),
                waker: Some(waker),
            }),
            notified: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            local: AtomicBool::new(false),
            gate_opened: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<C>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the calling thread is this loop's thread.
    pub(crate) fn is_current(&self) -> bool {
        CURRENT_LOOP.with(|c| c.get()) == self.id
    }

    /// The calling thread runs this loop from now on (until [`leave`](Self::leave)).
    pub(crate) fn enter(&self) {
        CURRENT_LOOP.with(|c| c.set(self.id));
    }

    /// The calling thread runs no loop any more.
    pub(crate) fn leave() {
        CURRENT_LOOP.with(|c| c.set(0));
    }

    /// Whether the loop has exited (its thread returned or is returning).
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Mails `item`; wakes the loop unless the caller is the loop itself or a wake is
    /// already on its way. Returns `false` (and drops the item) if the loop is gone.
    pub(crate) fn push(&self, item: C) -> bool {
        let waker = {
            let mut inner = self.lock();
            if self.is_stopped() {
                return false;
            }
            inner.items.push(item);
            if self.is_current() {
                self.local.store(true, Ordering::Relaxed);
                None
            } else if !self.notified.swap(true, Ordering::AcqRel) {
                inner.waker.clone()
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

    /// Lets a held loop dispatch (`open`), or abandons it (`!open`: its thread exits
    /// without dispatching); nothing for a loop released or stopped before.
    pub(crate) fn open_gate(&self, open: bool) {
        let mut inner = self.lock();
        if inner.gate == Gate::Held {
            inner.gate = if open { Gate::Open } else { Gate::Abandoned };
            self.gate_opened.notify_all();
        }
    }

    /// Whether the loop is held: built, not yet released nor stopped.
    pub(crate) fn is_held(&self) -> bool {
        self.lock().gate == Gate::Held
    }

    /// Blocks the loop thread while the loop is held; `true` if it may dispatch, `false`
    /// if it was stopped before being released.
    pub(crate) fn wait_gate(&self) -> bool {
        let mut inner = self.lock();
        while inner.gate == Gate::Held {
            inner = self
                .gate_opened
                .wait(inner)
                .unwrap_or_else(|e| e.into_inner());
        }
        inner.gate == Gate::Open
    }

    /// Mails like [`push`](Self::push); `Some(true)` if the loop is held (it takes the
    /// item once released), `None` if the loop is gone.
    pub(crate) fn push_held(&self, item: C) -> Option<bool> {
        let held = self.is_held();
        // A loop seen held may be released meanwhile: then the item is simply taken at
        // its first turn, and a caller that does not wait loses nothing.
        self.push(item).then_some(held)
    }

    /// On a held loop, takes the items `pick` selects out of the mailbox (to be dropped by
    /// the caller, outside the lock) and returns them; `None` if the loop is not held (it
    /// takes its mail itself).
    pub(crate) fn withdraw_if_held(&self, mut pick: impl FnMut(&C) -> bool) -> Option<Vec<C>> {
        let mut inner = self.lock();
        if inner.gate != Gate::Held {
            return None;
        }
        let (taken, kept) = std::mem::take(&mut inner.items)
            .into_iter()
            .partition(|c| pick(c));
        inner.items = kept;
        Some(taken)
    }

    /// Takes everything mailed (the loop calls this after each poll).
    pub(crate) fn drain(&self, into: &mut Vec<C>) {
        // Reset before taking, so an item mailed after the take wakes the loop again.
        self.notified.store(false, Ordering::Release);
        self.local.store(false, Ordering::Relaxed);
        let mut inner = self.lock();
        std::mem::swap(&mut inner.items, into);
    }

    /// Marks the loop stopped and returns what is left (for the caller to refuse), and
    /// drops the waker: nothing wakes a loop that has exited.
    pub(crate) fn close(&self) -> Vec<C> {
        let (items, waker) = {
            let mut inner = self.lock();
            self.stopped.store(true, Ordering::Release);
            (std::mem::take(&mut inner.items), inner.waker.take())
        };
        drop(waker);
        items
    }

    /// Whether the loop's own thread mailed something since it last drained the mailbox
    /// (from a timer or posted closure, say): the loop polls without blocking then.
    pub(crate) fn has_local_work(&self) -> bool {
        self.local.load(Ordering::Relaxed)
    }
}

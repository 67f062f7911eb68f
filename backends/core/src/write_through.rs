//! Answers written straight from the received buffer.
//!
//! A hand-written echo loop reads into a buffer and writes that same buffer back: the
//! bytes are copied by the kernel on the way in and on the way out, and never in between.
//! A library that queues every sent frame copies them a third time, into the connection's
//! queue. This module removes that copy for the common case: while the loop hands a plain
//! connection's received bytes to `on_data`, it opens a *window* on them; a frame that the
//! handler sends back to that connection, and that lies inside the window, is not copied
//! but recorded as a range of it. When the delivery is over, still inside the driver's
//! `Received` (so the buffer is still lent), the loop writes those ranges through the
//! driver's [`WriteNow`](crate::driver::WriteNow) and copies into the queue only what the
//! socket did not take.
//!
//! Order is kept because a frame is deferred only while the connection's queue is empty
//! (checked under its lock) and the loop has no send in flight for it (the loop opens the
//! window only then): the deferred ranges come first, and whatever is queued after them
//! (by this thread or another) goes behind them. Only the thread that opened the window
//! sees it, so a frame sent from any other thread is queued as before.

use std::cell::RefCell;

/// The open window of this thread's loop. A connection is named by the address of its
/// shared half (`Arc::as_ptr` of its `ConnShared`, never 0), which its loop keeps alive
/// while the window is open.
struct Window {
    /// The connection being delivered to (see [`open`]), or 0: no window is open.
    conn: usize,
    /// The address range of the bytes being delivered.
    start: usize,
    end: usize,
    /// Deferred frames as (offset, length) from `start`, contiguous ones merged.
    ranges: Vec<(usize, usize)>,
    /// Their total length.
    bytes: usize,
}

thread_local! {
    static WINDOW: RefCell<Window> = const {
        RefCell::new(Window {
            conn: 0,
            start: 0,
            end: 0,
            ranges: Vec::new(),
            bytes: 0,
        })
    };
}

/// Opens the window on `data`, the bytes about to be delivered to the handler of `conn`
/// (the address of its `ConnShared`). The
/// caller (the loop that owns `conn`) guarantees that `conn` has no send in flight and no
/// unsent bytes of its own, and that `data` stays lent until [`close`].
pub(crate) fn open(conn: usize, data: &[u8]) {
    WINDOW.with(|w| {
        let mut w = w.borrow_mut();
        w.conn = conn;
        w.start = data.as_ptr() as usize;
        w.end = w.start + data.len();
        w.ranges.clear();
        w.bytes = 0;
    });
}

/// Records `frame`, sent to `conn`, as deferred if it lies inside the window opened for
/// `conn`; `false` if it must be queued as usual. Called under `conn`'s queue lock with the
/// queue empty.
pub(crate) fn defer(conn: usize, frame: &[u8]) -> bool {
    WINDOW.with(|w| {
        let mut w = w.borrow_mut();
        let at = frame.as_ptr() as usize;
        if w.conn != conn || at < w.start || at + frame.len() > w.end {
            return false;
        }
        let offset = at - w.start;
        match w.ranges.last_mut() {
            Some((o, l)) if *o + *l == offset => *l += frame.len(),
            _ => w.ranges.push((offset, frame.len())),
        }
        w.bytes += frame.len();
        true
    })
}

/// Closes the window: moves the deferred ranges (offsets into the delivered bytes) into
/// `into`, replacing what it held, and returns their total length.
pub(crate) fn close(into: &mut Vec<(usize, usize)>) -> usize {
    WINDOW.with(|w| {
        let mut w = w.borrow_mut();
        w.conn = 0;
        into.clear();
        std::mem::swap(&mut w.ranges, into);
        std::mem::take(&mut w.bytes)
    })
}

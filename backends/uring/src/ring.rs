//! The ring: queueing SQEs without ever dropping one, entering the kernel, reaping CQEs.

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, squeue, EnterFlags, IoUring};
use std::collections::VecDeque;
use std::io;
use std::time::Instant;

/// How long one [`Ring::enter`] may wait for a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Submit and reap only.
    No,
    /// Until a completion arrives or the instant passes.
    Until(Instant),
    /// Until a completion arrives.
    Forever,
}

/// Retries of an enter that the kernel refused for a passing reason (`EBUSY`, `EAGAIN`)
/// before the call gives up for this round (the queued SQEs stay queued).
const BUSY_RETRIES: u32 = 8;

/// The io_uring instance plus the driver's own bookkeeping around it.
pub(crate) struct Ring {
    ring: IoUring,
    /// SQEs that found the submission queue full even after a submit; they go in first at
    /// the next chance, in order.
    waiting: VecDeque<squeue::Entry>,
    /// CQEs taken out of the completion queue to make room while submitting; they are
    /// handed out first by the next [`Ring::reap`].
    backlog: Vec<cqueue::Entry>,
    /// Operations whose final completion (one without `IORING_CQE_F_MORE`) has not been
    /// reaped yet.
    pub inflight: usize,
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// SQEs queued.
    pub sqes: u64,
    /// CQEs reaped.
    pub cqes: u64,
    /// Times the completion queue was seen overflowed (`IORING_SQ_CQ_OVERFLOW`).
    pub cq_overflows: u64,
}

impl Ring {
    /// Wraps a ring built by [`setup`](crate::setup).
    pub(crate) fn new(ring: IoUring) -> Self {
        Self {
            ring,
            waiting: VecDeque::new(),
            backlog: Vec::new(),
            inflight: 0,
            enters: 0,
            sqes: 0,
            cqes: 0,
            cq_overflows: 0,
        }
    }

    /// The ring itself, for registration calls.
    pub(crate) fn io_uring(&self) -> &IoUring {
        &self.ring
    }

    /// Whether CQEs are waiting in the backlog (so the next wait must not block).
    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Queues one SQE. When the submission queue is full the queued entries are submitted
    /// first; if the kernel cannot take them right now the entry waits in order for the
    /// next [`enter`](Self::enter). An SQE is never dropped.
    ///
    /// # Safety
    ///
    /// Every buffer, `msghdr`, address or descriptor the entry points to must stay valid
    /// until the operation's final completion has been reaped.
    pub(crate) unsafe fn push(&mut self, entry: squeue::Entry) {
        self.sqes += 1;
        self.inflight += 1;
        if !self.waiting.is_empty() {
            self.waiting.push_back(entry);
            self.fill();
            return;
        }
        // SAFETY: the caller keeps everything the entry points to alive until its final
        // completion, which is what `SubmissionQueue::push` requires.
        if unsafe { self.ring.submission().push(&entry) }.is_ok() {
            return;
        }
        // Full: hand the queue to the kernel and try once more.
        if let Err(e) = self.enter_once(0, Wait::No) {
            log::debug!("io_uring submit with a full submission queue failed: {e}");
        }
        // SAFETY: as above.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.waiting.push_back(entry);
        }
    }

    /// Moves waiting SQEs into the submission queue while there is room.
    fn fill(&mut self) {
        let mut sq = self.ring.submission();
        while let Some(entry) = self.waiting.front() {
            // SAFETY: the entry was handed to `push`, whose caller keeps what it points to
            // alive until its final completion.
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            self.waiting.pop_front();
        }
    }

    /// Submits everything queued and waits as `wait` says, in one `io_uring_enter` unless
    /// SQEs are waiting for room (each full queue then takes one enter of its own) or the
    /// kernel is busy. `EINTR` is retried with the remaining time; `ETIME` is a normal end.
    pub(crate) fn enter(&mut self, wait: Wait) -> io::Result<()> {
        let mut busy = 0;
        while !self.waiting.is_empty() {
            let before = self.waiting.len();
            self.fill();
            match self.enter_once(0, Wait::No) {
                Ok(()) => {}
                Err(e) if is_busy(&e) && busy < BUSY_RETRIES => busy += 1,
                Err(e) if is_busy(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
            self.fill();
            if self.waiting.len() >= before {
                // The kernel took nothing this time: leave the rest for the next call
                // rather than spin; the final enter below still submits what fits.
                break;
            }
        }
        let mut wait = if self.backlog.is_empty() {
            wait
        } else {
            Wait::No
        };
        loop {
            match self.enter_once(1, wait) {
                Ok(()) => return Ok(()),
                Err(e) if is_busy(&e) && busy < BUSY_RETRIES => {
                    // The completions moved to the backlog must be handled before waiting.
                    busy += 1;
                    wait = Wait::No;
                }
                Err(e) if is_busy(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// One `io_uring_enter` (retried on `EINTR`): submits the queued SQEs and, with
    /// `IORING_ENTER_GETEVENTS`, runs deferred completion work and waits for up to
    /// `want` completions as `wait` allows. On `EBUSY`/`EAGAIN` the completion queue is
    /// emptied into the backlog (so the kernel can flush its overflow) before returning
    /// the error.
    fn enter_once(&mut self, want: u32, wait: Wait) -> io::Result<()> {
        loop {
            let to_submit = self.ring.submission().len() as u32;
            let submitter = self.ring.submitter();
            self.enters += 1;
            let res = match wait {
                Wait::No => {
                    // SAFETY: no argument pointer is passed; the ring fd is valid.
                    unsafe {
                        submitter.enter::<libc::sigset_t>(
                            to_submit,
                            0,
                            EnterFlags::GETEVENTS.bits(),
                            None,
                        )
                    }
                }
                Wait::Forever => {
                    // SAFETY: no argument pointer is passed; the ring fd is valid.
                    unsafe {
                        submitter.enter::<libc::sigset_t>(
                            to_submit,
                            want,
                            EnterFlags::GETEVENTS.bits(),
                            None,
                        )
                    }
                }
                Wait::Until(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ts = Timespec::from(left);
                    let args = SubmitArgs::new().timespec(&ts);
                    // SAFETY: `args` (and the timespec it points to) outlive the call, and
                    // `EXT_ARG` tells the kernel to read it as `io_uring_getevents_arg`,
                    // which `SubmitArgs` is a transparent wrapper of; the ring has
                    // `IORING_FEAT_EXT_ARG` (checked at setup).
                    unsafe {
                        submitter.enter(
                            to_submit,
                            if left.is_zero() { 0 } else { want },
                            (EnterFlags::GETEVENTS | EnterFlags::EXT_ARG).bits(),
                            Some(&args),
                        )
                    }
                }
            };
            match res {
                Ok(_) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ETIME) => return Ok(()),
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                        self.drain_to_backlog();
                        return Err(e);
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// Moves every CQE out of the completion queue into the backlog.
    fn drain_to_backlog(&mut self) {
        let cq = self.ring.completion();
        self.backlog.extend(cq);
    }

    /// Appends every available CQE (the backlog first) to `out`, accounting finished
    /// operations. Returns `true` if the completion queue had overflowed into the kernel's
    /// side list, in which case an [`enter`](Self::enter) with [`Wait::No`] flushes it and
    /// another `reap` picks the rest up.
    pub(crate) fn reap(&mut self, out: &mut Vec<cqueue::Entry>) -> bool {
        let start = out.len();
        out.append(&mut self.backlog);
        out.extend(self.ring.completion());
        let reaped = &out[start..];
        self.cqes += reaped.len() as u64;
        let finished = reaped
            .iter()
            .filter(|cqe| !cqueue::more(cqe.flags()))
            .count();
        self.inflight = self.inflight.saturating_sub(finished);
        let overflow = self.ring.submission().cq_overflow();
        if overflow {
            self.cq_overflows += 1;
        }
        overflow
    }
}

fn is_busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN))
}

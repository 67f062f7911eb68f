//! What the loop's own deadlines do when they come: connect, idle, linger, handshake,
//! accept back-off, stop (and the user's timers, run by the timer heap).

use super::phase::Phase;
use super::state::{Op, State};
use super::timer::{deadline_after, TimerKind};
use crate::conn::CloseMode;
use crate::error::NetworkError;
use crate::metrics::Stat;
use std::io;

impl State {
    pub(super) fn timer(&mut self, timer: TimerKind) {
        match timer {
            TimerKind::Connect(slot, id) => {
                // The connect timeout covers the layers' handshakes too.
                if self.is(slot, id, Phase::Open) && self.handshaking(slot) {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connect timed out during the layer handshake",
                    );
                    self.report(slot, NetworkError::Connect(e.into()));
                    self.begin_close(slot, CloseMode::Abort);
                } else if self.is(slot, id, Phase::Connecting) {
                    self.report(
                        slot,
                        NetworkError::Connect(
                            io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into(),
                        ),
                    );
                    if let Some(conn) = self.conns.get_mut(slot) {
                        conn.shared.lock().closed = true;
                        conn.phase = Phase::Closing;
                        self.ops.push(Op::Close(slot));
                    }
                }
            }
            TimerKind::Idle(slot, id) => {
                if !self.is(slot, id, Phase::Open) {
                    return;
                }
                let conn = self.conns.get(slot).expect("checked by is()");
                let Some(idle) = conn.service.config.idle_timeout else {
                    return;
                };
                let due = deadline_after(conn.last_active, idle);
                if due <= self.now {
                    conn.service.count(Stat::IdleTimeout, 1);
                    self.report(slot, NetworkError::IdleTimeout(id));
                    self.begin_close(slot, CloseMode::Flush);
                } else {
                    self.timers.add(due, TimerKind::Idle(slot, id));
                }
            }
            TimerKind::Linger(slot, id) => {
                if self.is(slot, id, Phase::Draining) || self.is(slot, id, Phase::Lingering) {
                    self.begin_close(slot, CloseMode::Abort);
                }
            }
            TimerKind::Handshake(slot, id) => self.handshake_expired(slot, id),
            TimerKind::ResumeAccept(listener) => self.resume_accepting(listener),
            TimerKind::User(timer) => self.timers.fire_user(timer, self.now, &*self.shared),
            TimerKind::Stop => {
                for slot in self.conns.slots() {
                    self.begin_close(slot, CloseMode::Abort);
                }
            }
        }
    }
}

//! A deterministic simulation of the core: the real loop (`runtime::spawn`, the worker,
//! the connection map, layers, timers) over [`SimDriver`], a driver that keeps the
//! [driver contract](crate::driver) from a seed, in virtual time, with a scenario of
//! servers, clients and peers drawn from the same seed.
//!
//! Compiled with the `sim` feature only; hidden from the documentation and not semver
//! surface. The test `tests/simulation.rs` runs many seeds; a failing seed prints the one
//! command that replays it.
//!
//! # How a run goes
//!
//! [`run`] draws a world from the seed: up to three servers, plain or framed (a layer
//! the test supplies), with small watermarks and chunk sizes, idle timeouts and
//! connection caps; up to ten peers each and up to four clients, with send plans,
//! receive windows, stalls, resets, ends of stream; connects that succeed late, are
//! refused or never answered; up to fifty "other thread" actions (sends, bursts, `close`,
//! `close_gracefully`, `abort`, `pause_reads`, `resume_reads`); `TcpServer::stop` with
//! its acknowledgement; and finally `EventLoop::stop`. The handlers play an application
//! too: they greet, answer, close, fail, pause, and leave timers and posted closures on
//! the loop. It starts the real loop with `runtime::spawn`, whose driver is a
//! [`SimDriver`] over a [`MemoryWire`] to that world. Everything happens on the loop
//! thread: the world acts inside `poll`, between the loop's turns, and reaches the loop
//! through the same inbox (`ConnSender`, `LoopShared`) a real other thread uses. The
//! clock is manual: it moves only when nothing is ready, to the next event or the loop's
//! timeout. So a seed is a replay, and the trace (a hash of every event, driver calls
//! included) of two runs of one seed must match.
//!
//! The same driver runs over a `SocketWire` (Linux) too, moving the bytes over the real
//! sockets the core hands over: `tests/sim_conformance.rs` runs the driver conformance
//! suite on it, chaos included.
//!
//! # What it checks, after every step
//!
//! * `on_connect` before anything else of a connection; exactly one `on_disconnect` per
//!   `on_connect`, after the driver's `Closed`, and nothing after it;
//! * bytes in order, none lost, repeated or reordered, both ways (peers and handlers send
//!   seeded patterns that the other end checks byte by byte); `on_data` chunks within the
//!   configured size; with the framing layer, one whole frame per `on_data`, and whole
//!   frames on the wire;
//! * `on_writable` only once everything queued reached the peer; queues within the high
//!   watermark plus one frame;
//! * after `stop()`'s acknowledgement, no connection of that server left, none counted
//!   open, and no new one;
//! * the core's side of the driver contract: no slot reused before its `Closed`, one
//!   send in flight per slot, nothing asked of a closed slot, send buffers unchanged while
//!   in flight, no send after `shutdown_write`;
//! * the run ends: every socket closed, every `stop()` answered, no livelock.
//!
//! # What it cannot find
//!
//! * Races between threads: there is one loop thread and the "other threads" act
//!   between turns, so interleavings *inside* a turn (a send racing the loop's flush
//!   under the connection's lock) are for the loom models and the stress tests.
//! * Kernel behaviour: the memory wire is a model (no Nagle, no partial `RST` effects, no
//!   real buffer sizes), so what a real socket does differently is for the driver
//!   conformance suite and the integration tests.
//! * Several loops, mill-io's held loops, TLS, SOCKS5 (only a simple framing layer runs),
//!   admission rules beyond `max_connections`, panicking handlers.
//! * Orders the core leaves to a `HashMap`: the worker's listeners are iterated in hash
//!   order (`unlisten` at a stop, `resume_accept` after a `Closed`), so those two calls are
//!   noted in the failure tail but kept out of the trace hash until that order is fixed.
//! * Anything about the real drivers: it tests the core against the contract, not
//!   io_uring or mio.

mod act;
mod check;
mod deliver;
mod driver;
mod log;
mod net;
pub mod rng;
mod scenario;
#[cfg(target_os = "linux")]
mod sockets;
mod state;
mod wire;
pub(crate) mod world;

pub use driver::{Chaos, SimDriver};
pub use log::Log;
pub use net::frame;
#[cfg(target_os = "linux")]
pub use sockets::SocketWire;
pub use wire::{Interest, MemoryWire, Wire};

use crate::clock::Clock;
use crate::layer::LayerFactory;
use crate::runtime;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use world::World;

/// How long a run may take in real time before it is declared hung.
const REAL_TIME_LIMIT: Duration = Duration::from_secs(120);

/// What one seed's run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The hash of every event, in order: equal for two runs of one seed.
    pub trace: u64,
    /// How many events were recorded.
    pub events: u64,
    /// The rules broken, in order (empty: the run passed).
    pub violations: Vec<String>,
    /// The last events before the first broken rule (or the end), for a failure message.
    pub tail: String,
    /// How many events of each kind the run recorded (what it exercised).
    pub counts: std::collections::BTreeMap<&'static str, u64>,
}

/// Runs the scenario of `seed`. `layer` builds the framing layer of framed connections:
/// a big-endian `u16` length, then the payload (see [`frame`]), with each decoded
/// payload passed up whole (`Frames::push_frame`); `None` runs every connection plain.
pub fn run(seed: u64, layer: Option<LayerFactory>) -> Outcome {
    let clock = Clock::manual();
    let log = Log::new(clock.now());
    let (world, settings) = World::build(seed, clock.clone(), log.clone(), layer);
    let (done_tx, done_rx) = mpsc::channel();
    let thread_id = Arc::new(Mutex::new(None));
    let make = {
        let (world, clock, log, thread_id) = (
            Arc::clone(&world),
            clock.clone(),
            log.clone(),
            Arc::clone(&thread_id),
        );
        move || -> Result<SimDriver<MemoryWire>, std::io::Error> {
            *thread_id.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(std::thread::current().id());
            Ok(SimDriver::new(MemoryWire::new(world), seed, clock, log).notify_drop(done_tx))
        }
    };
    panics::watch();
    match runtime::spawn(0, settings, make) {
        Ok(thread) => {
            if done_rx.recv_timeout(REAL_TIME_LIMIT).is_ok() {
                runtime::shutdown(vec![thread]);
            } else {
                log.violation(
                    clock.now(),
                    format!("the loop did not finish within {REAL_TIME_LIMIT:?} of real time"),
                );
            }
        }
        Err(e) => log.violation(clock.now(), format!("the loop did not start: {e}")),
    }
    let loop_thread = *thread_id.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(message) = loop_thread.and_then(panics::take) {
        log.violation(
            clock.now(),
            format!("the loop thread panicked outside the callback guards: {message}"),
        );
    }
    world.lock().unwrap_or_else(|e| e.into_inner()).finish();
    let (trace, events) = log.trace();
    Outcome {
        seed,
        trace,
        events,
        violations: log.violations(),
        tail: log.tail(),
        counts: log.counts(),
    }
}

/// Panics on loop threads: none is expected (the simulated handlers never panic, and the
/// loop catches what its callbacks do), so any is a finding.
mod panics {
    use std::collections::HashMap;
    use std::sync::{Mutex, Once, OnceLock};
    use std::thread::ThreadId;

    fn seen() -> &'static Mutex<HashMap<ThreadId, String>> {
        static SEEN: OnceLock<Mutex<HashMap<ThreadId, String>>> = OnceLock::new();
        SEEN.get_or_init(Default::default)
    }

    /// Installs (once) a hook that notes each panic's thread and message, then does what
    /// the previous hook did.
    pub(super) fn watch() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let message = info.to_string();
                seen()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(std::thread::current().id(), message);
                previous(info);
            }));
        });
    }

    /// The panic seen on `thread`, if any (forgotten once taken).
    pub(super) fn take(thread: ThreadId) -> Option<String> {
        seen()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&thread)
    }
}

//! The driver conformance suite on the simulated driver over real sockets
//! (`ringmill_core::sim::SocketWire`): the contract as the suite checks it, with the
//! simulator's seeded chaos (reordered completions across slots, split reads, short sends,
//! late connects, receives and `Closed`). `RINGMILL_SIM_SEED=s` picks the seed (default 1).
//! Two freedoms stay off: accept errors (the suite takes every `Accepted` for a
//! connection) and chosen short sends (the suite reads a short `Sent` as a full socket,
//! and expects a small send taken whole); reads are cut within the configured buffer
//! size.
#![cfg(all(feature = "sim", feature = "conformance", target_os = "linux"))]

use ringmill_core::clock::Clock;
use ringmill_core::sim::{Chaos, Log, SimDriver, SocketWire};
use ringmill_core::DriverConfig;

fn seed() -> u64 {
    std::env::var("RINGMILL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn make(config: &DriverConfig) -> SimDriver<SocketWire> {
    let clock = Clock::system();
    let log = Log::new(clock.now());
    let wire = SocketWire::new().expect("an eventfd for the simulated driver");
    SimDriver::new(wire, seed(), clock, log).with_chaos(Chaos {
        accept_errors: false,
        short_sends: false,
        max_read: config.buffer_size,
    })
}

ringmill_core::driver_conformance!(make);

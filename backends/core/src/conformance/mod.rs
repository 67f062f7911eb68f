//! The driver conformance suite: the [driver contract](crate::driver) as tests, written once
//! against the [`Driver`](crate::driver::Driver) trait and run by every driver.
//!
//! Each contract test is a function generic over the driver, taking how to build one:
//! `fn accept_and_echo<D: Driver>(make: impl Fn(&DriverConfig) -> D)`. A driver crate
//! describes its driver once, as a [`harness::Target`] (how to build it, whether the
//! machine has it) in its tests' common module, and runs the whole suite with one line in
//! one test file:
//!
//! ```ignore
//! mod common;
//! ringmill_core::driver_conformance!(target: common::MIO);
//! ```
//!
//! which expands to one `#[test]` per suite function (the list is in
//! [`driver_conformance!`](crate::driver_conformance)), so a new contract test reaches every
//! driver at once. Tests about one driver's own machinery (io_uring ring limits and opcode
//! probing, mio's read budget) stay in that driver's crate, run through the same target
//! ([`harness::Target::run`]) and use the rest of the [`harness`] too.
//!
//! # What the suite checks
//!
//! Accepting (peer address, non-blocking stream, pause and resume, `unlisten`), connecting
//! (success, refusal), echo with random sizes, short reads and short writes, many
//! connections, pausing by `Flow::Pause` and by `pause_recv`, `shutdown_write`, close with
//! receives and sends in flight (exactly one `Closed`, nothing else, no descriptor or
//! receive buffer kept), dropping a driver with operations in flight, slot reuse, waking,
//! interrupted waits, `MSG_NOSIGNAL`, no `Received` after the end (even after `recv`
//! again), idle connections holding no receive buffer, close right after `register` or
//! `connect`, and two broken calls.
//!
//! # Broken calls
//!
//! A `send` on a slot the driver does not own and a second `send` while one is in flight
//! have the outcome the [driver contract](crate::driver) gives them; the suite checks it
//! exactly, with no allowance for a build-dependent panic.
//!
//! # Where the contract text is silent
//!
//! * When `unlisten` closes the socket: the suite asks only that connecting is refused
//!   once later polls have run (the mio driver closes it at once, the io_uring driver once
//!   the kernel let go of its accept).
//!
//! # Running beside each other
//!
//! The suite functions of one test binary run on parallel threads. The few that count the
//! process's descriptors or change a signal disposition take [`harness::exclusive`]; all
//! others take [`harness::shared`], so those few run alone.
//!
//! # A simulated driver
//!
//! Nothing here depends on io_uring or mio: the suite drives the trait and plays the peers
//! with loopback sockets, so any `Driver` plugs in through `make`. The trait hands a driver
//! real `std` sockets (`listen`, `register`, `connect`), so a simulator (one that injects
//! short sends, short reads, reordered completions across slots, delayed `Closed`) runs
//! the suite as it stands if it moves bytes over those sockets. A simulator with no
//! sockets at all would first need the trait's socket types abstracted; the peers here
//! would then come from the simulator too. Two checks read platform facilities and skip
//! themselves where those are missing: the descriptor count (`/proc/self/fd`) and the
//! signal tests (Unix). The driver counters the suite reads are only the ones the contract
//! gives a meaning for every driver (`wakeups`, `recv_buffers_out`).
//!
//! This module is compiled with the `conformance` feature only, is hidden from the
//! documentation and is not semver surface.

pub mod harness;
mod suite;

pub use suite::*;

/// Expands to one `#[test]` per conformance suite function, each building its drivers with
/// `$make` (an expression of a type `Fn(&DriverConfig) -> D + Send + Copy + 'static`, such
/// as a closure capturing nothing).
///
/// `driver_conformance!(target: T)` takes both from a
/// [`Target`](crate::conformance::harness::Target), the one a driver crate's own tests use
/// too.
///
/// With `available: $probe` (an expression of type `fn() -> Result<(), String>`), each test
/// first asks whether the machine has the driver at all. Where it does not, the test says
/// `skipped: <reason>` by name and returns if `RINGMILL_TEST_ALLOW_MISSING_URING=1` is set,
/// and fails otherwise: a driver the machine lacks is never a silent pass.
#[macro_export]
#[doc(hidden)]
macro_rules! driver_conformance {
    (target: $target:expr) => {
        $crate::driver_conformance!($target.make, available: $target.available);
    };
    ($make:expr) => {
        $crate::driver_conformance!($make, available: || Ok(()));
    };
    ($make:expr, available: $probe:expr) => {
        $crate::driver_conformance!(@tests $make; $probe;
            accept_and_echo,
            echo_random_sizes,
            echo_small_buffers,
            echo_many_connections,
            echo_pausing_every_read,
            echo_pausing_every_third_read,
            echo_pause_recv,
            echo_write_now,
            pause_keeps_unread_bytes_until_recv,
            nothing_received_after_the_end,
            idle_connections_hold_no_buffer,
            close_reports_one_closed_and_nothing_else,
            close_in_flight_many_times,
            drop_with_operations_in_flight,
            slots_are_reusable_after_closed,
            waker_wakes_a_blocked_poll,
            every_wake_ends_one_timed_poll,
            zero_timeout_poll_does_not_block,
            connect_refused,
            close_right_after_register_or_connect,
            connect_and_exchange,
            shutdown_write_sends_fin_after_the_bytes,
            accept_pause_and_resume,
            unlisten_closes_the_listener,
            blocked_send_completes_when_writable,
            send_on_an_unknown_slot,
            second_send_in_flight,
        );
        #[cfg(unix)]
        $crate::driver_conformance!(@tests $make; $probe;
            send_to_a_vanished_peer_raises_no_sigpipe,
            interrupted_polls_are_retried,
        );
    };
    (@tests $make:expr; $probe:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                // One at a time: several tests count the process's descriptors.
                let _serial = $crate::conformance::serial();
                if $crate::conformance::driver_available($probe) {
                    $crate::conformance::$name($make);
                }
            }
        )*
    };
}

/// Runs the suite's tests one at a time within a test binary: several of them check that
/// the process's descriptor count comes back, which a test running beside them would
/// disturb. A test that failed does not poison the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the driver `probe` asks about can run here; see [`driver_conformance!`].
pub fn driver_available(probe: impl FnOnce() -> Result<(), String>) -> bool {
    match probe() {
        Ok(()) => true,
        Err(reason) if std::env::var("RINGMILL_TEST_ALLOW_MISSING_URING").as_deref() == Ok("1") => {
            println!("skipped: {reason}");
            eprintln!("skipped: {reason}");
            false
        }
        Err(reason) => panic!(
            "{reason} (set RINGMILL_TEST_ALLOW_MISSING_URING=1 to skip the tests of a driver \
             this machine lacks)"
        ),
    }
}

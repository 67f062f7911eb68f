//! The io_uring driver's own machinery, beyond the shared contract (which
//! `tests/conformance.rs` runs): setup and opcode probing as `describe()` reports them,
//! configuration errors, the provided buffer ring running dry, a tiny completion queue,
//! and its counters.
#![cfg(target_os = "linux")]

mod common;

use common::URING;
use ringmill_core::conformance::harness::*;
use ringmill_core::driver::Driver;
use ringmill_core::DriverConfig;
use ringmill_uring::UringDriver;
use std::io;

#[test]
fn name_and_description() {
    URING.run(|t| {
        let driver = t.driver(&small_config());
        assert_eq!(driver.name(), "io_uring");
        let d = driver.describe();
        assert!(d.starts_with("io_uring ("), "{d}");
        assert!(d.contains("multishot accept+recv"), "{d}");
        assert!(d.contains("provided buffer ring 16x4KiB"), "{d}");
        eprintln!("{d}");
    });
}

#[test]
fn invalid_config_is_a_setup_error() {
    URING.run(|_| {
        let config = DriverConfig {
            buffer_count: 3,
            ..DriverConfig::default()
        };
        let err = UringDriver::new(&config)
            .err()
            .expect("3 buffers is not a power of two");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.reason().contains("buffer_count"), "{}", err.reason());
    });
}

#[test]
fn counters_of_an_echo_run() {
    URING.run(|t| {
        let driver = t.driver(&DriverConfig::default());
        let (stats, counters) = echo_run(driver, Policy::default(), payloads(1, &[], 12, 1 << 20));
        assert!(stats.bytes > 0);
        assert!(
            counters.enters > 0 && counters.sqes > 0 && counters.cqes > 0,
            "{counters:?}"
        );
        assert_eq!(counters.events, 0, "{counters:?}");
        assert_eq!(counters.recv_buffers_out, 0, "{counters:?}");
    });
}

#[test]
fn four_buffers_under_fifty_busy_connections_lose_nothing() {
    URING.run(|t| {
        let driver = t.driver(&DriverConfig {
            buffer_size: 4096,
            buffer_count: 4,
            ..DriverConfig::default()
        });
        let (_, counters) = echo_run(
            driver,
            Policy::default(),
            payloads(200, &[], 50, 256 * 1024),
        );
        assert!(
            counters.enobufs > 0,
            "the buffer ring never ran dry: {counters:?}"
        );
        assert!(counters.rearms > 0, "{counters:?}");
        assert_eq!(counters.recv_buffers_out, 0, "{counters:?}");
    });
}

#[test]
fn tiny_completion_queue_loses_no_completion() {
    URING.run(|t| {
        let driver = t.driver(&DriverConfig {
            buffer_size: 4096,
            buffer_count: 64,
            ring_entries: 8,
            cq_entries: 8,
            ..DriverConfig::default()
        });
        let (_, counters) = echo_run(
            driver,
            Policy::default(),
            payloads(300, &[], 100, 128 * 1024),
        );
        eprintln!("tiny CQ counters: {counters:?}");
    });
}

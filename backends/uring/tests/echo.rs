//! Echo through the driver: sizes, concurrency, buffer starvation, a tiny completion queue,
//! pause and resume.
#![cfg(target_os = "linux")]

mod common;

use common::{echo_run, Policy};
use ringmill_core::DriverConfig;

#[test]
fn random_sizes_up_to_1mib_echo_intact() {
    let (stats, counters) = echo_run(&DriverConfig::default(), Policy::default(), 12, 1 << 20, 1);
    assert!(stats.bytes > 0);
    assert!(counters.enters > 0 && counters.sqes > 0 && counters.cqes > 0);
}

#[test]
fn hundred_concurrent_connections() {
    let config = DriverConfig {
        buffer_size: 16 * 1024,
        ..DriverConfig::default()
    };
    echo_run(&config, Policy::default(), 100, 64 * 1024, 100);
}

#[test]
fn four_buffers_under_fifty_busy_connections_lose_nothing() {
    let config = DriverConfig {
        buffer_size: 4096,
        buffer_count: 4,
        ..DriverConfig::default()
    };
    let (_, counters) = echo_run(&config, Policy::default(), 50, 256 * 1024, 200);
    assert!(
        counters.enobufs > 0,
        "the buffer ring never ran dry: {counters:?}"
    );
    assert!(counters.rearms > 0, "{counters:?}");
}

#[test]
fn tiny_completion_queue_loses_no_completion() {
    let config = DriverConfig {
        buffer_size: 4096,
        buffer_count: 64,
        ring_entries: 8,
        cq_entries: 8,
        ..DriverConfig::default()
    };
    let (_, counters) = echo_run(&config, Policy::default(), 100, 128 * 1024, 300);
    eprintln!("tiny CQ counters: {counters:?}");
}

#[test]
fn pause_by_flow_keeps_every_byte_in_order() {
    let config = DriverConfig {
        buffer_size: 2048,
        buffer_count: 64,
        ..DriverConfig::default()
    };
    let policy = Policy {
        pause_every: Some(3),
        ..Policy::default()
    };
    let (stats, _) = echo_run(&config, policy, 16, 512 * 1024, 400);
    assert!(stats.pauses > 0);
}

#[test]
fn pause_recv_keeps_every_byte_in_order() {
    let config = DriverConfig {
        buffer_size: 2048,
        buffer_count: 64,
        ..DriverConfig::default()
    };
    let policy = Policy {
        pause_recv_every: Some(2),
        ..Policy::default()
    };
    let (stats, _) = echo_run(&config, policy, 16, 512 * 1024, 500);
    assert!(stats.pauses > 0);
}

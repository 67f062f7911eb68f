//! The io_uring driver runs the driver conformance suite (`ringmill_core::conformance`).
//! On a kernel without io_uring each test says `skipped: io_uring unavailable: ...` (with
//! `RINGMILL_TEST_ALLOW_MISSING_URING=1`) or fails.
#![cfg(target_os = "linux")]

ringmill_core::driver_conformance!(
    |config: &ringmill_core::DriverConfig| {
        ringmill_uring::UringDriver::new(config).expect("io_uring driver setup")
    },
    available: || {
        ringmill_uring::UringDriver::new(&ringmill_core::DriverConfig::default())
            .map(drop)
            .map_err(|e| format!("io_uring unavailable: {e}"))
    }
);

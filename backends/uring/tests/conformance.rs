//! The io_uring driver runs the driver conformance suite (`ringmill_core::conformance`).
#![cfg(target_os = "linux")]

ringmill_core::driver_conformance!(|config: &ringmill_core::DriverConfig| {
    ringmill_uring::UringDriver::new(config).expect("io_uring driver setup")
});

//! The io_uring driver under test, shared by the conformance suite (`conformance.rs`) and
//! the driver's own tests (`ring.rs`). On a kernel without io_uring each test says
//! `skipped: io_uring unavailable: ...` (with `RINGMILL_TEST_ALLOW_MISSING_URING=1`) or
//! fails.

use ringmill_core::conformance::harness::Target;
use ringmill_core::DriverConfig;
use ringmill_uring::UringDriver;

/// The io_uring driver, where the kernel lets this process build a ring.
pub const URING: Target<UringDriver> = Target {
    make: |config| UringDriver::new(config).expect("io_uring driver setup"),
    available: || {
        UringDriver::new(&DriverConfig::default())
            .map(drop)
            .map_err(|e| format!("io_uring unavailable: {e}"))
    },
};

//! The mio driver under test, shared by the conformance suite (`conformance.rs`) and the
//! driver's own tests (`readiness.rs`).

use ringmill_core::conformance::harness::Target;
use ringmill_mio::MioDriver;

/// The mio driver, which every platform has.
pub const MIO: Target<MioDriver> = Target {
    make: |config| MioDriver::new(config).expect("creating the mio driver"),
    available: || Ok(()),
};

//! The driver under test: how a driver crate's tests build its driver and learn whether
//! the machine has it, written once per crate and shared by the conformance suite and the
//! crate's own tests.

use super::shared;
use crate::config::DriverConfig;
use crate::driver::Driver;

/// A driver under test. A driver crate defines one, as a constant in its tests' common
/// module, and hands it to [`driver_conformance!`](crate::driver_conformance) (`target:`)
/// and to each of its own tests ([`run`](Self::run)): neither copies the other's setup.
///
/// ```ignore
/// pub const MIO: Target<MioDriver> = Target {
///     make: |config| MioDriver::new(config).expect("creating the mio driver"),
///     available: || Ok(()),
/// };
/// ```
pub struct Target<D> {
    /// Builds a driver with `config`; panics if it cannot (the machine having the driver).
    pub make: fn(&DriverConfig) -> D,
    /// `Ok` where this machine has the driver, else why not (io_uring denied or absent).
    pub available: fn() -> Result<(), String>,
}

impl<D: Driver> Target<D> {
    /// A driver built with `config`.
    pub fn driver(&self, config: &DriverConfig) -> D {
        (self.make)(config)
    }

    /// Runs one of the driver crate's own tests: where the machine lacks the driver, says
    /// `skipped: <reason>` by name and returns, or fails (see
    /// [`driver_available`](crate::conformance::driver_available)); else runs `test`, beside
    /// the binary's other tests that take [`shared`](super::shared) only.
    pub fn run(&self, test: impl FnOnce(&Self)) {
        let _shared = shared();
        if crate::conformance::driver_available(self.available) {
            test(self);
        }
    }
}

//! The mio driver runs the driver conformance suite (`ringmill_core::conformance`).

ringmill_core::driver_conformance!(|config: &ringmill_core::DriverConfig| {
    ringmill_mio::MioDriver::new(config).expect("creating the mio driver")
});

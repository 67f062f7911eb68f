//! The mio driver runs the driver conformance suite (`ringmill_core::conformance`).

mod common;

ringmill_core::driver_conformance!(target: common::MIO);

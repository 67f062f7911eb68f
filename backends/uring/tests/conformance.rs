//! The io_uring driver runs the driver conformance suite (`ringmill_core::conformance`).
#![cfg(target_os = "linux")]

mod common;

ringmill_core::driver_conformance!(target: common::URING);

//! Test tools (cargo feature `testing`), as in mill-net's `testing` module: a TCP proxy that
//! splits, throttles, stalls and resets the connections it forwards.

mod chaos;

pub use chaos::{ChaosConfig, ChaosProxy};

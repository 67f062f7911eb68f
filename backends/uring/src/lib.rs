//! ringmill's io_uring driver.
//!
//! [`UringDriver`] implements the core's [`Driver`](ringmill_core::driver::Driver) contract
//! on one io_uring instance per loop thread:
//!
//! * **Setup** ([`UringDriver::new`]): the real ring is built with
//!   `SINGLE_ISSUER|DEFER_TASKRUN`, else `COOP_TASKRUN|TASKRUN_FLAG`, else plain flags; the
//!   kernel must offer `IORING_FEAT_NODROP` and `IORING_FEAT_EXT_ARG`, every opcode the driver
//!   uses must pass the probe, and the kernel must be recent enough for multishot accept and
//!   multishot receive. Anything missing is a [`SetupError`], so the caller can fall back to
//!   another backend with the reason.
//! * **Accept**: one multishot accept per listener, re-armed whenever a completion lacks
//!   `IORING_CQE_F_MORE`.
//! * **Receive**: multishot receive over a provided buffer ring built from the core's
//!   [`BufferPool`](ringmill_core::pool::BufferPool); the bytes handed to the sink are the
//!   ring buffer itself, returned to the ring as soon as the sink returns. An empty ring
//!   (`ENOBUFS`) stops that connection's receive until buffers come back.
//! * **Send**: one `IORING_OP_SEND` (one buffer) or `IORING_OP_SENDMSG` (several) with
//!   `MSG_NOSIGNAL` per request.
//! * **Close**: cancel every operation of the connection, wait for each of their
//!   completions, close the descriptor, then report one `Closed`.
//! * **Wake**: an eventfd whose read is armed in the ring.
//! * **Poll**: one `io_uring_enter` submits everything queued and waits.
//!
//! Every operation carries a `user_data` of slot (32 bits), generation (24 bits) and
//! operation kind (8 bits); see the `user_data` module.
//!
//! Not used: `IORING_OP_SEND_ZC` (over loopback it saves nothing and adds a notification
//! per send), and fixed buffers: receives pick the pool's buffers through the provided
//! buffer ring, and sends come from the core's memory (or, answered from a received
//! buffer, from a `sendmsg(2)` during the delivery), so registering the pool with
//! `IORING_REGISTER_BUFFERS` would only lock memory; it is not done.
//!
//! The crate is Linux-only: on every other target it compiles to nothing.
//!
//! # Not a public API
//!
//! This crate is an engine part of `ringmill`, released with it in lockstep; applications
//! use `ringmill`, which picks the backend. Its items are not semver surface and may change
//! in any release.
#![warn(missing_docs)]

#[cfg(target_os = "linux")]
mod accept;
#[cfg(target_os = "linux")]
mod buf_ring;
#[cfg(target_os = "linux")]
mod close;
#[cfg(target_os = "linux")]
mod conn;
#[cfg(target_os = "linux")]
mod driver;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod recv;
#[cfg(target_os = "linux")]
mod ring;
#[cfg(target_os = "linux")]
mod send;
#[cfg(target_os = "linux")]
mod setup;
#[cfg(all(test, target_os = "linux"))]
mod tests;
#[cfg(target_os = "linux")]
mod user_data;
#[cfg(target_os = "linux")]
mod waker;

#[cfg(target_os = "linux")]
pub use driver::UringDriver;
#[cfg(target_os = "linux")]
pub use error::SetupError;

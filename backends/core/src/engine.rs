//! The one entry through which the `ringmill` facade reaches the engine: starting and
//! stopping loop threads, servers' and clients' services, the connection map. Not semver
//! surface (see the crate docs); the engine modules behind it are private to this crate.
//!
//! The driver contract ([`crate::driver`], [`crate::slots`], [`crate::pool`],
//! [`crate::clock`]) is what the drivers implement and stays where they reach it; it is
//! re-exported here too, so the facade names the engine through this module alone.

pub use crate::clock::Clock;
pub use crate::driver::{Driver, DriverCounters};
pub use crate::map::ConnMap;
pub use crate::runtime::{
    context, listen, notify_listening, shutdown, spawn, stop_service, ClientConn, LoopSettings,
    LoopShared, LoopThread, SpawnError,
};
pub use crate::service::{Service, ServiceConfig, SocketOptions};

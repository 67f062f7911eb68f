//! The contract tests, one function each, generic over the driver, in files by topic.

mod accept;
mod close;
mod connect;
mod echo;
mod receive;
mod send;
#[cfg(unix)]
mod signals;
mod wake;

pub use accept::*;
pub use close::*;
pub use connect::*;
pub use echo::*;
pub use receive::*;
pub use send::*;
#[cfg(unix)]
pub use signals::*;
pub use wake::*;

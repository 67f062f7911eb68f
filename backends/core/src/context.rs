//! ServerContext and ConnSender (in progress).

/// Context for handlers.
pub struct ServerContext {}

//! The application close codes of a QUIC connection between a client and the coordinator.
//!
//! The coordinator closes a connection with one of these; the client reads the code (and the
//! reason text beside it) to decide whether reconnecting can help. Both ends take them from here
//! so that they cannot drift apart.

/// The run is over.
pub const CLOSE_FINISHED: u32 = 0;
/// The coordinator is shutting down: reconnect later.
pub const CLOSE_SHUTDOWN: u32 = 1;
/// The peer broke the protocol or may not do what it asked (a bad `Hello`, or an operator's
/// key asking for work): reconnecting cannot help, and the reason says why.
pub const CLOSE_PROTOCOL: u32 = 2;
/// A newer connection with the same key took this one's place (two clients started with one
/// key; the older one should stop).
pub const CLOSE_REPLACED: u32 = 3;

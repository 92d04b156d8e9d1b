//! The language nodes of an mpcl run speak: parameter vectors and statistics as plain data,
//! the messages built from them, their encoding and size limits, identities and signatures.
//!
//! Nothing here knows about burn or sockets, so every other crate (the model, the coordinator,
//! the client, the simulations) can share these types without pulling in either.

pub mod messages;
pub mod params;
pub mod stats;
pub mod vector;

pub use params::{NamedTensor, ParameterSet, ParameterSetError};
pub use stats::{CooccurrenceStatistics, PrototypeStatistics, StatisticsError};
pub use vector::F32Vec;

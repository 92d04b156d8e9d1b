//! The participant node. Its data never leaves it: [`participant::Participant`] trains the MPCL
//! network on the local samples from the global state of a round and builds the update the
//! federation needs (encoder delta, prototype and co-occurrence statistics, sample count), and
//! nothing else. The same code runs inside `mpcl client` and inside in-process simulations.

pub mod participant;

pub use participant::{Participant, ParticipantError, ParticipantSettings};

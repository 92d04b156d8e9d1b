//! The participant node. Its data never leaves it: [`participant::Participant`] trains the MPCL
//! network on the local samples from the global state of a round and builds the update the
//! federation needs (encoder delta, prototype and co-occurrence statistics, sample count), and
//! nothing else. The same code runs inside `mpcl client` and inside in-process simulations.
//!
//! [`session`] is the QUIC connection to the coordinator (pinned key, `Hello` admission, one
//! request per stream); [`node`] is the loop around it (ask for work, train, sign, upload,
//! reconnect with backoff).

pub mod evaluation;
pub mod faults;
pub mod node;
pub mod participant;
pub mod personalize;
pub mod secure;
pub mod session;

pub use faults::FaultInjection;
pub use node::{Node, NodeConfig, NodeError, NodeEvent, NodeOutcome, UpdateOutcome};
pub use participant::{
    LocalTrainer, Participant, ParticipantError, ParticipantSettings, TrainedUpdate,
};
pub use session::{Session, SessionConfig, SessionError};

//! The participant node. Its data never leaves it: [`participant::Participant`] trains the MPCL
//! network on the local samples from the global state of a round and builds the update the
//! federation needs (encoder delta, prototype and co-occurrence statistics, sample count), and
//! nothing else. The same code runs inside `mpcl client` and inside in-process simulations.
//!
//! [`machine`] is the participant's side of the protocol as a pure state machine (what to send,
//! train and wait for), driven by both the QUIC node and the in-process federation; [`session`]
//! is the QUIC connection to the coordinator (pinned key, `Hello` admission, one request per
//! stream); [`node`] is the async layer that drives the machine over it (train, sign, upload,
//! reconnect with backoff).

pub mod evaluation;
pub mod events;
pub mod faults;
pub mod machine;
pub mod node;
pub mod participant;
pub mod personalize;
pub mod secure;
pub mod session;

pub use events::{NodeEvent, UpdateOutcome};
pub use faults::FaultInjection;
pub use machine::{ClientMachine, HandedRound, Output, ProtocolError};
pub use node::{Node, NodeConfig, NodeError, NodeOutcome};
pub use participant::{
    LocalTrainer, Participant, ParticipantError, ParticipantSettings, TrainedUpdate,
};
pub use session::{Session, SessionConfig, SessionError};

//! Why an update was not counted: one reason, detailed enough for the coordinator's log and
//! sent as it is to the participant in `UpdateRejected`.
//!
//! The signature check (protocol), the replay check and the content check (coordinator) all
//! answer with this type, so a participant reads the same words the coordinator logged.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::messages::RunId;

/// Why an update was not counted.
///
/// The variants up to `SecureAggregationRequired` keep their order: checkpoints and round logs
/// hold them.
#[derive(Clone, Debug, Error, PartialEq, Serialize, Deserialize)]
pub enum RejectReason {
    /// The update names another run.
    #[error(
        "update is for run {}, this run is {}",
        hex::encode(found),
        hex::encode(expected)
    )]
    WrongRun { expected: RunId, found: RunId },
    /// The update is for a round that has already been aggregated.
    #[error("update is for round {round}, which is over (current round {current})")]
    StaleRound { round: u64, current: u64 },
    /// The update is for a round that has not started.
    #[error("update is for round {round}, which has not started (current round {current})")]
    FutureRound { round: u64, current: u64 },
    /// No round is collecting updates (for example the coordinator restarted and waits for
    /// participants); ask for work again.
    #[error("round {round} is not collecting updates yet (ask for work again)")]
    RoundNotOpen { round: u64 },
    /// The run has completed all its rounds.
    #[error("the run is finished")]
    RunFinished,
    /// The participant already answered this round.
    #[error("duplicate update for round {round}")]
    Duplicate { round: u64 },
    /// The participant was not sampled for this round.
    #[error("participant was not sampled for round {round}")]
    NotSampled { round: u64 },
    /// The encoder delta or a statistics block does not match the global layout.
    #[error("layout mismatch: {0}")]
    LayoutMismatch(String),
    /// A value is NaN or infinite.
    #[error("{0} holds a non-finite value")]
    NonFinite(String),
    /// A value exceeds a configured bound.
    #[error("{what} is {value}, above the limit {limit}")]
    Oversized {
        what: String,
        value: f64,
        limit: f64,
    },
    /// The claimed sample count is zero (it is the aggregation weight).
    #[error("update claims zero training samples")]
    ZeroSamples,
    /// Prototype or co-occurrence statistics are malformed.
    #[error("invalid statistics: {0}")]
    InvalidStatistics(String),
    /// The attached evaluation report cannot be right (a negative or non-finite sum, a
    /// fractional count, a value too large to add exactly).
    #[error("invalid evaluation report: {0}")]
    InvalidEvaluation(String),
    /// The run uses secure aggregation: updates must be masked, never sent in the clear.
    #[error("this run uses secure aggregation: send the update masked, not in the clear")]
    SecureAggregationRequired,
    /// The signer is not enrolled.
    #[error("participant is not enrolled")]
    UnknownParticipant,
    /// The update is signed by someone other than the participant on this connection.
    #[error("update is signed by another participant than the one connected")]
    SenderMismatch,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The payload could not be decoded or is inconsistent with its envelope.
    #[error("malformed update: {0}")]
    Malformed(String),
}

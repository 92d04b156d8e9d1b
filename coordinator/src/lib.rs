//! The mpcl coordinator: the federated round logic as a pure state machine, the aggregation
//! rules, run configuration, privacy (differential-privacy accounting, clipping and noise),
//! checkpoints and the per-round log.
//!
//! Nothing but [`server`] opens a socket or reads a clock: [`round::Coordinator`] is fed events
//! with the time and returns actions, so the in-process simulation and the QUIC server
//! ([`server`]) run the very same code.

pub mod aggregation;
pub mod checkpoint;
pub mod config;
pub mod evaluation;
pub mod exact_sum;
pub mod final_table;
pub mod prior_comparison;
pub mod privacy;
pub mod round;
pub mod round_log;
pub mod secure_relay;
pub mod secure_session;
pub mod server;
pub mod validate;

#[cfg(test)]
mod test_support;

pub use aggregation::{
    Aggregate, AggregationError, ContributionPolicy, FedAdamState, RoundAggregator,
};
pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointFormatError, LoadedCheckpoint, read_checkpoint,
    read_latest_checkpoint, write_checkpoint,
};
pub use config::{
    AggregationConfig, AggregationRule, ConfigError, CoordinatorConfig, LearningRateSchedule,
    TrainingSettings,
};
pub use privacy::{
    BudgetExhausted, LedgerError, PrivacyConfig, PrivacyLedger, PrivacySpent, SecureRoundPlan,
};
pub use round::{
    Action, ContributorSummary, Coordinator, CoordinatorError, Event, Millis, ParticipantId,
    RoundPrivacy, RoundStatus, RoundSummary, StopReason, WaitReason,
};
pub use round_log::{RoundLog, RoundLogError, RoundRecord, RoundTraffic};
pub use secure_relay::{RelayOutput, SecureRelay};
pub use secure_session::{HandOut, SecureSessions};
pub use validate::{RejectReason, validate_update};

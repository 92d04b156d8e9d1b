//! The messages of a federated run. Only plain data lives here; encoding, limits and signatures
//! are in their own modules so that each can change without touching the others.
//!
//! # The conversation
//!
//! A client opens one QUIC connection (mutual TLS, ALPN [`crate::codec::ALPN`]) and then talks
//! in strict request/response pairs: for each request it opens a bidirectional stream, writes one
//! [`ClientMessage`] frame, finishes its side, and reads exactly one [`CoordinatorMessage`]
//! frame back. (A rejected client certificate does not fail the QUIC `connect()`, so the first
//! exchange doubles as the admission check.)
//!
//! ```text
//! client                                     coordinator
//!   | Hello { participant_id, version } ------> |  checks version and that the id matches the
//!   | <--- Welcome { run_id, model, schema,.. } |  key that authenticated the TLS connection
//!   |                                          |  (or Error { reason } and closes)
//!   | RequestWork { last_completed_round } ---> |
//!   | <---------- Wait { retry_after_ms, reason } |  not sampled / waiting for participants /
//!   |   ... sleeps retry_after_ms, asks again ... |  aggregating / already submitted
//!   | RequestWork ----------------------------> |
//!   | <- StartRound { run_id, round, state, config, deadline_ms }
//!   |   ... trains locally for E epochs ...       |
//!   | Update(SignedUpdate) -------------------> |  verifies signature, run, round, replay,
//!   | <------- UpdateAccepted { round }          |  values (NaN, sizes, layout)
//!   |      or UpdateRejected { round, reason }   |
//!   | RequestWork { Some(round) } ------------> |  ... next round, or
//!   | <---------------------- Finished { rounds } |  the run is over
//!   | RequestFinalModel ----------------------> |  (a node that personalizes)
//!   | <------- FinalModel { run_id, round, state } |  the best (else the last) round's model
//!   | Goodbye --------------------------------> |
//!   | <------------------------------- Goodbye   |  then the client closes the connection
//! ```
//!
//! Under secure aggregation `StartRound` carries the round's [`SecureRoundSetup`] and the
//! `Update` exchange is replaced by the five `SecureAggregation` exchanges of the masking
//! protocol (see [`crate::secure_aggregation`]'s `wire` module docs, re-exported as
//! [`SecAggUpload`] and [`SecAggStep`]): the coordinator never receives the update itself.
//!
//! `StatusRequest` may be sent at any time after `Welcome` and is answered with `Status`. Any
//! request may be answered with `Error { reason }` when the coordinator cannot serve it (then the
//! connection is usually closed). A client that loses its connection reconnects and starts again
//! with `Hello`; the coordinator remembers what it already accepted, so re-sending an update for
//! the same round gets `UpdateRejected { reason: Duplicate }` rather than counting twice.
//!
//! Size limits: `Hello`, `Welcome` and the other small messages fit
//! [`MessageLimits::CONTROL`](crate::codec::MessageLimits::CONTROL); `Welcome` announces
//! `max_message_bytes`, the limit for `StartRound` and `Update`, computed by the coordinator from
//! its model with [`MessageLimits::for_model`](crate::codec::MessageLimits::for_model). A client
//! should cap the announced value with its own limit for the model it expects.

use mpcl_data::{ModelConfig, Schema};
use serde::{Deserialize, Serialize};

use crate::codec::PROTOCOL_VERSION;
use crate::compression::Compression;
use crate::metrics::EvaluationReport;
use crate::params::ParameterSet;
use crate::secure_aggregation::{SecAggStep, SecAggUpload, SecureRoundSetup};
use crate::signing::SignedUpdate;
use crate::stats::{CooccurrenceStatistics, PrototypeStatistics};
use crate::vector::F32Vec;

/// Identifies one federated run; signatures cover it so an update cannot be replayed into
/// another run.
pub type RunId = [u8; 16];

/// A prototype bank as the coordinator distributes it: `emotions x prototypes x width` values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrototypeBank {
    pub group: String,
    pub emotions: usize,
    pub prototypes: usize,
    pub width: usize,
    pub values: F32Vec,
}

/// Everything a client needs to start a round from the global model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalState {
    /// Global encoder (gradient-trained) parameters.
    pub parameters: ParameterSet,
    /// Global prototype banks, one per modality group present.
    pub prototypes: Vec<PrototypeBank>,
    /// Global co-occurrence statistics (the memory is their row-normalised mean).
    pub cooccurrence: CooccurrenceStatistics,
}

/// The default local learning rate of every training path (the coordinator's `[training]`,
/// `mpcl simulate`, `mpcl train`, the local optimiser's own default): one number, one home.
pub const DEFAULT_LEARNING_RATE: f64 = 3e-3;

/// How a client trains in a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    pub local_epochs: u32,
    pub batch_size: u32,
    /// This round's learning rate (the coordinator applies the run's schedule).
    pub learning_rate: f64,
    /// Decoupled (AdamW) weight decay; 0 = plain Adam.
    pub weight_decay: f64,
    /// FedProx proximal weight mu (0 = plain FedAvg local training).
    pub proximal_mu: f64,
    /// Seed for the client's shuffling and initialisation in this round.
    pub seed: u64,
    /// Send prototype and co-occurrence statistics; off, only the encoder delta (an ablation:
    /// plain FedAvg of the encoder).
    pub share_memories: bool,
    /// How the client encodes its encoder delta for upload ([`Compression`]; lossy choices
    /// carry the quantisation residual to the next round).
    pub compression: Compression,
    /// Evaluate the received state (the previous round's global model) on the participant's
    /// validation and test parts before training, and attach the report to the update
    /// ([`ClientUpdate::evaluation`]). Evaluation rides on the round's update, so it costs no
    /// extra round trip and travels signed, compressed and (under secure aggregation) masked
    /// with it.
    pub evaluate: bool,
    /// What the round asks for: training, the opening label-prior round, or the final
    /// evaluation.
    pub kind: RoundKind,
}

/// The kinds of round a run is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundKind {
    /// Train from the received state and send the delta and the memory statistics.
    #[default]
    Training,
    /// The opening round (numbered 0): train nothing; send a zero delta and only the label sums
    /// of the local training data ([`CooccurrenceStatistics::of_label_sums`]). The coordinator
    /// sets the head at the aggregated label prior ([`LABEL_PRIOR_LOGITS`]), so that the run
    /// starts from a model that predicts the label prior of all training data, as the
    /// simulations' centralized arm does.
    LabelPrior,
    /// The run's final evaluation round: evaluate the received (last) global model and do not
    /// train; the update carries a zero delta and no statistics, and the coordinator keeps only
    /// the evaluation.
    Evaluation,
}

/// The name of the parameter tensor that holds the head's per-emotion logit offsets: with the
/// head's weights at zero (an initial model "at a prior"), the model predicts
/// `softmax(LABEL_PRIOR_LOGITS)` whatever its input, so the coordinator's opening round sets it to
/// `ln(label prior)`. A contract between the model (which names its tensors) and the coordinator
/// (which never sees the model): the model crate tests that its head bias has this name.
pub const LABEL_PRIOR_LOGITS: &str = "head.emotion_bias";

/// Metrics a client reports about its local training (never used for aggregation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalMetrics {
    pub train_loss: f64,
    pub train_kl: f64,
    pub seconds: f64,
}

/// A client's contribution to one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientUpdate {
    pub run_id: RunId,
    pub round: u64,
    /// New minus received encoder parameters.
    pub delta: ParameterSet,
    /// Prototype statistics (S, W) per group.
    pub prototypes: Vec<PrototypeStatistics>,
    /// Co-occurrence statistics of the client's training labels.
    pub cooccurrence: CooccurrenceStatistics,
    /// Number of training samples (the FedAvg weight).
    pub sample_count: u64,
    pub metrics: LocalMetrics,
    /// The participant's evaluation of the state it received this round (when the round asked
    /// for one: [`TrainingConfig::evaluate`]).
    pub evaluation: Option<EvaluationReport>,
}

/// What a client sends. Each request gets exactly one [`CoordinatorMessage`] in reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message on a connection: who the client says it is and which protocol it speaks.
    /// The coordinator checks `participant_id` against the key that authenticated the TLS
    /// connection. Answered with `Welcome` or `Error`.
    Hello {
        participant_id: String,
        protocol_version: u16,
    },
    /// "Do you have work for me?" `last_completed_round` is the last round whose update this
    /// client had accepted (if any), which lets a reconnecting client resume. Answered with
    /// `StartRound`, `Wait` or `Finished`.
    RequestWork { last_completed_round: Option<u64> },
    /// A signed update for a round. Answered with `UpdateAccepted` or `UpdateRejected`.
    Update(SignedUpdate),
    /// Asks where the run stands. Answered with `Status`.
    StatusRequest,
    /// The client is leaving. Answered with `Goodbye`; the client then closes the connection.
    Goodbye,
    /// After `Finished`: the run's model, the global state a node personalizes or keeps (the
    /// best round's on federated validation when the run evaluated, else the last round's),
    /// which no `StartRound` need have handed this client. Answered with `FinalModel`, or
    /// `Error` while the run is not over.
    RequestFinalModel,
    /// Secure aggregation: this client's message for one step of round `round`'s session
    /// (`nonce` is the session's, from [`SecureRoundSetup`]). Answered, once the step closes,
    /// with `SecureAggregation` or `SecureAggregationAborted`
    /// (see [`crate::secure_aggregation::SecAggStep`]).
    SecureAggregation {
        round: u64,
        nonce: [u8; 16],
        upload: SecAggUpload,
    },
}

impl ClientMessage {
    /// A `Hello` for this node speaking [`PROTOCOL_VERSION`].
    pub fn hello(participant_id: impl Into<String>) -> Self {
        Self::Hello {
            participant_id: participant_id.into(),
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// The variant's name, for logs (never the payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::RequestWork { .. } => "RequestWork",
            Self::Update(_) => "Update",
            Self::StatusRequest => "StatusRequest",
            Self::Goodbye => "Goodbye",
            Self::SecureAggregation { .. } => "SecureAggregation",
            Self::RequestFinalModel => "RequestFinalModel",
        }
    }
}

/// What the coordinator sends, always in reply to one [`ClientMessage`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// Reply to `Hello`: the client is admitted to the run. Boxed: it carries the schema and
    /// model config, and is sent once per connection.
    Welcome(Box<Welcome>),
    /// Reply to `RequestWork`: train on this state and send an update for `round`.
    StartRound {
        run_id: RunId,
        round: u64,
        state: GlobalState,
        config: TrainingConfig,
        /// Milliseconds from now until the coordinator stops waiting for this round's updates
        /// (relative, so clocks need not agree).
        deadline_ms: u64,
        /// Under secure aggregation, the round's session: instead of an `Update` the client runs
        /// the masking protocol (`ClientMessage::SecureAggregation`). `None` in plain mode.
        secure_aggregation: Option<Box<SecureRoundSetup>>,
    },
    /// Reply to `RequestWork`: nothing for this client now; ask again after `retry_after_ms`.
    Wait {
        retry_after_ms: u64,
        reason: WaitReason,
    },
    /// Reply to `Update`: counted for `round`.
    UpdateAccepted { round: u64 },
    /// Reply to `Update`: not counted, and why. The client should not resend the same update.
    UpdateRejected { round: u64, reason: RejectReason },
    /// Reply to `RequestWork`: the run is over after `rounds` rounds.
    Finished { rounds: u64 },
    /// Reply to `StatusRequest`.
    Status(StatusReport),
    /// Reply to `Goodbye`.
    Goodbye,
    /// The request could not be served (version mismatch, identity mismatch, internal error).
    Error { reason: String },
    /// Reply to `SecureAggregation`: the input of this client's next step of round `round`.
    SecureAggregation { round: u64, step: SecAggStep },
    /// Reply to `SecureAggregation`: this client takes no further part in round `round`'s
    /// session (it failed, or the client was left out), and why. Ask for work again.
    SecureAggregationAborted { round: u64, reason: String },
    /// Reply to `RequestFinalModel`: the run's model, the global state after round `round`.
    FinalModel {
        run_id: RunId,
        round: u64,
        state: GlobalState,
    },
}

impl CoordinatorMessage {
    /// The variant's name, for logs (never the payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "Welcome",
            Self::StartRound { .. } => "StartRound",
            Self::Wait { .. } => "Wait",
            Self::UpdateAccepted { .. } => "UpdateAccepted",
            Self::UpdateRejected { .. } => "UpdateRejected",
            Self::Finished { .. } => "Finished",
            Self::Status(_) => "Status",
            Self::Goodbye => "Goodbye",
            Self::Error { .. } => "Error",
            Self::SecureAggregation { .. } => "SecureAggregation",
            Self::SecureAggregationAborted { .. } => "SecureAggregationAborted",
            Self::FinalModel { .. } => "FinalModel",
        }
    }
}

/// The coordinator's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub run_id: RunId,
    /// The protocol version the coordinator speaks ([`PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The participant id the coordinator has for the key that authenticated this connection.
    pub participant_id: String,
    /// Limit for every message of this run (the `StartRound` and `Update` messages are the
    /// large ones); see [`crate::codec::MessageLimits`].
    pub max_message_bytes: u64,
    /// Rounds planned for the run.
    pub total_rounds: u64,
    /// The round in progress or last started (0 before the first).
    pub current_round: u64,
    /// The model configuration the global state was built with: the client builds its network
    /// from it (and checks it against the schema before it does).
    pub model_config: ModelConfig,
    /// The run's dataset schema (the emotion names, in label order, and the modalities with
    /// their token layout). A client checks that its local data has exactly this schema before
    /// training.
    pub schema: Schema,
    /// How a participant splits its data for federated evaluation (`None`: the run does not
    /// evaluate, and a participant trains on all of its data).
    pub evaluation: Option<EvaluationSplit>,
}

/// How every participant divides its own data for federated evaluation (the run file's
/// `[evaluation]`): `test_fraction` of its trials are never trained on, and `validation_fraction`
/// of the remaining trials only choose the best round. Windows of one trial stay on one side.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSplit {
    pub test_fraction: f64,
    pub validation_fraction: f64,
}

/// Why a client is told to wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WaitReason {
    /// Fewer clients are connected than the first round needs.
    #[error("waiting for participants ({connected} of {needed} connected)")]
    WaitingForParticipants { connected: u32, needed: u32 },
    /// A round is running and this client was not sampled for it.
    #[error("not selected for round {round}")]
    NotSelected { round: u64 },
    /// This client's update for the round is in; the round has not closed yet.
    #[error("update for round {round} already received")]
    AlreadySubmitted { round: u64 },
    /// The coordinator is aggregating the round's updates.
    #[error("aggregating round {round}")]
    Aggregating { round: u64 },
    /// Anything else, in words.
    #[error("{0}")]
    Other(String),
}

pub use crate::reject::RejectReason;

/// Phase of the coordinator's round state machine, as reported in [`StatusReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundPhase {
    /// Waiting for enough participants before the first (or next) round.
    WaitingForParticipants,
    /// Sampled clients are training; updates are being collected.
    Training,
    /// Updates are being aggregated into the next global state.
    Aggregating,
    /// All rounds are done.
    Finished,
}

/// Where the run stands, as seen by the asking participant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub run_id: RunId,
    pub phase: RoundPhase,
    /// Round in progress or last started (0 before the first).
    pub round: u64,
    pub total_rounds: u64,
    /// Updates accepted so far in the current round.
    pub updates_received: u32,
    /// Updates the coordinator waits for in the current round (before the deadline).
    pub updates_expected: u32,
    /// Participants connected now.
    pub connected_participants: u32,
    /// Participants in the enrolment file.
    pub enrolled_participants: u32,
    /// The last round for which the asking participant's update was accepted.
    pub last_accepted_round: Option<u64>,
    /// Milliseconds until the current round's deadline, when one is running.
    pub deadline_in_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{MessageLimits, decode_message, encode_message};
    use crate::identity::NodeIdentity;
    use crate::params::NamedTensor;

    /// A model of `parameters` values in one tensor, two groups of 10 x 4 x 64 prototypes.
    fn state(parameters: usize) -> GlobalState {
        let bank = |group: &str| PrototypeBank {
            group: group.into(),
            emotions: 10,
            prototypes: 4,
            width: 64,
            values: F32Vec(vec![0.5; 10 * 4 * 64]),
        };
        GlobalState {
            parameters: ParameterSet {
                tensors: vec![NamedTensor {
                    name: "encoder.physiological.eeg.weight".into(),
                    shape: vec![parameters],
                    values: F32Vec(vec![0.25; parameters]),
                }],
            },
            prototypes: vec![bank("physiological"), bank("behavioral")],
            cooccurrence: CooccurrenceStatistics::zeros(10),
        }
    }

    fn config() -> TrainingConfig {
        TrainingConfig {
            local_epochs: 2,
            batch_size: 32,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            proximal_mu: 0.0,
            seed: 7,
            share_memories: true,
            compression: Compression::Int8,
            evaluate: false,
            kind: RoundKind::Training,
        }
    }

    fn update(parameters: usize) -> ClientUpdate {
        let stats = |group: &str| PrototypeStatistics::zeros(group, 10, 4, 64);
        ClientUpdate {
            run_id: [1; 16],
            round: 2,
            delta: state(parameters).parameters,
            prototypes: vec![stats("physiological"), stats("behavioral")],
            cooccurrence: CooccurrenceStatistics::zeros(10),
            sample_count: 1200,
            metrics: LocalMetrics {
                train_loss: 0.5,
                train_kl: 0.25,
                seconds: 12.0,
            },
            evaluation: None,
        }
    }

    fn round_trip<T>(message: &T, limits: &MessageLimits) -> T
    where
        T: Serialize + serde::de::DeserializeOwned,
    {
        let bytes = encode_message(message, limits).unwrap();
        decode_message(&bytes, limits).unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let limits = MessageLimits::for_model(1000, 2 * 10 * 4 * 64, 10);
        let identity = NodeIdentity::generate(Some("alice")).unwrap();
        let client = vec![
            ClientMessage::hello("alice"),
            ClientMessage::RequestWork {
                last_completed_round: Some(3),
            },
            ClientMessage::Update(SignedUpdate::sign(&update(1000), &identity, &limits).unwrap()),
            ClientMessage::StatusRequest,
            ClientMessage::Goodbye,
            ClientMessage::SecureAggregation {
                round: 2,
                nonce: [9; 16],
                upload: SecAggUpload::MaskedInput(crate::secure_aggregation::MaskedInput {
                    from: crate::secure_aggregation::PeerId([3; 32]),
                    values: crate::secure_aggregation::U32Vec(vec![1, 2, u32::MAX]),
                }),
            },
        ];
        for message in &client {
            assert_eq!(&round_trip(message, &limits), message, "{}", message.kind());
        }
        let coordinator = vec![
            CoordinatorMessage::Welcome(Box::new(Welcome {
                run_id: [1; 16],
                protocol_version: PROTOCOL_VERSION,
                participant_id: "alice".into(),
                max_message_bytes: limits.max_message_bytes as u64,
                total_rounds: 50,
                current_round: 0,
                model_config: ModelConfig {
                    width: 16,
                    ..ModelConfig::default()
                },
                schema: Schema {
                    emotions: vec!["a".into(), "b".into()],
                    modalities: vec![mpcl_data::Modality::new(
                        "eeg",
                        mpcl_data::ModalityGroup::Physiological,
                        2,
                        3,
                    )],
                },
                evaluation: None,
            })),
            CoordinatorMessage::StartRound {
                run_id: [1; 16],
                round: 1,
                state: state(1000),
                config: config(),
                deadline_ms: 600_000,
                secure_aggregation: None,
            },
            CoordinatorMessage::Wait {
                retry_after_ms: 1000,
                reason: WaitReason::WaitingForParticipants {
                    connected: 1,
                    needed: 3,
                },
            },
            CoordinatorMessage::UpdateAccepted { round: 1 },
            CoordinatorMessage::UpdateRejected {
                round: 1,
                reason: RejectReason::NonFinite("encoder delta `encoder.weight`".into()),
            },
            CoordinatorMessage::Finished { rounds: 50 },
            CoordinatorMessage::Status(StatusReport {
                run_id: [1; 16],
                phase: RoundPhase::Training,
                round: 1,
                total_rounds: 50,
                updates_received: 2,
                updates_expected: 5,
                connected_participants: 6,
                enrolled_participants: 8,
                last_accepted_round: None,
                deadline_in_ms: Some(30_000),
            }),
            CoordinatorMessage::Goodbye,
            CoordinatorMessage::Error {
                reason: "protocol version 2 is not supported".into(),
            },
            CoordinatorMessage::SecureAggregation {
                round: 1,
                step: SecAggStep::Done { contributors: 3 },
            },
            CoordinatorMessage::SecureAggregationAborted {
                round: 1,
                reason: "too few survivors".into(),
            },
        ];
        for message in &coordinator {
            assert_eq!(&round_trip(message, &limits), message, "{}", message.kind());
        }
    }

    #[test]
    fn control_messages_fit_the_control_limit() {
        let hello = encode_message(
            &ClientMessage::hello("a".repeat(64)),
            &MessageLimits::CONTROL,
        );
        assert!(hello.unwrap().len() < 100);
    }

    #[test]
    fn model_limit_holds_the_largest_messages_of_that_model() {
        let parameters = 200_000;
        let limits = MessageLimits::for_model(parameters, 2 * 10 * 4 * 64, 10);
        let start = CoordinatorMessage::StartRound {
            run_id: [1; 16],
            round: 1,
            state: state(parameters),
            config: config(),
            deadline_ms: 1,
            secure_aggregation: None,
        };
        let start_bytes = encode_message(&start, &limits).unwrap().len();
        let identity = NodeIdentity::generate(None).unwrap();
        let signed = SignedUpdate::sign(&update(parameters), &identity, &limits).unwrap();
        let update_bytes = encode_message(&ClientMessage::Update(signed), &limits)
            .unwrap()
            .len();
        // The numbers dominate: 4 bytes a value plus little else.
        let raw = 4 * (parameters + 2 * 10 * 4 * 64 + 100);
        assert!(start_bytes < raw + 1024, "{start_bytes} vs {raw}");
        assert!(update_bytes < raw + 2 * 10 * 4 * 4 + 1024, "{update_bytes}");
        // A model whose parameters alone exceed the limit is refused when encoding.
        let too_big = CoordinatorMessage::StartRound {
            run_id: [1; 16],
            round: 1,
            state: state(limits.max_message_bytes / 4 + 1),
            config: config(),
            deadline_ms: 1,
            secure_aggregation: None,
        };
        assert!(encode_message(&too_big, &limits).is_err());
    }
}

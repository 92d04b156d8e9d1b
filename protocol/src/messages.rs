//! The messages of a federated run. Only plain data lives here; encoding, limits and signatures
//! are in their own modules so that each can change without touching the others.

use serde::{Deserialize, Serialize};

use crate::params::ParameterSet;
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

/// How a client trains in a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    pub local_epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// FedProx proximal weight mu (0 = plain FedAvg local training).
    pub proximal_mu: f64,
    /// Seed for the client's shuffling and initialisation in this round.
    pub seed: u64,
}

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
}

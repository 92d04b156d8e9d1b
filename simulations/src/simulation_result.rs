//! What a simulation produces, as plain data: the arms, each round's records, each subject's
//! metrics, the test samples and the whole result. No I/O and no maths here: the orchestration
//! (`simulate`), the outputs (`simulation_outputs`) and the plots (`plots`) all read these types,
//! so none of them depends on another.

use std::collections::BTreeMap;

use mpcl_coordinator::evaluation::FederatedMetrics;
use mpcl_model::metrics::DistributionMetrics;
use mpcl_protocol::messages::GlobalState;
use serde::{Deserialize, Serialize};

use crate::report::SummaryTable;

/// An arm of the experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    Federated,
    Personalized,
    FedavgEncoder,
    Centralized,
    LocalOnly,
    LabelPrior,
}

impl Arm {
    /// Every arm, in table order.
    pub const ALL: [Arm; 6] = [
        Arm::Federated,
        Arm::Personalized,
        Arm::FedavgEncoder,
        Arm::Centralized,
        Arm::LocalOnly,
        Arm::LabelPrior,
    ];

    /// The name used in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Arm::Federated => "federated MPCL",
            Arm::Personalized => "federated + personalized",
            Arm::FedavgEncoder => "federated, no memory sharing",
            Arm::Centralized => "centralized MPCL",
            Arm::LocalOnly => "local-only MPCL",
            Arm::LabelPrior => "label prior",
        }
    }

    /// Arms with rounds from the most work per partition to the least: the federated arm (a
    /// federation of every client, then the personalized arm from its model), the same
    /// federation without memory sharing, every client training alone (the same samples as
    /// pooled, plus a model per client), pooled training, the prior. The order several
    /// workers start a simulation's jobs in.
    pub fn expected_work_rank(self) -> u8 {
        match self {
            Arm::Federated => 0,
            Arm::FedavgEncoder => 1,
            Arm::LocalOnly => 2,
            Arm::Centralized => 3,
            Arm::LabelPrior => 4,
            // Not an arm with rounds: it runs in the federated arm's job.
            Arm::Personalized => 5,
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Arm::Federated => "federated",
            Arm::Personalized => "personalized",
            Arm::FedavgEncoder => "fedavg-encoder",
            Arm::Centralized => "centralized",
            Arm::LocalOnly => "local-only",
            Arm::LabelPrior => "label-prior",
        }
    }
}

impl std::fmt::Display for Arm {
    /// The command-line name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arm::ALL
            .into_iter()
            .find(|arm| arm.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown arm `{s}` (expected one of: {})",
                    Arm::ALL.map(Arm::name).join(", ")
                )
            })
    }
}

/// One line of `rounds.jsonl`: an arm's metrics on one partition's test samples after a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub arm: Arm,
    pub partition: String,
    pub round: u64,
    /// On the partition's test samples.
    pub metrics: DistributionMetrics,
    /// On the partition's validation samples (absent without a validation part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<DistributionMetrics>,
    /// Mean cosine between different emotions' prototypes in the arm's banks after the round
    /// (near 1: the banks collapsed); arms with a global model and prototypes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prototype_cosine: Option<f64>,
    /// Bytes from the coordinator to the participants this round (federated arms).
    pub bytes_down: u64,
    /// Bytes from the participants to the coordinator this round (federated arms).
    pub bytes_up: u64,
    pub wall_seconds: f64,
    /// Epsilon spent by this arm's federation after this round (differential privacy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
}

impl RoundRecord {
    /// The record with its wall time zeroed: everything two runs of the same simulation agree on
    /// whatever their threads or machine.
    pub fn untimed(self) -> Self {
        Self {
            wall_seconds: 0.0,
            ..self
        }
    }
}

/// Pooled (all partitions) metrics of an arm after a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PooledRound {
    pub arm: Arm,
    pub round: u64,
    pub metrics: DistributionMetrics,
    pub bytes_down: u64,
    pub bytes_up: u64,
    /// The largest epsilon of the arm's federations (one per partition) after this round
    /// (differential privacy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
}

/// One subject's final metrics under one arm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectMetrics {
    pub arm: Arm,
    pub subject: String,
    pub metrics: DistributionMetrics,
}

/// The outcome of a simulation.
#[derive(Clone, Debug)]
pub struct SimulationResult {
    pub dataset: String,
    pub subjects: usize,
    pub protocol: String,
    /// `in-process` or `network`.
    pub mode: String,
    pub device: String,
    pub rounds: Vec<PooledRound>,
    pub per_subject: Vec<SubjectMetrics>,
    /// Each arm's validation-selected model on the test samples, beside the label prior.
    pub final_table: SummaryTable,
    /// Final global state of each arm with a model (federated, centralized), per partition.
    pub final_states: BTreeMap<Arm, Vec<GlobalState>>,
    /// The state of the round chosen on validation, per arm with a model and partition.
    pub best_states: BTreeMap<Arm, Vec<GlobalState>>,
    /// Every test sample (over all partitions, in order): label, subject, and the label prior
    /// of its partition.
    pub test_samples: TestSamples,
    /// Each arm's validation-selected predictions of those samples.
    pub selected_predictions: BTreeMap<Arm, Vec<Vec<f32>>>,
    /// The coordinator's federated evaluation of every global model, per federated arm and
    /// partition (what a real coordinator reports, from the participants' sums).
    pub federated_evaluations: BTreeMap<Arm, Vec<Vec<FederatedMetrics>>>,
    /// What a reader of the table must know, for example that an arm stopped early because its
    /// privacy budget ran out.
    pub notes: Vec<String>,
    pub wall_seconds: f64,
}

/// The test samples of a run, pooled over partitions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestSamples {
    pub labels: Vec<Vec<f32>>,
    pub subjects: Vec<String>,
    /// The label prior of each sample's partition.
    pub priors: Vec<Vec<f32>>,
}

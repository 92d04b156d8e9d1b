//! What a participant did, for observers (tests, progress displays): the events the protocol
//! machine ([`crate::machine`]) and the node around it ([`crate::node`]) report.

use std::path::PathBuf;
use std::sync::Arc;

use mpcl_model::metrics::DistributionMetrics;
use mpcl_protocol::messages::{ClientUpdate, GlobalState, RejectReason, TrainingConfig, Welcome};

/// The coordinator's answer to an uploaded update.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateOutcome {
    /// Counted for its round.
    Accepted,
    /// Not counted, for this reason.
    Rejected(RejectReason),
}

/// What a node did, for observers (tests, progress displays).
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// The coordinator admitted the node.
    Admitted { welcome: Welcome },
    /// The node was sampled for a round and starts from `state`.
    RoundStarted {
        round: u64,
        state: Arc<GlobalState>,
        config: TrainingConfig,
    },
    /// An update was uploaded and answered.
    UpdateSent {
        round: u64,
        update: Arc<ClientUpdate>,
        outcome: UpdateOutcome,
    },
    /// Secure aggregation: the masked form of `update` is in round `round`'s survivor list, so
    /// it is in the sum if the session completes (the update itself was never sent).
    MaskedInputSent {
        round: u64,
        update: Arc<ClientUpdate>,
    },
    /// Secure aggregation: the round's session completed with `contributors` inputs in the sum.
    SecureRoundDone { round: u64, contributors: u32 },
    /// Secure aggregation: this node takes no further part in the round's session, and why.
    SecureRoundAbandoned { round: u64, reason: String },
    /// The connection was lost; the node reconnects.
    Disconnected { reason: String },
    /// The run is over.
    Finished { rounds: u64 },
    /// After the run: the run's global model personalized on the local data (see
    /// [`crate::node::PersonalizationRequest`]), scored on the local test part beside the
    /// global model.
    Personalized {
        /// The round after which the global model personalization started from was taken (the
        /// run's last round when the node got the final model).
        global_round: u64,
        global_test: DistributionMetrics,
        personal_test: DistributionMetrics,
        prior_test: DistributionMetrics,
        /// The epoch kept (0: the global model itself was best on validation).
        chosen_epoch: usize,
        /// Where the personal model was written.
        model_file: Option<PathBuf>,
    },
}

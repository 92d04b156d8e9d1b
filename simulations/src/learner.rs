//! A model that trains on one data set round after round: the centralized arm (pooled training
//! data) and each client of the local-only arm (its own data alone). Rounds are `local_epochs`
//! epochs, so every arm sees the data the same number of times as the federated arms.

use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Standardizer};
use mpcl_model::{Device, ModelError, MpclModel, TensorDataset, TrainOptions, train};
use mpcl_protocol::messages::GlobalState;

use crate::centralized::cooccurrence_of;

/// A model and its training data, trained in round-sized steps.
pub struct Learner {
    model: MpclModel,
    data: TensorDataset,
}

impl Learner {
    /// A learner on `train_set` starting from `initial` (the same start as the federation).
    pub fn new(
        train_set: &Dataset,
        model_config: &ModelConfig,
        initial: &GlobalState,
        device: &Device,
    ) -> Result<Self, ModelError> {
        train_set.validate()?;
        let mut model = MpclModel::new(&train_set.schema, model_config, device, 0)?;
        model.load_global_state(initial)?;
        model.memories.set_cooccurrence(cooccurrence_of(train_set));
        let data = TensorDataset::new(train_set, &Standardizer::fit(train_set), model.device());
        Ok(Self { model, data })
    }

    /// Trains one round with `options`.
    pub fn train_round(&mut self, options: &TrainOptions) {
        train(&mut self.model, &self.data, options, None);
    }

    /// The learner's current parameters and memories.
    pub fn state(&self) -> GlobalState {
        self.model.global_state()
    }
}

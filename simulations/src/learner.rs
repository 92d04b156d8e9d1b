//! A model that trains on one data set round after round: the centralized arm (pooled training
//! data) and each client of the local-only arm (its own data alone). Rounds are `local_epochs`
//! epochs, so every arm sees the data the same number of times as the federated arms.

use mpcl_data::{Dataset, Standardizer};
use mpcl_model::{ModelError, ModelPool, TensorDataset, TrainOptions, train};
use mpcl_protocol::messages::GlobalState;

use crate::centralized::cooccurrence_of;

/// A learner's state and training data; it borrows a model for each round from a pool (the
/// local-only arm's learners share one, see [`ModelPool`]), and keeps only the state it trained
/// to in between.
pub struct Learner {
    state: GlobalState,
    data: TensorDataset,
    models: ModelPool,
}

impl Learner {
    /// A learner on `train_set` starting from `initial` (the same start as the federation),
    /// with its own co-occurrence memory.
    pub fn new(
        train_set: &Dataset,
        models: &ModelPool,
        initial: &GlobalState,
    ) -> Result<Self, ModelError> {
        train_set.validate()?;
        // The first round loads it into a model (and checks its layout there).
        let state = GlobalState {
            cooccurrence: cooccurrence_of(train_set),
            ..initial.clone()
        };
        let data = TensorDataset::new(
            train_set,
            &Standardizer::fit(train_set),
            models.training_device(),
        );
        Ok(Self {
            state,
            data,
            models: models.clone(),
        })
    }

    /// Trains one round with `options`.
    pub fn train_round(&mut self, options: &TrainOptions) -> Result<(), ModelError> {
        self.models.with_model(|model| {
            model.load_global_state(&self.state)?;
            train(model, &self.data, options, None);
            self.state = model.global_state();
            Ok(())
        })?
    }

    /// The learner's current parameters and memories.
    pub fn state(&self) -> &GlobalState {
        &self.state
    }
}

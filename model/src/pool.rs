//! Models lent for the length of a round.
//!
//! Why: between rounds, a federated participant's model holds nothing of its own (the next round
//! overwrites its parameters and memories with the global state), and a local learner's state is
//! plain numbers ([`GlobalState`](mpcl_protocol::messages::GlobalState)). Keeping an autodiff model
//! alive per participant costs more than its memory: burn-autodiff keeps one process-wide
//! registry of the graphs of every live tensor that tracks gradients, and every backward pass
//! sweeps all of it, so each training step slows with every model alive. An in-process
//! federation of 87 participants kept 87 models; it now keeps one per participant training at
//! that moment (NOTES.md, session 13).

use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::Device;
use mpcl_data::{ModelConfig, Schema};

use crate::model::{ModelError, MpclModel};

/// Interchangeable models, one schema, configuration and device, lent one at a time. Clones
/// share the idle models.
#[derive(Clone, Debug)]
pub struct ModelPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    schema: Schema,
    config: ModelConfig,
    /// The plain device the models are built for (each model's own is its autodiff twin).
    base_device: Device,
    /// The device every model and the data it trains on live on.
    training_device: Device,
    idle: Mutex<Vec<MpclModel>>,
}

impl ModelPool {
    /// A pool for `schema` and `config` on `device`, holding one idle model: building it checks
    /// the schema and the configuration now rather than at the first round.
    pub fn new(schema: &Schema, config: &ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let model = MpclModel::new(schema, config, device, 0)?;
        Ok(Self {
            shared: Arc::new(Shared {
                schema: schema.clone(),
                config: config.clone(),
                base_device: device.clone(),
                training_device: model.device().clone(),
                idle: Mutex::new(vec![model]),
            }),
        })
    }

    /// The schema every model of the pool reads.
    pub fn schema(&self) -> &Schema {
        &self.shared.schema
    }

    /// The (autodiff) device the models live on; data they train on or predict must be there.
    pub fn training_device(&self) -> &Device {
        &self.shared.training_device
    }

    /// Runs `f` with a model of the pool: an idle one, or a new one when all are lent. The model
    /// holds whatever its previous user left in it, so `f` must load a complete state first
    /// ([`MpclModel::load_global_state`]); it goes back to the pool when `f` returns.
    pub fn with_model<T>(&self, f: impl FnOnce(&mut MpclModel) -> T) -> Result<T, ModelError> {
        let idle = self.idle().pop();
        let mut model = match idle {
            Some(model) => model,
            None => MpclModel::new(
                &self.shared.schema,
                &self.shared.config,
                &self.shared.base_device,
                0,
            )?,
        };
        let result = f(&mut model);
        self.idle().push(model);
        Ok(result)
    }

    /// How many of the pool's models are idle now (every model it has built, when none is lent).
    pub fn idle_models(&self) -> usize {
        self.idle().len()
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<MpclModel>> {
        // A panic while lending leaves the list itself intact.
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personalize::tests::dataset;
    use crate::tensors::TensorDataset;
    use crate::train::{TrainOptions, train};
    use mpcl_data::Standardizer;
    use mpcl_protocol::messages::GlobalState;

    /// Loads `start`, trains two epochs and returns the state trained to.
    fn trained_from(
        model: &mut MpclModel,
        start: &GlobalState,
        data: &TensorDataset,
    ) -> GlobalState {
        model.load_global_state(start).unwrap();
        let options = TrainOptions {
            epochs: 2,
            batch_size: 4,
            ..TrainOptions::default()
        };
        train(model, data, &options, None);
        model.global_state()
    }

    #[test]
    fn a_lent_model_trains_exactly_as_a_fresh_one() {
        let set = dataset(16, 0);
        let config = ModelConfig::tiny();
        let device = Device::flex();
        let pool = ModelPool::new(&set.schema, &config, &device).unwrap();
        let data = TensorDataset::new(&set, &Standardizer::fit(&set), pool.training_device());
        // A start unlike the pool's own initialisation (seed 0).
        let start = MpclModel::new(&set.schema, &config, &device, 7)
            .unwrap()
            .global_state();

        let first = pool.with_model(|m| trained_from(m, &start, &data)).unwrap();
        // The same model again, left trained by the first use.
        let second = pool.with_model(|m| trained_from(m, &start, &data)).unwrap();
        let mut fresh = MpclModel::new(&set.schema, &config, &device, 0).unwrap();
        let own = trained_from(&mut fresh, &start, &data);

        assert_ne!(
            first, start,
            "training moved nothing: the check below would be empty"
        );
        assert_eq!(first, own);
        assert_eq!(second, own);
        assert_eq!(
            pool.idle_models(),
            1,
            "the idle model was reused, not rebuilt"
        );
    }

    #[test]
    fn a_model_is_built_only_when_every_model_is_lent() {
        let set = dataset(16, 0);
        let pool = ModelPool::new(&set.schema, &ModelConfig::tiny(), &Device::flex()).unwrap();
        let clone = pool.clone();
        pool.with_model(|_| {
            assert_eq!(clone.idle_models(), 0);
            clone.with_model(|_| ()).unwrap();
            assert_eq!(
                clone.idle_models(),
                1,
                "a second model was built and given back"
            );
        })
        .unwrap();
        assert_eq!(pool.idle_models(), 2);
    }
}

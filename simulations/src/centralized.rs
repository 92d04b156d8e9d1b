//! Centralized training (all training data pooled in one place): `mpcl train`, and the upper
//! reference arm of a simulation.

use mpcl_model::data::{Dataset, Standardizer};
use mpcl_model::{
    Device, ModelConfig, ModelError, MpclModel, TensorDataset, TrainOptions, TrainReport, train,
};
use mpcl_protocol::CooccurrenceStatistics;

/// A model trained on pooled data, with what is needed to use it on new samples.
pub struct TrainedModel {
    pub model: MpclModel,
    pub standardizer: Standardizer,
    pub report: TrainReport,
}

/// Co-occurrence statistics of a dataset's labels.
pub fn cooccurrence_of(dataset: &Dataset) -> CooccurrenceStatistics {
    let mut statistics = CooccurrenceStatistics::zeros(dataset.schema.emotion_count());
    for sample in &dataset.samples {
        statistics.add_label(&sample.label);
    }
    statistics
}

/// Trains a fresh model on `train_set`: standardisation and co-occurrence memory from the
/// training data only.
pub fn train_centralized(
    train_set: &Dataset,
    model_config: &ModelConfig,
    options: &TrainOptions,
    device: &Device,
    seed: u64,
) -> Result<TrainedModel, ModelError> {
    train_set.validate()?;
    let standardizer = Standardizer::fit(train_set);
    let mut model = MpclModel::new(&train_set.schema, model_config, device, seed)?;
    model.memories.set_cooccurrence(cooccurrence_of(train_set));
    let tensors = TensorDataset::new(train_set, &standardizer, model.device());
    let report = train(&mut model, &tensors, options, None);
    Ok(TrainedModel {
        model,
        standardizer,
        report,
    })
}

impl TrainedModel {
    /// Predicted distributions for every sample of `dataset`.
    pub fn predict(&self, dataset: &Dataset) -> Vec<Vec<f32>> {
        let tensors = TensorDataset::new(dataset, &self.standardizer, self.model.device());
        self.model.predict(&tensors)
    }
}

//! Evaluating a global state on the test samples of a partition: every test sample, every time.

use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Standardizer};
use mpcl_model::metrics::{DistributionMetrics, evaluate};
use mpcl_model::{Device, ModelError, MpclModel, TensorDataset};
use mpcl_protocol::messages::GlobalState;

/// Holds the test samples on the device and a model to load states into.
pub struct Evaluator {
    model: MpclModel,
    test: TensorDataset,
}

impl Evaluator {
    /// An evaluator for `test_set`, standardised like the pooled training data.
    pub fn new(
        test_set: &Dataset,
        train_set: &Dataset,
        model_config: &ModelConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let model = MpclModel::new(&test_set.schema, model_config, device, 0)?;
        let test = TensorDataset::new(test_set, &Standardizer::fit(train_set), model.device());
        Ok(Self { model, test })
    }

    /// Predictions of `state` for the test samples at `rows` (indices into the test set).
    pub fn predict_rows(
        &mut self,
        state: &GlobalState,
        rows: &[usize],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        self.model.load_global_state(state)?;
        Ok(self.model.predict_rows(&self.test, rows))
    }

    /// Predictions of `state` for every test sample.
    pub fn predict(&mut self, state: &GlobalState) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows: Vec<usize> = (0..self.test.len()).collect();
        self.predict_rows(state, &rows)
    }

    /// The test labels.
    pub fn labels(&self) -> &[Vec<f32>] {
        self.test.host_labels()
    }

    /// The six metrics of `predictions` (one per test sample, in order).
    pub fn metrics(&self, predictions: &[Vec<f32>]) -> DistributionMetrics {
        evaluate(
            self.labels()
                .iter()
                .zip(predictions)
                .map(|(l, p)| (l.as_slice(), p.as_slice())),
        )
    }
}

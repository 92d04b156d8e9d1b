//! A network to and from its model file. The file format itself
//! ([`mpcl_protocol::model_file`]) needs no tensor library; this module is the part that does:
//! building the network a file describes, saving a network, and applying a file's input
//! standardisation to a dataset.

use mpcl_data::Dataset;
use mpcl_data::standardize::standardize_per_subject;
use mpcl_protocol::model_file::{InputStandardisation, ModelFile, Provenance, SubjectStatistics};

use crate::Device;
use crate::model::{ModelError, MpclModel};
use crate::tensors::TensorDataset;

impl MpclModel {
    /// A file for this model (its parameters and memories as they are now).
    pub fn to_file(
        &self,
        standardisation: InputStandardisation,
        label_prior: Vec<f32>,
        provenance: Provenance,
    ) -> ModelFile {
        ModelFile {
            schema: self.schema.clone(),
            config: self.config.clone(),
            state: self.global_state(),
            standardisation,
            label_prior,
            provenance,
        }
    }

    /// The model `file` describes, on `device`, ready to predict. The state is checked against
    /// the schema and config (names, shapes, finite values).
    pub fn from_file(file: &ModelFile, device: &Device) -> Result<Self, ModelError> {
        let mut model = MpclModel::new(&file.schema, &file.config, device, 0)?;
        model.load_global_state(&file.state)?;
        Ok(model)
    }
}

impl TensorDataset {
    /// `dataset` standardised as `standardisation` says, in both stages: each subject's
    /// statistics from its samples at `fit_rows` (indices into `dataset`; the training side of a
    /// split) when it has any there, else from all of its samples; then the pooled statistics.
    pub fn standardised(
        dataset: &Dataset,
        standardisation: &InputStandardisation,
        fit_rows: &[usize],
        device: &Device,
    ) -> Self {
        let per_subject = match standardisation.per_subject {
            SubjectStatistics::OwnSamples => standardize_per_subject(dataset, fit_rows),
        };
        TensorDataset::new(&per_subject, &standardisation.pooled, device)
    }
}

//! Where an experiment's data comes from: a dataset spec understood by `mpcl-data`'s
//! readers (`larwood2019`, `dmer:DIR`, `wesad:DIR`, ...) or `synthetic`, generated here.

use mpcl_data::{Dataset, LoadReport, ReadError};
use thiserror::Error;

use crate::synthetic::{SyntheticConfig, generate};

/// A dataset that could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("dataset `{spec}` is unusable: {source}")]
    Invalid {
        spec: String,
        source: mpcl_data::DatasetError,
    },
}

/// The dataset specs accepted everywhere a dataset is named.
pub fn dataset_specs() -> String {
    format!(
        "`synthetic` (seeded, generated), {}",
        mpcl_data::DATASET_SPECS
    )
}

/// Loads `spec`, generating it with `synthetic` when the spec is `synthetic`.
pub fn load_dataset(
    spec: &str,
    synthetic: &SyntheticConfig,
) -> Result<(Dataset, LoadReport), LoadError> {
    if spec.trim() == "synthetic" {
        let dataset = generate(synthetic);
        let report = LoadReport::new(dataset.name.clone());
        dataset.validate().map_err(|source| LoadError::Invalid {
            spec: spec.to_string(),
            source,
        })?;
        return Ok((dataset, report));
    }
    Ok(mpcl_data::open(spec)?)
}

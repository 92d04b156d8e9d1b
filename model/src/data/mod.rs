//! Datasets as the model sees them: a schema (emotions, modalities and how each is cut into
//! tokens) and samples (one feature vector per modality, a label distribution, and where the
//! sample came from). Readers for concrete datasets live in submodules and all produce this form.

mod sample;
mod schema;
mod standardize;

pub use sample::{Dataset, DatasetError, Sample};
pub use schema::{Modality, ModalityGroup, Schema, SchemaError};
pub use standardize::Standardizer;

//! What centralized training (all training data pooled in one place: `mpcl train` and the upper
//! reference arm of a simulation) builds from its data besides the network: the co-occurrence
//! memory of the training labels.

use mpcl_data::Dataset;
use mpcl_protocol::CooccurrenceStatistics;

/// Co-occurrence statistics of a dataset's labels.
pub fn cooccurrence_of(dataset: &Dataset) -> CooccurrenceStatistics {
    let mut statistics = CooccurrenceStatistics::zeros(dataset.schema.emotion_count());
    for sample in &dataset.samples {
        statistics.add_label(&sample.label);
    }
    statistics
}

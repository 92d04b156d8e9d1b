//! The "federated + personalized" arm of `mpcl simulate`: after the federated arm, every client
//! fine-tunes the federated arm's validation-selected global model on its own training part and
//! predicts its own test samples with the result, exactly as a participant does with
//! `mpcl client --personalize-epochs` ([`mpcl_client::personalize::personalize_locally`]: its
//! own standardiser, fitted on its own training part as `Participant::new` does; the epoch chosen
//! on its own validation part, the global model being epoch 0).
//!
//! The arm needs every test subject to be a client with training and validation samples of its
//! own. Protocols whose test subjects never train (subject-independent) have nothing to
//! personalize on, and without a validation part no epoch could be chosen: the arm is then left
//! out of the table and [`Omitted`] says why. A client whose own validation part happens to be
//! empty keeps the global model, that is the federated arm's predictions of its samples.
//!
//! The personalized models stay with their clients: the arm writes no model file and no global
//! state.

use mpcl_client::evaluation::LocalSplit;
use mpcl_client::personalize::{PersonalizeError, personalize_locally};
use mpcl_data::{Dataset, Standardizer};
use mpcl_model::personalize::PersonalizeOptions;
use mpcl_model::{Device, ModelError};
use mpcl_protocol::messages::GlobalState;
use serde::{Deserialize, Serialize};

use crate::simulate::{SimulationConfig, SimulationError};

/// Mixed into each client's shuffling seed, so personalization does not replay a round's order.
const PERSONALIZE_SEED_SALT: u64 = 0x7065_7273_6f6e_616c;

/// Why the arm has no row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Omitted {
    /// Some test subject of a partition has no training samples there: it is not a client.
    TestSubjectsAreNotClients,
    /// The run holds out no validation part to choose an epoch on.
    NoValidationPart,
}

impl std::fmt::Display for Omitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TestSubjectsAreNotClients => {
                "omitted: under this protocol the test subjects are not clients of the \
                 federation, so they have no training data to personalize on"
            }
            Self::NoValidationPart => {
                "omitted: without a validation part (--validation-fraction 0) no personalization \
                 epoch can be chosen over the global model"
            }
        })
    }
}

/// One partition's samples as the arm needs them.
pub struct PartitionData<'a> {
    /// The partition's training samples (every client's).
    pub train: &'a Dataset,
    /// Validation samples (the first `validation_count`) then test samples.
    pub held_out: &'a Dataset,
    pub validation_count: usize,
    /// The federated arm's validation-selected global state.
    pub state: &'a GlobalState,
    /// The federated arm's selected predictions of the test samples, in order (what a client
    /// without a validation part of its own keeps).
    pub federated_predictions: &'a [Vec<f32>],
}

/// The arm on one partition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionOutcome {
    /// Personalized predictions of the partition's test samples, in order.
    pub predictions: Vec<Vec<f32>>,
    /// The kept epoch of each client that personalized (0: it kept the global model).
    pub chosen_epochs: Vec<usize>,
    /// Clients without validation samples of their own, which kept the global model.
    pub without_validation: Vec<String>,
}

/// Whether the arm can run on a partition with these samples; see the module documentation.
pub fn omitted(train: &Dataset, test: &Dataset, validation_fraction: f64) -> Option<Omitted> {
    if validation_fraction <= 0.0 {
        return Some(Omitted::NoValidationPart);
    }
    let clients = train.subjects();
    test.subjects()
        .iter()
        .any(|s| !clients.contains(s))
        .then_some(Omitted::TestSubjectsAreNotClients)
}

/// Personalizes every test subject's model on its own training part and predicts its test
/// samples (see the module documentation). The partition must not be [`omitted`].
pub fn personalize_partition(
    data: &PartitionData<'_>,
    config: &SimulationConfig,
    device: &Device,
) -> Result<PartitionOutcome, SimulationError> {
    let (validation, test) = data.held_out.samples.split_at(data.validation_count);
    let part = |samples: &[mpcl_data::Sample]| Dataset {
        name: data.held_out.name.clone(),
        schema: data.held_out.schema.clone(),
        samples: samples.to_vec(),
    };
    let (validation, test) = (part(validation), part(test));
    let mut outcome = PartitionOutcome {
        predictions: data.federated_predictions.to_vec(),
        ..PartitionOutcome::default()
    };
    let training = &config.training;
    for (index, subject) in test.subjects().into_iter().enumerate() {
        let rows = test.indices_of_subject(&subject);
        let split = LocalSplit {
            train: data.train.subject_subset(&subject),
            validation: validation.subject_subset(&subject),
            test: test.subset(&rows),
        };
        let options = PersonalizeOptions {
            epochs: config.personalize_epochs,
            scope: config.personalize_scope,
            batch_size: training.batch_size as usize,
            // The rate of the federation's last round (its schedule's end).
            learning_rate: training.learning_rate_schedule.rate(
                training.learning_rate,
                config.rounds,
                config.rounds,
            ),
            weight_decay: training.weight_decay,
            seed: config.seed ^ PERSONALIZE_SEED_SALT ^ index as u64,
        };
        let standardizer = Standardizer::fit(&split.train);
        match personalize_locally(
            &split,
            &standardizer,
            &config.model,
            device,
            data.state,
            &options,
        ) {
            Ok(personal) => {
                for (row, prediction) in rows.iter().zip(personal.personal_predictions) {
                    outcome.predictions[*row] = prediction;
                }
                outcome.chosen_epochs.push(personal.report.chosen_epoch);
            }
            Err(PersonalizeError::Model(ModelError::NoValidationSamples)) => {
                outcome.without_validation.push(subject);
            }
            Err(PersonalizeError::Model(error)) => return Err(error.into()),
            Err(PersonalizeError::Data(error)) => return Err(ModelError::from(error).into()),
        }
    }
    Ok(outcome)
}

/// What the table's note says about the kept epochs of every client over all partitions.
pub fn epochs_note(outcomes: &[PartitionOutcome], epochs: usize) -> String {
    let chosen: Vec<usize> = outcomes
        .iter()
        .flat_map(|o| o.chosen_epochs.iter().copied())
        .collect();
    let kept_global = chosen.iter().filter(|e| **e == 0).count();
    let mut counts = vec![0usize; epochs + 1];
    for epoch in &chosen {
        counts[(*epoch).min(epochs)] += 1;
    }
    let histogram: Vec<String> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(epoch, n)| format!("epoch {epoch}: {n}"))
        .collect();
    let mut note = format!(
        "{} of {} clients kept the global model (epoch 0) on their validation part; kept \
         epochs of {epochs}: {}",
        kept_global,
        chosen.len(),
        histogram.join(", ")
    );
    let without: Vec<&str> = outcomes
        .iter()
        .flat_map(|o| o.without_validation.iter().map(String::as_str))
        .collect();
    if !without.is_empty() {
        note.push_str(&format!(
            "; without validation samples of their own, {} more kept the global model ({})",
            without.len(),
            without.join(", ")
        ));
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    #[test]
    fn the_arm_runs_only_where_test_subjects_are_clients_with_a_validation_part() {
        let data = generate(&SyntheticConfig {
            subjects: 3,
            trials_per_subject: 4,
            windows_per_trial: 1,
            ..SyntheticConfig::default()
        });
        let first_two: Vec<usize> = (0..data.samples.len())
            .filter(|&i| data.samples[i].subject != "s03")
            .collect();
        let train = data.subset(&first_two);
        assert_eq!(omitted(&train, &train, 0.2), None);
        assert_eq!(
            omitted(&train, &data, 0.2),
            Some(Omitted::TestSubjectsAreNotClients)
        );
        assert_eq!(
            omitted(&train, &train, 0.0),
            Some(Omitted::NoValidationPart)
        );
    }

    #[test]
    fn the_note_counts_every_clients_kept_epoch() {
        let outcomes = [
            PartitionOutcome {
                chosen_epochs: vec![0, 3, 3],
                ..PartitionOutcome::default()
            },
            PartitionOutcome {
                chosen_epochs: vec![5],
                without_validation: vec!["s09".into()],
                ..PartitionOutcome::default()
            },
        ];
        let note = epochs_note(&outcomes, 5);
        assert!(
            note.starts_with("1 of 4 clients kept the global model"),
            "{note}"
        );
        assert!(
            note.contains("epoch 0: 1, epoch 3: 2, epoch 5: 1"),
            "{note}"
        );
        assert!(
            note.ends_with("1 more kept the global model (s09)"),
            "{note}"
        );
    }
}

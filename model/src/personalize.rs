//! Personalization: after the federation, a participant fine-tunes the global model on its own
//! training data and keeps the result to itself.
//!
//! What moves depends on [`PersonalizeScope`]:
//!
//! - [`PersonalizeScope::HeadAndPrototypes`] (the default): the distribution head's parameters
//!   take Adam steps on the MPCL loss, and the prototype banks are re-estimated from the local
//!   training data the way training always moves them (after every batch, towards the batch's
//!   label- and assignment-weighted mean representation, with the model's prototype momentum).
//!   Banks are memories, not gradient parameters (see [`crate::network::prototypes`]), so
//!   "adapting the banks" means this statistics update, not a gradient step. Encoders, fusions
//!   and the emotion retrieval stay bit for bit as the federation left them: with a participant's
//!   few trials, the shared representation is the part most likely to overfit and the part the
//!   federation estimated best, while a participant's own way of rating (its label bias) lives
//!   in the head's biases and weights and in where its own samples fall among the prototypes.
//! - [`PersonalizeScope::All`]: every gradient-trained parameter plus the banks, exactly as a
//!   round of local training moves them.
//!
//! The co-occurrence memory stays the federation's in both scopes: it is a label statistic over
//! every participant, and the retrieval's co-occurrence strength was trained against it.
//!
//! Validation KL is measured before the first epoch (epoch 0: the unmodified global model) and
//! after every epoch; the model ends with the weights of the epoch with the lowest validation KL
//! (ties keep the earlier epoch), so personalization can never make validation KL worse than the
//! global model's. The optimiser's moments carry across epochs, as in any training run.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{ModelError, MpclModel};
use crate::tensors::TensorDataset;
use crate::train::{TrainOptions, Trainable, train_parameters};

/// Epochs of personalization when a caller does not say (the simulation's default).
pub const DEFAULT_PERSONALIZE_EPOCHS: usize = 5;

/// Which parts of the model personalization fine-tunes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PersonalizeScope {
    /// The head's parameters, and the prototype banks re-estimated from the local data
    /// (`head` on the command line and in configs).
    #[default]
    #[serde(rename = "head")]
    HeadAndPrototypes,
    /// Every gradient-trained parameter and the banks (`all`).
    #[serde(rename = "all")]
    All,
}

impl PersonalizeScope {
    /// Every scope, for help texts.
    pub const ALL: [PersonalizeScope; 2] = [PersonalizeScope::HeadAndPrototypes, Self::All];

    /// The command-line name (`head`, `all`).
    pub fn name(self) -> &'static str {
        match self {
            Self::HeadAndPrototypes => "head",
            Self::All => "all",
        }
    }

    pub(crate) fn trainable(self) -> Trainable {
        match self {
            Self::HeadAndPrototypes => Trainable::HeadOnly,
            Self::All => Trainable::Everything,
        }
    }
}

impl fmt::Display for PersonalizeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PersonalizeScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| format!("unknown personalization scope `{s}` (expected head or all)"))
    }
}

/// How to personalize.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonalizeOptions {
    /// Epochs over the local training data (0 keeps the global model).
    pub epochs: usize,
    pub scope: PersonalizeScope,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Decoupled (AdamW) weight decay; 0 = plain Adam.
    pub weight_decay: f64,
    /// Seeds the shuffling order.
    pub seed: u64,
}

impl Default for PersonalizeOptions {
    fn default() -> Self {
        let training = TrainOptions::default();
        Self {
            epochs: DEFAULT_PERSONALIZE_EPOCHS,
            scope: PersonalizeScope::default(),
            batch_size: training.batch_size,
            learning_rate: training.learning_rate,
            weight_decay: training.weight_decay,
            seed: training.seed,
        }
    }
}

/// What personalization did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersonalizeReport {
    pub scope: PersonalizeScope,
    /// Validation KL before personalization (index 0, the global model) and after each epoch.
    pub validation_kl: Vec<f64>,
    /// Mean training KL of each epoch (one fewer than `validation_kl`).
    pub train_kl: Vec<f64>,
    /// The epoch whose weights the model kept (0: the global model).
    pub chosen_epoch: usize,
}

impl PersonalizeReport {
    /// Validation KL of the global model.
    pub fn global_validation_kl(&self) -> f64 {
        self.validation_kl[0]
    }

    /// Validation KL of the kept model (never above [`Self::global_validation_kl`]).
    pub fn chosen_validation_kl(&self) -> f64 {
        self.validation_kl[self.chosen_epoch]
    }
}

/// Fine-tunes `model` (loaded with the global state) on `train` in the scope of `options`,
/// choosing the epoch by KL on `validation`; see the module documentation. `validation` must
/// hold samples: without them nothing could justify leaving the global model.
pub fn personalize(
    model: &mut MpclModel,
    train: &TensorDataset,
    validation: &TensorDataset,
    options: &PersonalizeOptions,
) -> Result<PersonalizeReport, ModelError> {
    if validation.is_empty() {
        return Err(ModelError::NoValidationSamples);
    }
    let mut best = (model.network.clone(), model.memories.clone());
    let mut validation_kl = vec![model.evaluate(validation).kl];
    let mut chosen_epoch = 0;
    let training = TrainOptions {
        epochs: options.epochs,
        batch_size: options.batch_size,
        learning_rate: options.learning_rate,
        weight_decay: options.weight_decay,
        seed: options.seed,
        proximal_mu: 0.0,
        progress: false,
    };
    let report = train_parameters(
        model,
        train,
        &training,
        None,
        options.scope.trainable(),
        |epoch, model| {
            let kl = model.evaluate(validation).kl;
            // A diverged epoch (NaN) never compares lower, so it is never kept.
            if kl < validation_kl[chosen_epoch] {
                chosen_epoch = epoch;
                best = (model.network.clone(), model.memories.clone());
            }
            validation_kl.push(kl);
            true
        },
    );
    (model.network, model.memories) = best;
    Ok(PersonalizeReport {
        scope: options.scope,
        validation_kl,
        train_kl: report.epoch_kl,
        chosen_epoch,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::Device;
    use mpcl_data::ModelConfig;
    use mpcl_data::{Dataset, Modality, ModalityGroup, Sample, Schema, Standardizer};

    /// One subject whose ratings lean towards emotion 0 whatever the features say: what a head
    /// can learn and a model started at another prior does not know.
    pub(crate) fn dataset(trials: u32, offset: u32) -> Dataset {
        let schema = Schema {
            emotions: vec!["a".into(), "b".into(), "c".into()],
            modalities: vec![Modality::new("x", ModalityGroup::Physiological, 2, 3)],
        };
        let samples = (0..trials)
            .map(|trial| {
                let v = ((trial + offset) % 5) as f32 / 5.0;
                Sample {
                    features: vec![vec![v, 1.0 - v, v * v, 0.5, -v, 1.0]],
                    label: vec![0.6 + 0.2 * v, 0.3 - 0.2 * v, 0.1],
                    subject: "p".into(),
                    trial: trial + offset,
                    time: 0,
                    stimulus: None,
                }
            })
            .collect();
        Dataset {
            name: "personal".into(),
            schema,
            samples,
        }
    }

    struct Fixture {
        model: MpclModel,
        train: TensorDataset,
        validation: TensorDataset,
    }

    fn fixture() -> Fixture {
        let train_set = dataset(24, 0);
        let validation_set = dataset(8, 100);
        let device = Device::flex();
        let mut model =
            MpclModel::new(&train_set.schema, &ModelConfig::tiny(), &device, 3).unwrap();
        // The "global" model predicts a uniform prior: far from this subject's ratings.
        model.start_at_prior(&[1.0 / 3.0; 3]);
        let standardizer = Standardizer::fit(&train_set);
        let train = TensorDataset::new(&train_set, &standardizer, model.device());
        let validation = TensorDataset::new(&validation_set, &standardizer, model.device());
        Fixture {
            model,
            train,
            validation,
        }
    }

    fn options(epochs: usize, scope: PersonalizeScope) -> PersonalizeOptions {
        PersonalizeOptions {
            epochs,
            scope,
            batch_size: 8,
            learning_rate: 1e-2,
            ..PersonalizeOptions::default()
        }
    }

    #[test]
    fn head_scope_leaves_every_other_parameter_bit_identical() {
        let Fixture {
            mut model,
            train,
            validation,
        } = fixture();
        let before = model.parameters();
        let banks_before = model.prototype_banks();
        let report = personalize(
            &mut model,
            &train,
            &validation,
            &options(4, PersonalizeScope::HeadAndPrototypes),
        )
        .unwrap();
        assert!(report.chosen_epoch > 0, "{report:?}");
        let after = model.parameters();
        let (mut head_changed, mut others) = (false, 0);
        for (old, new) in before.tensors.iter().zip(&after.tensors) {
            assert_eq!(old.name, new.name);
            if old.name.starts_with("head.") {
                head_changed |= old.values != new.values;
            } else {
                assert_eq!(old.values, new.values, "{} moved", old.name);
                others += 1;
            }
        }
        assert!(head_changed, "the head did not move");
        assert!(others > 0, "no encoder parameters were checked");
        assert_ne!(
            model.prototype_banks(),
            banks_before,
            "the banks did not adapt"
        );
    }

    #[test]
    fn the_kept_epoch_is_the_validation_minimum_and_never_worse_than_global() {
        for scope in PersonalizeScope::ALL {
            let Fixture {
                mut model,
                train,
                validation,
            } = fixture();
            let report = personalize(&mut model, &train, &validation, &options(8, scope)).unwrap();
            assert_eq!(report.validation_kl.len(), 9);
            assert_eq!(report.train_kl.len(), 8);
            let minimum = report
                .validation_kl
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            assert_eq!(
                report.chosen_validation_kl(),
                minimum,
                "{scope}: {report:?}"
            );
            assert_eq!(
                report
                    .validation_kl
                    .iter()
                    .position(|kl| *kl == minimum)
                    .unwrap(),
                report.chosen_epoch
            );
            assert!(report.chosen_validation_kl() < report.global_validation_kl());
            // The fixture's curve rises again after its minimum, so keeping the last epoch
            // would fail this test.
            assert!(report.validation_kl[8] > minimum, "{scope}: {report:?}");
            // The model holds the kept epoch's weights.
            let kept = model.evaluate(&validation).kl;
            assert!(
                (kept - minimum).abs() < 1e-6,
                "{scope}: {kept} vs {minimum}"
            );
        }
    }

    #[test]
    fn a_step_size_that_only_hurts_keeps_the_global_model() {
        let Fixture {
            mut model,
            train,
            validation,
        } = fixture();
        let before = model.global_state();
        let mut overshooting = options(3, PersonalizeScope::All);
        overshooting.learning_rate = 2.0;
        let report = personalize(&mut model, &train, &validation, &overshooting).unwrap();
        assert!(
            report.validation_kl[1..]
                .iter()
                .all(|kl| kl.is_nan() || *kl >= report.global_validation_kl()),
            "the fixture should overshoot: {report:?}"
        );
        assert_eq!(report.chosen_epoch, 0);
        assert_eq!(model.global_state(), before);
    }

    #[test]
    fn zero_epochs_keeps_the_global_model() {
        let Fixture {
            mut model,
            train,
            validation,
        } = fixture();
        let before = model.global_state();
        let report = personalize(
            &mut model,
            &train,
            &validation,
            &options(0, PersonalizeScope::All),
        )
        .unwrap();
        assert_eq!(report.chosen_epoch, 0);
        assert_eq!(report.validation_kl.len(), 1);
        assert!(report.train_kl.is_empty());
        assert_eq!(model.global_state(), before);
    }

    #[test]
    fn no_validation_samples_is_an_error() {
        let Fixture {
            mut model, train, ..
        } = fixture();
        let empty = TensorDataset::new(
            &dataset(0, 0),
            &Standardizer::fit(&dataset(4, 0)),
            model.device(),
        );
        let error = personalize(&mut model, &train, &empty, &PersonalizeOptions::default());
        assert!(matches!(error, Err(ModelError::NoValidationSamples)));
    }

    #[test]
    fn scopes_parse_from_their_names() {
        for scope in PersonalizeScope::ALL {
            assert_eq!(scope.to_string().parse::<PersonalizeScope>(), Ok(scope));
        }
        assert_eq!("head".parse(), Ok(PersonalizeScope::HeadAndPrototypes));
        assert!("encoder".parse::<PersonalizeScope>().is_err());
        assert_eq!(
            PersonalizeScope::default(),
            PersonalizeScope::HeadAndPrototypes
        );
    }
}

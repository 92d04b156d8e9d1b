//! The training loop, shared by centralized training, a federated client's local epochs and
//! the simulations: Adam on the loss of §3.7, the prototype banks moved after every batch from
//! that batch's statistics, and optionally FedProx's proximal term.

use burn::optim::{AdamConfig, AdamWConfig, GradientsParams};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use mpcl_protocol::ParameterSet;

use crate::loss::mpcl_loss;
use crate::model::MpclModel;
use crate::network::PrototypeBank;
use crate::parameters::squared_distance_to;
use crate::tensors::TensorDataset;

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Decoupled (AdamW) weight decay; 0 trains with plain Adam.
    pub weight_decay: f64,
    /// Seeds the shuffling order.
    pub seed: u64,
    /// FedProx weight mu; 0 disables the proximal term.
    pub proximal_mu: f64,
    /// Show a progress bar per epoch on stderr (a terminal), or print one line per epoch on
    /// stdout when stderr is not a terminal.
    #[serde(skip)]
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            learning_rate: mpcl_protocol::messages::DEFAULT_LEARNING_RATE,
            weight_decay: 0.0,
            seed: 0,
            proximal_mu: 0.0,
            progress: false,
        }
    }
}

/// What a training run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean total loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Mean KL(d || p) of each epoch (the data term alone).
    pub epoch_kl: Vec<f64>,
    pub steps: usize,
}

/// Trains `model` on `data` in place. `proximal_reference` is the global model of the round for
/// FedProx (used only when `options.proximal_mu > 0`).
pub fn train(
    model: &mut MpclModel,
    data: &TensorDataset,
    options: &TrainOptions,
    proximal_reference: Option<&ParameterSet>,
) -> TrainReport {
    train_observed(model, data, options, proximal_reference, |_, _| true)
}

/// [`train`], calling `after_epoch(epoch, model)` (1-based) after every epoch; training stops
/// early when it returns false (model selection and early stopping on validation data, without
/// resetting the optimiser's moments between epochs).
pub fn train_observed(
    model: &mut MpclModel,
    data: &TensorDataset,
    options: &TrainOptions,
    proximal_reference: Option<&ParameterSet>,
    after_epoch: impl FnMut(usize, &MpclModel) -> bool,
) -> TrainReport {
    train_parameters(
        model,
        data,
        options,
        proximal_reference,
        Trainable::Everything,
        after_epoch,
    )
}

/// Which of the network's gradient-trained parameters the optimiser moves. The prototype banks
/// are not among them: they follow the batches' statistics in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trainable {
    /// Every parameter (federated rounds, centralized training).
    Everything,
    /// The distribution head only; encoders, fusions and the emotion retrieval get no gradient
    /// step, so they stay bit for bit as they were (personalization's default scope).
    HeadOnly,
}

/// [`train_observed`] moving only the `trainable` parameters.
pub(crate) fn train_parameters(
    model: &mut MpclModel,
    data: &TensorDataset,
    options: &TrainOptions,
    proximal_reference: Option<&ParameterSet>,
    trainable: Trainable,
    mut after_epoch: impl FnMut(usize, &MpclModel) -> bool,
) -> TrainReport {
    let mut optimizer = if options.weight_decay > 0.0 {
        AdamWConfig::new()
            .with_weight_decay(options.weight_decay as f32)
            .init()
    } else {
        AdamConfig::new().init()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let batch_size = options.batch_size.max(1);
    let mut report = TrainReport::default();
    let proximal = proximal_reference.filter(|_| options.proximal_mu > 0.0);
    for epoch in 0..options.epochs {
        order.shuffle(&mut rng);
        let bar = progress_bar(
            options.progress,
            order.len().div_ceil(batch_size),
            epoch,
            options.epochs,
        );
        let (mut loss_sum, mut kl_sum, mut batches) = (0.0, 0.0, 0usize);
        for chunk in order.chunks(batch_size) {
            let (inputs, labels) = data.batch(chunk);
            let output = model
                .network
                .forward(&inputs, &model.memories, &model.config);
            let terms = mpcl_loss(&output, labels.clone(), &model.memories, &model.config);
            let mut loss = terms.total;
            if let Some(reference) = proximal
                && let Some(distance) = squared_distance_to(&model.network, reference)
            {
                loss = loss + distance * (options.proximal_mu / 2.0);
            }
            loss_sum += f64::from(loss.clone().into_scalar::<f32>());
            kl_sum += f64::from(terms.kl.into_scalar::<f32>());
            batches += 1;
            let grads = match trainable {
                Trainable::Everything => {
                    GradientsParams::from_grads(loss.backward(), &model.network)
                }
                // Parameters without a gradient are left untouched by the optimiser (and by
                // AdamW's decay, which is applied per gradient step).
                Trainable::HeadOnly => model.network.head_gradients(loss.backward()),
            };
            model.network = optimizer.step(options.learning_rate, model.network.clone(), grads);
            if model.config.use_prototypes {
                for group in &output.groups {
                    let (Some(assignment), Some(bank)) =
                        (&group.assignment, model.memories.bank_mut(group.group))
                    else {
                        continue;
                    };
                    let statistics = PrototypeBank::statistics(
                        group.representation.clone(),
                        labels.clone(),
                        assignment.clone(),
                    );
                    bank.update(&statistics, model.config.prototype_momentum);
                }
            }
            report.steps += 1;
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        let batches = batches.max(1) as f64;
        report.epoch_losses.push(loss_sum / batches);
        report.epoch_kl.push(kl_sum / batches);
        if let Some(bar) = bar {
            if bar.is_hidden() {
                // No terminal (nohup, CI, a log file): one plain line per epoch instead.
                println!(
                    "epoch {}/{}: loss {:.4}, KL {:.4}",
                    epoch + 1,
                    options.epochs,
                    loss_sum / batches,
                    kl_sum / batches
                );
            } else {
                bar.finish_with_message(format!("loss {:.4}", loss_sum / batches));
            }
        }
        if !after_epoch(epoch + 1, model) {
            break;
        }
    }
    report
}

fn progress_bar(
    enabled: bool,
    steps: usize,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} batches {elapsed} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    Some(bar)
}

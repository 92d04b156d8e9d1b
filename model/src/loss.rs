//! The MPCL loss (DESIGN §3.7):
//! `L = KL(d || p) + l_proto L_proto + l_prd L_prd + l_co ||corr(p) - M||^2`.
//! A weight of zero switches its term off entirely (it is not even computed), which is what the
//! ablations rely on.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

use crate::network::{ForwardOutput, Memories};
use mpcl_data::ModelConfig;

/// Floor for probabilities inside logarithms.
const LOG_EPSILON: f64 = 1e-12;

/// The loss and its terms (each already averaged over the batch, before weighting).
#[derive(Clone, Debug)]
pub struct LossTerms {
    pub total: Tensor<1>,
    pub kl: Tensor<1>,
    pub prototype: Option<Tensor<1>>,
    pub distillation: Option<Tensor<1>>,
    pub cooccurrence: Option<Tensor<1>>,
}

/// Computes the loss of `output` against `labels` `(B, C)`.
pub fn mpcl_loss(
    output: &ForwardOutput,
    labels: Tensor<2>,
    memories: &Memories,
    config: &ModelConfig,
) -> LossTerms {
    let kl = kl_divergence(labels.clone(), output.log_probs.clone());
    let mut total = kl.clone();

    let prototype = (config.use_prototypes && config.prototype_loss_weight > 0.0)
        .then(|| prototype_loss(output, labels.clone(), config.prototype_temperature))
        .flatten();
    if let Some(term) = &prototype {
        total = total + term.clone() * config.prototype_loss_weight;
    }

    let distillation = (config.use_prototypes && config.distillation_loss_weight > 0.0)
        .then(|| relation_distillation(output, config.distillation_temperature))
        .flatten();
    if let Some(term) = &distillation {
        total = total + term.clone() * config.distillation_loss_weight;
    }

    let cooccurrence = (config.use_cooccurrence && config.cooccurrence_loss_weight > 0.0)
        .then(|| cooccurrence_loss(output.log_probs.clone(), memories.memory().clone()));
    if let Some(term) = &cooccurrence {
        total = total + term.clone() * config.cooccurrence_loss_weight;
    }

    LossTerms {
        total,
        kl,
        prototype,
        distillation,
        cooccurrence,
    }
}

/// Mean over the batch of `KL(d || p) = sum_c d_c (ln d_c - ln p_c)`; terms with `d_c = 0` are 0.
pub fn kl_divergence(labels: Tensor<2>, log_probs: Tensor<2>) -> Tensor<1> {
    let log_labels = labels.clone().clamp_min(LOG_EPSILON).log();
    (labels * (log_labels - log_probs)).sum_dim(1).mean()
}

/// Cross-entropy between the label distribution and `softmax_c(logsumexp_k cos / tau)`, averaged
/// over groups. `None` when no group has prototypes.
fn prototype_loss(
    output: &ForwardOutput,
    labels: Tensor<2>,
    temperature: f64,
) -> Option<Tensor<1>> {
    let terms: Vec<Tensor<1>> = output
        .groups
        .iter()
        .filter_map(|g| g.cosine.clone())
        .map(|cosine| {
            let scaled = cosine / temperature; // (B, C, K)
            let max = scaled.clone().max_dim(2);
            let logits = ((scaled - max.clone()).exp().sum_dim(2).log() + max).squeeze_dim::<2>(2);
            (labels.clone() * log_softmax(logits, 1))
                .sum_dim(1)
                .mean()
                .neg()
        })
        .collect();
    mean_term(terms)
}

/// Symmetric prototype relation distillation between the physiological and behavioral groups:
/// `1/2 [KL(sg(r_phys) || r_beh) + KL(sg(r_beh) || r_phys)]` with `r_g` the softmax over all
/// `C*K` prototypes of `cos / tau_d`. `None` (the term is zero) unless both groups are present.
fn relation_distillation(output: &ForwardOutput, temperature: f64) -> Option<Tensor<1>> {
    let relations: Vec<Tensor<2>> = output
        .groups
        .iter()
        .filter_map(|g| g.cosine.clone())
        .map(|cosine| {
            let [batch, emotions, prototypes] = cosine.dims();
            log_softmax(
                cosine.reshape([batch, emotions * prototypes]) / temperature,
                1,
            )
        })
        .collect();
    let [physiological, behavioral] = relations.as_slice() else {
        return None;
    };
    let kl_to = |target: &Tensor<2>, log_other: &Tensor<2>| {
        let target = target.clone().detach();
        (target.clone().exp() * (target - log_other.clone()))
            .sum_dim(1)
            .mean()
    };
    Some((kl_to(physiological, behavioral) + kl_to(behavioral, physiological)) * 0.5)
}

/// `||corr(p) - M||_F^2`, with `corr(p)` the batch's row-normalised `E[p p^T]`.
fn cooccurrence_loss(log_probs: Tensor<2>, memory: Tensor<2>) -> Tensor<1> {
    let probs = log_probs.exp();
    let batch = probs.dims()[0] as f64;
    let joint = probs.clone().transpose().matmul(probs) / batch;
    let rows = joint.clone().sum_dim(1).clamp_min(LOG_EPSILON);
    (joint / rows - memory).square().sum()
}

fn mean_term(terms: Vec<Tensor<1>>) -> Option<Tensor<1>> {
    let count = terms.len() as f64;
    terms
        .into_iter()
        .reduce(|a, b| a + b)
        .map(|sum| sum / count)
}

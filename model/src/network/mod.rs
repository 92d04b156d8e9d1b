//! The MPCL network (DESIGN §3): modality encoders, multi-scale associative memory fusion per
//! group, emotion-specific prototype banks, co-occurrence memory retrieval and the hierarchical
//! head.
//!
//! The network splits into two kinds of state, because the federation treats them differently:
//! [`MpclNetwork`] holds the gradient-trained parameters (a burn `Module`; clients send deltas of
//! it), and [`Memories`] holds the prototype banks and the co-occurrence memory (moved by
//! statistics, never by gradients; clients send the statistics).

#[cfg(test)]
mod ablation_tests;
mod emotions;
mod encoder;
mod fusion;
mod memories;
pub mod prototypes;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use memories::Memories;
pub use prototypes::{BankStatistics, PrototypeBank};

use emotions::{DistributionHead, EmotionRetrieval};
use encoder::ModalityEncoder;
use fusion::GroupFusion;
use mpcl_data::ModelConfig;
use mpcl_data::{ModalityGroup, Schema};

/// Which modalities feed which group, fixed when the network is built.
#[derive(Clone, Debug)]
pub struct NetworkLayout {
    /// Present groups, in `ModalityGroup::ALL` order, with the schema indices of their modalities.
    pub groups: Vec<(ModalityGroup, Vec<usize>)>,
    pub emotions: usize,
}

impl NetworkLayout {
    /// The layout of `schema`.
    pub fn of(schema: &Schema) -> Self {
        Self {
            groups: schema
                .groups()
                .into_iter()
                .map(|g| (g, schema.modalities_in(g)))
                .collect(),
            emotions: schema.emotion_count(),
        }
    }
}

/// The gradient-trained part of the MPCL network.
#[derive(Module, Debug)]
pub struct MpclNetwork {
    encoders: Vec<ModalityEncoder>,
    fusions: Vec<GroupFusion>,
    retrieval: EmotionRetrieval,
    head: DistributionHead,
    #[module(skip)]
    layout: NetworkLayout,
}

/// What one group contributes to a forward pass.
#[derive(Clone, Debug)]
pub struct GroupOutput {
    pub group: ModalityGroup,
    /// The group representation `z_g` `(B, D)`.
    pub representation: Tensor<2>,
    /// Cosine similarity to every prototype `(B, C, K)` (absent when prototypes are off).
    pub cosine: Option<Tensor<3>>,
    /// Soft assignment to the prototypes of each emotion `(B, C, K)`.
    pub assignment: Option<Tensor<3>>,
}

/// The result of a forward pass.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// Log of the predicted distribution `(B, C)`.
    pub log_probs: Tensor<2>,
    pub groups: Vec<GroupOutput>,
}

impl MpclNetwork {
    /// A freshly initialised network for `schema` (the config must have been validated).
    ///
    /// Every module family (each modality's encoder, each group's fusion, the emotion
    /// retrieval, the head) draws its initial weights from its own seed derived from `seed`,
    /// and is initialised at once (burn initialises parameters lazily), so a network with one
    /// component changed (an ablation: fewer scales, say) shares every other module's initial
    /// weights with the full network.
    pub fn new(schema: &Schema, config: &ModelConfig, device: &Device, seed: u64) -> Self {
        let layout = NetworkLayout::of(schema);
        let width = config.width;
        let mut family = 0u64;
        let mut seeded = |device: &Device| {
            family += 1;
            device.seed(seed ^ family.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        };
        let encoders = schema
            .modalities
            .iter()
            .map(|m| {
                seeded(device);
                initialised(ModalityEncoder::new(
                    m.token_count,
                    m.token_width,
                    width,
                    device,
                ))
            })
            .collect();
        let fusions = layout
            .groups
            .iter()
            .map(|_| {
                seeded(device);
                initialised(GroupFusion::new(
                    &config.scales,
                    config.memory_slots,
                    width,
                    device,
                ))
            })
            .collect();
        seeded(device);
        let retrieval = initialised(EmotionRetrieval::new(layout.emotions, width, device));
        seeded(device);
        let head = initialised(DistributionHead::new(layout.emotions, width, device));
        Self {
            encoders,
            fusions,
            retrieval,
            head,
            layout,
        }
    }

    /// Sets the head to predict `prior` for every input (see [`DistributionHead::at_prior`]).
    pub fn set_head_prior(&mut self, prior: &[f32]) {
        self.head = self.head.at_prior(prior);
    }

    /// The gradients of the head's parameters only, taken from the gradients of a whole
    /// backward pass (personalization's head-only scope: an optimiser step with these moves
    /// nothing else).
    pub(crate) fn head_gradients(
        &self,
        gradients: burn::tensor::Gradients,
    ) -> burn::optim::GradientsParams {
        burn::optim::GradientsParams::from_grads(gradients, &self.head)
    }

    /// The layout the network was built for.
    pub fn layout(&self) -> &NetworkLayout {
        &self.layout
    }

    /// Forward pass. `inputs` holds one `(B, T_m, w_m)` token tensor per schema modality.
    pub fn forward(
        &self,
        inputs: &[Tensor<3>],
        memories: &Memories,
        config: &ModelConfig,
    ) -> ForwardOutput {
        let encoded: Vec<Tensor<3>> = self
            .encoders
            .iter()
            .zip(inputs)
            .map(|(encoder, tokens)| encoder.forward(tokens.clone()))
            .collect();
        let batch = inputs[0].dims()[0];
        let mut groups = Vec::with_capacity(self.layout.groups.len());
        let mut readouts = Vec::new();
        for ((group, modalities), fusion) in self.layout.groups.iter().zip(&self.fusions) {
            let tokens: Vec<Tensor<3>> = modalities.iter().map(|m| encoded[*m].clone()).collect();
            let representation =
                fusion.forward(&tokens, config.use_memory_fusion, config.use_cross_modal);
            let (cosine, assignment) = match memories.bank(*group) {
                Some(bank) if config.use_prototypes => {
                    let cosine = bank.cosine(representation.clone());
                    let assignment =
                        PrototypeBank::assignment(cosine.clone(), config.prototype_temperature);
                    readouts.push(read_out(assignment.clone(), bank.values.clone()));
                    (Some(cosine), Some(assignment))
                }
                _ => (None, None),
            };
            groups.push(GroupOutput {
                group: *group,
                representation,
                cosine,
                assignment,
            });
        }
        let embeddings = if readouts.is_empty() {
            self.retrieval.learned_embeddings(batch)
        } else {
            mean_of(readouts)
        };
        let log_memory = config
            .use_cooccurrence
            .then(|| memories.log_memory().clone());
        let emotion_states = if config.use_emotion_retrieval {
            self.retrieval.forward(embeddings, log_memory)
        } else {
            embeddings
        };
        let z = config.use_z_path.then(|| {
            mean_of(
                groups
                    .iter()
                    .map(|g| g.representation.clone())
                    .collect::<Vec<_>>(),
            )
        });
        ForwardOutput {
            log_probs: self.head.forward(emotion_states, z),
            groups,
        }
    }
}

/// Emotion embeddings `V[c] = sum_k a[c,k] P[c,k]`: `(B, C, D)` from assignment `(B, C, K)` and
/// bank `(C, K, D)`.
fn read_out(assignment: Tensor<3>, bank: Tensor<3>) -> Tensor<3> {
    assignment.swap_dims(0, 1).matmul(bank).swap_dims(0, 1)
}

/// `module` with every parameter drawn now rather than on first use.
fn initialised<M: Module>(module: M) -> M {
    let _ = crate::parameters::flatten_parameters(&module);
    module
}

/// Element-wise mean of equally shaped tensors.
fn mean_of<const D: usize>(tensors: Vec<Tensor<D>>) -> Tensor<D> {
    let count = tensors.len() as f64;
    let mut iter = tensors.into_iter();
    let first = iter.next().expect("at least one tensor");
    iter.fold(first, |acc, t| acc + t) / count
}

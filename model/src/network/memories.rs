//! The network's memories: one prototype bank per group and the co-occurrence memory. They are
//! kept outside the burn module because they are not trained by gradients, and the federation
//! ships them as statistics rather than deltas.

use burn::tensor::{Device, Tensor, TensorData};

use mpcl_protocol::CooccurrenceStatistics;

use super::NetworkLayout;
use super::prototypes::PrototypeBank;
use mpcl_data::ModalityGroup;
use mpcl_data::ModelConfig;

/// Prototype banks and co-occurrence memory.
#[derive(Clone, Debug)]
pub struct Memories {
    /// One bank per present group, in layout order.
    pub banks: Vec<PrototypeBank>,
    /// Statistics the co-occurrence memory was built from.
    cooccurrence: CooccurrenceStatistics,
    /// `M` (`C x C`, rows sum to one).
    memory: Tensor<2>,
    /// `ln(M + eps)`.
    log_memory: Tensor<2>,
    epsilon: f64,
}

impl Memories {
    /// Random banks and an uninformed (uniform) co-occurrence memory.
    pub fn new(layout: &NetworkLayout, config: &ModelConfig, device: &Device) -> Self {
        let banks = layout
            .groups
            .iter()
            .map(|(group, _)| {
                PrototypeBank::random(
                    *group,
                    layout.emotions,
                    config.prototypes_per_emotion,
                    config.width,
                    device,
                )
            })
            .collect();
        Self::with_banks(
            banks,
            CooccurrenceStatistics::zeros(layout.emotions),
            config.cooccurrence_epsilon,
            device,
        )
    }

    /// Memories from given banks and co-occurrence statistics.
    pub fn with_banks(
        banks: Vec<PrototypeBank>,
        cooccurrence: CooccurrenceStatistics,
        epsilon: f64,
        device: &Device,
    ) -> Self {
        let c = cooccurrence.emotions;
        let memory: Tensor<2> =
            Tensor::from_data(TensorData::new(cooccurrence.memory(), [c, c]), device);
        let log_memory = (memory.clone() + epsilon).log();
        Self {
            banks,
            cooccurrence,
            memory,
            log_memory,
            epsilon,
        }
    }

    /// Replaces the co-occurrence memory by the one built from `statistics`.
    pub fn set_cooccurrence(&mut self, statistics: CooccurrenceStatistics) {
        let device = self.memory.device();
        *self = Self::with_banks(
            std::mem::take(&mut self.banks),
            statistics,
            self.epsilon,
            &device,
        );
    }

    /// The bank of `group`, if the schema has that group.
    pub fn bank(&self, group: ModalityGroup) -> Option<&PrototypeBank> {
        self.banks.iter().find(|b| b.group == group)
    }

    /// The bank of `group`, mutably.
    pub fn bank_mut(&mut self, group: ModalityGroup) -> Option<&mut PrototypeBank> {
        self.banks.iter_mut().find(|b| b.group == group)
    }

    /// The co-occurrence statistics behind the memory.
    pub fn cooccurrence(&self) -> &CooccurrenceStatistics {
        &self.cooccurrence
    }

    /// `M`.
    pub fn memory(&self) -> &Tensor<2> {
        &self.memory
    }

    /// `ln(M + eps)`.
    pub fn log_memory(&self) -> &Tensor<2> {
        &self.log_memory
    }

    /// The same memories on the inner backend (see [`crate::MpclModel::predict_rows`]).
    pub fn without_autodiff(&self) -> Self {
        Self {
            banks: self
                .banks
                .iter()
                .map(|b| PrototypeBank {
                    group: b.group,
                    values: b.values.clone().without_autodiff(),
                })
                .collect(),
            cooccurrence: self.cooccurrence.clone(),
            memory: self.memory.clone().without_autodiff(),
            log_memory: self.log_memory.clone().without_autodiff(),
            epsilon: self.epsilon,
        }
    }
}

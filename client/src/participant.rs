//! One participant's local training: global state in, update out.

use std::sync::Arc;
use std::time::Instant;

use mpcl_data::{Dataset, Standardizer};
use mpcl_model::{ModelError, ModelPool, MpclModel, TensorDataset, TrainOptions, train};
use mpcl_protocol::codec::{CodecError, MessageLimits};
use mpcl_protocol::compression::{
    CompressedUpdate, CompressionError, ErrorFeedback, compress_prototype_sums,
};
use mpcl_protocol::messages::{
    ClientUpdate, GlobalState, LocalMetrics, RoundKind, RunId, TrainingConfig,
};
use mpcl_protocol::metrics::EvaluationReport;
use mpcl_protocol::signing::SignedUpdate;
use mpcl_protocol::update_payload::encode_update_payload;
use mpcl_protocol::{CooccurrenceStatistics, NodeIdentity};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::evaluation::{EvaluationParts, LocalSplit};

/// Local choices of a participant that the coordinator does not dictate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParticipantSettings {
    /// Prototype statistics of an emotion are withheld (zeroed) when the participant's label mass
    /// for it is below this, so that no prototype is built from one or two of its samples.
    pub min_prototype_mass: f32,
}

impl Default for ParticipantSettings {
    fn default() -> Self {
        Self {
            min_prototype_mass: 1.0,
        }
    }
}

/// Errors of local training.
#[derive(Debug, Error)]
pub enum ParticipantError {
    #[error("local data: {0}")]
    Data(#[from] mpcl_data::DatasetError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the local data's schema is not the one the model was built for")]
    SchemaMismatch,
    #[error("the global state's parameters do not fit the local model: {0}")]
    Layout(#[from] mpcl_protocol::ParameterSetError),
    #[error("local training produced non-finite parameters (learning rate {0} too high?)")]
    Diverged(f64),
    #[error("cannot compress the encoder delta: {0}")]
    Compression(#[from] CompressionError),
}

/// What a round of local training produced: the update, and its lossy parts in the form they
/// travel in when the run compresses updates.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedUpdate {
    /// The update. With compression its delta and prototype sums are the *decompressed* ones,
    /// exactly what the coordinator will reconstruct, so in-process simulations aggregate what a
    /// real run would. Shared (`Arc`), so that the node's events hand it on without copying a
    /// model-sized delta every round.
    pub update: Arc<ClientUpdate>,
    /// The compressed delta and prototype sums sent instead of the update's own (none when the
    /// run does not compress).
    pub compressed: Option<CompressedUpdate>,
}

impl TrainedUpdate {
    /// The signed upload (compressed delta when there is one).
    pub fn sign(
        &self,
        identity: &NodeIdentity,
        limits: &MessageLimits,
    ) -> Result<SignedUpdate, CodecError> {
        SignedUpdate::sign_compressed(&self.update, self.compressed.as_ref(), identity, limits)
    }

    /// Bytes of the signed payload (the update as encoded for the wire).
    pub fn payload_bytes(&self, limits: &MessageLimits) -> Result<usize, CodecError> {
        encode_update_payload(&self.update, self.compressed.as_ref(), limits).map(|b| b.len())
    }
}

/// A participant: its own training data, standardised with its own statistics, and the pool it
/// borrows a model from for each round (between rounds its model would hold nothing of its own:
/// every round starts by loading the global state).
pub struct Participant {
    models: ModelPool,
    data: TensorDataset,
    standardizer: Standardizer,
    own_cooccurrence: CooccurrenceStatistics,
    /// The label mass of each emotion over the training samples (the opening round's answer).
    label_sums: Vec<f32>,
    settings: ParticipantSettings,
    /// Quantisation residual carried to the next round (lossy compression only).
    feedback: ErrorFeedback,
    /// The validation and test parts kept out of training (federated evaluation only).
    evaluation: Option<EvaluationParts>,
}

/// What trains a node's rounds: the MPCL model ([`Participant`]), or a stand-in that lets a
/// benchmark measure the framework without the cost of training.
pub trait LocalTrainer: Send + 'static {
    /// One round of local training from `state` with `config`.
    fn train_round(
        &mut self,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        config: &TrainingConfig,
    ) -> Result<TrainedUpdate, ParticipantError>;
}

impl LocalTrainer for Participant {
    fn train_round(
        &mut self,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        config: &TrainingConfig,
    ) -> Result<TrainedUpdate, ParticipantError> {
        Participant::train_round(self, run_id, round, state, config)
    }
}

impl Participant {
    /// A participant training on `dataset` (its local training samples) with models of `models`
    /// (a node's own pool of one, or the pool an in-process federation's participants share).
    pub fn new(
        dataset: &Dataset,
        models: &ModelPool,
        settings: ParticipantSettings,
    ) -> Result<Self, ParticipantError> {
        dataset.validate()?;
        if &dataset.schema != models.schema() {
            return Err(ParticipantError::SchemaMismatch);
        }
        let standardizer = Standardizer::fit(dataset);
        let data = TensorDataset::new(dataset, &standardizer, models.training_device());
        let mut own_cooccurrence = CooccurrenceStatistics::zeros(dataset.schema.emotion_count());
        let mut label_sums = vec![0.0f32; dataset.schema.emotion_count()];
        for sample in &dataset.samples {
            own_cooccurrence.add_label(&sample.label);
            for (sum, value) in label_sums.iter_mut().zip(&sample.label) {
                *sum += value;
            }
        }
        Ok(Self {
            models: models.clone(),
            data,
            standardizer,
            own_cooccurrence,
            label_sums,
            settings,
            feedback: ErrorFeedback::new(),
            evaluation: None,
        })
    }

    /// A participant training on `split.train` that evaluates the global models it receives on
    /// `split.validation` and `split.test` when a round asks it to (federated evaluation).
    pub fn with_evaluation(
        split: &LocalSplit,
        models: &ModelPool,
        settings: ParticipantSettings,
    ) -> Result<Self, ParticipantError> {
        let mut participant = Self::new(&split.train, models, settings)?;
        participant.evaluation = Some(EvaluationParts::new(
            split,
            &participant.standardizer,
            models.training_device(),
        ));
        Ok(participant)
    }

    /// Number of local training samples.
    pub fn sample_count(&self) -> usize {
        self.data.len()
    }

    /// The participant's feature statistics (for evaluating on its other local samples).
    pub fn standardizer(&self) -> &Standardizer {
        &self.standardizer
    }

    /// Trains from `state` for the round and returns the update to send. When
    /// `config.compression` is lossy, the encoder delta plus the residual carried from earlier
    /// rounds is compressed, and what compression dropped is carried to the next round (error
    /// feedback, [`ErrorFeedback`]).
    pub fn train_round(
        &mut self,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        config: &TrainingConfig,
    ) -> Result<TrainedUpdate, ParticipantError> {
        let models = self.models.clone();
        models.with_model(|model| self.train_round_with(model, run_id, round, state, config))?
    }

    /// [`Participant::train_round`] with a borrowed model.
    fn train_round_with(
        &mut self,
        model: &mut MpclModel,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        config: &TrainingConfig,
    ) -> Result<TrainedUpdate, ParticipantError> {
        let started = Instant::now();
        model.load_global_state(state)?;
        // The received state exactly as it is, before any local change (a direct evaluation of
        // the global model gives the same numbers).
        let evaluation = match (&self.evaluation, config.evaluate) {
            (Some(parts), true) => Some(parts.report(model, state)),
            _ => None,
        };
        match config.kind {
            RoundKind::Training => {}
            RoundKind::LabelPrior => return Ok(self.label_prior_update(run_id, round, state)),
            RoundKind::Evaluation => {
                return Ok(self.evaluation_only_update(run_id, round, state, evaluation, started));
            }
        }
        if state.cooccurrence.count == 0.0 {
            // The first round has no global co-occurrence memory yet: use the local one.
            model
                .memories
                .set_cooccurrence(self.own_cooccurrence.clone());
        }
        let options = TrainOptions {
            epochs: config.local_epochs as usize,
            batch_size: config.batch_size as usize,
            learning_rate: config.learning_rate,
            weight_decay: config.weight_decay,
            seed: config.seed,
            proximal_mu: config.proximal_mu,
            progress: false,
        };
        let report = train(model, &self.data, &options, Some(&state.parameters));
        let delta = model.parameters().delta_from(&state.parameters)?;
        if delta.validate().is_err() {
            return Err(ParticipantError::Diverged(config.learning_rate));
        }
        let (delta, compressed_delta) = if config.compression.is_compressed() {
            let (compressed, sent) = self.feedback.compress(&delta, config.compression)?;
            (sent, Some(compressed))
        } else {
            (delta, None)
        };
        let (mut prototypes, mut cooccurrence) = model.memory_statistics(&self.data);
        for statistics in &mut prototypes {
            if config.share_memories {
                statistics.withhold_below(self.settings.min_prototype_mass);
            } else {
                statistics.withhold_below(f32::INFINITY);
            }
        }
        if !config.share_memories {
            cooccurrence = CooccurrenceStatistics::zeros(cooccurrence.emotions);
        }
        // Prototype sums are fresh totals every round: compressed without error feedback.
        let compressed = match compressed_delta {
            Some(delta) => Some(CompressedUpdate {
                delta,
                prototype_sums: compress_prototype_sums(&mut prototypes, config.compression)?,
            }),
            None => None,
        };
        let update = ClientUpdate {
            run_id,
            round,
            delta,
            prototypes,
            cooccurrence,
            sample_count: self.data.len() as u64,
            metrics: LocalMetrics {
                train_loss: report.epoch_losses.last().copied().unwrap_or(0.0),
                train_kl: report.epoch_kl.last().copied().unwrap_or(0.0),
                seconds: started.elapsed().as_secs_f64(),
            },
            evaluation,
        };
        Ok(TrainedUpdate {
            update: update.into(),
            compressed,
        })
    }

    /// The update of the final evaluation round: the report, a zero delta and no statistics
    /// (the coordinator keeps only the evaluation).
    fn evaluation_only_update(
        &self,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        evaluation: Option<EvaluationReport>,
        started: Instant,
    ) -> TrainedUpdate {
        let mut update = self.untrained_update(
            run_id,
            round,
            state,
            CooccurrenceStatistics::zeros(state.cooccurrence.emotions),
        );
        update.metrics.seconds = started.elapsed().as_secs_f64();
        update.evaluation = evaluation;
        TrainedUpdate {
            update: update.into(),
            compressed: None,
        }
    }

    /// The update of the opening label-prior round: a zero delta and the label sums of the
    /// local training data, nothing else (not how emotions co-occur, no prototypes).
    fn label_prior_update(&self, run_id: RunId, round: u64, state: &GlobalState) -> TrainedUpdate {
        let statistics =
            CooccurrenceStatistics::of_label_sums(&self.label_sums, self.data.len() as f64);
        TrainedUpdate {
            update: self
                .untrained_update(run_id, round, state, statistics)
                .into(),
            compressed: None,
        }
    }

    /// An update that trained nothing: a zero delta, no prototype statistics.
    fn untrained_update(
        &self,
        run_id: RunId,
        round: u64,
        state: &GlobalState,
        cooccurrence: CooccurrenceStatistics,
    ) -> ClientUpdate {
        let zero = vec![0.0; state.parameters.value_count()];
        ClientUpdate {
            run_id,
            round,
            delta: state
                .parameters
                .with_flat(&zero)
                .expect("a flat vector of the state's own length"),
            prototypes: Vec::new(),
            cooccurrence,
            sample_count: self.data.len() as u64,
            metrics: LocalMetrics::default(),
            evaluation: None,
        }
    }

    /// Predictions of the global model `state` on `dataset` (standardised with this participant's
    /// own statistics), e.g. for evaluating on the participant's held-out trials.
    pub fn predict_with(
        &self,
        state: &GlobalState,
        dataset: &Dataset,
    ) -> Result<Vec<Vec<f32>>, ParticipantError> {
        let tensors =
            TensorDataset::new(dataset, &self.standardizer, self.models.training_device());
        self.models.with_model(|model| {
            model.load_global_state(state)?;
            Ok(model.predict(&tensors))
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpcl_data::{Modality, ModalityGroup, ModelConfig, Sample, Schema};
    use mpcl_model::Device;
    use mpcl_protocol::compression::Compression;

    /// Subject `offset`'s samples: the same schema, other values.
    fn dataset(offset: u32) -> Dataset {
        let schema = Schema {
            emotions: vec!["a".into(), "b".into()],
            modalities: vec![Modality::new("x", ModalityGroup::Physiological, 2, 2)],
        };
        let samples = (0..12u32)
            .map(|trial| {
                let v = ((trial + offset) % 7) as f32 / 7.0;
                Sample {
                    features: vec![vec![v, v * 2.0, 1.0 - v, 1.0]],
                    label: vec![v, 1.0 - v],
                    subject: format!("p{offset}"),
                    trial,
                    time: 0,
                    stimulus: None,
                }
            })
            .collect();
        Dataset {
            name: "local".into(),
            schema,
            samples,
        }
    }

    fn round_config() -> TrainingConfig {
        TrainingConfig {
            local_epochs: 2,
            batch_size: 4,
            learning_rate: 0.01,
            weight_decay: 0.0,
            proximal_mu: 0.0,
            seed: 3,
            share_memories: true,
            compression: Compression::None,
            evaluate: false,
            kind: RoundKind::Training,
        }
    }

    /// Two rounds of each participant in turn, both from `start`: a shared model comes to each
    /// one left trained by the other.
    fn two_rounds(participants: &mut [Participant], start: &GlobalState) -> Vec<ClientUpdate> {
        let mut updates = Vec::new();
        for round in 1..=2 {
            for participant in participants.iter_mut() {
                let trained = participant
                    .train_round([1; 16], round, start, &round_config())
                    .unwrap();
                updates.push((*trained.update).clone());
            }
        }
        updates
    }

    #[test]
    fn participants_sharing_a_pool_send_what_participants_with_a_model_each_send() {
        let config = ModelConfig::tiny();
        let device = Device::flex();
        let data = [dataset(0), dataset(3)];
        let start = MpclModel::new(&data[0].schema, &config, &device, 5)
            .unwrap()
            .global_state();
        let shared = ModelPool::new(&data[0].schema, &config, &device).unwrap();
        let mut sharing: Vec<Participant> = data
            .iter()
            .map(|d| Participant::new(d, &shared, ParticipantSettings::default()).unwrap())
            .collect();
        let mut alone: Vec<Participant> = data
            .iter()
            .map(|d| {
                let own = ModelPool::new(&d.schema, &config, &device).unwrap();
                Participant::new(d, &own, ParticipantSettings::default()).unwrap()
            })
            .collect();

        let from_shared = two_rounds(&mut sharing, &start);
        let from_own = two_rounds(&mut alone, &start);
        assert_ne!(from_own[0].delta, from_own[1].delta, "the subjects differ");
        for (a, b) in from_shared.iter().zip(&from_own) {
            assert_eq!(a.delta, b.delta);
            assert_eq!(a.prototypes, b.prototypes);
            assert_eq!(a.cooccurrence, b.cooccurrence);
        }
        assert_eq!(
            shared.idle_models(),
            1,
            "one model served both participants"
        );
    }

    #[test]
    fn a_pool_built_for_another_schema_is_refused() {
        let data = dataset(0);
        let mut other = data.schema.clone();
        other.emotions.push("c".into());
        let pool = ModelPool::new(&other, &ModelConfig::tiny(), &Device::flex()).unwrap();
        let refused = Participant::new(&data, &pool, ParticipantSettings::default());
        assert!(matches!(refused, Err(ParticipantError::SchemaMismatch)));
    }
}

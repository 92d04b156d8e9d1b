//! `MpclModel`: the network, its memories, its config and schema, on one device: what a
//! trainer, a client or a simulation holds. Conversions to and from the federation's plain data
//! (`GlobalState`, statistics) live here so that no other crate needs to know burn.

use burn::module::Module;
use burn::tensor::Device;
use thiserror::Error;

use mpcl_protocol::messages::{GlobalState, PrototypeBank as WireBank};
use mpcl_protocol::{CooccurrenceStatistics, F32Vec, ParameterSet, PrototypeStatistics};

use crate::metrics::{DistributionMetrics, evaluate};
use crate::network::{BankStatistics, Memories, MpclNetwork, PrototypeBank};
use crate::parameters::{ParameterLoadError, flatten_parameters, load_parameters};
use crate::tensors::TensorDataset;
use mpcl_data::{ConfigError, ModelConfig};
use mpcl_data::{DatasetError, ModalityGroup, Schema};

/// Serialises seeded initialisation (see `MpclModel::new`).
static INITIALISATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` holding the lock of seeded initialisation: the backend's random generator is shared
/// by the whole process, so seeding and drawing must not interleave with another thread's.
pub(crate) fn seeded_initialisation<T>(f: impl FnOnce() -> T) -> T {
    let _guard = INITIALISATION
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    f()
}

/// Batch size used for inference.
const PREDICT_BATCH: usize = 256;

/// Errors of building or loading a model.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Parameters(#[from] ParameterLoadError),
    #[error("global state does not fit the model: {0}")]
    GlobalState(String),
    #[error(
        "personalization needs validation samples: without them no epoch can be chosen over the global model"
    )]
    NoValidationSamples,
}

/// The MPCL network with its memories, ready to train or predict.
#[derive(Clone, Debug)]
pub struct MpclModel {
    pub config: ModelConfig,
    pub schema: Schema,
    pub network: MpclNetwork,
    pub memories: Memories,
    device: Device,
}

impl MpclModel {
    /// A freshly initialised model. `device` gets autodiff switched on; `seed` makes the
    /// initialisation reproducible on a given backend.
    pub fn new(
        schema: &Schema,
        config: &ModelConfig,
        device: &Device,
        seed: u64,
    ) -> Result<Self, ModelError> {
        schema.validate().map_err(DatasetError::from)?;
        config.validate(schema)?;
        let device = device.clone().autodiff();
        // The backend's random generator is shared by the whole process: hold a lock from
        // seeding to the last random draw so that concurrent initialisations (parallel tests, many
        // simulated clients) cannot interleave and break reproducibility.
        let (network, memories) = seeded_initialisation(|| {
            let network = MpclNetwork::new(schema, config, &device, seed);
            device.seed(seed);
            let memories = Memories::new(network.layout(), config, &device);
            (network, memories)
        });
        Ok(Self {
            config: config.clone(),
            schema: schema.clone(),
            network,
            memories,
            device,
        })
    }

    /// Starts the head at the label prior of the training data: an untrained model then predicts
    /// `prior` for every sample (to float precision), and training learns what the signals add.
    pub fn start_at_prior(&mut self, prior: &[f32]) {
        self.network.set_head_prior(prior);
    }

    /// The (autodiff) device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The gradient-trained parameters as named vectors.
    pub fn parameters(&self) -> ParameterSet {
        flatten_parameters(&self.network)
    }

    /// Replaces the gradient-trained parameters.
    pub fn load_parameters(&mut self, parameters: &ParameterSet) -> Result<(), ModelError> {
        self.network = load_parameters(self.network.clone(), parameters)?;
        Ok(())
    }

    /// The prototype banks as plain data.
    pub fn prototype_banks(&self) -> Vec<WireBank> {
        self.memories
            .banks
            .iter()
            .map(|bank| {
                let [emotions, prototypes, width] = bank.dims();
                WireBank {
                    group: bank.group.name().to_string(),
                    emotions,
                    prototypes,
                    width,
                    values: F32Vec(bank.to_vec()),
                }
            })
            .collect()
    }

    /// Parameters, banks and co-occurrence statistics: what a coordinator distributes.
    pub fn global_state(&self) -> GlobalState {
        GlobalState {
            parameters: self.parameters(),
            prototypes: self.prototype_banks(),
            cooccurrence: self.memories.cooccurrence().clone(),
        }
    }

    /// Loads a global state received from a coordinator (or built by an in-process one).
    pub fn load_global_state(&mut self, state: &GlobalState) -> Result<(), ModelError> {
        self.load_parameters(&state.parameters)?;
        let mut banks = Vec::with_capacity(self.memories.banks.len());
        for bank in &self.memories.banks {
            let wire = state
                .prototypes
                .iter()
                .find(|b| b.group == bank.group.name())
                .ok_or_else(|| {
                    ModelError::GlobalState(format!("no prototype bank for group `{}`", bank.group))
                })?;
            let dims = bank.dims();
            if [wire.emotions, wire.prototypes, wire.width] != dims
                || wire.values.len() != dims.iter().product::<usize>()
            {
                return Err(ModelError::GlobalState(format!(
                    "prototype bank `{}` is {}x{}x{} with {} values, the model needs {:?}",
                    wire.group,
                    wire.emotions,
                    wire.prototypes,
                    wire.width,
                    wire.values.len(),
                    dims
                )));
            }
            if !wire.values.all_finite() {
                return Err(ModelError::GlobalState(format!(
                    "prototype bank `{}` holds non-finite values",
                    wire.group
                )));
            }
            banks.push(PrototypeBank::from_vec(
                bank.group,
                dims,
                wire.values.0.clone(),
                &self.device,
            ));
        }
        state
            .cooccurrence
            .validate()
            .map_err(|e| ModelError::GlobalState(e.to_string()))?;
        if state.cooccurrence.emotions != self.schema.emotion_count() {
            return Err(ModelError::GlobalState(format!(
                "co-occurrence memory covers {} emotions, the schema has {}",
                state.cooccurrence.emotions,
                self.schema.emotion_count()
            )));
        }
        self.memories = Memories::with_banks(
            banks,
            state.cooccurrence.clone(),
            self.config.cooccurrence_epsilon,
            &self.device,
        );
        Ok(())
    }

    /// Predicted distributions for every sample, in order.
    pub fn predict(&self, data: &TensorDataset) -> Vec<Vec<f32>> {
        let rows: Vec<usize> = (0..data.len()).collect();
        self.predict_rows(data, &rows)
    }

    /// Predicted distributions for the samples at `rows`, in that order.
    pub fn predict_rows(&self, data: &TensorDataset, rows: &[usize]) -> Vec<Vec<f32>> {
        let emotions = self.schema.emotion_count();
        let (network, memories) = self.inference();
        let mut predictions = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(PREDICT_BATCH) {
            let output = network.forward(&inference_inputs(data, chunk), &memories, &self.config);
            let probs = crate::network::prototypes::tensor_to_vec(output.log_probs.detach().exp());
            predictions.extend(probs.chunks(emotions).map(|p| p.to_vec()));
        }
        predictions
    }

    /// The six metrics on every sample of `data`.
    pub fn evaluate(&self, data: &TensorDataset) -> DistributionMetrics {
        let predictions = self.predict(data);
        evaluate(
            data.host_labels()
                .iter()
                .zip(&predictions)
                .map(|(l, p)| (l.as_slice(), p.as_slice())),
        )
    }

    /// The network and memories on the inner backend, for passes that never go backward.
    ///
    /// burn-autodiff registers every operation on a tensor that requires a gradient in one
    /// process-wide graph registry, behind one lock, and sweeps (clones) that registry on every
    /// backward pass. A forward pass that never goes backward (predictions, memory statistics)
    /// would leave its graph there until a later sweep: with many participants' models in one
    /// process the registry grows and every training step pays for it. On the inner backend the
    /// same operations run with the same kernels, so the numbers are the same bit for bit.
    fn inference(&self) -> (MpclNetwork, Memories) {
        (self.network.valid(), self.memories.without_autodiff())
    }

    /// Prototype statistics (S, W) per group of `data` under the current encoder and banks,
    /// and the co-occurrence statistics of its labels: the memory part of a client's update.
    pub fn memory_statistics(
        &self,
        data: &TensorDataset,
    ) -> (Vec<PrototypeStatistics>, CooccurrenceStatistics) {
        let mut cooccurrence = CooccurrenceStatistics::zeros(self.schema.emotion_count());
        for label in data.host_labels() {
            cooccurrence.add_label(label);
        }
        let inner_device = self.device.clone().without_autodiff();
        let mut totals: Vec<(ModalityGroup, BankStatistics)> = self
            .memories
            .banks
            .iter()
            .map(|b| (b.group, BankStatistics::zeros(b.dims(), &inner_device)))
            .collect();
        let (network, memories) = self.inference();
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(PREDICT_BATCH) {
            let (_, labels) = data.batch(chunk);
            let labels = labels.without_autodiff();
            let output = network.forward(&inference_inputs(data, chunk), &memories, &self.config);
            for group in &output.groups {
                let (Some(assignment), Some((_, total))) = (
                    &group.assignment,
                    totals.iter_mut().find(|(g, _)| *g == group.group),
                ) else {
                    continue;
                };
                total.add(PrototypeBank::statistics(
                    group.representation.clone(),
                    labels.clone(),
                    assignment.clone(),
                ));
            }
        }
        let prototypes = totals
            .iter()
            .map(|(group, stats)| stats.to_protocol(*group))
            .collect();
        (prototypes, cooccurrence)
    }
}

/// The inputs of the samples at `rows` on the inner backend (see [`MpclModel::inference`]).
fn inference_inputs(data: &TensorDataset, rows: &[usize]) -> Vec<burn::tensor::Tensor<3>> {
    let (inputs, _) = data.batch(rows);
    inputs.into_iter().map(|t| t.without_autodiff()).collect()
}

//! `mpcl ablate`: the full MPCL network beside each ablation (one component bypassed, see the
//! switches of [`ModelConfig`]) on identical splits, seeds and initial weights, trained by one
//! arm (federated by default), with every model chosen on validation. Over several seeds the
//! table shows mean ± sd over seeds; with one seed, the spread over folds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use mpcl_data::Dataset;
use mpcl_data::ModelConfig;
use mpcl_model::metrics::DistributionMetrics;
use serde::{Deserialize, Serialize};

use crate::dataset::load_dataset;
use crate::report::{ArmSummary, SummaryTable, spread};
use crate::simulate::{
    Arm, ExecutionMode, SimulationConfig, SimulationError, SimulationResult, run_simulation_on,
};
use crate::train_job::{write_json, write_text};
use crate::uncertainty::compare_to_prior;

/// One network variant of the ablation study.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Full,
    NoMemoryFusion,
    OneScale,
    NoCrossModal,
    NoPrototypes,
    NoDistillation,
    NoCooccurrenceRetrieval,
    NoZPath,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 8] = [
        Variant::Full,
        Variant::NoMemoryFusion,
        Variant::OneScale,
        Variant::NoCrossModal,
        Variant::NoPrototypes,
        Variant::NoDistillation,
        Variant::NoCooccurrenceRetrieval,
        Variant::NoZPath,
    ];

    /// The name in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Full => "full MPCL",
            Variant::NoMemoryFusion => "no memory fusion (token mean)",
            Variant::OneScale => "one scale",
            Variant::NoCrossModal => "no cross-modal keys",
            Variant::NoPrototypes => "no prototype banks",
            Variant::NoDistillation => "no relation distillation",
            Variant::NoCooccurrenceRetrieval => "no co-occurrence retrieval (O = V)",
            Variant::NoZPath => "no z path in the head",
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::NoMemoryFusion => "no-memory-fusion",
            Variant::OneScale => "one-scale",
            Variant::NoCrossModal => "no-cross-modal",
            Variant::NoPrototypes => "no-prototypes",
            Variant::NoDistillation => "no-distillation",
            Variant::NoCooccurrenceRetrieval => "no-cooccurrence-retrieval",
            Variant::NoZPath => "no-z-path",
        }
    }

    /// `config` with this variant's component switched off.
    pub fn apply(self, config: &ModelConfig) -> ModelConfig {
        let mut c = config.clone();
        match self {
            Variant::Full => {}
            Variant::NoMemoryFusion => c.use_memory_fusion = false,
            Variant::OneScale => c.scales = vec![1],
            Variant::NoCrossModal => c.use_cross_modal = false,
            Variant::NoPrototypes => c.use_prototypes = false,
            Variant::NoDistillation => c.distillation_loss_weight = 0.0,
            Variant::NoCooccurrenceRetrieval => c.use_emotion_retrieval = false,
            Variant::NoZPath => c.use_z_path = false,
        }
        c
    }
}

impl std::str::FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown variant `{s}` (expected one of: {})",
                    Variant::ALL.map(Variant::name).join(", ")
                )
            })
    }
}

/// An ablation study; written as `config.json` next to its results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AblationConfig {
    /// Everything but the model's switches and the arms (its `seed` is the first seed).
    pub simulation: SimulationConfig,
    /// The arm that trains every variant.
    pub arm: Arm,
    /// Seeds `seed, seed + 1, ...`: each one a new split and initialisation, shared by every
    /// variant.
    pub seeds: u64,
    pub variants: Vec<Variant>,
}

impl Default for AblationConfig {
    fn default() -> Self {
        Self {
            simulation: SimulationConfig::default(),
            arm: Arm::Federated,
            seeds: 1,
            variants: Variant::ALL.to_vec(),
        }
    }
}

/// The outcome: the table, and each variant's KL per seed.
#[derive(Clone, Debug)]
pub struct AblationResult {
    pub table: SummaryTable,
    pub kl_per_seed: BTreeMap<Variant, Vec<f64>>,
    pub prior_kl_per_seed: Vec<f64>,
    pub wall_seconds: f64,
}

/// Runs every variant for every seed; writes `config.json`, `ablation.md`, `ablation.csv` and
/// `ablation_kl.svg` into `out` when given.
pub fn run_ablation(
    config: &AblationConfig,
    out: Option<&Path>,
    mut progress: impl FnMut(&str),
) -> Result<AblationResult, SimulationError> {
    let started = Instant::now();
    if config.seeds == 0 || config.variants.is_empty() {
        return Err(SimulationError::Config(
            "an ablation needs at least one seed and one variant".into(),
        ));
    }
    if config.arm == Arm::LabelPrior {
        return Err(SimulationError::Config(
            "the label prior has no network to ablate; choose a training arm".into(),
        ));
    }
    let base = &config.simulation;
    let (dataset, _) = load_dataset(&base.dataset, &base.synthetic)?;
    for variant in &config.variants {
        variant
            .apply(&base.model)
            .validate(&dataset.schema)
            .map_err(mpcl_model::ModelError::from)?;
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|source| SimulationError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        write_json(&dir.join("config.json"), config)?;
    }
    let mut runs: BTreeMap<Variant, Vec<SimulationResult>> = BTreeMap::new();
    for offset in 0..config.seeds {
        for &variant in &config.variants {
            let arms = if variant == config.variants[0] {
                vec![config.arm, Arm::LabelPrior]
            } else {
                vec![config.arm]
            };
            let simulation = SimulationConfig {
                model: variant.apply(&base.model),
                arms,
                seed: base.seed + offset,
                ..base.clone()
            };
            progress(&format!(
                "seed {} of {}: {}",
                offset + 1,
                config.seeds,
                variant.label()
            ));
            let result = run_variant(&dataset, &simulation)?;
            runs.entry(variant).or_default().push(result);
        }
    }
    let result = summarise(config, &runs, started);
    if let Some(dir) = out {
        write_text(&dir.join("ablation.md"), &markdown(config, &result))?;
        write_text(&dir.join("ablation.csv"), &result.table.to_csv())?;
        crate::ablation_plot::kl_by_variant(&dir.join("ablation_kl.svg"), config, &result)
            .map_err(|e| SimulationError::Config(format!("plot: {e}")))?;
    }
    Ok(result)
}

fn run_variant(
    dataset: &Dataset,
    simulation: &SimulationConfig,
) -> Result<SimulationResult, SimulationError> {
    run_simulation_on(
        dataset,
        simulation,
        &ExecutionMode::InProcess,
        None,
        false,
        Instant::now(),
    )
}

/// Mean of each metric over runs.
fn mean_metrics(runs: &[DistributionMetrics]) -> DistributionMetrics {
    let n = runs.len().max(1) as f64;
    let mean = |f: fn(&DistributionMetrics) -> f64| runs.iter().map(f).sum::<f64>() / n;
    DistributionMetrics {
        chebyshev: mean(|m| m.chebyshev),
        clark: mean(|m| m.clark),
        canberra: mean(|m| m.canberra),
        kl: mean(|m| m.kl),
        cosine: mean(|m| m.cosine),
        intersection: mean(|m| m.intersection),
        samples: runs.first().map_or(0, |m| m.samples),
    }
}

/// One row per variant (and the label prior): with one seed the run's own row (spread over
/// folds); over seeds, the mean and sd of the seeds' pooled metrics, and the prior comparison
/// bootstrapped over subjects on every seed's test samples together.
fn summarise(
    config: &AblationConfig,
    runs: &BTreeMap<Variant, Vec<SimulationResult>>,
    started: Instant,
) -> AblationResult {
    let arm_label = config.arm.label();
    let mut table = SummaryTable::default();
    let mut kl_per_seed = BTreeMap::new();
    let row_of = |result: &SimulationResult, name: &str| {
        result
            .final_table
            .row(name)
            .cloned()
            .expect("every run reports its arms")
    };
    for &variant in &config.variants {
        let results = &runs[&variant];
        let rows: Vec<ArmSummary> = results.iter().map(|r| row_of(r, arm_label)).collect();
        kl_per_seed.insert(variant, rows.iter().map(|r| r.metrics.kl).collect());
        let row = if rows.len() == 1 {
            ArmSummary {
                name: variant.label().to_string(),
                ..rows[0].clone()
            }
        } else {
            let metrics: Vec<DistributionMetrics> = rows.iter().map(|r| r.metrics).collect();
            let mut pooled = crate::simulate::TestSamples::default();
            let mut predictions = Vec::new();
            for result in results {
                let samples = &result.test_samples;
                pooled.labels.extend(samples.labels.iter().cloned());
                pooled.subjects.extend(samples.subjects.iter().cloned());
                pooled.priors.extend(samples.priors.iter().cloned());
                predictions.extend(result.selected_predictions[&config.arm].iter().cloned());
            }
            ArmSummary {
                name: variant.label().to_string(),
                metrics: mean_metrics(&metrics),
                spread: spread(&metrics),
                prior: compare_to_prior(
                    &pooled.labels,
                    &predictions,
                    &pooled.priors,
                    &pooled.subjects,
                    config.simulation.seed,
                ),
                rounds: rows.iter().flat_map(|r| r.rounds.clone()).collect(),
            }
        };
        table.push(row);
    }
    let prior_rows: Vec<ArmSummary> = runs[&config.variants[0]]
        .iter()
        .map(|r| row_of(r, Arm::LabelPrior.label()))
        .collect();
    let prior_metrics: Vec<DistributionMetrics> = prior_rows.iter().map(|r| r.metrics).collect();
    table.push(ArmSummary {
        name: Arm::LabelPrior.label().to_string(),
        metrics: mean_metrics(&prior_metrics),
        spread: if prior_rows.len() > 1 {
            spread(&prior_metrics)
        } else {
            prior_rows[0].spread
        },
        prior: None,
        rounds: Vec::new(),
    });
    AblationResult {
        table,
        kl_per_seed,
        prior_kl_per_seed: prior_metrics.iter().map(|m| m.kl).collect(),
        wall_seconds: started.elapsed().as_secs_f64(),
    }
}

/// The Markdown report: what ran, then the table.
pub fn markdown(config: &AblationConfig, result: &AblationResult) -> String {
    let base = &config.simulation;
    let spread = if config.seeds > 1 {
        format!("mean ± sd over {} seeds", config.seeds)
    } else {
        "one seed; ± is the sd over folds where there are several".to_string()
    };
    let selection = if base.selection.validation_fraction > 0.0 {
        "every model chosen on validation KL"
    } else {
        "no validation part: every model is its last round"
    };
    format!(
        "Ablation on {}, {}, arm `{}`, {} rounds x {} local epochs, {spread}; {selection}; \
         {:.1} s\n\n{}",
        base.dataset,
        base.protocol,
        config.arm.name(),
        base.rounds,
        base.training.local_epochs,
        result.wall_seconds,
        result.table.to_markdown()
    )
}

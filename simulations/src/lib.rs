//! The simulation harness: replaying datasets as federations (one client per subject), running
//! experiment plans (federated, centralized, local-only, label prior) in-process or over the
//! network, and reporting. Also the seeded synthetic data generator used by tests and demos, and
//! the centralized training job behind `mpcl train`.

pub mod ablate;
mod ablation_plot;
pub mod centralized;
pub mod dataset;
pub mod evaluation;
pub mod evaluator;
pub mod export;
pub mod federation;
mod in_order;
pub mod job_process;
pub mod learner;
pub mod network;
pub mod normalize;
pub mod output_dir;
pub mod personalized_arm;
pub mod plots;
mod pooling;
pub mod progress;
pub mod report;
pub mod round_log;
pub mod saved_model;
pub mod secure;
pub mod selection;
pub mod simulate;
pub mod simulation_models;
pub mod simulation_outputs;
pub mod simulation_result;
pub mod stimulus_prior;
pub mod synthetic;
pub mod train_job;
pub mod uncertainty;

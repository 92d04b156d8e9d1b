//! The simulation harness: replaying datasets as federations (one client per subject), running
//! experiment plans (federated, centralized, local-only, label prior) in-process or over the
//! network, and reporting. Also the seeded synthetic data generator used by tests and demos.

pub mod synthetic;

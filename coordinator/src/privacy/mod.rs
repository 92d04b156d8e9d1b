//! Privacy building blocks of the coordinator: the `[privacy]` config section, client-level
//! differential privacy (clipping and Gaussian noise, [`noise`]) and its Rényi-DP accountant
//! ([`rdp`], [`ledger`]). Secure aggregation itself (masking, shares, the protocol steps) lives in
//! [`mpcl_protocol::secure_aggregation`], since clients run it too.
//!
//! All of it is pure (no sockets, clocks or hidden randomness: generators are passed in), ready to
//! be called by the round state machine:
//!
//! 1. validate the config ([`PrivacyConfig::validate`], part of
//!    [`crate::CoordinatorConfig::validate`]) and print [`PrivacyConfig`]'s summary line;
//! 2. with DP on, create a [`PrivacyLedger`] at the start of the run (and keep it in checkpoints);
//!    before a round, [`PrivacyLedger::peek_round`] with the planned sampling rate;
//! 3. clients clip ([`clip_update`]) and, under secure aggregation, add their noise share
//!    ([`add_distributed_noise`]); in plain mode the coordinator clips each update and adds
//!    [`add_central_noise`] to the sum;
//! 4. after aggregation, [`PrivacyLedger::record_round`] before releasing the round; its
//!    [`BudgetExhausted`] error ends the run.
//!
//! The round state machine ([`crate::round`]) does steps 2 to 4 in plain mode, and under secure
//! aggregation hands out a [`SecureRoundPlan`] ([`secure_round`]) whose
//! [`SecureRoundPlan::prepare_input`] is the client's half of step 3.
//!
//! # What it protects against, and what not
//!
//! Each module says so in detail. In short: DP bounds what the released models reveal about any
//! one client's participation (client-level, add/remove adjacency), given honest clipping, noise
//! from secret seeds and uniform client weights; it does not cover the statistics that are not
//! noised (prototypes, co-occurrence, metrics), a client that skips its noise, or floating-point
//! side channels of the Gaussian sampler. Withholding prototype statistics below a minimum mass
//! only avoids releasing prototypes built from one or two samples; it is not a formal guarantee.

pub mod config;
pub mod ledger;
pub mod rdp;
pub mod secure_round;

pub use config::{PrivacyConfig, Threshold};
pub use ledger::{BudgetExhausted, LedgerError, PrivacyLedger, PrivacySpent};
/// The clipping and noise mechanics, in the protocol crate since participants add their noise
/// shares themselves under secure aggregation.
pub use mpcl_protocol::privacy_noise as noise;
pub use mpcl_protocol::secure_aggregation::{PreparedInput, SecureRoundPlan, SecureSetupError};
pub use noise::{
    ClipOutcome, add_central_noise, add_distributed_noise, add_gaussian_noise, central_noise_std,
    clip_update, distributed_noise_std, os_noise_rng, seeded_noise_rng,
};

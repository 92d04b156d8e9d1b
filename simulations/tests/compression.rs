//! Update compression in a small synthetic federation: 8-bit deltas with error feedback cost
//! under a third of the upload bytes of dense f32 and end within 2% of its final KL; f16 about
//! half. Compression together with secure aggregation is refused before anything trains.

use anyhow::Result;
use mpcl_protocol::Compression;
use mpcl_simulations::simulate::{Arm, SimulationConfig, SimulationResult, run_simulation};

mod common;

fn config(compression: Compression) -> SimulationConfig {
    let mut config = SimulationConfig {
        rounds: 6,
        arms: vec![Arm::Federated],
        ..common::small_study(4, 12)
    };
    config.training.local_epochs = 2;
    config.training.compression = compression;
    config
}

/// (final KL, mean upload bytes per round) of the federated arm.
fn outcome(result: &SimulationResult) -> (f64, f64) {
    let rounds: Vec<_> = result
        .rounds
        .iter()
        .filter(|r| r.arm == Arm::Federated)
        .collect();
    let kl = rounds.last().expect("rounds ran").metrics.kl;
    let bytes = rounds.iter().map(|r| r.bytes_up as f64).sum::<f64>() / rounds.len() as f64;
    (kl, bytes)
}

#[test]
fn int8_costs_under_a_third_of_the_bytes_and_keeps_the_final_kl() -> Result<()> {
    let (dense_kl, dense_bytes) =
        outcome(&run_simulation(&config(Compression::None), None, false)?);
    let (f16_kl, f16_bytes) = outcome(&run_simulation(&config(Compression::F16), None, false)?);
    let (int8_kl, int8_bytes) = outcome(&run_simulation(&config(Compression::Int8), None, false)?);
    eprintln!(
        "upload bytes per round: none {dense_bytes:.0}, f16 {f16_bytes:.0} ({:.3}x), int8 {int8_bytes:.0} ({:.3}x); final KL: none {dense_kl:.5}, f16 {f16_kl:.5}, int8 {int8_kl:.5}",
        f16_bytes / dense_bytes,
        int8_bytes / dense_bytes
    );
    assert!(
        int8_bytes <= 0.3 * dense_bytes,
        "int8 {int8_bytes} vs dense {dense_bytes}"
    );
    assert!(
        f16_bytes <= 0.55 * dense_bytes,
        "f16 {f16_bytes} vs dense {dense_bytes}"
    );
    assert!(
        (int8_kl - dense_kl).abs() <= 0.02 * dense_kl,
        "int8 KL {int8_kl} vs dense {dense_kl}"
    );
    assert!(
        (f16_kl - dense_kl).abs() <= 0.02 * dense_kl,
        "f16 KL {f16_kl} vs dense {dense_kl}"
    );
    Ok(())
}

#[test]
fn compression_with_secure_aggregation_is_refused() {
    let mut config = config(Compression::Int8);
    config.privacy.secure_aggregation = true;
    let error = run_simulation(&config, None, false)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("compression") && error.contains("secure aggregation"),
        "{error}"
    );
}

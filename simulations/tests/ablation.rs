//! `mpcl ablate`'s study end to end on small synthetic data: every variant on the same splits
//! and seeds, a row per variant plus the prior, spreads over seeds, and its files.

use anyhow::Result;
use mpcl_coordinator::TrainingSettings;
use mpcl_data::ModelConfig;
use mpcl_simulations::ablate::{AblationConfig, Variant, run_ablation};
use mpcl_simulations::simulate::{Arm, SimulationConfig};
use mpcl_simulations::synthetic::SyntheticConfig;

#[test]
fn every_variant_gets_a_row_with_spreads_over_seeds_and_the_files_are_written() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = AblationConfig {
        simulation: SimulationConfig {
            dataset: "synthetic".into(),
            synthetic: SyntheticConfig {
                subjects: 3,
                trials_per_subject: 8,
                windows_per_trial: 2,
                ..SyntheticConfig::default()
            },
            model: ModelConfig::tiny(),
            rounds: 2,
            training: TrainingSettings {
                local_epochs: 1,
                batch_size: 16,
                learning_rate: 1e-2,
                ..TrainingSettings::default()
            },
            ..SimulationConfig::default()
        },
        arm: Arm::Centralized,
        seeds: 2,
        variants: vec![Variant::Full, Variant::NoMemoryFusion, Variant::NoZPath],
    };
    let mut steps = 0;
    let result = run_ablation(&config, Some(dir.path()), |_| steps += 1)?;
    assert_eq!(steps, 2 * 3);
    let names: Vec<&str> = result.table.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "full MPCL",
            "no memory fusion (token mean)",
            "no z path in the head",
            "label prior"
        ]
    );
    for row in &result.table.rows {
        assert!(row.spread.is_some(), "{}: sd over two seeds", row.name);
    }
    // The variants really differ (same splits and seeds, different networks).
    let kl = |v| result.kl_per_seed[&v].clone();
    assert_ne!(kl(Variant::Full), kl(Variant::NoMemoryFusion));
    for file in [
        "config.json",
        "ablation.md",
        "ablation.csv",
        "ablation_kl.svg",
    ] {
        assert!(dir.path().join(file).is_file(), "missing {file}");
    }
    let csv = std::fs::read_to_string(dir.path().join("ablation.csv"))?;
    assert_eq!(csv.lines().count(), 5);
    Ok(())
}

//! The conversions the federation relies on: parameters to named vectors and back (bit-exact),
//! deltas, prototype and co-occurrence statistics out of a model and merged across sources.

use anyhow::Result;
use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Modality, ModalityGroup, Sample, Schema, Standardizer};
use mpcl_model::loss::mpcl_loss;
use mpcl_model::network::BankStatistics;
use mpcl_model::{Device, MpclModel, TensorDataset, TrainOptions, train};
use mpcl_protocol::{CooccurrenceStatistics, PrototypeStatistics};

fn schema(groups: &[ModalityGroup]) -> Schema {
    Schema {
        emotions: vec!["joy".into(), "calm".into(), "fear".into()],
        modalities: groups
            .iter()
            .enumerate()
            .map(|(i, g)| Modality::new(&format!("m{i}"), *g, 3, 2))
            .collect(),
    }
}

fn dataset(schema: &Schema, n: usize) -> Dataset {
    let samples = (0..n)
        .map(|i| {
            let x = i as f32 / n as f32;
            let label = if i % 2 == 0 {
                vec![0.6, 0.4, 0.0]
            } else {
                vec![0.0, 0.25, 0.75]
            };
            Sample {
                features: schema
                    .modalities
                    .iter()
                    .map(|m| (0..m.width()).map(|j| x * j as f32 + label[0]).collect())
                    .collect(),
                label,
                subject: "s1".into(),
                trial: i as u32,
                time: 0,
                stimulus: None,
            }
        })
        .collect();
    Dataset {
        name: "hand-made".into(),
        schema: schema.clone(),
        samples,
    }
}

fn model_and_data(groups: &[ModalityGroup], seed: u64) -> Result<(MpclModel, TensorDataset)> {
    let schema = schema(groups);
    let data = dataset(&schema, 12);
    let model = MpclModel::new(&schema, &ModelConfig::tiny(), &Device::flex(), seed)?;
    let tensors = TensorDataset::new(&data, &Standardizer::fit(&data), model.device());
    Ok((model, tensors))
}

const BOTH: [ModalityGroup; 2] = [ModalityGroup::Physiological, ModalityGroup::Behavioral];

#[test]
fn flatten_and_load_round_trip_is_bit_exact() -> Result<()> {
    let (source, _) = model_and_data(&BOTH, 1)?;
    let (mut target, _) = model_and_data(&BOTH, 2)?;
    let parameters = source.parameters();
    assert!(parameters.value_count() > 1000);
    assert_ne!(target.parameters(), parameters);
    target.load_parameters(&parameters)?;
    let reloaded = target.parameters();
    for (a, b) in parameters.tensors.iter().zip(&reloaded.tensors) {
        assert_eq!(a.name, b.name);
        let bits_a: Vec<u32> = a.values.0.iter().map(|v| v.to_bits()).collect();
        let bits_b: Vec<u32> = b.values.0.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits_a, bits_b, "{}", a.name);
    }
    Ok(())
}

#[test]
fn names_are_module_paths() -> Result<()> {
    let (model, _) = model_and_data(&BOTH, 1)?;
    let parameters = model.parameters();
    for expected in [
        "encoders.0.projection.weight",
        "fusions.1.scales.2.slots",
        "retrieval.cooccurrence_strength",
        "head.emotion_weights",
    ] {
        assert!(parameters.get(expected).is_some(), "missing {expected}");
    }
    Ok(())
}

#[test]
fn a_delta_applied_to_the_old_parameters_gives_the_new_ones() -> Result<()> {
    let (mut model, data) = model_and_data(&BOTH, 3)?;
    let before = model.parameters();
    train(
        &mut model,
        &data,
        &TrainOptions {
            epochs: 1,
            batch_size: 4,
            ..TrainOptions::default()
        },
        None,
    );
    let after = model.parameters();
    let delta = after.delta_from(&before)?;
    assert!(delta.l2_norm() > 0.0);
    let (mut other, _) = model_and_data(&BOTH, 3)?;
    other.load_parameters(&before.plus(&delta)?)?;
    let rebuilt = other.parameters();
    let max_error = rebuilt
        .iter_values()
        .zip(after.iter_values())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // (b + (a - b)) in f32 may differ from a by one rounding step.
    assert!(max_error < 1e-6, "{max_error}");
    Ok(())
}

#[test]
fn loading_a_mismatched_parameter_set_is_an_error() -> Result<()> {
    let (mut model, _) = model_and_data(&BOTH, 1)?;
    let mut parameters = model.parameters();
    parameters.tensors[0].values.0.push(0.0);
    assert!(model.load_parameters(&parameters).is_err());
    let mut parameters = model.parameters();
    parameters.tensors[1].values.0[0] = f32::NAN;
    let err = model.load_parameters(&parameters).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
    Ok(())
}

#[test]
fn a_parameter_set_of_another_layout_is_refused_naming_what_differs() -> Result<()> {
    use mpcl_model::ModelError;
    use mpcl_model::parameters::ParameterLoadError;
    use mpcl_protocol::ParameterSetError;
    let (mut model, _) = model_and_data(&BOTH, 1)?;
    let before = model.parameters();
    let layout_error = |error: ModelError| match error {
        ModelError::Parameters(ParameterLoadError::Layout(error)) => error,
        other => panic!("not a layout error: {other}"),
    };

    let mut renamed = before.clone();
    renamed.tensors[2].name = "somewhere.else".into();
    let error = layout_error(model.load_parameters(&renamed).unwrap_err());
    assert!(
        matches!(&error, ParameterSetError::NameMismatch { index: 2, expected, found }
            if *expected == before.tensors[2].name && found == "somewhere.else"),
        "{error}"
    );

    // The same number of values in another shape.
    let mut reshaped = before.clone();
    let matrix = reshaped
        .tensors
        .iter_mut()
        .find(|t| t.shape.len() == 2 && t.shape[0] != t.shape[1])
        .expect("a non-square matrix");
    matrix.shape.reverse();
    let (name, shape) = (matrix.name.clone(), matrix.shape.clone());
    let error = layout_error(model.load_parameters(&reshaped).unwrap_err());
    assert!(
        matches!(&error, ParameterSetError::ShapeMismatch { name: n, found, .. }
            if *n == name && *found == shape),
        "{error}"
    );

    let mut shorter = before.clone();
    shorter.tensors.pop();
    let error = layout_error(model.load_parameters(&shorter).unwrap_err());
    assert_eq!(
        error,
        ParameterSetError::CountMismatch {
            expected: before.tensors.len(),
            found: before.tensors.len() - 1
        }
    );
    // A refused set changes nothing.
    assert_eq!(model.parameters(), before);
    Ok(())
}

#[test]
fn memory_statistics_match_their_definition_and_merge() -> Result<()> {
    let (model, data) = model_and_data(&BOTH, 4)?;
    let (prototypes, cooccurrence) = model.memory_statistics(&data);
    assert_eq!(prototypes.len(), 2);
    // W sums, over prototypes and emotions, to the total label mass: one per sample, since each
    // emotion's assignment sums to one over its prototypes.
    for stats in &prototypes {
        stats.validate()?;
        let total: f32 = stats.weight.0.iter().sum();
        assert!((total - 12.0).abs() < 1e-3, "{total}");
        // Emotion 0 appears with mass 0.6 in the 6 even samples.
        assert!((stats.emotion_mass(0) - 3.6).abs() < 1e-3);
    }
    assert_eq!(cooccurrence.count, 12.0);
    // sum d d^T at (joy, joy) = 6 * 0.36
    assert!((cooccurrence.sum.0[0] - 2.16).abs() < 1e-4);
    assert_eq!(cooccurrence.sum.0[2], 0.0); // joy and fear never co-occur

    // Statistics of two halves merged equal the statistics of the whole.
    let mut merged: Vec<PrototypeStatistics> = Vec::new();
    let mut merged_cooccurrence = CooccurrenceStatistics::zeros(3);
    for half in [(0..6).collect::<Vec<_>>(), (6..12).collect()] {
        let subset = sub_dataset(&model, &half);
        let (p, c) = model.memory_statistics(&subset);
        if merged.is_empty() {
            merged = p;
        } else {
            for (m, s) in merged.iter_mut().zip(&p) {
                m.merge(s)?;
            }
        }
        merged_cooccurrence.merge(&c)?;
    }
    assert_eq!(merged_cooccurrence, cooccurrence);
    for (m, whole) in merged.iter().zip(&prototypes) {
        for (a, b) in m.sum.0.iter().zip(&whole.sum.0) {
            assert!((a - b).abs() < 1e-4);
        }
    }
    // And round-trip through the tensor form.
    let back = BankStatistics::from_protocol(&prototypes[0], model.device());
    let group = model.memories.banks[0].group;
    assert_eq!(back.to_protocol(group), prototypes[0]);
    Ok(())
}

fn sub_dataset(model: &MpclModel, indices: &[usize]) -> TensorDataset {
    let schema = schema(&BOTH);
    let full = dataset(&schema, 12);
    TensorDataset::new(
        &full.subset(indices),
        &Standardizer::fit(&full),
        model.device(),
    )
}

#[test]
fn global_state_round_trips_between_models() -> Result<()> {
    let (source, data) = model_and_data(&BOTH, 5)?;
    let (mut target, _) = model_and_data(&BOTH, 6)?;
    target.load_global_state(&source.global_state())?;
    assert_eq!(target.global_state(), source.global_state());
    assert_eq!(target.predict(&data), source.predict(&data));
    Ok(())
}

#[test]
fn one_group_only_has_zero_distillation_not_an_error() -> Result<()> {
    let (model, data) = model_and_data(&[ModalityGroup::Behavioral], 7)?;
    let (inputs, labels) = data.batch(&[0, 1, 2]);
    let output = model
        .network
        .forward(&inputs, &model.memories, &model.config);
    let terms = mpcl_loss(&output, labels, &model.memories, &model.config);
    assert!(terms.distillation.is_none());
    assert!(terms.prototype.is_some());
    assert!(terms.total.into_scalar::<f32>().is_finite());
    Ok(())
}

#[test]
fn a_label_that_is_not_a_distribution_is_refused_before_training() {
    let schema = schema(&BOTH);
    let mut data = dataset(&schema, 4);
    data.samples[2].label = vec![0.5, 0.5, 0.5];
    let err = data.validate().unwrap_err().to_string();
    assert!(
        err.contains("sample 2") && err.contains("sum to 1.5"),
        "{err}"
    );
}

#[test]
fn a_config_inconsistent_with_the_schema_is_refused() {
    let config = ModelConfig {
        emotions: 10,
        ..ModelConfig::tiny()
    };
    let err = MpclModel::new(&schema(&BOTH), &config, &Device::flex(), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("10 emotions"), "{err}");
}

#[test]
fn fedprox_keeps_local_training_closer_to_the_global_model() -> Result<()> {
    let distance_after = |mu: f64| -> Result<f64> {
        let (mut model, data) = model_and_data(&BOTH, 8)?;
        let global = model.parameters();
        assert_eq!(
            mpcl_model::parameters::squared_distance_to(&model.network, &global)
                .map(|d| d.into_scalar::<f32>()),
            Some(0.0)
        );
        train(
            &mut model,
            &data,
            &TrainOptions {
                epochs: 3,
                batch_size: 4,
                learning_rate: 1e-2,
                proximal_mu: mu,
                ..TrainOptions::default()
            },
            Some(&global),
        );
        Ok(model.parameters().delta_from(&global)?.l2_norm())
    };
    let plain = distance_after(0.0)?;
    let proximal = distance_after(10.0)?;
    assert!(
        proximal < plain,
        "FedProx moved {proximal}, plain training {plain}"
    );
    Ok(())
}

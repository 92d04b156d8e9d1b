//! The model file: a trained model saved and loaded predicts exactly as before; damaged,
//! truncated, wrong-version and wrong-schema files are refused with errors naming the file and
//! the problem.

use anyhow::Result;
use mpcl_data::ModelConfig;
use mpcl_data::{Dataset, Modality, ModalityGroup, Sample, Schema, Standardizer};
use mpcl_model::{Device, MpclModel, TensorDataset, TrainOptions, train};
use mpcl_protocol::CooccurrenceStatistics;
use mpcl_protocol::model_file::{
    InputStandardisation, MODEL_FORMAT_VERSION, ModelFormatError, Provenance, SchemaMismatch,
};
use mpcl_protocol::{ModelFile, ModelFileError};

fn schema() -> Schema {
    Schema {
        emotions: vec!["joy".into(), "calm".into(), "fear".into()],
        modalities: vec![
            Modality::new("eda", ModalityGroup::Physiological, 3, 2),
            Modality::new("face", ModalityGroup::Behavioral, 2, 2),
        ],
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
                subject: if i < n / 2 { "s1".into() } else { "s2".into() },
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

/// A tiny model trained a little, its file, and the data.
fn trained_file() -> Result<(ModelFile, Dataset)> {
    let schema = schema();
    let data = dataset(&schema, 16);
    let mut model = MpclModel::new(&schema, &ModelConfig::tiny(), &Device::flex(), 3)?;
    let rows: Vec<usize> = (0..data.samples.len()).collect();
    let per_subject = mpcl_data::standardize::standardize_per_subject(&data, &rows);
    let pooled = Standardizer::fit(&per_subject);
    let standardisation = InputStandardisation::per_subject_then(pooled);
    let tensors = TensorDataset::standardised(&data, &standardisation, &rows, model.device());
    train(
        &mut model,
        &tensors,
        &TrainOptions {
            epochs: 2,
            batch_size: 8,
            ..TrainOptions::default()
        },
        None,
    );
    let metrics = model.evaluate(&tensors);
    let file = model.to_file(
        standardisation,
        data.label_prior(),
        Provenance {
            source: "test".into(),
            run_id: "0123".into(),
            round: 2,
            metrics: Some(metrics),
            metrics_on: "all samples".into(),
            split: None,
            mpcl_version: env!("CARGO_PKG_VERSION").into(),
        },
    );
    Ok((file, data))
}

#[test]
fn a_saved_model_predicts_exactly_as_the_trained_one() -> Result<()> {
    let (file, data) = trained_file()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.mpcl");
    file.write(&path)?;
    let back = ModelFile::read(&path)?;
    assert_eq!(back, file);
    let model = MpclModel::from_file(&back, &Device::flex())?;
    let rows: Vec<usize> = (0..data.samples.len()).collect();
    let tensors = TensorDataset::standardised(&data, &back.standardisation, &rows, model.device());
    // Bit for bit: the stored metrics are the trained model's.
    assert_eq!(Some(model.evaluate(&tensors)), file.provenance.metrics);
    // Only the target is left in the folder (no temporary file).
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    Ok(())
}

#[test]
fn truncated_damaged_and_wrong_version_files_are_refused_naming_the_file() -> Result<()> {
    let (file, _) = trained_file()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("study.mpcl");
    let bytes = file.encode()?;

    for cut in [5, 40, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut])?;
        let error = ModelFile::read(&path).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("study.mpcl") && message.contains("truncated"),
            "{message}"
        );
    }

    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x10;
    std::fs::write(&path, &damaged)?;
    let message = ModelFile::read(&path).unwrap_err().to_string();
    assert!(
        message.contains("study.mpcl") && message.contains("checksum mismatch"),
        "{message}"
    );

    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&(MODEL_FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&path, &future)?;
    let error = ModelFile::read(&path).unwrap_err();
    assert!(matches!(
        error,
        ModelFileError::Invalid {
            source: ModelFormatError::UnsupportedVersion { found: 2, .. },
            ..
        }
    ));
    let message = error.to_string();
    assert!(
        message.contains("study.mpcl") && message.contains("format version 2"),
        "{message}"
    );

    let mut checkpoint = bytes.clone();
    checkpoint[..8].copy_from_slice(b"MPCLCKPT");
    assert_eq!(
        ModelFile::decode(&checkpoint),
        Err(ModelFormatError::Checkpoint)
    );
    assert_eq!(
        ModelFile::decode(b"PK\x03\x04 a zip file"),
        Err(ModelFormatError::BadMagic)
    );
    let mut longer = bytes;
    longer.push(0);
    assert_eq!(
        ModelFile::decode(&longer),
        Err(ModelFormatError::TrailingBytes { extra: 1 })
    );

    let missing = ModelFile::read(dir.path().join("none.mpcl")).unwrap_err();
    assert!(missing.to_string().contains("none.mpcl does not exist"));
    Ok(())
}

#[test]
fn data_of_another_schema_is_refused_naming_the_difference() -> Result<()> {
    let (file, _) = trained_file()?;
    assert_eq!(file.check_schema(&schema()), Ok(()));

    let mut other = schema();
    other.emotions[2] = "anger".into();
    let error = file.check_schema(&other).unwrap_err();
    assert_eq!(
        error.to_string(),
        "emotions differ: model has [joy, calm, fear], data has [joy, calm, anger]"
    );

    let mut other = schema();
    other.modalities[1].token_count = 3;
    let error = file.check_schema(&other).unwrap_err();
    assert!(matches!(error, SchemaMismatch::Modalities { .. }));
    assert!(
        error.to_string().contains("face (behavioral, 2x2)")
            && error.to_string().contains("face (behavioral, 3x2)"),
        "{error}"
    );
    Ok(())
}

#[test]
fn the_label_prior_follows_from_cooccurrence_statistics() {
    let data = dataset(&schema(), 10);
    let mut statistics = CooccurrenceStatistics::zeros(3);
    for sample in &data.samples {
        statistics.add_label(&sample.label);
    }
    let derived = statistics.label_prior();
    for (a, b) in derived.iter().zip(data.label_prior()) {
        assert!((a - b).abs() < 1e-6, "{derived:?}");
    }
}

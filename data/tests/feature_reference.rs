//! `model::data::features` against reference values computed independently by numpy/scipy
//! (`tools/make_feature_references.py`), within the tolerance stated in the reference file:
//! `|rust - reference| <= absolute + relative * |reference|`.

use std::path::Path;

use mpcl_data::features::{STATISTICS_NAMES, differential_entropy, window_statistics};
use serde_json::Value;

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

fn reference() -> anyhow::Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/features/reference.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn compare(case: &str, names: &[&str], found: &[f32], expected: &[f64], tolerance: &Value) {
    let relative = tolerance["relative"].as_f64().expect("relative");
    let absolute = tolerance["absolute"].as_f64().expect("absolute");
    assert_eq!(found.len(), expected.len(), "{case}: lengths");
    for ((name, f), e) in names.iter().zip(found).zip(expected) {
        let error = (f64::from(*f) - e).abs();
        assert!(
            error <= absolute + relative * e.abs(),
            "{case} {name}: rust {f}, numpy {e} (difference {error})"
        );
    }
}

#[test]
fn differential_entropy_matches_numpy() -> anyhow::Result<()> {
    let reference = reference()?;
    let bands: Vec<String> = reference["bands"]
        .as_array()
        .expect("bands")
        .iter()
        .map(|b| b.as_str().unwrap_or("?").to_string())
        .collect();
    let names: Vec<&str> = bands.iter().map(String::as_str).collect();
    let cases = reference["differential_entropy"].as_array().expect("cases");
    assert!(cases.len() >= 4);
    for case in cases {
        let signal: Vec<f32> = numbers(&case["signal"]).iter().map(|v| *v as f32).collect();
        let rate = case["rate"].as_f64().expect("rate");
        let found = differential_entropy(&signal, rate)?;
        compare(
            case["name"].as_str().unwrap_or("?"),
            &names,
            &found,
            &numbers(&case["expected"]),
            &reference["tolerance"],
        );
    }
    Ok(())
}

#[test]
fn window_statistics_match_numpy_and_scipy() -> anyhow::Result<()> {
    let reference = reference()?;
    let cases = reference["statistics"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let signal: Vec<f32> = numbers(&case["signal"]).iter().map(|v| *v as f32).collect();
        let rate = case["rate"].as_f64().expect("rate");
        let found = window_statistics(&signal, rate)?;
        compare(
            case["name"].as_str().unwrap_or("?"),
            &STATISTICS_NAMES,
            &found,
            &numbers(&case["expected"]),
            &reference["tolerance"],
        );
    }
    Ok(())
}

//! The model as a file, with the real binary: `mpcl export` from a finished federation's output
//! folder (last, a kept earlier round, and the errors for `best` without federated evaluation
//! and for a round whose state was not kept), `mpcl evaluate` and `mpcl predict` on the exported
//! model, and the refusals of a truncated, wrong-version and wrong-schema model file.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::ensure;
use mpcl_protocol::ModelFile;

use crate::support::{MPCL, PATIENCE, RunDir, RunSpec};

fn mpcl(args: &[&str], dir: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(MPCL)
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .output()?)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_federation_exports_a_model_that_evaluates_and_predicts() -> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b"], &RunSpec::all(2, 2))?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let mut a = run.client("a", "a", &coordinator, &[])?;
    let mut b = run.client("b", "b", &coordinator, &[])?;
    for process in [&mut a, &mut b, &mut coordinator] {
        process.wait_success(PATIENCE)?;
    }
    let dir = run.path();
    let checkpoint = mpcl_coordinator::read_checkpoint(run.checkpoint())?;

    // Last round: the checkpoint's global state, bit for bit.
    let output = mpcl(&["export", "--from", "out", "--out", "last.mpcl"], dir)?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let last = ModelFile::read(dir.join("last.mpcl"))?;
    assert_eq!(last.state, checkpoint.global);
    assert_eq!(last.provenance.round, 2);
    let run_id: String = checkpoint
        .run_id
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(last.provenance.run_id, run_id);

    // Round 1 is kept (the previous checkpoint); round 5 is not; best needs evaluation.
    let output = mpcl(
        &[
            "export", "--from", "out", "--round", "1", "--out", "one.mpcl",
        ],
        dir,
    )?;
    ensure!(output.status.success(), "{}", stderr(&output));
    assert_eq!(ModelFile::read(dir.join("one.mpcl"))?.provenance.round, 1);
    let output = mpcl(
        &[
            "export",
            "--from",
            "out",
            "--round",
            "5",
            "--out",
            "five.mpcl",
        ],
        dir,
    )?;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("round 5's state was not kept"),
        "{}",
        stderr(&output)
    );
    let output = mpcl(
        &[
            "export",
            "--from",
            "out",
            "--round",
            "best",
            "--out",
            "best.mpcl",
        ],
        dir,
    )?;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("has no evaluation metrics"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.join("best.mpcl").exists() && !dir.join("five.mpcl").exists());

    // Evaluate: the six metrics beside the label prior.
    let output = mpcl(
        &["evaluate", "--model", "last.mpcl", "--data", "synthetic"],
        dir,
    )?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("kl ↓") && text.contains("model") && text.contains("label prior"),
        "{text}"
    );

    // Predict: one row per sample, each a distribution over the model's emotions.
    let output = mpcl(
        &[
            "predict",
            "--model",
            "last.mpcl",
            "--data",
            "synthetic",
            "--out",
            "p.csv",
        ],
        dir,
    )?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let mut reader = csv::Reader::from_path(dir.join("p.csv"))?;
    let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let mut expected = vec!["subject".to_string(), "trial".into(), "time".into()];
    expected.extend(last.schema.emotions.iter().cloned());
    assert_eq!(header, expected);
    let data = mpcl_simulations::synthetic::generate(&Default::default());
    let mut rows = 0;
    for (record, sample) in reader.records().zip(&data.samples) {
        let record = record?;
        assert_eq!(record[0].to_string(), sample.subject);
        assert_eq!(record[1].parse::<u32>()?, sample.trial);
        assert_eq!(record[2].parse::<u32>()?, sample.time);
        let p: Vec<f64> = record
            .iter()
            .skip(3)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        assert_eq!(p.len(), last.schema.emotions.len());
        assert!(p.iter().all(|v| *v >= 0.0), "{p:?}");
        let sum: f64 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row {rows} sums to {sum}");
        rows += 1;
    }
    assert_eq!(rows, data.samples.len());

    // Refusals, each naming the file and the problem.
    let bytes = std::fs::read(dir.join("last.mpcl"))?;
    std::fs::write(dir.join("cut.mpcl"), &bytes[..bytes.len() - 10])?;
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(dir.join("future.mpcl"), &future)?;
    for (file, problem) in [
        ("cut.mpcl", "truncated"),
        ("future.mpcl", "format version 7"),
    ] {
        let output = mpcl(&["evaluate", "--model", file, "--data", "synthetic"], dir)?;
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(
            message.contains(file) && message.contains(problem),
            "{message}"
        );
    }
    let output = mpcl(
        &[
            "predict",
            "--model",
            "last.mpcl",
            "--data",
            "larwood2019",
            "--out",
            "x.csv",
        ],
        dir,
    )?;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("last.mpcl")
            && message.contains("emotions differ: model has [inspired")
            && message.contains("data has [active"),
        "{message}"
    );
    Ok(())
}

/// A real federation with `[evaluation]` on: each client splits its own data, every round's
/// global model is evaluated on the clients' held-out parts, the coordinator writes the metrics
/// to `rounds.jsonl`, keeps the best round's state and ends with `final.md` / `final.csv`; that
/// state exports with its federated test metrics as provenance.
#[test]
fn an_evaluating_federation_ends_with_a_final_table_and_a_best_model() -> anyhow::Result<()> {
    let spec = RunSpec {
        evaluation: true,
        label_prior: true,
        ..RunSpec::all(3, 3)
    };
    let run = RunDir::new(&["a", "b", "c"], &spec)?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    // Participant a also personalizes the last global model and keeps it.
    let personal = run.path().join("a-personal.mpcl");
    let personal_arg = personal.display().to_string();
    let mut clients = vec![run.client(
        "a",
        "a",
        &coordinator,
        &[
            "--personalize-epochs",
            "3",
            "--personal-model",
            &personal_arg,
        ],
    )?];
    for name in ["b", "c"] {
        clients.push(run.client(name, name, &coordinator, &[])?);
    }
    for process in clients.iter_mut().chain([&mut coordinator]) {
        process.wait_success(PATIENCE)?;
    }
    let out = run.out();

    // One line per round, each with the federated metrics of that round's model.
    let log = std::fs::read_to_string(out.join("rounds.jsonl"))?;
    assert_eq!(log.lines().count(), 3);
    for (round, line) in (1u64..).zip(log.lines()) {
        let record: serde_json::Value = serde_json::from_str(line)?;
        let evaluation = &record["evaluation"];
        assert_eq!(evaluation["round"].as_u64(), Some(round), "{line}");
        assert_eq!(evaluation["clients"].as_u64(), Some(3), "{line}");
        assert!(
            evaluation["test"]["samples"].as_u64().unwrap_or(0) > 0,
            "{line}"
        );
        assert!(
            evaluation["test"]["kl"]
                .as_f64()
                .is_some_and(f64::is_finite)
        );
    }
    let checkpoint = mpcl_coordinator::read_checkpoint(run.checkpoint())?;
    let rounds: Vec<u64> = checkpoint.evaluations.iter().map(|m| m.round).collect();
    assert_eq!(rounds, vec![0, 1, 2, 3]);
    assert!(checkpoint.final_evaluated);
    // Round 0 set the head at the participants' label prior before round 1 (and is no line of
    // rounds.jsonl).
    assert!(checkpoint.label_prior_applied);
    assert_eq!(
        coordinator
            .log_lines(&["round 0: the head starts at the label prior"])
            .len(),
        1,
        "{}",
        coordinator.log_text()
    );
    let best = mpcl_coordinator::evaluation::best_round(&checkpoint.evaluations).unwrap();

    let table = std::fs::read_to_string(out.join("final.md"))?;
    assert!(
        table.contains("| global model, last round (3) |"),
        "{table}"
    );
    assert!(
        table.contains(&format!("best round ({best}, by validation KL)")),
        "{table}"
    );
    assert!(table.contains("| label prior |"), "{table}");
    let csv = std::fs::read_to_string(out.join("final.csv"))?;
    assert_eq!(csv.lines().count(), 4, "{csv}");
    // The coordinator printed each evaluated model as it went, and the table at the end.
    let printed = coordinator.stdout_text();
    for round in 0..=3 {
        assert!(
            printed.contains(&format!(
                "model after round {round} evaluated by 3 participant(s)"
            )),
            "round {round}: {printed}"
        );
    }
    assert!(printed.contains("| label prior |"), "{printed}");

    // The best round's state exports with its own federated test metrics.
    let dir = run.path();
    let output = mpcl(
        &[
            "export",
            "--from",
            "out",
            "--round",
            "best",
            "--out",
            "best.mpcl",
        ],
        dir,
    )?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let model = ModelFile::read(dir.join("best.mpcl"))?;
    assert_eq!(model.provenance.round, best);
    let chosen = checkpoint
        .evaluations
        .iter()
        .find(|m| m.round == best)
        .unwrap();
    assert_eq!(model.provenance.metrics, Some(chosen.test));
    let kept = mpcl_coordinator::read_checkpoint(out.join("checkpoint.best.bin"))?;
    assert_eq!(model.state, kept.global);
    if best == 3 {
        assert_eq!(kept.global, checkpoint.global);
    }

    // The personal model stayed with a, and a printed both models on its own test part, the
    // global one being the run's model, the best round's.
    let printed = clients[0].stdout_text();
    assert!(
        printed.contains("personalization on this participant's own test part")
            && printed.contains("| personalized |")
            && printed.contains(&format!("| global model (after round {best}) |")),
        "{printed}"
    );
    let own = ModelFile::read(&personal)?;
    assert_eq!(own.schema, model.schema);
    assert_eq!(own.provenance.round, best);
    Ok(())
}

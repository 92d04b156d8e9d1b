//! Operating a study (issue 15): results folders that never mix two runs, checks against the
//! enrolment at start, a port in use, progress lines without a terminal, machine-readable logs,
//! an operator key for `mpcl status`, readable errors for a wrong coordinator key and a key
//! started twice, and `--give-up-after-secs` on time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mpcl_protocol::identity::{fingerprint, read_public_key_file};

use crate::support::{MPCL, PATIENCE, RunDir, RunSpec, check_run};

/// The tiny model of the fast tests, inline (`--model-config` takes JSON too).
const TINY: &str = r#"{"width":8,"prototypes_per_emotion":2,"memory_slots":4}"#;

fn mpcl(args: &[&str]) -> anyhow::Result<Output> {
    Command::new(MPCL)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .context("cannot run mpcl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file of `dir` with its bytes, for "left untouched" checks.
fn snapshot(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            files.push((path.clone(), std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

/// The lines of a simulation's `rounds.jsonl` without their wall times (which differ between
/// runs), for comparing two runs' numbers.
fn metrics_of(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line)?;
            value
                .as_object_mut()
                .context("a round record is an object")?
                .remove("wall_seconds");
            Ok(value)
        })
        .collect()
}

fn simulate(out: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    let out = out.display().to_string();
    let mut args = vec![
        "simulate",
        "--dataset",
        "synthetic",
        "--subjects",
        "3",
        "--rounds",
        "2",
        "--local-epochs",
        "1",
        "--arms",
        "federated,label-prior",
        "--model-config",
        TINY,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    mpcl(&args)
}

/// `simulate` into a folder holding results: refused without --force (naming the folder and
/// the flag), and with a bad dataset refused before anything is written, with or without
/// --force; the old results stay byte for byte. Without a terminal, one line per arm and round
/// is printed as the run goes; the privacy line once. `--config` re-runs the saved config with
/// the same numbers, and a flag given as well overrides it.
#[test]
fn simulate_never_mixes_two_runs_and_reruns_its_config() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("sim");
    let first = simulate(&out, &[])?;
    ensure!(first.status.success(), "{}", text(&first.stderr));
    let stdout = text(&first.stdout);
    for line in [
        "round 1/2 federated MPCL: KL",
        "round 2/2 federated MPCL: KL",
        "round 2/2 label prior: KL",
    ] {
        assert!(
            stdout.contains(line),
            "no progress line `{line}`:\n{stdout}"
        );
    }
    assert!(
        stdout.find("round 1/2 federated MPCL").unwrap() < stdout.find("kl ↓").unwrap(),
        "progress lines come before the final table"
    );
    assert_eq!(stdout.matches("privacy (federated arms)").count(), 1);
    let before = snapshot(&out)?;
    assert!(before.iter().any(|(p, _)| p.ends_with("final.csv")));

    let again = simulate(&out, &[])?;
    assert!(!again.status.success());
    let error = text(&again.stderr);
    assert!(
        error.contains(&out.display().to_string()) && error.contains("--force"),
        "{error}"
    );
    let bad_inputs: [&[&str]; 4] = [
        &["--dataset", "study:/no/such/folder"],
        &["--force", "--dataset", "study:/no/such/folder"],
        &["--force", "--protocol", "subject-independent:50"],
        &["--force", "--model-config", r#"{"width":0}"#],
    ];
    for extra in bad_inputs {
        let bad = simulate(&out, extra)?;
        assert!(!bad.status.success(), "a bad dataset must fail");
        assert_eq!(
            snapshot(&out)?,
            before,
            "earlier results touched ({extra:?})"
        );
    }
    assert!(!dir.path().join("sim.partial").exists());

    // Re-run from the saved config: the same numbers.
    let config = out.join("config.json").display().to_string();
    let rerun_out = dir.path().join("rerun");
    let rerun = mpcl(&[
        "simulate",
        "--config",
        &config,
        "--out",
        &rerun_out.display().to_string(),
    ])?;
    ensure!(rerun.status.success(), "{}", text(&rerun.stderr));
    assert_eq!(
        metrics_of(&rerun_out.join("rounds.jsonl"))?,
        metrics_of(&out.join("rounds.jsonl"))?
    );
    assert_eq!(
        std::fs::read_to_string(rerun_out.join("final.csv"))?,
        std::fs::read_to_string(out.join("final.csv"))?
    );
    // A flag given with --config overrides the file; --force replaces the old results.
    let shorter = mpcl(&[
        "simulate",
        "--config",
        &config,
        "--rounds",
        "1",
        "--force",
        "--out",
        &rerun_out.display().to_string(),
    ])?;
    ensure!(shorter.status.success(), "{}", text(&shorter.stderr));
    let rounds = std::fs::read_to_string(rerun_out.join("rounds.jsonl"))?;
    assert!(
        rounds.lines().count() == 2 && !rounds.contains("\"round\":2"),
        "{rounds}"
    );
    Ok(())
}

/// `train --force` replaces every output of the previous run: fold models of a cross-validated
/// run do not survive next to the single model of a later run. Without a terminal, one line per
/// epoch; with `--log-format json`, every log line is a JSON object.
#[test]
fn train_force_leaves_no_stale_model_and_logs_json() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("train").display().to_string();
    let common = [
        "train",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--model-config",
        TINY,
        "--out",
        &out,
    ];
    let mut folds = common.to_vec();
    folds.extend(["--protocol", "subject-independent:2"]);
    let first = mpcl(&folds)?;
    ensure!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("epoch 1/1: loss"));
    assert!(Path::new(&out).join("model-fold-2.mpcl").exists());

    let mut single = vec!["--log-format", "json"];
    single.extend(common);
    single.push("--force");
    let second = Command::new(MPCL)
        .args(&single)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .output()?;
    ensure!(second.status.success(), "{}", text(&second.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&out)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(
        names,
        ["config.json", "metrics.json", "metrics.md", "model.mpcl"]
    );
    let logs = text(&second.stderr);
    assert!(logs.lines().count() > 0, "no logs");
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
    Ok(())
}

/// A cohort larger than the enrolment is refused at start with the numbers, before anything is
/// written.
#[test]
fn a_cohort_larger_than_the_enrolment_is_refused_at_start() -> anyhow::Result<()> {
    let spec = RunSpec {
        clients_per_round: 10,
        min_clients: 2,
        min_available: 2,
        ..RunSpec::all(1, 3)
    };
    let run = RunDir::new(&["a", "b", "c"], &spec)?;
    let mut coordinator = run.spawn_coordinator("coordinator", "127.0.0.1:0", false)?;
    let status = coordinator.wait(PATIENCE)?;
    assert!(!status.success());
    let log = coordinator.log_text();
    assert!(
        log.contains("`clients_per_round` is 10 but only 3 participant(s) are enrolled"),
        "{log}"
    );
    assert!(!run.out().exists(), "nothing may be written");
    Ok(())
}

/// A port in use: the coordinator fails before writing anything, and the same command (no
/// --resume) works once the port is free.
#[test]
fn a_port_in_use_leaves_nothing_behind() -> anyhow::Result<()> {
    let run = RunDir::new(&["a"], &RunSpec::all(1, 1))?;
    let blocker = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let address = blocker.local_addr()?.to_string();
    let mut first = run.spawn_coordinator("coordinator-first", &address, false)?;
    assert!(!first.wait(PATIENCE)?.success());
    assert!(
        first.log_text().contains("cannot listen on"),
        "{}",
        first.log_text()
    );
    assert!(!run.out().exists(), "nothing may be written before binding");
    drop(blocker);
    let mut second = run.coordinator("coordinator-second", &address, false)?;
    assert_eq!(second.address()?.to_string(), address);
    second.interrupt()?;
    second.wait_success(Duration::from_secs(20))?;
    Ok(())
}

/// Makes an operator key and adds its `[[operator]]` lines to the run's enrolment.
fn enrol_operator(run: &RunDir) -> anyhow::Result<PathBuf> {
    let keys = run.path().join("keys").join("operator");
    let output = Command::new(MPCL)
        .args(["keygen", "--operator", "--id", "operator", "--out"])
        .arg(&keys)
        .output()?;
    ensure!(output.status.success(), "{output:?}");
    let printed = text(&output.stdout);
    let entry = &printed[printed.find("[[operator]]").context("no [[operator]]")?..];
    let path = run.path().join("enrolment.toml");
    let enrolment = std::fs::read_to_string(&path)?;
    std::fs::write(&path, format!("{enrolment}\n{entry}"))?;
    Ok(keys)
}

fn status_command(run: &RunDir, address: &str, key: &Path) -> Command {
    let mut command = Command::new(MPCL);
    command
        .arg("status")
        .args(["--coordinator", address])
        .arg("--coordinator-key")
        .arg(run.key_dir("coordinator").join("public_key.hex"))
        .arg("--key")
        .arg(key)
        .args(["--connect-timeout-secs", "5"])
        .env("RUST_BACKTRACE", "0");
    command
}

/// An operator key (no participant) sees the status, may not train (a client started with it
/// is refused and stops, and it never contributes), and `status --watch` follows the run to its end. The
/// coordinator prints one line per aggregated round on stdout.
#[test]
fn an_operator_key_watches_the_run_and_never_trains() -> anyhow::Result<()> {
    let spec = RunSpec {
        deadline_secs: 20,
        ..RunSpec::all(2, 1)
    };
    let run = RunDir::new(&["a"], &spec)?;
    let operator = enrol_operator(&run)?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let address = coordinator.address()?.to_string();

    let status = status_command(&run, &address, &operator).output()?;
    ensure!(status.status.success(), "{}", text(&status.stderr));
    let report = text(&status.stdout);
    assert!(
        report.contains("waiting for participants") && report.contains("0 connected, 1 enrolled"),
        "{report}"
    );

    // The operator key as a client: its request for work is refused in words, and the client
    // stops at once with the reason instead of asking again until it gives up.
    let mut intruder = run.client_with_key("operator-as-client", &operator, &coordinator)?;
    coordinator.wait_for_log(
        &[
            "an operator key may only ask for the status",
            "operator=operator",
        ],
        PATIENCE,
    )?;
    let refused = intruder.wait(PATIENCE)?;
    assert!(!refused.success(), "{}", intruder.log_text());
    let told = intruder.log_text();
    assert!(
        told.contains("the key of operator `operator` may only ask for the status")
            && told.contains("start `mpcl client` with a participant's key"),
        "{told}"
    );

    let mut watch = status_command(&run, &address, &operator)
        .args(["--watch", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let mut a = run.client("a", "a", &coordinator, &[])?;
    a.wait_success(PATIENCE)?;
    coordinator.wait_success(PATIENCE)?;
    // The coordinator exits as soon as its last participant has left, so the watcher may see
    // it finished or gone; either way it has followed the run line by line.
    let _ = watch.kill();
    let watched = watch.wait_with_output()?;
    let lines = text(&watched.stdout);
    assert!(
        lines.contains(
            "waiting for participants round 0/2: 0 of 0 updates, 0 connected of 1 enrolled"
        ),
        "{lines}"
    );
    assert!(lines.lines().count() >= 2, "{lines}");

    let printed = coordinator.stdout_text();
    for round in ["round 1/2 aggregated: 1 update(s)", "round 2/2 aggregated"] {
        assert!(printed.contains(round), "{printed}");
    }
    let checked = check_run(&run, 2)?;
    assert_eq!(checked.contributors, vec![vec!["a"], vec!["a"]]);
    Ok(())
}

/// A client pinning another key than the coordinator's: the error names the key it expected
/// (and the file it came from) and the key the server presented, in plain words.
#[test]
fn a_wrong_coordinator_key_is_named_in_plain_words() -> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b"], &RunSpec::all(1, 2))?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let wrong = run.key_dir("b").join("public_key.hex");
    let output = Command::new(MPCL)
        .arg("client")
        .args(["--coordinator", &coordinator.address()?.to_string()])
        .arg("--coordinator-key")
        .arg(&wrong)
        .arg("--key")
        .arg(run.key_dir("a"))
        .args(["--data", "synthetic:0", "--connect-timeout-secs", "5"])
        .env("RUST_BACKTRACE", "0")
        .output()?;
    assert!(!output.status.success());
    let error = text(&output.stderr);
    let expected = fingerprint(&read_public_key_file(&wrong)?);
    let presented = fingerprint(&read_public_key_file(
        &run.key_dir("coordinator").join("public_key.hex"),
    )?);
    assert!(
        error.contains(&format!("presented the key {presented}"))
            && error.contains(&format!("expects the coordinator key {expected}"))
            && error.contains(&wrong.display().to_string()),
        "{error}"
    );
    assert!(!error.contains("OtherError"), "{error}");
    coordinator.interrupt()?;
    coordinator.wait_success(Duration::from_secs(20))?;
    Ok(())
}

/// The same key started twice: the newer connection replaces the older, the coordinator logs
/// it naming the participant, the replaced client stops with a clear message, and the run
/// finishes with each participant once per round.
#[test]
fn the_same_key_started_twice_replaces_the_older_client() -> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b"], &RunSpec::all(2, 2))?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let mut first = run.client("a-first", "a", &coordinator, &[])?;
    coordinator.wait_for_log(&["participant admitted", "participant=a"], PATIENCE)?;
    // a asks for work while it waits for b; then its twin arrives.
    std::thread::sleep(Duration::from_millis(300));
    let mut twin = run.client("a-twin", "a", &coordinator, &[])?;
    coordinator.wait_for_log(
        &["connected again with the same key", "participant=a"],
        PATIENCE,
    )?;
    assert!(!first.wait(PATIENCE)?.success());
    assert!(
        first.log_text().contains("run one client per key"),
        "{}",
        first.log_text()
    );
    let mut b = run.client("b", "b", &coordinator, &[])?;
    for client in [&mut twin, &mut b] {
        client.wait_success(PATIENCE)?;
    }
    coordinator.wait_success(PATIENCE)?;
    let checked = check_run(&run, 2)?;
    for round in crate::client_faults::sorted(&checked.contributors) {
        assert_eq!(round, vec!["a", "b"]);
    }
    Ok(())
}

/// `--give-up-after-secs` counts from the first attempt and stops on time, even when every
/// attempt runs into its connect timeout (a coordinator address where nothing answers).
#[test]
fn a_client_gives_up_on_time() -> anyhow::Result<()> {
    let run = RunDir::new(&["a"], &RunSpec::all(1, 1))?;
    // Bound but never answering: every attempt times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let started = Instant::now();
    let output = Command::new(MPCL)
        .arg("client")
        .args(["--coordinator", &silent.local_addr()?.to_string()])
        .arg("--coordinator-key")
        .arg(run.key_dir("coordinator").join("public_key.hex"))
        .arg("--key")
        .arg(run.key_dir("a"))
        .args(["--data", "synthetic:0"])
        .args(["--connect-timeout-secs", "2", "--give-up-after-secs", "3"])
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let elapsed = started.elapsed();
    assert!(!output.status.success());
    let error = text(&output.stderr);
    assert!(error.contains("gave up after 3."), "{error}");
    // Local data loading comes first (well under a second); the old behaviour took 7.5 s.
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_millis(5500),
        "gave up after {elapsed:?}: {error}"
    );
    Ok(())
}

//! A checkpoint damaged on disk while the coordinator was down. A truncated latest checkpoint
//! is reported by name and the previous copy is used (the round after it is redone); when both
//! are damaged, `--resume` refuses with an error naming both files and writes nothing.

use std::time::Duration;

use mpcl_coordinator::checkpoint::previous_path;

use crate::client_faults::sorted;
use crate::support::{PATIENCE, RunDir, RunSpec, check_run};

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_copy_and_is_never_overwritten_by_it()
-> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b"], &RunSpec::all(3, 2))?;
    let mut first = run.coordinator("coordinator-first", "127.0.0.1:0", false)?;
    let address = first.address()?.to_string();
    let mut a = run.client("a", "a", &first, &[])?;
    // b is slow, so that the kill lands before round 3 can be aggregated.
    let mut b = run.client("b", "b", &first, &["--test-delay-before-upload-secs", "1"])?;
    first.wait_for_log(&["checkpoint written", "completed_rounds=2"], PATIENCE)?;
    first.kill()?;
    let checkpoint = run.checkpoint();
    let previous = previous_path(&checkpoint);
    let good_previous = std::fs::read(&previous)?;
    assert_eq!(
        mpcl_coordinator::read_checkpoint(&previous)?.completed_rounds,
        1
    );
    let bytes = std::fs::read(&checkpoint)?;
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2])?;

    let mut second = run.coordinator("coordinator-second", &address, true)?;
    let warning = second.wait_for_log(&["latest checkpoint unusable"], PATIENCE)?;
    assert!(
        warning.contains(&checkpoint.display().to_string()) && warning.contains("truncated"),
        "the warning names the damaged file and what is wrong: {warning}"
    );
    second.wait_for_log(
        &["resuming from checkpoint", "completed_rounds=1"],
        PATIENCE,
    )?;
    // The damaged file was not kept as the previous copy: the good one stayed until round 2
    // was aggregated again.
    second.wait_for_log(&["checkpoint written", "completed_rounds=2"], PATIENCE)?;
    assert_eq!(
        mpcl_coordinator::read_checkpoint(&previous)?.completed_rounds,
        1
    );
    assert_eq!(std::fs::read(&previous)?, good_previous);
    for client in [&mut a, &mut b] {
        client.wait_success(PATIENCE)?;
    }
    second.wait_success(PATIENCE)?;
    let checked = check_run(&run, 3)?;
    assert_eq!(sorted(&checked.contributors), vec![vec!["a", "b"]; 3]);
    // The round log was cut back to the previous copy's round 1 before round 2 was redone:
    // one line per round, none twice.
    let lines: Vec<u64> = std::fs::read_to_string(run.out().join("rounds.jsonl"))?
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["round"].as_u64()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(lines, vec![1, 2, 3], "round log lines");

    // Now damage both copies: resuming must fail, name both files, and touch neither.
    for path in [&checkpoint, &previous] {
        let mut bytes = std::fs::read(path)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(path, bytes)?;
    }
    let damaged = (std::fs::read(&checkpoint)?, std::fs::read(&previous)?);
    let log_before = std::fs::read(run.out().join("rounds.jsonl"))?;
    let mut third = run.spawn_coordinator("coordinator-third", &address, true)?;
    let status = third.wait(Duration::from_secs(30))?;
    assert!(
        !status.success(),
        "resuming from two damaged checkpoints must fail"
    );
    let log = third.log_text();
    for path in [&checkpoint, &previous] {
        assert!(
            log.contains(&path.display().to_string()),
            "the error names {}: {log}",
            path.display()
        );
    }
    assert!(log.contains("checksum mismatch"), "{log}");
    assert_eq!(
        (std::fs::read(&checkpoint)?, std::fs::read(&previous)?),
        damaged
    );
    assert_eq!(std::fs::read(run.out().join("rounds.jsonl"))?, log_before);
    Ok(())
}

//! The coordinator killed (SIGKILL) in the middle of a round, after some updates arrived, and
//! restarted with `--resume`: the round in flight is redone from the last checkpoint, the
//! clients reconnect by themselves, and nothing aggregated is lost.

use crate::client_faults::sorted;
use crate::support::{PATIENCE, RunDir, RunSpec, check_run};

#[test]
fn a_coordinator_killed_mid_round_resumes_and_loses_nothing() -> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b", "c"], &RunSpec::all(3, 3))?;
    let mut first = run.coordinator("coordinator-first", "127.0.0.1:0", false)?;
    let address = first.address()?.to_string();
    let mut a = run.client("a", "a", &first, &[])?;
    let mut b = run.client("b", "b", &first, &[])?;
    // c is slow, so that round 2 holds a's and b's updates while it waits for c's.
    let mut c = run.client(
        "c",
        "c",
        &first,
        &["--test-delay-before-upload-secs", "1.5"],
    )?;
    first.wait_for_count(&["accepted update", "round=2"], 2, PATIENCE)?;
    first.kill()?;
    assert!(
        first.log_lines(&["round aggregated", "round=2"]).is_empty(),
        "the kill was meant to land before round 2 was aggregated"
    );
    let saved = mpcl_coordinator::read_checkpoint(run.checkpoint())?;
    assert_eq!(saved.completed_rounds, 1);

    let mut second = run.coordinator("coordinator-second", &address, true)?;
    second.wait_for_log(
        &["resuming from checkpoint", "completed_rounds=1"],
        PATIENCE,
    )?;
    for client in [&mut a, &mut b, &mut c] {
        client.wait_success(PATIENCE)?;
    }
    second.wait_success(PATIENCE)?;
    assert!(
        second.stdout_text().contains("finished 3 rounds"),
        "{}",
        second.stdout_text()
    );
    let checked = check_run(&run, 3)?;
    assert_eq!(sorted(&checked.contributors), vec![vec!["a", "b", "c"]; 3]);
    assert_eq!(checked.checkpoint.run_id, saved.run_id);
    Ok(())
}

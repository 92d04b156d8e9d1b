//! Clients that crash, stall, drop their connection mid-upload, or come back in the middle of a
//! round. Each run must complete, every round must be aggregated once, and the final state must
//! be exactly what the recorded contributors determine ([`check_run`]).

use crate::operations::assert_peer_named_on_every_line;
use crate::support::{PATIENCE, RunDir, RunSpec, check_run};

/// c is killed (SIGKILL) while it trains for round 1: at the deadline the round is aggregated
/// with a and b (until then a restarted c could still have answered), and a restarted c takes
/// part in the later rounds.
#[test]
fn a_client_killed_mid_training_is_left_out_and_can_come_back() -> anyhow::Result<()> {
    let spec = RunSpec {
        min_clients: 2,
        // Long enough for the restarted c to start, train and answer in the later rounds.
        deadline_secs: 5,
        ..RunSpec::all(3, 3)
    };
    let run = RunDir::new(&["a", "b", "c"], &spec)?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let mut a = run.client("a", "a", &coordinator, &[])?;
    let mut b = run.client("b", "b", &coordinator, &[])?;
    // The stall only makes sure c cannot have uploaded when the kill lands.
    let mut c = run.client(
        "c-first",
        "c",
        &coordinator,
        &["--test-delay-before-upload-secs", "30"],
    )?;
    c.wait_for_log(&["sampled for round", "round=1"], PATIENCE)?;
    c.kill()?;
    coordinator.wait_for_log(&["round aggregated", "round=1"], PATIENCE)?;
    assert_eq!(
        coordinator
            .log_lines(&["round deadline passed", "round=1"])
            .len(),
        1
    );

    let mut c = run.client("c-second", "c", &coordinator, &[])?;
    for client in [&mut a, &mut b, &mut c] {
        client.wait_success(PATIENCE)?;
    }
    coordinator.wait_success(PATIENCE)?;
    let checked = check_run(&run, 3)?;
    assert_eq!(
        sorted(&checked.contributors),
        vec![vec!["a", "b"], vec!["a", "b", "c"], vec!["a", "b", "c"]]
    );
    Ok(())
}

/// c stalls longer than the round deadline every round: each round is aggregated at its
/// deadline without c, and c's late update is refused for a round that is no longer open.
#[test]
fn a_client_stalling_past_the_deadline_is_outwaited() -> anyhow::Result<()> {
    let spec = RunSpec {
        min_clients: 2,
        deadline_secs: 3,
        // c comes back from its last stall after the run finished: it must still hear so.
        finish_grace_secs: 15,
        ..RunSpec::all(2, 3)
    };
    let run = RunDir::new(&["a", "b", "c"], &spec)?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let mut a = run.client("a", "a", &coordinator, &[])?;
    let mut b = run.client("b", "b", &coordinator, &[])?;
    let mut c = run.client(
        "c",
        "c",
        &coordinator,
        &["--test-delay-before-upload-secs", "5"],
    )?;
    coordinator.wait_for_log(&["round deadline passed", "round=1"], PATIENCE)?;
    coordinator.wait_for_log(&["rejected update", "participant=c", "round=1"], PATIENCE)?;
    for client in [&mut a, &mut b, &mut c] {
        client.wait_success(PATIENCE)?;
    }
    coordinator.wait_success(PATIENCE)?;
    let checked = check_run(&run, 2)?;
    assert_eq!(
        sorted(&checked.contributors),
        vec![vec!["a", "b"], vec!["a", "b"]]
    );
    assert!(checked.records.iter().all(|r| r.sampled == 3));
    Ok(())
}

/// c's connection drops halfway through its first upload: the coordinator discards the half
/// frame, c reconnects by itself, asks for work while the round is still open, gets the same
/// round again and sends the same update once more; it counts exactly once.
#[test]
fn a_client_dropping_mid_upload_reconnects_and_its_update_counts_once() -> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b", "c"], &RunSpec::all(2, 3))?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let mut a = run.client("a", "a", &coordinator, &[])?;
    let mut b = run.client("b", "b", &coordinator, &[])?;
    let mut c = run.client(
        "c",
        "c",
        &coordinator,
        &["--test-drop-connection-mid-upload"],
    )?;
    c.wait_for_log(
        &["injected fault: dropped the connection mid-upload"],
        PATIENCE,
    )?;
    c.wait_for_log(
        &[
            "re-using the update trained before the reconnection",
            "round=1",
        ],
        PATIENCE,
    )?;
    for client in [&mut a, &mut b, &mut c] {
        client.wait_success(PATIENCE)?;
    }
    coordinator.wait_success(PATIENCE)?;
    assert_eq!(
        coordinator
            .log_lines(&["sending round", "participant=c", "round=1"])
            .len(),
        2,
        "c was handed round 1 again after reconnecting"
    );
    assert_eq!(
        coordinator
            .log_lines(&["accepted update", "participant=c", "round=1"])
            .len(),
        1
    );
    assert!(
        !coordinator
            .log_lines(&["request cut off before it was complete", "participant=c"])
            .is_empty(),
        "the half upload was noticed and discarded:\n{}",
        coordinator.log_text()
    );
    assert_peer_named_on_every_line(&coordinator);
    let checked = check_run(&run, 2)?;
    assert_eq!(
        sorted(&checked.contributors),
        vec![vec!["a", "b", "c"], vec!["a", "b", "c"]]
    );
    Ok(())
}

/// c is killed after training for round 1 but before uploading, and restarted at once: the new
/// process rejoins in the middle of round 1, is handed the same round again (it was sampled and
/// has not answered), and the round completes with all three.
#[test]
fn a_restarted_client_rejoins_the_round_in_progress() -> anyhow::Result<()> {
    let run = RunDir::new(&["a", "b", "c"], &RunSpec::all(2, 3))?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let mut a = run.client("a", "a", &coordinator, &[])?;
    let mut b = run.client("b", "b", &coordinator, &[])?;
    let mut c = run.client(
        "c-first",
        "c",
        &coordinator,
        &["--test-delay-before-upload-secs", "30"],
    )?;
    c.wait_for_log(
        &["injected fault: stalling before the upload", "round=1"],
        PATIENCE,
    )?;
    c.kill()?;
    let mut c = run.client("c-second", "c", &coordinator, &[])?;
    for client in [&mut a, &mut b, &mut c] {
        client.wait_success(PATIENCE)?;
    }
    coordinator.wait_success(PATIENCE)?;
    assert_eq!(
        coordinator
            .log_lines(&["sending round", "participant=c", "round=1"])
            .len(),
        2,
        "the restarted c was handed round 1 again"
    );
    let checked = check_run(&run, 2)?;
    assert_eq!(
        sorted(&checked.contributors),
        vec![vec!["a", "b", "c"], vec!["a", "b", "c"]]
    );
    Ok(())
}

/// Contributor names per round, sorted (arrival order varies between runs).
pub fn sorted(rounds: &[Vec<String>]) -> Vec<Vec<&str>> {
    rounds
        .iter()
        .map(|names| {
            let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
            names.sort_unstable();
            names
        })
        .collect()
}

//! Operating a run: Ctrl-C on a client and on the coordinator, an unenrolled key, and logs that
//! name the peer on every line about one.

use std::time::Duration;

use crate::client_faults::sorted;
use crate::support::{MPCL, PATIENCE, Process, RunDir, RunSpec, check_run};

/// Phrases that make a coordinator log line be about one participant.
const ABOUT_A_PEER: &[&str] = &[
    "admitted",
    "participant joined",
    "participant left",
    "said goodbye",
    "sending round",
    "accepted update",
    "rejected update",
    "rejected request",
    "request cut off",
    "refused",
    "connection",
    "sampled;",
];

/// Every coordinator log line about a participant names it (`participant=` as a field or in
/// the connection's span).
pub fn assert_peer_named_on_every_line(coordinator: &Process) {
    for line in coordinator.log_text().lines() {
        if ABOUT_A_PEER.iter().any(|w| line.contains(w)) {
            assert!(
                line.contains("participant="),
                "a log line about a peer does not name it: {line}"
            );
        }
    }
}

/// Ctrl-C on a client in the middle of a round: it says goodbye and exits 0, and the round goes
/// on without it. Ctrl-C on the coordinator: it writes a checkpoint and exits 0; resumed, it
/// finishes the run with the client back.
#[test]
fn ctrl_c_stops_a_client_and_the_coordinator_cleanly() -> anyhow::Result<()> {
    let spec = RunSpec {
        min_clients: 2,
        deadline_secs: 3,
        ..RunSpec::all(2, 3)
    };
    let run = RunDir::new(&["a", "b", "c"], &spec)?;
    let mut first = run.coordinator("coordinator-first", "127.0.0.1:0", false)?;
    let address = first.address()?.to_string();
    let mut a = run.client("a", "a", &first, &[])?;
    let mut b = run.client("b", "b", &first, &[])?;
    let mut c = run.client(
        "c-first",
        "c",
        &first,
        &["--test-delay-before-upload-secs", "30"],
    )?;
    c.wait_for_log(
        &["injected fault: stalling before the upload", "round=1"],
        PATIENCE,
    )?;
    c.interrupt()?;
    c.wait_success(Duration::from_secs(10))?;
    assert!(c.stdout_text().contains("stopped"), "{}", c.stdout_text());
    first.wait_for_log(&["participant said goodbye", "participant=c"], PATIENCE)?;
    first.wait_for_log(&["round aggregated", "round=1"], PATIENCE)?;
    // Round 2 needs all three connected: stop the coordinator while it waits.
    first.interrupt()?;
    first.wait_success(Duration::from_secs(20))?;
    assert!(
        first
            .stdout_text()
            .contains("stopped after 1 completed rounds"),
        "{}",
        first.stdout_text()
    );
    assert_eq!(
        mpcl_coordinator::read_checkpoint(run.checkpoint())?.completed_rounds,
        1
    );
    assert_peer_named_on_every_line(&first);

    let mut second = run.coordinator("coordinator-second", &address, true)?;
    let mut c = run.client("c-second", "c", &second, &[])?;
    for client in [&mut a, &mut b, &mut c] {
        client.wait_success(PATIENCE)?;
    }
    second.wait_success(PATIENCE)?;
    assert_peer_named_on_every_line(&second);
    let checked = check_run(&run, 2)?;
    assert_eq!(
        sorted(&checked.contributors),
        vec![vec!["a", "b"], vec!["a", "b", "c"]]
    );
    Ok(())
}

/// A client whose key is not in the enrolment file is refused; both sides say so in words,
/// with the key's fingerprint, and the client exits with an error instead of retrying.
#[test]
fn an_unenrolled_key_is_refused_with_a_readable_message() -> anyhow::Result<()> {
    let run = RunDir::new(&["a"], &RunSpec::all(1, 1))?;
    let mut coordinator = run.coordinator("coordinator", "127.0.0.1:0", false)?;
    let keys = run.path().join("keys").join("mallory");
    let output = std::process::Command::new(MPCL)
        .args(["keygen", "--id", "mallory", "--out"])
        .arg(&keys)
        .output()?;
    assert!(output.status.success());
    let fingerprint = String::from_utf8(output.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint:").map(|f| f.trim().to_string()))
        .expect("keygen prints the fingerprint");
    let mut mallory = run.client_with_key("mallory", &keys, &coordinator)?;
    let status = mallory.wait(PATIENCE)?;
    assert!(!status.success());
    let client_log = mallory.log_text();
    assert!(
        client_log.contains(&format!(
            "this node's key {fingerprint} is not in the coordinator's enrolment file"
        )),
        "{client_log}"
    );
    let line = coordinator.wait_for_log(&["is not in the enrolment file"], PATIENCE)?;
    assert!(
        line.contains(&format!("participant={fingerprint}")) && !line.contains("OtherError"),
        "{line}"
    );
    coordinator.interrupt()?;
    coordinator.wait_success(Duration::from_secs(20))?;
    Ok(())
}

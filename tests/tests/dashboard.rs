//! The live dashboard over a real run: a coordinator and two participant nodes on loopback, the
//! dashboard on 127.0.0.1 port 0. Without its token every request gets 401; with it, the JSON
//! status follows the run from "waiting" through the rounds to "finished", names the
//! participants as the enrolment does, and carries the round log's losses as a series.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mpcl_client::NodeOutcome;
use mpcl_coordinator::Coordinator;
use mpcl_coordinator::server::{ROUND_LOG_FILE, Server, ServerSetup};
use mpcl_dashboard::{Dashboard, Sources, WarningLog};
use mpcl_data::ModelConfig;
use mpcl_tests::{Federation, Keys, join, run_config, start_nodes, test_network};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ROUNDS: u64 = 2;

/// One HTTP/1.1 request; returns the status code and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

async fn status(addr: SocketAddr, token: &str) -> anyhow::Result<Value> {
    let (code, body) = http(addr, "GET", &format!("/api/status?token={token}"), "").await?;
    ensure!(code == 200, "status {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Polls the status until `done` holds.
async fn wait_for(
    addr: SocketAddr,
    token: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let document = status(addr, token).await?;
        if done(&document) {
            return Ok(document);
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!("the dashboard never showed {what}; last status: {document}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(document: &Value) -> Vec<&str> {
    document["status"]["participants"]
        .as_array()
        .map(|all| all.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_its_token_and_follows_the_run() -> anyhow::Result<()> {
    let federation = Federation::synthetic(2);
    let keys = Keys::new(&["alice", "bob"]);
    let out = tempfile::tempdir()?;
    let config = run_config(ROUNDS, 2);
    let initial = federation.initial_state(config.seed);
    let coordinator = Coordinator::new(config, [9; 16], initial)?;
    // Bound here rather than by `start_server`, to ask for its live view before it runs.
    let mut server = Server::bind(ServerSetup {
        coordinator,
        identity: keys.coordinator_identity(),
        enrolment: keys.enrolment.clone(),
        model_config: ModelConfig::tiny(),
        schema: federation.schema.clone(),
        network: test_network(),
        listen: "127.0.0.1:0".parse()?,
        out_dir: out.path().to_path_buf(),
    })?;
    let server_addr = server.local_addr();
    let dashboard = Dashboard::bind("127.0.0.1:0".parse()?).await?;
    let addr = dashboard.local_addr();
    let token = dashboard.token().as_str().to_string();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    assert_eq!(
        dashboard.url(),
        format!("http://{addr}/?token={token}"),
        "the printed URL carries the token"
    );
    let sources = Sources {
        live: server.live_status(),
        round_log: out.path().join(ROUND_LOG_FILE),
        warnings: WarningLog::default(),
    };
    let stop_dashboard = CancellationToken::new();
    let dashboard_task = tokio::spawn(dashboard.serve(sources, stop_dashboard.clone()));

    // No token, a wrong one, a truncated one: 401 for the page and the data alike.
    let wrong = "0".repeat(32);
    for target in [
        "/".to_string(),
        "/api/status".to_string(),
        format!("/api/status?token={wrong}"),
        format!("/?token={}", &token[..31]),
        "/nothing-here".to_string(),
    ] {
        let (code, body) = http(addr, "GET", &target, "").await?;
        assert_eq!(code, 401, "GET {target}: {body}");
        assert!(
            !body.contains("participants"),
            "GET {target} leaked: {body}"
        );
    }
    let (code, _) = http(addr, "GET", "/api/status", "Authorization: Bearer nope\r\n").await?;
    assert_eq!(code, 401);
    // With the token: the page, by query or by header; nothing can be changed.
    let (code, page) = http(addr, "GET", &format!("/?token={token}"), "").await?;
    assert_eq!(code, 200);
    assert!(page.contains("id=\"round\""), "{page}");
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (code, _) = http(addr, "GET", "/api/status", &bearer).await?;
    assert_eq!(code, 200);
    let (code, _) = http(addr, "POST", &format!("/api/status?token={token}"), "").await?;
    assert_eq!(code, 405, "the dashboard is read-only");

    let before = status(addr, &token).await?;
    assert_eq!(
        before["status"]["phase"], "waiting_for_participants",
        "{before}"
    );
    assert_eq!(before["status"]["round"], 0);
    assert_eq!(before["status"]["total_rounds"], ROUNDS);
    assert_eq!(
        names(&before),
        ["alice", "bob"],
        "enrolment names, in order"
    );
    assert!(
        before["status"]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["connected"] == false && p["last_contact_unix_ms"].is_null()),
        "{before}"
    );
    assert_eq!(before["series"], serde_json::json!([]));

    let server_task = tokio::spawn(server.run(CancellationToken::new()));
    let shutdown = CancellationToken::new();
    let nodes = start_nodes(
        server_addr,
        &keys,
        &keys.participants,
        &federation.train,
        &shutdown,
    );
    let during = wait_for(addr, &token, "a round in training", |d| {
        d["status"]["phase"] == "training"
    })
    .await?;
    assert!(during["status"]["round"].as_u64() >= Some(1), "{during}");
    assert_eq!(during["status"]["updates_expected"], 2, "{during}");

    for node in nodes {
        let outcome = join(node.task, Duration::from_secs(120), "node").await??;
        assert_eq!(outcome, NodeOutcome::Finished { rounds: ROUNDS });
    }
    let outcome = join(server_task, Duration::from_secs(30), "coordinator").await??;
    assert!(outcome.finished);

    // The actor is gone; its last snapshot stays, and the round log is complete.
    let after = status(addr, &token).await?;
    let live = &after["status"];
    assert_eq!(live["phase"], "finished", "{after}");
    assert_eq!(live["round"], ROUNDS);
    assert_eq!(live["completed_rounds"], ROUNDS);
    for participant in live["participants"].as_array().unwrap() {
        assert_eq!(participant["last_accepted_round"], ROUNDS, "{participant}");
        assert!(
            participant["last_contact_unix_ms"].as_u64()
                >= before["status"]["taken_at_unix_ms"].as_u64(),
            "{participant}"
        );
    }
    assert_eq!(after["logged_rounds"], ROUNDS);
    let loss = after["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mean_train_loss")
        .with_context(|| format!("no loss series: {after}"))?;
    let points = loss["points"].as_array().unwrap();
    assert_eq!(points.len() as u64, ROUNDS, "{loss}");
    assert_eq!(points[0][0], 1);
    assert!(points[0][1].as_f64().unwrap() > 0.0, "{loss}");

    stop_dashboard.cancel();
    join(dashboard_task, Duration::from_secs(10), "dashboard").await??;
    Ok(())
}

//! The live dashboard in a real browser: `mpcl coordinator --dashboard 127.0.0.1:0` with two
//! `mpcl client` processes, the page loaded in headless Chromium (from the Debian packages;
//! `scripts/install-chromium` installs it when missing and this machine allows it). The DOM the
//! page's own JavaScript renders must show the participants by name, a round counter that
//! advances while the run goes on, and the loss plot; without the token the browser gets only
//! the 401.
//!
//! A dashboard port already in use stops the coordinator before it writes anything (no browser
//! needed).
//!
//! Where Chromium is missing and cannot be installed (not root, or no apt-get) the test says so
//! and passes without running; `MPCL_REQUIRE_BROWSER=1` turns that into a failure.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::support::{PATIENCE, Process, RunDir, RunSpec};

/// How long one page load may take.
const LOAD_LIMIT: Duration = Duration::from_secs(40);

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium's path: `MPCL_CHROMIUM`, else `chromium` or `chromium-browser` on the path, else
/// installed by `scripts/install-chromium`. `None` (with a message) when it cannot be had here.
fn chromium() -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = std::env::var_os("MPCL_CHROMIUM") {
        return Ok(Some(PathBuf::from(path)));
    }
    const NAMES: &[&str] = &["chromium", "chromium-browser"];
    if let Some(found) = find_on_path(NAMES) {
        return Ok(Some(found));
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/install-chromium");
    let status = Command::new(&script)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    match status.code() {
        Some(0) => find_on_path(NAMES)
            .map(Some)
            .context("scripts/install-chromium succeeded but no chromium is on the PATH"),
        Some(2) => {
            let message = "SKIPPED dashboard browser test: chromium is not installed and cannot \
                           be installed here (scripts/install-chromium needs root and apt-get)";
            ensure!(
                std::env::var_os("MPCL_REQUIRE_BROWSER").is_none(),
                "{message}, but MPCL_REQUIRE_BROWSER is set"
            );
            eprintln!("{message}");
            println!("{message}");
            Ok(None)
        }
        _ => bail!("scripts/install-chromium failed ({status})"),
    }
}

/// The DOM of `url` after its scripts ran for two seconds of (virtual) time.
fn render(chromium: &PathBuf, url: &str) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let output = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(output.reopen()?)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", chromium.display()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > LOAD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("chromium did not render {url} within {LOAD_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(status.success(), "chromium failed on {url}: {status}");
    Ok(std::fs::read_to_string(output.path())?)
}

/// The text of the element with `id`, as rendered.
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let marker = format!("id=\"{id}\"");
    let start = dom.find(&marker)?;
    let rest = &dom[start..];
    let open_end = rest.find('>')? + 1;
    let close = rest[open_end..].find('<')?;
    Some(&rest[open_end..open_end + close])
}

/// The round counter the page rendered.
fn rendered_round(dom: &str) -> anyhow::Result<u64> {
    let text = element_text(dom, "round").with_context(|| format!("no round counter in {dom}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("the round counter shows {text:?}, not a number:\n{dom}"))
}

/// The participant rows: (name, state).
fn rendered_participants(dom: &str) -> Vec<(String, String)> {
    dom.match_indices("<tr data-name=\"")
        .filter_map(|(at, marker)| {
            let rest = &dom[at + marker.len()..];
            let name = &rest[..rest.find('"')?];
            let state_at = rest.find("data-state=\"")? + "data-state=\"".len();
            let state = &rest[state_at..state_at + rest[state_at..].find('"')?];
            Some((name.to_string(), state.to_string()))
        })
        .collect()
}

fn dashboard_url(coordinator: &mut Process) -> anyhow::Result<String> {
    let line = coordinator.wait_for_stdout("dashboard: ", PATIENCE)?;
    let url = line.trim_start_matches("dashboard: ").trim().to_string();
    ensure!(
        url.starts_with("http://127.0.0.1:") && url.contains("/?token="),
        "unexpected dashboard line {line:?}"
    );
    Ok(url)
}

#[test]
fn the_dashboard_renders_a_live_run_in_headless_chromium() -> anyhow::Result<()> {
    let Some(chromium) = chromium()? else {
        return Ok(());
    };
    let started = Instant::now();
    // Long enough that the run is still going when the page is loaded the last time.
    let spec = RunSpec::all(60, 2);
    let run = RunDir::new(&["alice", "bob"], &spec)?;
    let mut coordinator = run.spawn_coordinator_with(
        "coordinator",
        "127.0.0.1:0",
        false,
        &["--dashboard", "127.0.0.1:0"],
    )?;
    coordinator.wait_for_stdout("listening on", PATIENCE)?;
    let url = dashboard_url(&mut coordinator)?;

    // Without the token the browser gets the refusal and no page.
    let refused = render(&chromium, url.split("?token=").next().unwrap())?;
    ensure!(
        refused.contains("401 unauthorized") && element_text(&refused, "round").is_none(),
        "without the token: {refused}"
    );

    // Before anyone connects: round 0, waiting, both enrolled names offline.
    let waiting = render(&chromium, &url)?;
    let first = rendered_round(&waiting)?;
    assert_eq!(first, 0, "{waiting}");
    assert_eq!(
        element_text(&waiting, "phase"),
        Some("waiting for participants"),
        "{waiting}"
    );
    assert_eq!(
        rendered_participants(&waiting),
        [
            ("alice".to_string(), "offline".to_string()),
            ("bob".to_string(), "offline".to_string())
        ]
    );

    let _alice = run.client("alice", "alice", &coordinator, &[])?;
    let _bob = run.client("bob", "bob", &coordinator, &[])?;
    coordinator.wait_for_log(&["round aggregated", "round=2 "], PATIENCE)?;
    let training = render(&chromium, &url)?;
    let second = rendered_round(&training)?;
    assert!(second >= 2, "after round 2 the page shows round {second}");
    assert!(
        rendered_participants(&training)
            .iter()
            .all(|(_, state)| state == "active"),
        "{:?}",
        rendered_participants(&training)
    );
    ensure!(
        training.contains("data-series=\"mean_train_loss\"") && training.contains("<path d=\"M"),
        "no loss plot in {training}"
    );

    // Later: the counter has moved on.
    coordinator.wait_for_log(
        &["round aggregated", &format!("round={} ", second + 2)],
        PATIENCE,
    )?;
    let later = render(&chromium, &url)?;
    let third = rendered_round(&later)?;
    assert!(
        third > second,
        "the round counter did not advance: {first} -> {second} -> {third}"
    );
    println!(
        "dashboard rendered rounds {first} -> {second} -> {third} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    coordinator.interrupt()?;
    coordinator.wait_success(Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn a_busy_dashboard_port_stops_the_coordinator_before_it_writes_anything() -> anyhow::Result<()> {
    let run = RunDir::new(&["alice"], &RunSpec::all(1, 1))?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = taken.local_addr()?.to_string();
    let mut coordinator = run.spawn_coordinator_with(
        "coordinator",
        "127.0.0.1:0",
        false,
        &["--dashboard", &address],
    )?;
    let status = coordinator.wait(PATIENCE)?;
    assert!(!status.success(), "{}", coordinator.log_text());
    let log = coordinator.log_text();
    assert!(
        log.contains(&format!("cannot serve the dashboard on {address}")),
        "{log}"
    );
    assert!(
        !run.out().exists() || std::fs::read_dir(run.out())?.next().is_none(),
        "the coordinator wrote into {} before failing",
        run.out().display()
    );
    Ok(())
}

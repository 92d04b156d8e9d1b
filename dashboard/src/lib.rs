//! The coordinator's live dashboard (`mpcl coordinator --dashboard ADDR`): one read-only web
//! page, refreshed every second from a JSON endpoint, showing the run's phase and round, who is
//! connected and when each participant was last heard from (by enrolment name), the updates of
//! the open round, every numeric per-round quantity of the round log as a plot, the privacy
//! spent and the recent warnings.
//!
//! - **Read-only by construction.** It reads the server's [`LiveStatus`] snapshot (a
//!   `tokio::sync::watch` value the actor publishes), the round log file and the process's
//!   [`WarningLog`]; it holds no handle that could send anything to the state machine, and
//!   serves only `GET`.
//! - **Who may look.** A random 128-bit token, made at start and printed with the URL, must come
//!   with every request (`?token=` or `Authorization: Bearer`); anything else gets 401. The
//!   listener binds where it is told: loopback is the intended use (reach it from elsewhere
//!   through an SSH tunnel); any other address logs a warning, since the page then travels as
//!   plain HTTP.
//! - **No build step.** The page is one HTML file with inline CSS, JavaScript and SVG
//!   (`dashboard/src/page.html`), compiled into the binary.
//!
//! Routes: `GET /` (the page), `GET /api/status` (the JSON the page draws; see
//! [`StatusDocument`]).

mod auth;
pub mod rounds;
pub mod warnings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mpcl_coordinator::server::{LiveStatus, Server};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use auth::Token;
pub use rounds::{RoundLogTail, Series};
pub use warnings::{Warning, WarningLayer, WarningLog};

/// How often the page asks for a new status, in milliseconds (also in the JSON, so that the page
/// and this constant cannot disagree).
pub const REFRESH_MS: u64 = 1000;

/// The page.
const PAGE: &str = include_str!("page.html");

/// Errors of the dashboard.
#[derive(Debug, Error)]
pub enum DashboardError {
    /// The TCP listener could not be bound.
    #[error("cannot serve the dashboard on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("the dashboard server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the page draws: `GET /api/status`.
#[derive(Debug, Serialize)]
pub struct StatusDocument {
    /// The coordinator's snapshot.
    pub status: Arc<LiveStatus>,
    /// Rounds in the round log.
    pub logged_rounds: usize,
    /// Every numeric per-round field of the round log.
    pub series: Vec<Series>,
    /// Why part of the round log could not be read, if it could not.
    pub round_log_problem: Option<String>,
    /// Recent warnings and errors of the coordinator's log, oldest first.
    pub warnings: Vec<Warning>,
    /// How often the page refreshes.
    pub refresh_ms: u64,
}

/// Where the dashboard reads from.
pub struct Sources {
    /// The server's snapshot ([`mpcl_coordinator::server::Server::live_status`]).
    pub live: watch::Receiver<Arc<LiveStatus>>,
    /// The run's `rounds.jsonl`.
    pub round_log: PathBuf,
    /// The warnings to show (normally [`WarningLog::global`]).
    pub warnings: WarningLog,
}

struct AppState {
    token: Token,
    live: watch::Receiver<Arc<LiveStatus>>,
    round_log: Mutex<RoundLogTail>,
    warnings: WarningLog,
}

impl AppState {
    fn document(&self) -> StatusDocument {
        let status = Arc::clone(&self.live.borrow());
        // A panic while the log was read leaves at most a partly read chunk, read again next.
        let mut log = self.round_log.lock().unwrap_or_else(|e| e.into_inner());
        log.refresh();
        StatusDocument {
            status,
            logged_rounds: log.rounds(),
            series: log.series(),
            round_log_problem: log.problem().map(str::to_string),
            warnings: self.warnings.recent(),
            refresh_ms: REFRESH_MS,
        }
    }
}

/// A bound, not yet serving dashboard. Bind it before anything else starts, so that a busy port
/// stops the coordinator before it writes anything.
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    token: Token,
}

impl Dashboard {
    /// Binds `addr` (port 0 picks a free port) and makes a fresh token. Warns when the address
    /// is not a loopback address.
    pub async fn bind(addr: SocketAddr) -> Result<Self, DashboardError> {
        if !addr.ip().is_loopback() {
            warn!(
                %addr,
                "the dashboard listens on a non-loopback address: anyone who can reach it and \
                 sees the token can read the run's status, over plain HTTP (prefer 127.0.0.1 and \
                 an SSH tunnel)"
            );
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
            token: Token::random(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The token every request must carry.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The page's address, token included.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.local_addr, self.token.as_str())
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(
        self,
        sources: Sources,
        shutdown: CancellationToken,
    ) -> Result<(), DashboardError> {
        let state = Arc::new(AppState {
            token: self.token,
            live: sources.live,
            round_log: Mutex::new(RoundLogTail::new(sources.round_log)),
            warnings: sources.warnings,
        });
        let app = router(state);
        info!(addr = %self.local_addr, "dashboard serving");
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(DashboardError::Serve)
    }
}

/// Serves `dashboard` for `server` (reading `round_log` and [`WarningLog::global`]) as a task
/// until `shutdown`. A dashboard that fails logs an error; the run goes on.
pub fn spawn_beside(
    server: &mut Server,
    dashboard: Dashboard,
    round_log: PathBuf,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let sources = Sources {
        live: server.live_status(),
        round_log,
        warnings: WarningLog::global().clone(),
    };
    tokio::spawn(async move {
        if let Err(failure) = dashboard.serve(sources, shutdown).await {
            error!(error = %failure, "the dashboard stopped; the run goes on");
        }
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ))
        .with_state(state)
}

async fn page() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    response
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    match serde_json::to_vec(&state.document()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the status: {error}"),
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

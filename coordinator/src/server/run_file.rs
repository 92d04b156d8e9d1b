//! The file `mpcl coordinator --config` reads: the run configuration ([`CoordinatorConfig`], at
//! the top level, exactly as [`CoordinatorConfig::load`] reads it) plus what only a networked
//! run needs, so that one file describes a whole run and is copied next to its results.
//!
//! ```toml
//! name = "demo"
//! seed = 7
//! rounds = 5
//! clients_per_round = 3
//! min_clients_to_aggregate = 3
//! round_deadline_secs = 300
//!
//! # Where the schema (emotion names, modalities) comes from: `synthetic` (the synthetic DMER
//! # layout), `synthetic:FACE_WIDTH`, or a dataset spec such as `larwood2019` or `dmer:DIR`,
//! # read only for its schema. Clients must hold data with exactly this schema.
//! schema = "synthetic"
//!
//! [training]
//! local_epochs = 2
//! learning_rate = 0.005
//!
//! # The network's sizes and loss weights (`mpcl_data::ModelConfig`; missing fields keep their
//! # defaults). Sent to clients in `Welcome`.
//! [model]
//! width = 16
//! prototypes_per_emotion = 2
//! memory_slots = 4
//!
//! # Transport settings (all optional).
//! [network]
//! keep_alive_secs = 5
//! idle_timeout_secs = 60
//! ```
//!
//! The `[model]` table is read into a [`ModelConfig`] here (`mpcl-data` needs no tensor library,
//! so the coordinator stays free of burn); the schema is kept as its spec, which the command line
//! resolves, and turns both into a model and an initial global state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mpcl_data::ModelConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{ConfigError, CoordinatorConfig};

/// Errors reading a run file; each names the file.
#[derive(Debug, Error)]
pub enum RunFileError {
    /// The file could not be read.
    #[error("cannot read run config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("run config {} is not valid TOML: {source}", path.display())]
    Syntax {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A section has the wrong shape (the message names the field).
    #[error("run config {}: {section}: {message}", path.display())]
    Section {
        path: PathBuf,
        section: &'static str,
        message: String,
    },
    /// The run configuration part is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Transport settings of the coordinator (`[network]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSettings {
    /// QUIC keep-alive interval in seconds (default 5): keeps connections of clients that train
    /// for minutes alive through NATs and idle timers.
    pub keep_alive_secs: f64,
    /// QUIC idle timeout in seconds (default 60): a peer silent for this long is disconnected.
    pub idle_timeout_secs: f64,
    /// How many update uploads may be received at the same time (default 4); each holds its
    /// payload in memory.
    pub max_concurrent_uploads: usize,
    /// How long a client asked to wait is told to wait before asking again, in milliseconds
    /// (default 1000). With long polling on (`long_poll_secs` above zero) only the fallback for
    /// waits answered at once.
    pub poll_interval_ms: u64,
    /// Seconds a `RequestWork` with nothing to do yet is held open (default 20; 0 answers
    /// `Wait` at once): it is answered the moment a round opens for the client, so a client
    /// whose update is in gets the next round without polling. Keep it below the clients'
    /// request timeout (10 minutes by default).
    pub long_poll_secs: f64,
    /// Seconds one request may take to arrive completely (default 300); a stalled upload is
    /// dropped after this.
    pub request_timeout_secs: f64,
    /// Per-stream receive window in bytes (default 4 MiB; quinn's default of 1.25 MB limits
    /// uploads over long links).
    pub stream_receive_window: u64,
    /// Receive buffer of the coordinator's UDP socket in bytes (default 4 MiB). Many clients
    /// uploading at once arrive as one burst of datagrams; a buffer too small for it drops
    /// packets, and QUIC's loss recovery stalls each round by tens of milliseconds. The
    /// operating system caps it (on Linux at `net.core.rmem_max`, often 208 KiB); the
    /// coordinator warns when it got less than asked.
    pub udp_receive_buffer_bytes: usize,
    /// Seconds the coordinator keeps answering `Finished` after the last round before it exits
    /// even if clients are still connected (default 10).
    pub finish_grace_secs: f64,
    /// Under secure aggregation, seconds the coordinator waits for each key-setup and unmasking
    /// step of a round's session (default 30); the masked inputs are awaited until
    /// `2 x secure_step_timeout_secs` before the round's deadline, so `round_deadline_secs`
    /// must exceed `3 x secure_step_timeout_secs`. Clients still missing when a step closes are
    /// left out of the session (those that already masked stay in the sum).
    pub secure_step_timeout_secs: f64,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        Self {
            keep_alive_secs: 5.0,
            idle_timeout_secs: 60.0,
            max_concurrent_uploads: 4,
            poll_interval_ms: 1000,
            long_poll_secs: 20.0,
            request_timeout_secs: 300.0,
            stream_receive_window: 4 << 20,
            udp_receive_buffer_bytes: 4 << 20,
            finish_grace_secs: 10.0,
            secure_step_timeout_secs: 30.0,
        }
    }
}

impl NetworkSettings {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(format!("`{name}` is {value}, must be a positive number"))
            }
        };
        positive("keep_alive_secs", self.keep_alive_secs)?;
        positive("idle_timeout_secs", self.idle_timeout_secs)?;
        positive("request_timeout_secs", self.request_timeout_secs)?;
        positive("finish_grace_secs", self.finish_grace_secs)?;
        positive("secure_step_timeout_secs", self.secure_step_timeout_secs)?;
        if self.udp_receive_buffer_bytes == 0 {
            return Err("`udp_receive_buffer_bytes` is 0, must be positive".into());
        }
        if self.keep_alive_secs >= self.idle_timeout_secs {
            return Err(format!(
                "`keep_alive_secs` ({}) must be below `idle_timeout_secs` ({}), or idle \
                 connections are dropped between keep-alives",
                self.keep_alive_secs, self.idle_timeout_secs
            ));
        }
        if self.idle_timeout_secs > 3600.0 {
            return Err(format!(
                "`idle_timeout_secs` is {}, at most 3600 is supported",
                self.idle_timeout_secs
            ));
        }
        if !(self.long_poll_secs.is_finite() && (0.0..=3600.0).contains(&self.long_poll_secs)) {
            return Err(format!(
                "`long_poll_secs` is {}, must be between 0 and 3600",
                self.long_poll_secs
            ));
        }
        if self.max_concurrent_uploads == 0 {
            return Err("`max_concurrent_uploads` must be at least 1".into());
        }
        if self.poll_interval_ms == 0 {
            return Err("`poll_interval_ms` must be at least 1".into());
        }
        if self.stream_receive_window < 64 * 1024 || self.stream_receive_window > (1 << 30) {
            return Err(format!(
                "`stream_receive_window` is {}, must be between 64 KiB and 1 GiB",
                self.stream_receive_window
            ));
        }
        Ok(())
    }

    /// [`Self::keep_alive_secs`] as a duration.
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs_f64(self.keep_alive_secs)
    }

    /// [`Self::idle_timeout_secs`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_secs)
    }

    /// [`Self::long_poll_secs`] as a duration (zero: no long polling).
    pub fn long_poll(&self) -> Duration {
        Duration::from_secs_f64(self.long_poll_secs)
    }

    /// [`Self::request_timeout_secs`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout_secs)
    }

    /// [`Self::secure_step_timeout_secs`] in milliseconds.
    pub fn secure_step_timeout_ms(&self) -> u64 {
        (self.secure_step_timeout_secs * 1000.0).round() as u64
    }

    /// [`Self::finish_grace_secs`] as a duration.
    pub fn finish_grace(&self) -> Duration {
        Duration::from_secs_f64(self.finish_grace_secs)
    }
}

/// A parsed run file.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFile {
    /// The run configuration (every top-level key except `schema`, `[model]` and `[network]`).
    pub coordinator: CoordinatorConfig,
    /// The schema spec (`schema = ...`; default `synthetic`).
    pub schema: String,
    /// The `[model]` table (every field at its default when absent).
    pub model: ModelConfig,
    /// The `[network]` table.
    pub network: NetworkSettings,
    /// The file's text, as read (what is saved next to the results).
    pub text: String,
}

impl RunFile {
    /// Reads and checks a run file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, RunFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RunFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses run-file text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RunFileError> {
        let section = |section: &'static str, message: String| RunFileError::Section {
            path: path.to_path_buf(),
            section,
            message,
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|source| RunFileError::Syntax {
                path: path.to_path_buf(),
                source,
            })?;
        let schema = match table.remove("schema") {
            None => "synthetic".to_string(),
            Some(toml::Value::String(spec)) if !spec.trim().is_empty() => spec.trim().to_string(),
            Some(other) => {
                return Err(section(
                    "schema",
                    format!("must be a non-empty string such as \"synthetic\", found {other}"),
                ));
            }
        };
        let model = match table.remove("model") {
            None => ModelConfig::default(),
            Some(toml::Value::Table(model)) => toml::Value::Table(model)
                .try_into::<ModelConfig>()
                .map_err(|e| section("[model]", e.message().to_string()))?,
            Some(other) => {
                return Err(section(
                    "[model]",
                    format!("must be a table, found {}", other.type_str()),
                ));
            }
        };
        let network = match table.remove("network") {
            None => NetworkSettings::default(),
            Some(value) => value
                .try_into::<NetworkSettings>()
                .map_err(|e| section("[network]", e.message().to_string()))?,
        };
        network
            .validate()
            .map_err(|message| section("[network]", message))?;
        let coordinator: CoordinatorConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| section("run configuration", e.message().to_string()))?;
        coordinator.validate().map_err(|err| match err {
            ConfigError::Invalid { field, message, .. } => ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                field,
                message,
            },
            other => other,
        })?;
        Ok(Self {
            coordinator,
            schema,
            model,
            network,
            text: text.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunFile, RunFileError> {
        RunFile::parse(text, Path::new("run.toml"))
    }

    #[test]
    fn splits_the_sections() {
        let file = parse(
            r#"
name = "demo"
rounds = 3
min_clients_to_aggregate = 2
schema = "larwood2019"

[training]
local_epochs = 2

[model]
width = 16
scales = [1, 2]

[network]
keep_alive_secs = 2
"#,
        )
        .unwrap();
        assert_eq!(file.coordinator.name, "demo");
        assert_eq!(file.coordinator.rounds, 3);
        assert_eq!(file.coordinator.training.local_epochs, 2);
        assert_eq!(file.schema, "larwood2019");
        assert_eq!(file.model.width, 16);
        assert_eq!(file.model.scales, vec![1, 2]);
        assert_eq!(
            file.model.memory_slots,
            ModelConfig::default().memory_slots,
            "a field left out keeps its default"
        );
        assert_eq!(file.network.keep_alive_secs, 2.0);
        assert_eq!(file.network.idle_timeout_secs, 60.0);
    }

    #[test]
    fn defaults_when_sections_are_missing() {
        let file = parse("rounds = 1\n").unwrap();
        assert_eq!(file.schema, "synthetic");
        assert_eq!(file.model, ModelConfig::default());
        assert_eq!(file.network, NetworkSettings::default());
    }

    #[test]
    fn unknown_fields_are_errors_naming_them() {
        let err = parse("rounds = 1\nround = 2\n").unwrap_err();
        assert!(err.to_string().contains("round"), "{err}");
        let err = parse("[network]\nkeepalive = 1\n").unwrap_err();
        assert!(err.to_string().contains("keepalive"), "{err}");
        let err = parse("schema = 3\n").unwrap_err();
        assert!(err.to_string().contains("schema"), "{err}");
        let err = parse("[model]\nwidht = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("[model]") && text.contains("widht"), "{text}");
        let err = parse("[model]\nwidth = \"wide\"\n").unwrap_err();
        assert!(err.to_string().contains("[model]"), "{err}");
    }

    #[test]
    fn network_ranges_are_checked() {
        let err = parse("[network]\nkeep_alive_secs = 90\nidle_timeout_secs = 60\n").unwrap_err();
        assert!(err.to_string().contains("keep_alive_secs"), "{err}");
        let err = parse("[network]\nmax_concurrent_uploads = 0\n").unwrap_err();
        assert!(err.to_string().contains("max_concurrent_uploads"), "{err}");
        let err = parse("[network]\nudp_receive_buffer_bytes = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("udp_receive_buffer_bytes"),
            "{err}"
        );
    }

    #[test]
    fn invalid_run_values_name_the_file() {
        let err = parse("rounds = 0\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("run.toml") && text.contains("rounds"),
            "{text}"
        );
    }
}

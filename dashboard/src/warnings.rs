//! The coordinator's recent warnings and errors, for the dashboard: a `tracing` layer that keeps
//! the last [`CAPACITY`] events at level WARN or above in memory.
//!
//! The layer sits in the process's subscriber next to the log output (see `mpcl`'s
//! `init_tracing`), so the dashboard shows exactly the warnings the log shows, whichever part of
//! the server raised them (a rejected update in a connection task, a round extended by the
//! actor), without any of them knowing about the dashboard. Events filtered out by `RUST_LOG`
//! never reach it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Warnings kept; older ones are dropped.
pub const CAPACITY: usize = 50;

/// One warning or error.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Warning {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message followed by its fields (`key=value`), as a log line shows them.
    pub message: String,
}

/// A bounded, shared list of recent warnings.
#[derive(Clone, Debug, Default)]
pub struct WarningLog {
    entries: Arc<Mutex<VecDeque<Warning>>>,
}

impl WarningLog {
    /// The process-wide log that `mpcl` installs in its subscriber.
    pub fn global() -> &'static WarningLog {
        static GLOBAL: OnceLock<WarningLog> = OnceLock::new();
        GLOBAL.get_or_init(WarningLog::default)
    }

    /// A layer that records into this log.
    pub fn layer(&self) -> WarningLayer {
        WarningLayer { log: self.clone() }
    }

    /// The recorded warnings, oldest first.
    pub fn recent(&self) -> Vec<Warning> {
        self.lock().iter().cloned().collect()
    }

    fn push(&self, warning: Warning) {
        let mut entries = self.lock();
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(warning);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Warning>> {
        // A panic while holding the lock cannot leave the list inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `tracing` layer of a [`WarningLog`].
pub struct WarningLayer {
    log: WarningLog,
}

impl<S: Subscriber> Layer<S> for WarningLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        // Levels compare by verbosity: ERROR < WARN < INFO.
        if *metadata.level() > Level::WARN {
            return;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        self.log.push(Warning {
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            level: metadata.level().to_string(),
            target: metadata.target().to_string(),
            message: text.finish(),
        });
    }
}

#[derive(Default)]
struct MessageText {
    message: String,
    fields: String,
}

impl MessageText {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn keeps_warnings_and_errors_with_their_fields_and_drops_the_oldest() {
        let log = WarningLog::default();
        let subscriber = tracing_subscriber::registry().with(log.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            tracing::warn!(participant = "alice", round = 3, "rejected update");
            tracing::error!("aggregation failed");
        });
        let kept = log.recent();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].level, "WARN");
        assert_eq!(
            kept[0].message,
            "rejected update participant=\"alice\" round=3"
        );
        assert_eq!(kept[1].level, "ERROR");
        assert_eq!(kept[1].message, "aggregation failed");

        let subscriber = tracing_subscriber::registry().with(log.layer());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..CAPACITY {
                tracing::warn!(i, "again");
            }
        });
        let kept = log.recent();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].message, "again i=0");
        assert_eq!(
            kept[CAPACITY - 1].message,
            format!("again i={}", CAPACITY - 1)
        );
    }
}

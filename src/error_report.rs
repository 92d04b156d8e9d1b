//! How a failed command reports its error: the message and then each cause on a line of its
//! own, leaving out a cause whose text the line before it already holds.
//!
//! Many library errors name their cause in their own message and keep it as their `source`
//! (`#[error("cannot split dataset: {0}")]` with `#[from]`), so that a caller printing only
//! the message still sees why; printing the whole chain would then say everything twice. With
//! `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` set, anyhow's own report (with the backtrace) is
//! printed instead.

use std::fmt::Write;

/// The report of `error` (see the module documentation), without a trailing newline.
pub fn report(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error}");
    let mut previous = error.to_string();
    for cause in error.chain().skip(1) {
        let line = cause.to_string();
        if !previous.contains(&line) {
            let _ = write!(text, "\n  caused by: {line}");
        }
        previous = line;
    }
    text
}

/// Whether the user asked for backtraces.
pub fn backtraces_wanted() -> bool {
    ["RUST_BACKTRACE", "RUST_LIB_BACKTRACE"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| v != "0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("no validation trial")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot split dataset: {0}")]
    struct Outer(#[from] Inner);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let error = anyhow::Error::from(Outer(Inner)).context("simulation failed");
        assert_eq!(
            report(&error),
            "error: simulation failed\n  caused by: cannot split dataset: no validation trial"
        );
    }

    #[test]
    fn a_cause_not_in_the_message_is_listed() {
        let error = anyhow::Error::from(Inner).context("cannot open `x`");
        assert_eq!(
            report(&error),
            "error: cannot open `x`\n  caused by: no validation trial"
        );
    }
}

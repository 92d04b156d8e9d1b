//! Progress of a simulation as people and machines can follow it: a progress bar on a terminal,
//! and where there is none (nohup, ssh without a TTY, CI, a log file) one plain line per arm and
//! round on stdout, printed as the round finishes, so that a long run is never minutes of
//! silence.

use std::io::Write;

/// How the rounds of a simulation are reported.
pub struct RoundProgress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    rounds: u64,
}

impl RoundProgress {
    /// `enabled`: report at all. A bar when stderr is a terminal, else lines on stdout.
    /// `total`: arm-rounds in the whole run; `rounds`: rounds per arm.
    pub fn new(enabled: bool, total: usize, rounds: u64) -> Self {
        if !enabled {
            return Self {
                bar: None,
                lines: false,
                rounds,
            };
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        if bar.is_hidden() {
            return Self {
                bar: None,
                lines: true,
                rounds,
            };
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "[{bar:30}] {pos}/{len} arm-rounds {elapsed} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        Self {
            bar: Some(bar),
            lines: false,
            rounds,
        }
    }

    /// One arm finished one round (of the partition named `partition` when there are several).
    pub fn round(&self, arm: &str, partition: Option<&str>, round: u64, kl: f64, seconds: f64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("{arm} round {round}: KL {kl:.4}"));
        }
        if self.lines {
            println!(
                "{}",
                round_line(arm, partition, round, self.rounds, kl, seconds)
            );
            let _ = std::io::stdout().flush();
        }
    }

    /// The run is over: the bar goes away (the final table follows).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The line printed for a round without a terminal.
pub fn round_line(
    arm: &str,
    partition: Option<&str>,
    round: u64,
    rounds: u64,
    kl: f64,
    seconds: f64,
) -> String {
    let part = partition.map(|p| format!(" [{p}]")).unwrap_or_default();
    format!("round {round}/{rounds} {arm}{part}: KL {kl:.4} ({seconds:.1} s)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_line_names_the_arm_round_and_kl() {
        assert_eq!(
            round_line("federated MPCL", None, 3, 20, 0.84631, 1.31),
            "round 3/20 federated MPCL: KL 0.8463 (1.3 s)"
        );
        assert_eq!(
            round_line("label prior", Some("fold-2"), 1, 2, 1.0, 0.0),
            "round 1/2 label prior [fold-2]: KL 1.0000 (0.0 s)"
        );
    }
}

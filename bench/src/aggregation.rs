//! Aggregation time per round versus the number of clients and the parameter count, in-process:
//! the coordinator's own [`RoundAggregator`] (FedAvg) folding synthetic updates in and finishing
//! the round, through its public API only (`new`, `add`, `finish`).

use mpcl_coordinator::{AggregationConfig, AggregationRule, RoundAggregator};
use serde::{Deserialize, Serialize};

use crate::BenchError;
use crate::stats::{median, seconds};
use crate::synthetic_state::{client_update, global_state};

/// One (clients, parameters) cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregationRow {
    pub clients: usize,
    pub parameters: usize,
    /// Median seconds to add every update and finish the round.
    pub seconds: f64,
    /// `seconds` per client, in microseconds.
    pub micros_per_client: f64,
    /// Every repetition, in seconds.
    pub runs: Vec<f64>,
}

/// Distinct updates cycled through (generating 1,000 x 1e6 random values would measure the
/// generator, not the aggregator).
const POOL: usize = 4;

/// Measures every combination `repeats` times.
pub fn measure(
    clients: &[usize],
    parameters: &[usize],
    repeats: usize,
) -> Result<Vec<AggregationRow>, BenchError> {
    let config = AggregationConfig::default();
    let mut rows = Vec::new();
    for &p in parameters {
        let global = global_state(p);
        let pool: Vec<_> = (0..POOL)
            .map(|i| client_update(&global, [0; 16], 1, i as u64))
            .collect();
        for &n in clients {
            let mut runs = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let (result, secs) = seconds(|| {
                    let mut aggregator = RoundAggregator::new(&global, &AggregationRule::FedAvg);
                    for i in 0..n {
                        aggregator.add(&pool[i % POOL])?;
                    }
                    aggregator.finish(&global, &config, &mut None)
                });
                let aggregate = result.map_err(|e| BenchError::Measure {
                    what: format!("aggregation of {n} clients x {p} parameters"),
                    message: e.to_string(),
                })?;
                std::hint::black_box(aggregate);
                runs.push(secs);
            }
            let secs = median(&runs);
            rows.push(AggregationRow {
                clients: n,
                parameters: p,
                seconds: secs,
                micros_per_client: 1e6 * secs / n as f64,
                runs,
            });
        }
    }
    Ok(rows)
}

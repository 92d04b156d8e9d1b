//! Why an update is refused, and the content checks every update passes before it may touch the
//! global model.
//!
//! The transport has already checked the signature; what remains is whether the update belongs
//! here (run, round, sampled, first answer) — judged by the state machine — and whether its
//! content fits the global state and is sane (layout, finite, bounded, valid statistics) — judged
//! here. A refused update never reaches an accumulator, so one bad client cannot spoil a round.

use std::collections::BTreeSet;

use mpcl_protocol::messages::{ClientUpdate, GlobalState};
use mpcl_protocol::metrics::EvaluationReport;

use crate::config::UpdateLimits;
use crate::exact_sum::MAX_ADDEND;

pub use mpcl_protocol::RejectReason;

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks an update's content against the global state it was trained from and the limits.
///
/// Does not look at run id or round (the state machine does). On success the update can be
/// accumulated without any further error.
pub fn validate_update(
    global: &GlobalState,
    update: &ClientUpdate,
    limits: &UpdateLimits,
) -> Result<(), RejectReason> {
    if update.sample_count == 0 {
        return Err(RejectReason::ZeroSamples);
    }
    if update.sample_count > limits.max_sample_count {
        return Err(RejectReason::Oversized {
            what: "sample count".into(),
            value: update.sample_count as f64,
            limit: limits.max_sample_count as f64,
        });
    }

    if let Some(report) = &update.evaluation {
        let values = report.to_values();
        EvaluationReport::from_values(&values)
            .map_err(|e| RejectReason::InvalidEvaluation(e.to_string()))?;
        if let Some(value) = values.iter().find(|v| v.abs() > MAX_ADDEND) {
            return Err(RejectReason::InvalidEvaluation(format!(
                "{value} is above {MAX_ADDEND}"
            )));
        }
    }

    global
        .parameters
        .check_same_layout(&update.delta)
        .map_err(|e| RejectReason::LayoutMismatch(format!("encoder delta: {e}")))?;
    for tensor in &update.delta.tensors {
        if tensor.shape_len() != Some(tensor.values.len()) {
            return Err(RejectReason::LayoutMismatch(format!(
                "delta `{}` has {} values for shape {:?}",
                tensor.name,
                tensor.values.len(),
                tensor.shape
            )));
        }
        let Some(largest) = tensor.values.largest_magnitude().map(f64::from) else {
            return Err(RejectReason::NonFinite(format!(
                "encoder delta `{}`",
                tensor.name
            )));
        };
        if largest > limits.max_abs_value {
            return Err(RejectReason::Oversized {
                what: format!("largest |value| of encoder delta `{}`", tensor.name),
                value: largest,
                limit: limits.max_abs_value,
            });
        }
    }
    if let Some(limit) = limits.max_update_norm {
        let norm = update.delta.l2_norm();
        if norm > limit {
            return Err(RejectReason::Oversized {
                what: "encoder delta L2 norm".into(),
                value: norm,
                limit,
            });
        }
    }

    let mut seen = BTreeSet::new();
    for stats in &update.prototypes {
        if !seen.insert(stats.group.as_str()) {
            return Err(RejectReason::InvalidStatistics(format!(
                "prototype statistics of group `{}` sent twice",
                stats.group
            )));
        }
        let Some(bank) = global.prototypes.iter().find(|b| b.group == stats.group) else {
            return Err(RejectReason::LayoutMismatch(format!(
                "prototype statistics for group `{}`, which has no global bank",
                stats.group
            )));
        };
        if (stats.emotions, stats.prototypes, stats.width)
            != (bank.emotions, bank.prototypes, bank.width)
        {
            return Err(RejectReason::LayoutMismatch(format!(
                "prototype statistics of group `{}` are {}x{}x{}, the global bank is {}x{}x{}",
                stats.group,
                stats.emotions,
                stats.prototypes,
                stats.width,
                bank.emotions,
                bank.prototypes,
                bank.width
            )));
        }
        let (Some(largest_sum), Some(largest_weight)) = (
            stats.sum.largest_magnitude(),
            stats.weight.largest_magnitude(),
        ) else {
            return Err(RejectReason::NonFinite(format!(
                "prototype statistics of group `{}`",
                stats.group
            )));
        };
        stats
            .validate()
            .map_err(|e| RejectReason::InvalidStatistics(e.to_string()))?;
        within_summable_range(
            &format!("prototype statistics of group `{}`", stats.group),
            largest_sum.max(largest_weight),
        )?;
    }

    let co = &update.cooccurrence;
    if co.emotions != global.cooccurrence.emotions {
        return Err(RejectReason::LayoutMismatch(format!(
            "co-occurrence statistics for {} emotions, the run has {}",
            co.emotions, global.cooccurrence.emotions
        )));
    }
    let Some(largest) = co.sum.largest_magnitude().filter(|_| co.count.is_finite()) else {
        return Err(RejectReason::NonFinite("co-occurrence statistics".into()));
    };
    co.validate()
        .map_err(|e| RejectReason::InvalidStatistics(e.to_string()))?;
    within_summable_range("co-occurrence statistics", largest)?;
    if co.count > MAX_ADDEND {
        return Err(RejectReason::Oversized {
            what: "co-occurrence sample count".into(),
            value: co.count,
            limit: MAX_ADDEND,
        });
    }
    Ok(())
}

/// Statistics are summed exactly ([`crate::exact_sum`]), which bounds each value: `largest` is
/// their largest magnitude.
fn within_summable_range(what: &str, largest: f32) -> Result<(), RejectReason> {
    let largest = f64::from(largest);
    if largest > MAX_ADDEND {
        return Err(RejectReason::Oversized {
            what: format!("largest |value| of {what}"),
            value: largest,
            limit: MAX_ADDEND,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{global, update};

    #[test]
    fn a_well_formed_update_passes() {
        let g = global();
        assert_eq!(
            validate_update(&g, &update(&g, 1, 5, 0.5), &UpdateLimits::default()),
            Ok(())
        );
    }

    #[test]
    fn each_problem_gets_its_reason() {
        let g = global();
        let limits = UpdateLimits {
            max_update_norm: Some(100.0),
            ..UpdateLimits::default()
        };
        let check = |edit: &dyn Fn(&mut ClientUpdate)| {
            let mut u = update(&g, 1, 5, 0.5);
            edit(&mut u);
            validate_update(&g, &u, &limits).unwrap_err()
        };
        assert_eq!(check(&|u| u.sample_count = 0), RejectReason::ZeroSamples);
        assert!(matches!(
            check(&|u| u.sample_count = u64::MAX),
            RejectReason::Oversized { .. }
        ));
        assert!(matches!(
            check(&|u| u.delta.tensors[0].values.0[0] = f32::NAN),
            RejectReason::NonFinite(_)
        ));
        assert!(matches!(
            check(&|u| u.delta.tensors[0].values.0[0] = f32::INFINITY),
            RejectReason::NonFinite(_)
        ));
        assert!(matches!(
            check(&|u| u.delta.tensors[0].values.0[0] = 1e5),
            RejectReason::Oversized { .. }
        ));
        assert!(matches!(
            check(&|u| u.delta.tensors[0].values.0.fill(90.0)),
            RejectReason::Oversized { .. }
        ));
        assert!(matches!(
            check(&|u| u.delta.tensors[0].name = "other".into()),
            RejectReason::LayoutMismatch(_)
        ));
        assert!(matches!(
            check(&|u| u.delta.tensors.pop().map(|_| ()).unwrap_or(())),
            RejectReason::LayoutMismatch(_)
        ));
        assert!(matches!(
            check(&|u| u.prototypes[0].group = "behavioral".into()),
            RejectReason::LayoutMismatch(_)
        ));
        assert!(matches!(
            check(&|u| u.prototypes.push(u.prototypes[0].clone())),
            RejectReason::InvalidStatistics(_)
        ));
        assert!(matches!(
            check(&|u| u.prototypes[0].weight.0[0] = -1.0),
            RejectReason::InvalidStatistics(_)
        ));
        assert!(matches!(
            check(&|u| u.prototypes[0].sum.0.push(1.0)),
            RejectReason::InvalidStatistics(_)
        ));
        assert!(matches!(
            check(&|u| u.prototypes[0].sum.0[0] = f32::NAN),
            RejectReason::NonFinite(_)
        ));
        assert!(matches!(
            check(&|u| u.cooccurrence.count = f64::NAN),
            RejectReason::NonFinite(_)
        ));
        assert!(matches!(
            check(&|u| u.cooccurrence = mpcl_protocol::CooccurrenceStatistics::zeros(3)),
            RejectReason::LayoutMismatch(_)
        ));
    }

    #[test]
    fn reasons_read_well() {
        let reason = RejectReason::WrongRun {
            expected: [0xab; 16],
            found: [0; 16],
        };
        assert!(reason.to_string().contains("abababab"));
        assert_eq!(
            RejectReason::StaleRound {
                round: 2,
                current: 3
            }
            .to_string(),
            "update is for round 2, which is over (current round 3)"
        );
    }
}

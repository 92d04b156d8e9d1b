//! The numeric parts of a [`ClientUpdate`] as one vector of words, and the unmasked sum of such
//! vectors back as summed statistics.
//!
//! Everything the coordinator aggregates is a sum, so it can all be masked at once:
//!
//! | segment | values | kind |
//! |---|---|---|
//! | `delta` | `w * delta` (the FedAvg numerator: the client pre-multiplies by its weight `w`) | real |
//! | `prototypes.<group>.sum` / `.weight` | S and W of each group, in the global state's order | real |
//! | `cooccurrence.sum` | sum of d d^T | real |
//! | `cooccurrence.count` | its sample count | count |
//! | `weight` | `w` (the FedAvg denominator) | count |
//! | `evaluation.*` | the federated-evaluation report's sums and counts (rounds that evaluate) | wide / count |
//!
//! The coordinator divides the summed `delta` by the summed `weight` ([`SummedUpdate::mean_delta`])
//! and feeds the summed statistics to the same prototype and co-occurrence code as in plain mode.
//! `w` is the sample count for FedAvg; with differential privacy it must be 1 (every client the
//! same weight), because the noise is calibrated to one client's clipped contribution.
//!
//! A metric sum grows with the participant's sample count (thousands of windows times a KL of a
//! few nats), past what one scaled word may hold for a large cohort. Each one therefore travels
//! as two count words, `floor(v * 2^16) >> 16` and its low 16 bits, summed separately and joined
//! after unmasking: the same resolution as a real value, with the range of a count.
//!
//! Protects against nothing by itself: it only decides what goes into the masked vector. What it
//! puts there is hidden by the masks; what it does **not** carry stays outside them: local metrics (they are not summed; under secure
//! aggregation a client sends none, or only coarse ones outside the masked vector).

use std::ops::Range;

use thiserror::Error;

use super::quantize::{QuantizationError, Quantizer, ValueKind};
use crate::messages::{ClientUpdate, GlobalState};
use crate::metrics::EvaluationReport;
use crate::stats::{CooccurrenceStatistics, PrototypeStatistics};
use crate::vector::F32Vec;

/// Errors from laying out an update or reading a sum back.
#[derive(Debug, Error, PartialEq)]
pub enum LayoutError {
    /// The update does not have the layout's shape.
    #[error("update does not fit the secure-aggregation layout: {0}")]
    Mismatch(String),
    /// A value could not be quantised.
    #[error(transparent)]
    Quantization(#[from] QuantizationError),
    /// A summed vector has the wrong length.
    #[error("summed vector has {found} words, the layout {expected}")]
    WrongLength { expected: usize, found: usize },
}

/// The shape of one group's prototype statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrototypeShape {
    pub group: String,
    pub emotions: usize,
    pub prototypes: usize,
    pub width: usize,
}

/// One named part of the vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// For example `delta` or `prototypes.physiological.sum`.
    pub name: String,
    /// Its words in the vector.
    pub range: Range<usize>,
    /// How its values are quantised.
    pub kind: ValueKind,
}

/// Where each part of an update lives in the masked vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateLayout {
    /// Values in the encoder delta.
    pub delta_len: usize,
    /// Prototype statistics, one per group of the global state, in its order.
    pub prototypes: Vec<PrototypeShape>,
    /// Emotions of the co-occurrence statistics.
    pub cooccurrence_emotions: usize,
    /// The vector ends with an evaluation report ([`EvaluationReport`]; zeros from a
    /// participant that did not evaluate).
    pub evaluation: bool,
}

/// Fixed-point resolution of an evaluation sum: the same as a real value's default scale.
const EVALUATION_SCALE: f64 = 65_536.0;
/// Bits of an evaluation value's fixed-point form in its low word (the rest are in its high
/// word).
const LOW_WORD_BITS: u32 = 16;

/// The unmasked sum of a round's vectors, as statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct SummedUpdate {
    /// `sum_i w_i * delta_i`, one value per parameter.
    pub weighted_delta_sum: Vec<f64>,
    /// Summed prototype statistics, one per group of the layout.
    pub prototypes: Vec<PrototypeStatistics>,
    /// Summed co-occurrence statistics.
    pub cooccurrence: CooccurrenceStatistics,
    /// `sum_i w_i`.
    pub total_weight: f64,
    /// How many clients' vectors are in the sum.
    pub contributors: usize,
    /// The summed evaluation reports in [`EvaluationReport::to_values`]' layout (layouts with
    /// an evaluation segment only).
    pub evaluation: Option<Vec<f64>>,
}

impl SummedUpdate {
    /// `sum w_i delta_i / sum w_i`, or `None` when the total weight is zero.
    pub fn mean_delta(&self) -> Option<Vec<f64>> {
        (self.total_weight > 0.0).then(|| {
            self.weighted_delta_sum
                .iter()
                .map(|v| v / self.total_weight)
                .collect()
        })
    }
}

impl UpdateLayout {
    /// The layout of updates trained from `state`.
    pub fn of_global(state: &GlobalState) -> Self {
        Self {
            delta_len: state.parameters.value_count(),
            prototypes: state
                .prototypes
                .iter()
                .map(|b| PrototypeShape {
                    group: b.group.clone(),
                    emotions: b.emotions,
                    prototypes: b.prototypes,
                    width: b.width,
                })
                .collect(),
            cooccurrence_emotions: state.cooccurrence.emotions,
            evaluation: false,
        }
    }

    /// The same layout followed by an evaluation report, or not.
    pub fn with_evaluation(mut self, evaluation: bool) -> Self {
        self.evaluation = evaluation;
        self
    }

    /// The named segments, in vector order.
    pub fn segments(&self) -> Vec<Segment> {
        let mut segments = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, len: usize, kind: ValueKind| {
            segments.push(Segment {
                name,
                range: offset..offset + len,
                kind,
            });
            offset += len;
        };
        push("delta".into(), self.delta_len, ValueKind::Real);
        for shape in &self.prototypes {
            let cells = shape.emotions * shape.prototypes;
            push(
                format!("prototypes.{}.sum", shape.group),
                cells * shape.width,
                ValueKind::Real,
            );
            push(
                format!("prototypes.{}.weight", shape.group),
                cells,
                ValueKind::Real,
            );
        }
        let c = self.cooccurrence_emotions;
        push("cooccurrence.sum".into(), c * c, ValueKind::Real);
        push("cooccurrence.count".into(), 1, ValueKind::Count);
        push("weight".into(), 1, ValueKind::Count);
        if self.evaluation {
            // Per value: the high and the low word of its fixed-point form.
            push(
                "evaluation".into(),
                2 * EvaluationReport::LEN,
                ValueKind::Count,
            );
        }
        segments
    }

    /// Total number of words.
    pub fn len(&self) -> usize {
        self.segments().last().map_or(0, |s| s.range.end)
    }

    /// Whether the layout has no words (never: the counts are always there).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The update's numeric parts as words, its delta multiplied by `weight` (the sample count
    /// for FedAvg, 1 under differential privacy). A group missing from the update counts as zero
    /// statistics; a group the layout does not know, or a shape mismatch, is an error.
    pub fn encode(
        &self,
        update: &ClientUpdate,
        weight: u64,
        quantizer: &Quantizer,
    ) -> Result<Vec<u32>, LayoutError> {
        if update.delta.value_count() != self.delta_len {
            return Err(LayoutError::Mismatch(format!(
                "delta has {} values, the layout {}",
                update.delta.value_count(),
                self.delta_len
            )));
        }
        for stats in &update.prototypes {
            let Some(shape) = self.prototypes.iter().find(|s| s.group == stats.group) else {
                return Err(LayoutError::Mismatch(format!(
                    "no prototype bank for group `{}`",
                    stats.group
                )));
            };
            if (shape.emotions, shape.prototypes, shape.width)
                != (stats.emotions, stats.prototypes, stats.width)
                || stats.sum.len() != shape.emotions * shape.prototypes * shape.width
                || stats.weight.len() != shape.emotions * shape.prototypes
            {
                return Err(LayoutError::Mismatch(format!(
                    "prototype statistics of group `{}` do not fit",
                    stats.group
                )));
            }
            if update
                .prototypes
                .iter()
                .filter(|s| s.group == stats.group)
                .count()
                > 1
            {
                return Err(LayoutError::Mismatch(format!(
                    "prototype statistics of group `{}` appear twice",
                    stats.group
                )));
            }
        }
        let c = self.cooccurrence_emotions;
        if update.cooccurrence.emotions != c || update.cooccurrence.sum.len() != c * c {
            return Err(LayoutError::Mismatch(
                "co-occurrence statistics do not fit".into(),
            ));
        }

        let mut words = Vec::with_capacity(self.len());
        let w = weight as f64;
        quantizer.quantize_into(
            update.delta.iter_values().map(|v| w * f64::from(v)),
            ValueKind::Real,
            "delta",
            &mut words,
        )?;
        for shape in &self.prototypes {
            let cells = shape.emotions * shape.prototypes;
            match update.prototypes.iter().find(|s| s.group == shape.group) {
                Some(stats) => {
                    quantizer.quantize_into(
                        stats.sum.0.iter().map(|v| f64::from(*v)),
                        ValueKind::Real,
                        &format!("prototypes.{}.sum", shape.group),
                        &mut words,
                    )?;
                    quantizer.quantize_into(
                        stats.weight.0.iter().map(|v| f64::from(*v)),
                        ValueKind::Real,
                        &format!("prototypes.{}.weight", shape.group),
                        &mut words,
                    )?;
                }
                None => words.extend(std::iter::repeat_n(0, cells * (shape.width + 1))),
            }
        }
        quantizer.quantize_into(
            update.cooccurrence.sum.0.iter().map(|v| f64::from(*v)),
            ValueKind::Real,
            "cooccurrence.sum",
            &mut words,
        )?;
        quantizer.quantize_into(
            [update.cooccurrence.count],
            ValueKind::Count,
            "cooccurrence.count",
            &mut words,
        )?;
        quantizer.quantize_into([w], ValueKind::Count, "weight", &mut words)?;
        if self.evaluation {
            let values = update
                .evaluation
                .map_or_else(|| vec![0.0; EvaluationReport::LEN], |r| r.to_values());
            // The report's own check: finite, non-negative, whole counts.
            EvaluationReport::from_values(&values)
                .map_err(|e| LayoutError::Mismatch(format!("evaluation report: {e}")))?;
            let low_mask = (1u64 << LOW_WORD_BITS) - 1;
            let mut wide = Vec::with_capacity(2 * values.len());
            for value in values {
                let fixed = (value * EVALUATION_SCALE).round() as u64;
                wide.push((fixed >> LOW_WORD_BITS) as f64);
                wide.push((fixed & low_mask) as f64);
            }
            quantizer.quantize_into(wide, ValueKind::Count, "evaluation", &mut words)?;
        }
        debug_assert_eq!(words.len(), self.len());
        Ok(words)
    }

    /// Reads an unmasked sum of `contributors` vectors back (quantised with `quantizer`).
    pub fn decode_sum(
        &self,
        sum: &[u32],
        contributors: usize,
        quantizer: &Quantizer,
    ) -> Result<SummedUpdate, LayoutError> {
        if sum.len() != self.len() {
            return Err(LayoutError::WrongLength {
                expected: self.len(),
                found: sum.len(),
            });
        }
        let segments = self.segments();
        let read = |segment: &Segment| -> Vec<f64> {
            sum[segment.range.clone()]
                .iter()
                .map(|w| quantizer.dequantize_sum(*w, segment.kind))
                .collect()
        };
        let as_f32 = |values: Vec<f64>| F32Vec(values.into_iter().map(|v| v as f32).collect());
        let mut segments = segments.iter();
        let mut next = || segments.next().expect("layout segments");

        let weighted_delta_sum = read(next());
        let mut prototypes = Vec::with_capacity(self.prototypes.len());
        for shape in &self.prototypes {
            let sum = as_f32(read(next()));
            // Every client's weights are non-negative, so a negative sum can only be rounding
            // of zeros; clamp so the statistics stay valid.
            let weight = F32Vec(
                read(next())
                    .into_iter()
                    .map(|v| v.max(0.0) as f32)
                    .collect(),
            );
            prototypes.push(PrototypeStatistics {
                group: shape.group.clone(),
                emotions: shape.emotions,
                prototypes: shape.prototypes,
                width: shape.width,
                sum,
                weight,
            });
        }
        let cooccurrence_sum = F32Vec(
            read(next())
                .into_iter()
                .map(|v| v.max(0.0) as f32)
                .collect(),
        );
        let cooccurrence_count = read(next())[0].max(0.0);
        let total_weight = read(next())[0];
        let evaluation = self.evaluation.then(|| {
            read(next())
                .chunks(2)
                .map(|pair| {
                    let high = pair[0] * f64::from(1u32 << LOW_WORD_BITS);
                    (high + pair[1]).max(0.0) / EVALUATION_SCALE
                })
                .collect()
        });
        Ok(SummedUpdate {
            evaluation,
            weighted_delta_sum,
            prototypes,
            cooccurrence: CooccurrenceStatistics {
                emotions: self.cooccurrence_emotions,
                sum: cooccurrence_sum,
                count: cooccurrence_count,
            },
            total_weight,
            contributors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{LocalMetrics, PrototypeBank};
    use crate::params::{NamedTensor, ParameterSet};

    pub(crate) fn global() -> GlobalState {
        GlobalState {
            parameters: ParameterSet {
                tensors: vec![
                    NamedTensor {
                        name: "a".into(),
                        shape: vec![2, 2],
                        values: F32Vec(vec![0.0; 4]),
                    },
                    NamedTensor {
                        name: "b".into(),
                        shape: vec![3],
                        values: F32Vec(vec![0.0; 3]),
                    },
                ],
            },
            prototypes: vec![
                PrototypeBank {
                    group: "physiological".into(),
                    emotions: 2,
                    prototypes: 2,
                    width: 3,
                    values: F32Vec(vec![0.0; 12]),
                },
                PrototypeBank {
                    group: "behavioral".into(),
                    emotions: 2,
                    prototypes: 1,
                    width: 2,
                    values: F32Vec(vec![0.0; 4]),
                },
            ],
            cooccurrence: CooccurrenceStatistics::zeros(2),
        }
    }

    pub(crate) fn update(global: &GlobalState, k: f32, samples: u64) -> ClientUpdate {
        let delta = global
            .parameters
            .with_flat(
                &(0..7)
                    .map(|i| (i as f32 - 3.0) * 0.01 * k)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let mut physio = PrototypeStatistics::zeros("physiological", 2, 2, 3);
        physio.sum.0 = (0..12).map(|i| i as f32 * 0.5 * k - 1.0).collect();
        physio.weight.0 = vec![1.0 * k, 2.0, 0.0, 0.5];
        let mut cooccurrence = CooccurrenceStatistics::zeros(2);
        cooccurrence.add_label(&[0.25 * k.min(4.0), 1.0 - 0.25 * k.min(4.0)]);
        cooccurrence.add_label(&[1.0, 0.0]);
        ClientUpdate {
            run_id: [7; 16],
            round: 1,
            delta,
            // The behavioral group is missing: it counts as zeros.
            prototypes: vec![physio],
            cooccurrence,
            sample_count: samples,
            metrics: LocalMetrics::default(),
            evaluation: None,
        }
    }

    #[test]
    fn segments_cover_the_vector_in_order() {
        let layout = UpdateLayout::of_global(&global());
        let names: Vec<_> = layout.segments().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "delta",
                "prototypes.physiological.sum",
                "prototypes.physiological.weight",
                "prototypes.behavioral.sum",
                "prototypes.behavioral.weight",
                "cooccurrence.sum",
                "cooccurrence.count",
                "weight"
            ]
        );
        assert_eq!(layout.len(), 7 + 12 + 4 + 4 + 2 + 4 + 1 + 1);
    }

    #[test]
    fn summed_words_decode_to_summed_statistics() {
        let global = global();
        let layout = UpdateLayout::of_global(&global);
        let quantizer = Quantizer::new(65536.0, 3).unwrap();
        let updates: Vec<_> = (1..=3).map(|k| update(&global, k as f32, 10 * k)).collect();
        let mut sum = vec![0u32; layout.len()];
        for u in &updates {
            let words = layout.encode(u, u.sample_count, &quantizer).unwrap();
            super::super::quantize::wrapping_add_into(&mut sum, &words);
        }
        let summed = layout.decode_sum(&sum, 3, &quantizer).unwrap();
        let bound = quantizer.sum_error_bound(ValueKind::Real) + 1e-9;
        assert_eq!(summed.total_weight, 60.0);
        assert_eq!(summed.cooccurrence.count, 6.0);
        for i in 0..7 {
            let exact: f64 = updates
                .iter()
                .map(|u| u.sample_count as f64 * f64::from(u.delta.to_flat()[i]))
                .sum();
            assert!((summed.weighted_delta_sum[i] - exact).abs() <= bound);
        }
        let mean = summed.mean_delta().unwrap();
        assert!((mean[0] - summed.weighted_delta_sum[0] / 60.0).abs() < 1e-15);
        let mut plain = PrototypeStatistics::zeros("physiological", 2, 2, 3);
        let mut plain_cooc = CooccurrenceStatistics::zeros(2);
        for u in &updates {
            plain.merge(&u.prototypes[0]).unwrap();
            plain_cooc.merge(&u.cooccurrence).unwrap();
        }
        for (a, b) in summed.prototypes[0].sum.0.iter().zip(&plain.sum.0) {
            assert!(f64::from((a - b).abs()) <= bound + 1e-5);
        }
        for (a, b) in summed.prototypes[0].weight.0.iter().zip(&plain.weight.0) {
            assert!(f64::from((a - b).abs()) <= bound + 1e-5);
        }
        assert!(summed.prototypes[1].weight.0.iter().all(|w| *w == 0.0));
        for (a, b) in summed.cooccurrence.sum.0.iter().zip(&plain_cooc.sum.0) {
            assert!(f64::from((a - b).abs()) <= bound + 1e-5);
        }
    }

    #[test]
    fn mismatched_updates_are_refused_with_the_part_named() {
        let global = global();
        let layout = UpdateLayout::of_global(&global);
        let q = Quantizer::new(256.0, 2).unwrap();
        let mut u = update(&global, 1.0, 5);
        u.prototypes[0].group = "gaze".into();
        let message = layout.encode(&u, 5, &q).unwrap_err().to_string();
        assert!(message.contains("gaze"), "{message}");

        let mut u = update(&global, 1.0, 5);
        u.cooccurrence = CooccurrenceStatistics::zeros(3);
        assert!(matches!(
            layout.encode(&u, 5, &q),
            Err(LayoutError::Mismatch(_))
        ));

        // A delta too large for the range names the segment.
        let u = update(&global, 1.0, 1_000_000_000);
        let message = layout
            .encode(&u, u.sample_count, &q)
            .unwrap_err()
            .to_string();
        assert!(message.contains("delta["), "{message}");
        assert!(matches!(
            layout.decode_sum(&[0; 3], 1, &q),
            Err(LayoutError::WrongLength { .. })
        ));
    }
}

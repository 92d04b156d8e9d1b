//! SVG plots of a simulation (plotters' SVG backend: no system fonts or native libraries
//! needed): a metric versus round for every arm, and the spread of per-subject KL per arm.
//!
//! They are meant to be read at a glance: the titles say which dataset and protocol, the axes
//! say which direction is better, arms carry their display names, and when one arm is far off
//! the others (local-only training overfitting, typically) a second panel zooms in on the rest
//! so that their differences do not vanish into one band.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::simulation_result::{Arm, PooledRound, SimulationResult, SubjectMetrics};

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
];

/// An arm is left out of the zoomed panel when leaving it out shrinks the value range of the
/// remaining arms by at least this factor: it is what squashes them into one band.
const ZOOM_FACTOR: f64 = 4.0;

/// A plotted metric: its field, its axis label and whether higher is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Kl,
    Cosine,
}

impl Metric {
    fn of(self, round: &PooledRound) -> f64 {
        match self {
            Metric::Kl => round.metrics.kl,
            Metric::Cosine => round.metrics.cosine,
        }
    }

    /// The axis label, with the direction that is better.
    pub fn axis_label(self) -> &'static str {
        match self {
            Metric::Kl => "KL (lower is better)",
            Metric::Cosine => "cosine (higher is better)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Metric::Kl => "KL",
            Metric::Cosine => "cosine",
        }
    }
}

fn color_of(arm: Arm) -> RGBColor {
    let index = Arm::ALL.iter().position(|a| *a == arm).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

/// What the titles say about the run: dataset, subjects, protocol.
pub fn run_context(result: &SimulationResult) -> String {
    format!(
        "{}, {} subjects, {}",
        result.dataset, result.subjects, result.protocol
    )
}

/// Writes the three plots of a simulation into `dir`.
pub fn write_plots(dir: &Path, result: &SimulationResult) -> PlotResult {
    let context = run_context(result);
    metric_vs_round(
        &dir.join("kl_vs_round.svg"),
        &result.rounds,
        Metric::Kl,
        &context,
    )?;
    metric_vs_round(
        &dir.join("cosine_vs_round.svg"),
        &result.rounds,
        Metric::Cosine,
        &context,
    )?;
    per_subject_spread(
        &dir.join("per_subject_kl.svg"),
        &result.per_subject,
        &context,
    )
}

/// The arms of `rounds` (in table order) with their points.
fn series(rounds: &[PooledRound], metric: Metric) -> Vec<(Arm, Vec<(u64, f64)>)> {
    Arm::ALL
        .into_iter()
        .map(|arm| {
            let points: Vec<(u64, f64)> = rounds
                .iter()
                .filter(|r| r.arm == arm)
                .map(|r| (r.round, metric.of(r)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            (arm, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect()
}

/// The arms worth a zoomed panel: what is left after repeatedly leaving out the arm whose
/// absence shrinks the value range of the others by [`ZOOM_FACTOR`] or more (at least two arms
/// stay). Empty when no arm is left out (one panel shows them all well enough).
pub fn zoomed_arms(rounds: &[PooledRound], metric: Metric) -> Vec<Arm> {
    fn range(arms: &[(Arm, Vec<(u64, f64)>)]) -> f64 {
        let (low, high) = arms
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
        (high - low).max(0.0)
    }
    let mut kept = series(rounds, metric);
    let total = kept.len();
    while kept.len() > 2 {
        let current = range(&kept);
        let (index, narrowest) = (0..kept.len())
            .map(|i| {
                let mut rest = kept.clone();
                rest.remove(i);
                (i, range(&rest))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("more than two arms");
        if current > 0.0 && narrowest * ZOOM_FACTOR <= current {
            kept.remove(index);
        } else {
            break;
        }
    }
    if kept.len() == total {
        Vec::new()
    } else {
        kept.into_iter().map(|(arm, _)| arm).collect()
    }
}

/// Writes `metric` versus round, one line per arm; with a zoomed second panel when an arm is
/// far off the others (see [`zoomed_arms`]).
pub fn metric_vs_round(
    path: &Path,
    rounds: &[PooledRound],
    metric: Metric,
    context: &str,
) -> PlotResult {
    let zoomed = zoomed_arms(rounds, metric);
    let plots_width = if zoomed.is_empty() { 800 } else { 1400 };
    let root = SVGBackend::new(path, (plots_width + LEGEND_WIDTH, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("{} vs round: {context}", metric.name()),
        ("sans-serif", 22),
    )?;
    let all = series(rounds, metric);
    // The legend has a column of its own, so that it never hides a curve.
    let (root, legend) = root.split_horizontally(plots_width);
    draw_legend(&legend, all.iter().map(|(arm, _)| *arm))?;
    if zoomed.is_empty() {
        draw_panel(&root, &all, metric, "all arms")?;
    } else {
        let panels = root.split_evenly((1, 2));
        draw_panel(&panels[0], &all, metric, "all arms")?;
        let left_out: Vec<&str> = all
            .iter()
            .filter(|(arm, _)| !zoomed.contains(arm))
            .map(|(arm, _)| arm.label())
            .collect();
        let close: Vec<_> = all
            .into_iter()
            .filter(|(arm, _)| zoomed.contains(arm))
            .collect();
        draw_panel(
            &panels[1],
            &close,
            metric,
            &format!("zoomed, without {}", left_out.join(", ")),
        )?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    arms: &[(Arm, Vec<(u64, f64)>)],
    metric: Metric,
    caption: &str,
) -> PlotResult {
    let last_round = arms
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(r, _)| *r))
        .max()
        .unwrap_or(1)
        .max(2);
    let (mut low, mut high) = arms
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if !(low.is_finite() && high.is_finite()) || low >= high {
        let centre = if low.is_finite() { low } else { 0.5 };
        low = centre - 0.5;
        high = centre + 0.5;
    }
    let pad = (high - low) * 0.05;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1u64..last_round, (low - pad)..(high + pad))?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc(metric.axis_label())
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()?;
    for (arm, points) in arms {
        let color = color_of(*arm);
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    Ok(())
}

/// Width in pixels of the legend column beside the panels.
const LEGEND_WIDTH: u32 = 250;

/// One line per arm: its colour and display name.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    arms: impl Iterator<Item = Arm>,
) -> PlotResult {
    for (index, arm) in arms.enumerate() {
        let y = 60 + 24 * index as i32;
        let color = color_of(arm);
        area.draw(&PathElement::new(
            vec![(8, y), (36, y)],
            color.stroke_width(3),
        ))?;
        area.draw(&Circle::new((22, y), 3, color.filled()))?;
        area.draw(&Text::new(
            arm.label(),
            (44, y - 7),
            ("sans-serif", 14).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Writes one column of per-subject KL values per arm (each dot a subject) with each arm's
/// median marked and written beside it.
pub fn per_subject_spread(path: &Path, subjects: &[SubjectMetrics], context: &str) -> PlotResult {
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "per-subject KL after the last round (dots: subjects, bar: median)",
        ("sans-serif", 22),
    )?;
    let arms: Vec<Arm> = Arm::ALL
        .into_iter()
        .filter(|a| subjects.iter().any(|s| s.arm == *a))
        .collect();
    let high = subjects
        .iter()
        .map(|s| s.metrics.kl)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(context, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(arms.len() as f64 - 0.5), 0.0f64..high)?;
    let medians: Vec<f64> = arms
        .iter()
        .map(|arm| {
            let values: Vec<f64> = subjects
                .iter()
                .filter(|s| s.arm == *arm)
                .map(|s| s.metrics.kl)
                .collect();
            median(&values)
        })
        .collect();
    let labels: Vec<&str> = arms.iter().map(|a| a.label()).collect();
    chart
        .configure_mesh()
        .x_labels(arms.len())
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() < 1e-6 && index >= 0.0 {
                labels
                    .get(index as usize)
                    .copied()
                    .unwrap_or_default()
                    .to_string()
            } else {
                String::new()
            }
        })
        .y_desc("KL (lower is better)")
        .y_label_formatter(&|v| format!("{v:.2}"))
        .disable_x_mesh()
        .draw()?;
    for (index, arm) in arms.iter().enumerate() {
        let color = color_of(*arm);
        let values: Vec<f64> = subjects
            .iter()
            .filter(|s| s.arm == *arm)
            .map(|s| s.metrics.kl)
            .collect();
        let count = values.len().max(1) as f64;
        let centre = index as f64;
        chart.draw_series(values.iter().enumerate().map(|(i, kl)| {
            // Spread the dots horizontally so they do not hide each other.
            let jitter = (i as f64 / count - 0.5) * 0.5;
            Circle::new((centre + jitter, *kl), 3, color.mix(0.6).filled())
        }))?;
        let mid = medians[index];
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(centre - 0.35, mid), (centre + 0.35, mid)],
            BLACK.stroke_width(3),
        )))?;
        // The median written at the top of its column, clear of the dots.
        chart.draw_series(std::iter::once(Text::new(
            format!("median {mid:.3}"),
            (centre - 0.15, high * 0.99),
            ("sans-serif", 15).into_font().color(&BLACK),
        )))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use mpcl_model::metrics::DistributionMetrics;

    use super::*;

    fn round(arm: Arm, round: u64, kl: f64) -> PooledRound {
        PooledRound {
            arm,
            round,
            metrics: DistributionMetrics {
                kl,
                cosine: 1.0 - kl / 2.0,
                samples: 10,
                ..Default::default()
            },
            bytes_down: 0,
            bytes_up: 0,
            epsilon: None,
        }
    }

    fn rounds() -> Vec<PooledRound> {
        let mut rounds = Vec::new();
        for r in 1..=4 {
            rounds.push(round(Arm::Federated, r, 0.90 - 0.01 * r as f64));
            rounds.push(round(Arm::Centralized, r, 0.89 - 0.01 * r as f64));
            rounds.push(round(Arm::LabelPrior, r, 0.85));
            rounds.push(round(Arm::LocalOnly, r, 0.9 + 0.1 * r as f64));
        }
        rounds
    }

    #[test]
    fn an_arm_far_off_the_others_gets_a_zoomed_panel_without_it() {
        assert_eq!(
            zoomed_arms(&rounds(), Metric::Kl),
            vec![Arm::Federated, Arm::Centralized, Arm::LabelPrior]
        );
        let close: Vec<_> = rounds()
            .into_iter()
            .filter(|r| r.arm != Arm::LocalOnly)
            .collect();
        assert!(zoomed_arms(&close, Metric::Kl).is_empty());
    }

    #[test]
    fn the_plots_carry_directions_context_and_display_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kl.svg");
        metric_vs_round(
            &path,
            &rounds(),
            Metric::Kl,
            "larwood2019, subject-dependent",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("KL (lower is better)"), "no direction");
        assert!(svg.contains("larwood2019, subject-dependent"), "no context");
        assert!(
            svg.contains("zoomed, without local-only MPCL"),
            "no zoom panel"
        );
        assert!(svg.contains("federated MPCL"));

        let subjects: Vec<SubjectMetrics> = [0.5, 0.7, 0.9]
            .iter()
            .enumerate()
            .map(|(i, kl)| SubjectMetrics {
                arm: Arm::FedavgEncoder,
                subject: format!("s{i}"),
                metrics: DistributionMetrics {
                    kl: *kl,
                    samples: 4,
                    ..Default::default()
                },
            })
            .collect();
        let path = dir.path().join("spread.svg");
        per_subject_spread(&path, &subjects, "synthetic").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("federated, no memory sharing"));
        assert!(!svg.contains("fedavg-encoder"));
        assert!(svg.contains("median 0.700"));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}

//! SVG plots of a simulation (plotters' SVG backend: no system fonts or native libraries
//! needed): a metric versus round for every arm, and the spread of per-subject KL per arm.

use std::path::Path;

use plotters::prelude::*;

use crate::simulate::{Arm, PooledRound, SubjectMetrics};

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
];

fn metric_of(round: &PooledRound, metric: &str) -> f64 {
    match metric {
        "kl" => round.metrics.kl,
        "cosine" => round.metrics.cosine,
        "intersection" => round.metrics.intersection,
        "chebyshev" => round.metrics.chebyshev,
        "clark" => round.metrics.clark,
        _ => round.metrics.canberra,
    }
}

fn color_of(arm: Arm) -> RGBColor {
    let index = Arm::ALL.iter().position(|a| *a == arm).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

/// Writes `metric` (one of the six metric names) versus round, one line per arm.
pub fn metric_vs_round(
    path: &Path,
    rounds: &[PooledRound],
    metric: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let last_round = rounds.iter().map(|r| r.round).max().unwrap_or(1).max(1);
    let values: Vec<f64> = rounds.iter().map(|r| metric_of(r, metric)).collect();
    let (mut low, mut high) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    if !(low.is_finite() && high.is_finite()) || low >= high {
        low = 0.0;
        high = 1.0;
    }
    let pad = (high - low) * 0.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{metric} vs round"), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(1u64..last_round, (low - pad)..(high + pad))?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc(metric)
        .draw()?;
    for arm in Arm::ALL {
        let points: Vec<(u64, f64)> = rounds
            .iter()
            .filter(|r| r.arm == arm)
            .map(|r| (r.round, metric_of(r, metric)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let color = color_of(arm);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(arm.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes one column of per-subject KL values per arm (each dot a subject).
pub fn per_subject_spread(
    path: &Path,
    subjects: &[SubjectMetrics],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let arms: Vec<Arm> = Arm::ALL
        .into_iter()
        .filter(|a| subjects.iter().any(|s| s.arm == *a))
        .collect();
    let high = subjects
        .iter()
        .map(|s| s.metrics.kl)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("per-subject KL (final round)", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(arms.len() as f64 - 0.5), 0.0f64..high)?;
    let labels: Vec<&str> = arms.iter().map(|a| a.name()).collect();
    chart
        .configure_mesh()
        .x_labels(arms.len())
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() < 1e-6 && index >= 0.0 {
                labels
                    .get(index as usize)
                    .copied()
                    .unwrap_or("")
                    .to_string()
            } else {
                String::new()
            }
        })
        .y_desc("KL")
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
        chart.draw_series(values.iter().enumerate().map(|(i, kl)| {
            // Spread the dots horizontally so they do not hide each other.
            let jitter = (i as f64 / count - 0.5) * 0.5;
            Circle::new((index as f64 + jitter, *kl), 3, color.filled())
        }))?;
    }
    root.present()?;
    Ok(())
}

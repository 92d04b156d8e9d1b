//! The ablation study's plot: KL of each variant (mean ± sd over seeds, each seed a dot) beside
//! the label prior, lower is better.

use std::path::Path;

use plotters::prelude::*;

use crate::ablate::{AblationConfig, AblationResult};

/// Writes a horizontal dot plot of KL per variant.
pub fn kl_by_variant(
    path: &Path,
    config: &AblationConfig,
    result: &AblationResult,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows: Vec<(&str, &Vec<f64>)> = config
        .variants
        .iter()
        .map(|v| (v.label(), &result.kl_per_seed[v]))
        .collect();
    let prior =
        result.prior_kl_per_seed.iter().sum::<f64>() / result.prior_kl_per_seed.len().max(1) as f64;
    let values = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .chain([prior]);
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let pad = ((high - low) * 0.15).max(1e-3);
    let root = SVGBackend::new(path, (900, 80 + 45 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let base = &config.simulation;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Ablations on {} ({}), arm {}: KL (lower is better)",
                base.dataset,
                base.protocol,
                config.arm.label()
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(280)
        .build_cartesian_2d((low - pad)..(high + pad), (0..rows.len()).into_segmented())?;
    // Row i (top to bottom) sits in segment n - 1 - i.
    let n = rows.len();
    let labels: Vec<String> = rows.iter().map(|(l, _)| l.to_string()).collect();
    chart
        .configure_mesh()
        .x_desc("test KL of the validation-selected model (lower is better)")
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) if *i < n => labels[n - 1 - *i].clone(),
            _ => String::new(),
        })
        .draw()?;
    let at = |i: usize| SegmentValue::CenterOf(n - 1 - i);
    chart
        .draw_series(LineSeries::new(
            [(prior, SegmentValue::Exact(0)), (prior, SegmentValue::Last)],
            ShapeStyle::from(&RGBColor(127, 127, 127)).stroke_width(2),
        ))?
        .label("label prior")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(127, 127, 127)));
    for (i, (_, kls)) in rows.iter().enumerate() {
        let mean = kls.iter().sum::<f64>() / kls.len().max(1) as f64;
        chart.draw_series(
            kls.iter()
                .map(|&kl| Circle::new((kl, at(i)), 3, RGBColor(31, 119, 180).filled())),
        )?;
        chart.draw_series([Cross::new(
            (mean, at(i)),
            7,
            ShapeStyle::from(&BLACK).stroke_width(2),
        )])?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

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
        .build_cartesian_2d((low - pad)..(high + pad), 0.0..rows.len() as f64)?;
    let labels: Vec<String> = rows.iter().map(|(l, _)| l.to_string()).collect();
    chart
        .configure_mesh()
        .x_desc("test KL of the validation-selected model (lower is better)")
        .y_labels(rows.len())
        .y_label_formatter(&|y| {
            let index = (rows.len() as f64 - y - 0.5).round();
            if index >= 0.0 && (index as usize) < labels.len() && (y.fract() - 0.5).abs() < 0.01 {
                labels[index as usize].clone()
            } else {
                String::new()
            }
        })
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(prior, 0.0), (prior, rows.len() as f64)],
            ShapeStyle::from(&RGBColor(127, 127, 127)).stroke_width(2),
        ))?
        .label("label prior")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(127, 127, 127)));
    for (i, (_, kls)) in rows.iter().enumerate() {
        let y = rows.len() as f64 - i as f64 - 0.5;
        let mean = kls.iter().sum::<f64>() / kls.len().max(1) as f64;
        chart.draw_series(
            kls.iter()
                .map(|&kl| Circle::new((kl, y), 3, RGBColor(31, 119, 180).filled())),
        )?;
        chart.draw_series([Cross::new(
            (mean, y),
            7,
            ShapeStyle::from(&BLACK).stroke_width(2),
        )])?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

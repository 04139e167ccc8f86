//! Accuracy and loss curves of a training [`History`].

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{VizError, ensure_font, render_error, write_png};
use crate::train::History;

/// Width in pixels of the picture [`plot_history`] writes.
pub const HISTORY_WIDTH: u32 = 1200;
/// Height in pixels of the picture [`plot_history`] writes.
pub const HISTORY_HEIGHT: u32 = 500;

/// Colour of the training curves (matplotlib's first colour).
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Colour of the validation curves (matplotlib's second colour).
const VAL_COLOR: RGBColor = RGBColor(255, 127, 14);
/// Colour of the phase boundary lines and their labels.
const BOUNDARY_COLOR: RGBColor = RGBColor(44, 160, 44);
/// Above this many epochs the curves are drawn without a marker per epoch.
const MAX_MARKED_EPOCHS: usize = 40;

/// Plots `history` as a PNG of [`HISTORY_WIDTH`] × [`HISTORY_HEIGHT`] pixels at `path`: two
/// panels side by side, accuracy on the left and loss on the right, each with the training and
/// the validation curve per epoch, a legend and labelled axes.
///
/// Epochs are numbered from 1 in the order of `history.epochs`. Where a phase starts (see
/// [`History::phase_boundaries`], e.g. fine-tuning after feature extraction), a dashed vertical
/// line is drawn between the last epoch of the old phase and the first of the new one, labelled
/// "start" and the phase name (`fine_tuning` reads "start fine-tuning").
///
/// A one-epoch history plots as single points. Values that are not finite (NaN, ±∞) are left out
/// of the curves, which break around them. Missing parent folders of `path` are created and the
/// file is replaced atomically.
///
/// # Errors
/// [`VizError::EmptyHistory`] when `history` has no epoch; otherwise an error naming `path` when
/// rendering, encoding or writing fails.
pub fn plot_history(history: &History, path: &Path) -> Result<(), VizError> {
    if history.epochs.is_empty() {
        return Err(VizError::EmptyHistory {
            path: path.to_path_buf(),
        });
    }
    ensure_font(path)?;
    let (width, height) = (HISTORY_WIDTH, HISTORY_HEIGHT);
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let backend =
            BitMapBackend::<plotters::backend::RGBPixel>::with_buffer_and_format(&mut rgb, (width, height))
                .map_err(|e| render_error(path, e))?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(|e| render_error(path, e))?;
        let panels = root.split_evenly((1, 2));
        let boundaries = boundaries(history);
        let epochs = &history.epochs;
        let accuracy = Panel {
            title: "Training and Validation Accuracy",
            y_desc: "Accuracy",
            train_label: "Training Accuracy",
            val_label: "Validation Accuracy",
            train: epochs.iter().map(|e| e.train_accuracy).collect(),
            val: epochs.iter().map(|e| e.val_accuracy).collect(),
            legend: SeriesLabelPosition::LowerRight,
            is_accuracy: true,
        };
        let loss = Panel {
            title: "Training and Validation Loss",
            y_desc: "Cross-entropy loss",
            train_label: "Training Loss",
            val_label: "Validation Loss",
            train: epochs.iter().map(|e| e.train_loss).collect(),
            val: epochs.iter().map(|e| e.val_loss).collect(),
            legend: SeriesLabelPosition::UpperRight,
            is_accuracy: false,
        };
        draw_panel(&panels[0], &accuracy, &boundaries).map_err(|e| render_error(path, e))?;
        draw_panel(&panels[1], &loss, &boundaries).map_err(|e| render_error(path, e))?;
        root.present().map_err(|e| render_error(path, e))?;
    }
    write_png(path, &rgb, width, height)
}

/// One panel of the history plot.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    train_label: &'static str,
    val_label: &'static str,
    train: Vec<f64>,
    val: Vec<f64>,
    legend: SeriesLabelPosition,
    is_accuracy: bool,
}

/// Phase boundaries as (x position between two epochs, label).
fn boundaries(history: &History) -> Vec<(f64, String)> {
    history
        .phase_boundaries()
        .into_iter()
        .map(|i| {
            // Index i is epoch i + 1 on the axis; the line goes between epochs i and i + 1.
            let x = i as f64 + 0.5;
            (x, format!("start {}", phase_name(&history.epochs[i].phase)))
        })
        .collect()
}

/// A phase name as a reader would write it.
fn phase_name(phase: &str) -> String {
    match phase {
        "fine_tuning" | "finetuning" | "fine-tuning" => "fine-tuning".to_string(),
        other => other.trim().replace('_', " "),
    }
}

/// The y range to show for `values`, ignoring values that are not finite.
fn y_range(values: &[f64], is_accuracy: bool) -> (f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (min, max) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !min.is_finite() || !max.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = if is_accuracy {
        // Like the Keras notebook: from a little under the lowest accuracy up to 1.
        let lo = ((min - 0.05) * 10.0).floor() / 10.0;
        let lo = if min >= 0.0 { lo.max(0.0) } else { lo };
        (lo, max.max(1.0))
    } else {
        let lo = if min >= 0.0 { 0.0 } else { min * 1.1 };
        (lo, if max > 0.0 { max * 1.1 } else { 1.0 })
    };
    if hi - lo > f64::EPSILON * hi.abs().max(1.0) && (hi - lo).is_finite() {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    }
}

/// Finite (x, y) runs of `values`, with x the 1-based epoch: a value that is not finite breaks
/// the curve.
fn segments(values: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            if let Some(last) = out.last_mut() {
                last.push(((i + 1) as f64, v));
            }
        } else if out.last().is_some_and(|s| !s.is_empty()) {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Draws one panel: axes, both curves, the phase boundaries and the legend.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    boundaries: &[(f64, String)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = panel.train.len();
    let (y_lo, y_hi) = y_range(
        &panel.train.iter().chain(&panel.val).copied().collect::<Vec<_>>(),
        panel.is_accuracy,
    );
    let x_range = 0.5..n as f64 + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_lo..y_hi)?;

    chart
        .configure_mesh()
        .x_desc("Epoch")
        .y_desc(panel.y_desc)
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 14))
        // Key points of a range n wide with at most n labels fall on whole numbers.
        .x_labels(n.min(10))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_labels(8)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;

    for &(x, ref label) in boundaries {
        chart.draw_series(DashedLineSeries::new(
            [(x, y_lo), (x, y_hi)],
            8,
            5,
            BOUNDARY_COLOR.stroke_width(2),
        ))?;
        // Label at the top of the line, on the side with more room.
        let right = x < n as f64 / 2.0 + 0.5 || n <= 2;
        let (dx, h) = if right { (6, HPos::Left) } else { (-6, HPos::Right) };
        let style = TextStyle::from(("sans-serif", 15).into_font())
            .color(&BOUNDARY_COLOR)
            .pos(Pos::new(h, VPos::Top));
        chart.draw_series(std::iter::once(
            EmptyElement::at((x, y_hi)) + Text::new(label.clone(), (dx, 10), style),
        ))?;
    }

    let marked = n <= MAX_MARKED_EPOCHS;
    for (values, color, label) in [
        (&panel.train, TRAIN_COLOR, panel.train_label),
        (&panel.val, VAL_COLOR, panel.val_label),
    ] {
        let segs = segments(values);
        for (k, seg) in segs.iter().enumerate() {
            let series = chart.draw_series(LineSeries::new(seg.iter().copied(), color.stroke_width(2)))?;
            if k == 0 {
                series.label(label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
            if marked || seg.len() == 1 {
                chart.draw_series(
                    seg.iter()
                        .map(|&p| Circle::new(p, 3, color.filled())),
                )?;
            }
        }
        if segs.is_empty() {
            // Nothing finite to draw: still name the curve in the legend.
            chart
                .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }

    chart
        .configure_series_labels()
        .position(panel.legend)
        .margin(12)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

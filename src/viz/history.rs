//! Accuracy and loss curves of a training [`History`].

use std::path::Path;

use ab_glyph::FontRef;
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::text::{self, HAlign, Label, VAlign};
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
/// Colour of titles, axis names and tick labels.
const TEXT_COLOR: [u8; 3] = [30, 30, 30];
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
    let font = ensure_font(path)?;
    let (width, height) = (HISTORY_WIDTH, HISTORY_HEIGHT);
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    let mut labels = Vec::new();
    {
        let backend = BitMapBackend::<plotters::backend::RGBPixel>::with_buffer_and_format(
            &mut rgb,
            (width, height),
        )
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
            is_accuracy: true,
        };
        let loss = Panel {
            title: "Training and Validation Loss",
            y_desc: "Cross-entropy loss",
            train_label: "Training Loss",
            val_label: "Validation Loss",
            train: epochs.iter().map(|e| e.train_loss).collect(),
            val: epochs.iter().map(|e| e.val_loss).collect(),
            is_accuracy: false,
        };
        for (area, panel) in panels.iter().zip([&accuracy, &loss]) {
            draw_panel(&root, area, panel, &boundaries, font, &mut labels)
                .map_err(|e| render_error(path, e))?;
        }
        root.present().map_err(|e| render_error(path, e))?;
    }
    let mut image = RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| render_error(path, "the picture buffer has the wrong size"))?;
    for label in &labels {
        text::draw(&mut image, font, label);
    }
    write_png(path, &image)
}

/// One panel of the history plot.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    train_label: &'static str,
    val_label: &'static str,
    train: Vec<f64>,
    val: Vec<f64>,
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
        (if min >= 0.0 { lo.max(0.0) } else { lo }, max.max(1.0))
    } else {
        // 10% of room above (and below when negative), unless that overflows.
        let grow = |v: f64| if (v * 1.1).is_finite() { v * 1.1 } else { v };
        let lo = if min >= 0.0 { 0.0 } else { grow(min) };
        (lo, if max > 0.0 { grow(max) } else { 1.0 })
    };
    if (hi - lo).is_finite() && hi - lo > f64::EPSILON * hi.abs().max(1.0) {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Tick label of `y` when ticks are `step` apart.
fn y_tick(y: f64, step: f64) -> String {
    if y != 0.0 && !(1e-3..1e5).contains(&y.abs()) {
        return format!("{y:.1e}");
    }
    let decimals = if step > 0.0 && step.is_finite() {
        (-step.log10().floor()).clamp(0.0, 4.0) as usize
    } else {
        2
    };
    format!("{y:.decimals$}")
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

/// Draws one panel on `area` (a part of `root`): axes, both curves, the phase boundaries and the
/// legend. Texts are pushed to `labels`, in pixels of `root`, to be set afterwards.
fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    boundaries: &[(f64, String)],
    font: &FontRef<'static>,
    labels: &mut Vec<Label>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = panel.train.len();
    let values: Vec<f64> = panel.train.iter().chain(&panel.val).copied().collect();
    let (y_lo, y_hi) = y_range(&values, panel.is_accuracy);
    let (x_lo, x_hi) = (0.5, n as f64 + 0.5);

    let (area_x, area_y) = area.get_pixel_range();
    labels.push(
        Label::new(
            panel.title,
            ((area_x.start + area_x.end) / 2, area_y.start + 12),
            24.0,
            TEXT_COLOR,
        )
        .anchor(HAlign::Center, VAlign::Top),
    );

    let mut chart = ChartBuilder::on(area)
        .margin_top(52)
        .margin_bottom(8)
        .margin_left(12)
        .margin_right(24)
        .x_label_area_size(50)
        .y_label_area_size(76)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;

    // A range n wide asked for at most n key points gets them on whole numbers.
    let n_x = n.clamp(1, 10);
    let n_y = 8;
    chart
        .configure_mesh()
        .x_labels(n_x)
        .y_labels(n_y)
        // Tick labels are set with the embedded font below.
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|_| String::new())
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .axis_style(RGBColor(90, 90, 90))
        .draw()?;

    let (plot_x, plot_y) = chart.plotting_area().get_pixel_range();
    let x_ticks = chart.as_coord_spec().x_spec().key_points(n_x);
    let y_ticks = chart.as_coord_spec().y_spec().key_points(n_y);
    for x in x_ticks {
        let (px, _) = chart.backend_coord(&(x, y_lo));
        let tick = format!("{}", x.round() as i64);
        labels.push(
            Label::new(tick, (px, plot_y.end + 8), 16.0, TEXT_COLOR)
                .anchor(HAlign::Center, VAlign::Top),
        );
    }
    let y_step = match y_ticks.as_slice() {
        [a, b, ..] => (b - a).abs(),
        _ => y_hi - y_lo,
    };
    for y in y_ticks {
        let (_, py) = chart.backend_coord(&(x_lo, y));
        labels.push(
            Label::new(y_tick(y, y_step), (plot_x.start - 8, py), 16.0, TEXT_COLOR)
                .anchor(HAlign::Right, VAlign::Center),
        );
    }
    let center_x = (plot_x.start + plot_x.end) / 2;
    let center_y = (plot_y.start + plot_y.end) / 2;
    labels.push(
        Label::new("Epoch", (center_x, plot_y.end + 30), 18.0, TEXT_COLOR)
            .anchor(HAlign::Center, VAlign::Top),
    );
    labels.push(
        Label::new(
            panel.y_desc,
            (area_x.start + 14, center_y),
            18.0,
            TEXT_COLOR,
        )
        .anchor(HAlign::Left, VAlign::Center)
        .vertical(),
    );

    // Phase boundaries, labelled at the top on the side with more room.
    let mut obstacles = Vec::new();
    for (x, label) in boundaries {
        chart.draw_series(DashedLineSeries::new(
            [(*x, y_lo), (*x, y_hi)],
            8,
            5,
            BOUNDARY_COLOR.stroke_width(2),
        ))?;
        let (px, _) = chart.backend_coord(&(*x, y_hi));
        let color = [BOUNDARY_COLOR.0, BOUNDARY_COLOR.1, BOUNDARY_COLOR.2];
        // Right of the line where it fits, else left of it; one row lower for every earlier
        // label it would overlap.
        let width = text::text_size(font, 17.0, label).0;
        let (dx, h) = if px + 6 + width <= plot_x.end - 4 {
            (6, HAlign::Left)
        } else {
            (-6, HAlign::Right)
        };
        let mut top = plot_y.start + 6;
        let label = loop {
            let label = Label::new(label.clone(), (px + dx, top), 17.0, color)
                .anchor(h, VAlign::Top)
                .background([255, 255, 255]);
            let (lx, ly, lw, lh) = label.bounds(font);
            let clash = obstacles
                .iter()
                .any(|&(ox, oy, ow, oh): &(i32, i32, i32, i32)| {
                    ox < lx + lw + 4 && lx < ox + ow + 4 && oy < ly + lh && ly < oy + oh
                });
            if !clash || top > plot_y.end {
                break label;
            }
            top += lh + 2;
        };
        obstacles.push(label.bounds(font));
        labels.push(label);
    }

    // Curves, with a marker per epoch when there are few.
    let marked = n <= MAX_MARKED_EPOCHS;
    let radius = if n == 1 { 5 } else { 3 };
    let mut curve_pixels = Vec::new();
    for (values, color) in [(&panel.train, TRAIN_COLOR), (&panel.val, VAL_COLOR)] {
        for seg in segments(values) {
            // Only a range too wide for f64 leaves values outside it: keep them on the edge.
            let seg: Vec<(f64, f64)> = seg.iter().map(|&(x, y)| (x, y.clamp(y_lo, y_hi))).collect();
            chart.draw_series(LineSeries::new(seg.iter().copied(), color.stroke_width(2)))?;
            if marked || seg.len() == 1 {
                chart.draw_series(seg.iter().map(|&p| Circle::new(p, radius, color.filled())))?;
            }
            let pixels: Vec<(i32, i32)> = seg.iter().map(|p| chart.backend_coord(p)).collect();
            curve_pixels.extend(sample_polyline(&pixels));
        }
    }

    // Legend in the corner of the plot that covers the fewest curve pixels.
    let entries = [
        (panel.train_label, TRAIN_COLOR),
        (panel.val_label, VAL_COLOR),
    ];
    let (size, row, pad, sample) = (16.0, 24, 10, 28);
    let text_w = entries
        .iter()
        .map(|(l, _)| text::text_size(font, size, l).0)
        .max()
        .unwrap_or(0);
    let (box_w, box_h) = (
        pad * 3 + sample + text_w,
        pad * 2 + row * entries.len() as i32,
    );
    let inset = 12;
    let (left, right) = (plot_x.start + inset, plot_x.end - inset - box_w);
    let (top, bottom) = (plot_y.start + inset, plot_y.end - inset - box_h);
    let corners = if panel.is_accuracy {
        [(right, bottom), (right, top), (left, bottom), (left, top)]
    } else {
        [(right, top), (right, bottom), (left, top), (left, bottom)]
    };
    let covered = |&(x0, y0): &(i32, i32)| {
        let inside = |&(x, y): &(i32, i32)| x >= x0 && x < x0 + box_w && y >= y0 && y < y0 + box_h;
        let hits = curve_pixels.iter().filter(|p| inside(p)).count();
        let blocked = obstacles.iter().any(|&(ox, oy, ow, oh)| {
            ox < x0 + box_w && x0 < ox + ow && oy < y0 + box_h && y0 < oy + oh
        });
        hits + if blocked { 1_000_000 } else { 0 }
    };
    let (bx, by) = corners
        .iter()
        .min_by_key(|c| covered(c))
        .copied()
        .unwrap_or((right, top));
    root.draw(&Rectangle::new(
        [(bx, by), (bx + box_w, by + box_h)],
        WHITE.mix(0.9).filled(),
    ))?;
    root.draw(&Rectangle::new(
        [(bx, by), (bx + box_w, by + box_h)],
        RGBColor(170, 170, 170).stroke_width(1),
    ))?;
    for (k, (label, color)) in entries.iter().enumerate() {
        let y = by + pad + row * k as i32 + row / 2;
        root.draw(&PathElement::new(
            vec![(bx + pad, y), (bx + pad + sample, y)],
            color.stroke_width(2),
        ))?;
        if marked {
            root.draw(&Circle::new((bx + pad + sample / 2, y), 3, color.filled()))?;
        }
        labels.push(
            Label::new(*label, (bx + pad * 2 + sample, y), size, TEXT_COLOR)
                .anchor(HAlign::Left, VAlign::Center),
        );
    }
    Ok(())
}

/// Pixels along a polyline, about every two pixels.
fn sample_polyline(points: &[(i32, i32)]) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = points.to_vec();
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let (dx, dy) = (f64::from(x1) - f64::from(x0), f64::from(y1) - f64::from(y0));
        let steps = (dx.abs().max(dy.abs()) / 2.0).ceil().min(10_000.0) as i32;
        for s in 1..steps {
            let t = f64::from(s) / f64::from(steps);
            out.push((x0 + (dx * t) as i32, y0 + (dy * t) as i32));
        }
    }
    out
}

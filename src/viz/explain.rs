//! Grids that explain a model's errors: the images it is most confidently wrong about ("top
//! losses") and Grad-CAM heatmaps over photos.

use std::path::Path;

use image::imageops;
use image::{Rgb, RgbImage};

use super::colormap::{CAM_ALPHA, Colormap, heatmap_overlay};
use super::grid::shorten_keeping;
use super::grid::{GRID_CELL_SIZE, GRID_PADDING, RIGHT_COLOR, WRONG_COLOR, fit, frame};
use super::text::{self, HAlign, Label, VAlign};
use super::{VizError, ensure_font, write_png};
use crate::train::Heatmap;

/// Most images [`top_losses_grid`] and [`grad_cam_grid`] draw; later items are left out.
pub const MAX_EXPLAIN_ITEMS: usize = 64;

/// Height in pixels of the title band at the top of the explanation grids.
const TITLE_HEIGHT: u32 = 44;
/// Title font sizes tried, largest first, until the title fits the picture's width.
const TITLE_SIZES: [f32; 5] = [20.0, 18.0, 16.0, 14.0, 12.0];
/// Height in pixels of one caption line.
const LINE_HEIGHT: u32 = 21;
/// Caption font sizes tried, largest first, until every caption line fits its cell.
const LINE_SIZES: [f32; 6] = [16.0, 15.0, 14.0, 13.0, 12.0, 11.0];
/// Blank pixels between the photo and its heatmap in a Grad-CAM cell.
const PANEL_GAP: u32 = 8;
/// Colour of titles and neutral caption lines.
const TEXT_COLOR: [u8; 3] = [30, 30, 30];
/// Colour of secondary caption lines (loss, heatmap class).
const NOTE_COLOR: [u8; 3] = [90, 90, 90];

/// One image of a [`top_losses_grid`]: what the model predicted for it and how wrong it was.
#[derive(Debug, Clone, PartialEq)]
pub struct LossItem {
    /// The image, at any size (best as the model saw it, see
    /// [`model_view`](crate::train::model_view)): it is scaled to fit a 224-pixel square.
    pub image: RgbImage,
    /// The true class name.
    pub label: String,
    /// The predicted class name.
    pub predicted: String,
    /// Probability of the predicted class.
    pub probability: f32,
    /// Cross-entropy of the true class.
    pub loss: f32,
}

impl LossItem {
    /// Whether the prediction is right (`predicted == label`).
    pub fn is_correct(&self) -> bool {
        self.label == self.predicted
    }
}

/// One image of a [`grad_cam_grid`]: the photo, its Grad-CAM heatmap and the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct CamItem {
    /// The photo as the model saw it (see [`Explanation::shown`](crate::train::Explanation)),
    /// at any size: it is scaled to fit a 224-pixel square.
    pub image: RgbImage,
    /// The heatmap over `image`, values in [0, 1] (from
    /// [`grad_cam`](crate::train::grad_cam)); it is stretched over the whole image.
    pub heatmap: Heatmap,
    /// The true class name.
    pub label: String,
    /// The predicted class name.
    pub predicted: String,
    /// Probability of the predicted class.
    pub probability: f32,
    /// Name of the class the heatmap explains (usually the predicted one).
    pub heatmap_class: String,
}

impl CamItem {
    /// Whether the prediction is right (`predicted == label`).
    pub fn is_correct(&self) -> bool {
        self.label == self.predicted
    }
}

/// A caption line: `head` is shortened with "…" when the line is too long, `tail` is kept.
struct Line {
    head: String,
    tail: String,
    color: [u8; 3],
}

impl Line {
    fn new(head: String, tail: String, color: [u8; 3]) -> Self {
        Self { head, tail, color }
    }
}

/// One cell: images side by side, caption lines above them, a red frame when wrong.
struct Cell {
    panels: Vec<RgbImage>,
    lines: Vec<Line>,
    framed: bool,
}

/// The geometry of a captioned grid of `n` cells of `panels` images and `lines` caption lines.
#[derive(Debug, Clone, Copy)]
struct Layout {
    columns: u32,
    rows: u32,
    panels: u32,
    lines: u32,
}

impl Layout {
    /// Columns and rows for `n` cells: about as many image squares across as down.
    fn new(n: usize, panels: u32, lines: u32) -> Self {
        let n = n.clamp(1, MAX_EXPLAIN_ITEMS) as u32;
        let columns = ((f64::from(n) / f64::from(panels)).sqrt().ceil() as u32).clamp(1, n);
        Self {
            columns,
            rows: n.div_ceil(columns),
            panels,
            lines,
        }
    }

    fn cell_width(&self) -> u32 {
        2 * GRID_PADDING + self.panels * GRID_CELL_SIZE + (self.panels - 1) * PANEL_GAP
    }

    fn band_height(&self) -> u32 {
        self.lines * LINE_HEIGHT + 6
    }

    fn cell_height(&self) -> u32 {
        2 * GRID_PADDING + self.band_height() + GRID_CELL_SIZE
    }

    fn size(&self) -> (u32, u32) {
        (
            self.columns * self.cell_width(),
            TITLE_HEIGHT + self.rows * self.cell_height(),
        )
    }

    fn origin(&self, k: usize) -> (u32, u32) {
        let (row, col) = (k as u32 / self.columns, k as u32 % self.columns);
        (
            col * self.cell_width(),
            TITLE_HEIGHT + row * self.cell_height(),
        )
    }
}

/// Caption lines of a [`top_losses_grid`] cell.
const LOSS_LINES: u32 = 3;
/// Caption lines of a [`grad_cam_grid`] cell.
const CAM_LINES: u32 = 3;

/// Width and height in pixels of the picture [`top_losses_grid`] writes for `n` items: a title
/// band of 44 pixels, then `columns = ⌈√n⌉` cells across and `⌈n / columns⌉` down, each a
/// 224-pixel image square under 3 caption lines, with 10 pixels of margin on every side.
/// `n` is read in `1..=MAX_EXPLAIN_ITEMS`.
pub fn top_losses_grid_size(n: usize) -> (u32, u32) {
    Layout::new(n, 1, LOSS_LINES).size()
}

/// Width and height in pixels of the picture [`grad_cam_grid`] writes for `n` items: a title
/// band of 44 pixels, then `columns = ⌈√(n / 2)⌉` cells across and `⌈n / columns⌉` down, each
/// two 224-pixel squares (photo, heatmap overlay) 8 pixels apart under 3 caption lines, with 10
/// pixels of margin on every side. `n` is read in `1..=MAX_EXPLAIN_ITEMS`.
pub fn grad_cam_grid_size(n: usize) -> (u32, u32) {
    Layout::new(n, 2, CAM_LINES).size()
}

/// The prediction line of a caption: "pred: name (0.93)", green when right, red when wrong.
fn prediction_line(predicted: &str, probability: f32, correct: bool) -> Line {
    Line::new(
        format!("pred: {predicted}"),
        format!(" ({probability:.2})"),
        if correct { RIGHT_COLOR } else { WRONG_COLOR },
    )
}

/// Draws the images the model is most confidently wrong about (give them in order, e.g. from
/// [`top_losses`](crate::train::top_losses)) as a grid and writes it as a PNG of
/// [`top_losses_grid_size`]`(items.len())` pixels at `path`, on a white background.
///
/// Under a title, items fill the grid row by row, each image scaled to fit a 224-pixel square
/// under three caption lines: "true: label", "pred: predicted (probability of the prediction)"
/// and "loss 2.31". A wrong prediction is captioned in red and its image framed in red; a right
/// one (when fewer images were wrong than shown) is captioned in green. Captions share the
/// largest font size at which they fit, and are shortened with "…" (keeping the probability)
/// when still too long. At most [`MAX_EXPLAIN_ITEMS`] items are drawn. Missing parent folders of
/// `path` are created and the file is replaced atomically.
///
/// # Errors
/// [`VizError::NothingToDraw`] when `items` is empty; otherwise an error naming `path` when
/// rendering, encoding or writing fails.
pub fn top_losses_grid(items: &[LossItem], path: &Path) -> Result<(), VizError> {
    let cells: Vec<Cell> = items
        .iter()
        .take(MAX_EXPLAIN_ITEMS)
        .map(|item| Cell {
            panels: vec![item.image.clone()],
            lines: vec![
                Line::new(format!("true: {}", item.label), String::new(), TEXT_COLOR),
                prediction_line(&item.predicted, item.probability, item.is_correct()),
                Line::new(format!("loss {:.2}", item.loss), String::new(), NOTE_COLOR),
            ],
            framed: !item.is_correct(),
        })
        .collect();
    let layout = Layout::new(cells.len(), 1, LOSS_LINES);
    let title = "Top losses: true class, prediction (probability), loss";
    captioned_grid("top-losses grid", title, &cells, layout, path)
}

/// Draws photos with their Grad-CAM heatmaps and writes the grid as a PNG of
/// [`grad_cam_grid_size`]`(items.len())` pixels at `path`, on a white background.
///
/// Under a title, items fill the grid row by row; each cell shows the photo and, right of it,
/// the same photo with its heatmap stretched over it (bilinear), coloured with
/// [`Colormap::Jet`] (blue cold, red hot) and blended at [`CAM_ALPHA`], both scaled to fit
/// 224-pixel squares. Three caption lines sit above: "true: label", "pred: predicted
/// (probability)" (green when right, red when wrong, the images then framed in red) and
/// "heatmap: class it explains". At most [`MAX_EXPLAIN_ITEMS`] items are drawn. Missing parent
/// folders of `path` are created and the file is replaced atomically.
///
/// # Errors
/// [`VizError::NothingToDraw`] when `items` is empty; otherwise an error naming `path` when
/// rendering, encoding or writing fails.
pub fn grad_cam_grid(items: &[CamItem], path: &Path) -> Result<(), VizError> {
    let cells: Vec<Cell> = items
        .iter()
        .take(MAX_EXPLAIN_ITEMS)
        .map(|item| {
            // The overlay is made at the size drawn, so the map is interpolated once.
            let photo = fit(&item.image).unwrap_or_else(|| item.image.clone());
            let overlay = heatmap_overlay(&photo, &item.heatmap, Colormap::Jet, CAM_ALPHA);
            Cell {
                panels: vec![photo, overlay],
                lines: vec![
                    Line::new(format!("true: {}", item.label), String::new(), TEXT_COLOR),
                    prediction_line(&item.predicted, item.probability, item.is_correct()),
                    Line::new(
                        format!("heatmap: {}", item.heatmap_class),
                        String::new(),
                        NOTE_COLOR,
                    ),
                ],
                framed: !item.is_correct(),
            }
        })
        .collect();
    let layout = Layout::new(cells.len(), 2, CAM_LINES);
    let title = "Grad-CAM: photo | heatmap (red = strong evidence)";
    captioned_grid("Grad-CAM grid", title, &cells, layout, path)
}

/// Renders `cells` laid out by `layout` under `title` and writes the PNG at `path`; `what`
/// names the picture in errors.
fn captioned_grid(
    what: &str,
    title: &str,
    cells: &[Cell],
    layout: Layout,
    path: &Path,
) -> Result<(), VizError> {
    if cells.is_empty() {
        return Err(VizError::NothingToDraw {
            path: path.to_path_buf(),
            what: what.to_string(),
        });
    }
    let font = ensure_font(path)?;
    let (width, height) = layout.size();
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));

    // Images and frames.
    for (k, cell) in cells.iter().enumerate() {
        let (x0, y0) = layout.origin(k);
        let top = y0 + GRID_PADDING + layout.band_height();
        for (p, panel) in cell.panels.iter().enumerate() {
            let Some(scaled) = fit(panel) else {
                continue;
            };
            let square_x = x0 + GRID_PADDING + p as u32 * (GRID_CELL_SIZE + PANEL_GAP);
            let ix = square_x + (GRID_CELL_SIZE - scaled.width()) / 2;
            imageops::replace(&mut canvas, &scaled, i64::from(ix), i64::from(top));
            if cell.framed {
                frame(&mut canvas, ix, top, scaled.width(), scaled.height());
            }
        }
    }

    // Title, at the largest size that fits.
    let max_title = width.saturating_sub(16) as i32;
    let title_fits = |t: &str, size: f32| text::text_size(font, size, t).0 <= max_title;
    let title_size = TITLE_SIZES
        .into_iter()
        .find(|&size| title_fits(title, size))
        .unwrap_or(TITLE_SIZES[TITLE_SIZES.len() - 1]);
    let title = shorten_keeping(title.to_string(), "", 200, |t| title_fits(t, title_size));
    text::draw(
        &mut canvas,
        font,
        &Label::new(
            title,
            ((width / 2) as i32, (TITLE_HEIGHT / 2) as i32),
            title_size,
            TEXT_COLOR,
        )
        .anchor(HAlign::Center, VAlign::Center),
    );

    // Caption lines, all at the largest size at which every one fits its cell; lines too long
    // even at the smallest size (shortened anyway) do not shrink the others.
    let max_width = (layout.cell_width() - 6) as i32;
    let fits = |t: &str, size: f32| text::text_size(font, size, t).0 <= max_width;
    let smallest = LINE_SIZES[LINE_SIZES.len() - 1];
    let whole: Vec<String> = cells
        .iter()
        .flat_map(|c| &c.lines)
        .map(|l| format!("{}{}", l.head, l.tail))
        .filter(|t| fits(t, smallest))
        .collect();
    let size = LINE_SIZES
        .into_iter()
        .find(|&size| whole.iter().all(|t| fits(t, size)))
        .unwrap_or(smallest);
    for (k, cell) in cells.iter().enumerate() {
        let (x0, y0) = layout.origin(k);
        for (i, line) in cell.lines.iter().enumerate() {
            let max_chars = layout.cell_width() as usize / 2;
            let text = shorten_keeping(line.head.clone(), &line.tail, max_chars, |t| fits(t, size));
            let center = (
                (x0 + layout.cell_width() / 2) as i32,
                (y0 + GRID_PADDING + 3 + i as u32 * LINE_HEIGHT + LINE_HEIGHT / 2) as i32,
            );
            let label =
                Label::new(text, center, size, line.color).anchor(HAlign::Center, VAlign::Center);
            text::draw(&mut canvas, font, &label);
        }
    }
    write_png(path, &canvas)
}

//! The confusion matrix as a picture: counts and row-normalised fractions side by side.

use std::path::Path;

use ab_glyph::FontRef;
use image::{Rgb, RgbImage};

use super::colormap::Colormap;
use super::text::{self, HAlign, Label, VAlign};
use super::{VizError, ensure_font, write_png};

/// Most classes [`confusion_matrix_png`] draws (at 8 pixels a cell).
pub const MAX_CONFUSION_CLASSES: usize = 200;

/// Side of the matrix, in pixels, that the cell size aims at.
const MATRIX_SIDE: u32 = 520;
/// Smallest and largest cell side in pixels.
const MIN_CELL: u32 = 8;
const MAX_CELL: u32 = 120;
/// From this cell size on, column names are written across under their column; below, they are
/// turned to read upwards.
const HORIZONTAL_NAMES_CELL: u32 = 80;
/// Width of the room left of the matrix for row names (and height under it for turned column
/// names).
const NAME_AREA: u32 = 140;
/// Height of the picture's title band.
const TITLE_HEIGHT: u32 = 48;
/// Height of a panel's title band.
const PANEL_TITLE_HEIGHT: u32 = 34;
/// Width of the room for the vertical axis title ("true class").
const AXIS_TITLE: u32 = 30;
/// Gap between the matrix and its colour bar, width of the bar, room for its tick labels.
const BAR_GAP: u32 = 14;
const BAR_WIDTH: u32 = 16;
const BAR_LABELS: u32 = 56;
/// Outer margin of each panel.
const MARGIN: u32 = 12;
/// Colour of titles, names and tick labels.
const TEXT_COLOR: [u8; 3] = [30, 30, 30];
/// Dark and light text inside cells, picked by the cell's lightness.
const DARK_TEXT: [u8; 3] = [20, 20, 20];
const LIGHT_TEXT: [u8; 3] = [255, 255, 255];

/// Where the parts of a [`confusion_matrix_png`] picture lie, in pixels. It depends only on the
/// number of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfusionLayout {
    /// Width of the picture.
    pub width: u32,
    /// Height of the picture.
    pub height: u32,
    /// Number of classes.
    pub classes: usize,
    /// Side of a cell.
    pub cell: u32,
    /// Top-left pixel of the counts matrix (left panel).
    pub counts_origin: (u32, u32),
    /// Top-left pixel of the row-normalised matrix (right panel).
    pub normalized_origin: (u32, u32),
    /// Whether column names are written across (else turned to read upwards).
    pub horizontal_names: bool,
}

impl ConfusionLayout {
    /// The layout for `classes` classes (read in `1..=MAX_CONFUSION_CLASSES`): cells of
    /// `clamp(520 / classes, 8, 120)` pixels.
    pub fn new(classes: usize) -> Self {
        let n = classes.clamp(1, MAX_CONFUSION_CLASSES) as u32;
        let cell = (MATRIX_SIDE / n).clamp(MIN_CELL, MAX_CELL);
        let side = n * cell;
        let horizontal_names = cell >= HORIZONTAL_NAMES_CELL;
        let left = MARGIN + AXIS_TITLE + NAME_AREA;
        let panel_width = left + side + BAR_GAP + BAR_WIDTH + BAR_LABELS + MARGIN;
        let names_below = if horizontal_names { 28 } else { NAME_AREA };
        let top = TITLE_HEIGHT + PANEL_TITLE_HEIGHT;
        let height = top + side + 6 + names_below + 34 + MARGIN;
        Self {
            width: 2 * panel_width,
            height,
            classes: n as usize,
            cell,
            counts_origin: (left, top),
            normalized_origin: (panel_width + left, top),
            horizontal_names,
        }
    }

    /// The cell of true class `t` and predicted class `p` in panel `panel` (0: counts, 1:
    /// row-normalised) as left, top, width, height; `None` outside the matrix.
    pub fn cell_rect(&self, panel: usize, t: usize, p: usize) -> Option<(u32, u32, u32, u32)> {
        let (x, y) = match panel {
            0 => self.counts_origin,
            1 => self.normalized_origin,
            _ => return None,
        };
        (t < self.classes && p < self.classes).then(|| {
            (
                x + p as u32 * self.cell,
                y + t as u32 * self.cell,
                self.cell,
                self.cell,
            )
        })
    }

    /// Side of the matrix in pixels.
    fn side(&self) -> u32 {
        self.classes as u32 * self.cell
    }
}

/// Draws `confusion` (`confusion[true][predicted]` counts, square) as a PNG of
/// [`ConfusionLayout::new`]`(classes)` size at `path`: two panels side by side, the counts on the
/// left and the rows normalised to fractions on the right (each row divided by its total: the
/// diagonal reads as each class's recall; a class without images gives a row of 0).
///
/// Each cell is coloured by its value on matplotlib's `Blues` scale (white 0 to dark blue, the
/// largest count or 1) shown by a colour bar beside each panel, with the number written in the
/// cell in white on dark cells and black on light ones (when the cell is at least 16 pixels).
/// Rows are true classes, labelled "true class" and named on the left; columns are predicted
/// classes, labelled "predicted class" and named below (across for up to 5 classes, turned to
/// read upwards for more). Names too long are shortened in the middle with "…". Cells shrink with the number
/// of classes: numbers are written up to 32 classes, names up to 52, and only colours beyond. The title gives the number
/// of images and the accuracy. Missing names are replaced by the class index. Missing parent
/// folders of `path` are created and the file is replaced atomically.
///
/// # Errors
/// [`VizError::NothingToDraw`] for an empty matrix, [`VizError::BadConfusion`] when a row's
/// length differs from the number of rows, [`VizError::TooManyClasses`] above
/// [`MAX_CONFUSION_CLASSES`]; otherwise an error naming `path` when rendering, encoding or
/// writing fails.
pub fn confusion_matrix_png(
    confusion: &[Vec<usize>],
    class_names: &[String],
    path: &Path,
) -> Result<(), VizError> {
    let n = confusion.len();
    if n == 0 {
        return Err(VizError::NothingToDraw {
            path: path.to_path_buf(),
            what: "confusion matrix".into(),
        });
    }
    if let Some((row, cells)) = confusion
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != n)
        .map(|(i, r)| (i, r.len()))
    {
        return Err(VizError::BadConfusion {
            path: path.to_path_buf(),
            message: format!("row {row} has {cells} cells, expected {n} (one per class)"),
        });
    }
    if n > MAX_CONFUSION_CLASSES {
        return Err(VizError::TooManyClasses {
            path: path.to_path_buf(),
            classes: n,
            max: MAX_CONFUSION_CLASSES,
        });
    }
    let font = ensure_font(path)?;
    let layout = ConfusionLayout::new(n);
    let mut canvas = RgbImage::from_pixel(layout.width, layout.height, Rgb([255, 255, 255]));
    let names: Vec<String> = (0..n)
        .map(|c| class_names.get(c).cloned().unwrap_or_else(|| c.to_string()))
        .collect();

    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..n).map(|c| confusion[c][c]).sum();
    let accuracy = if total == 0 {
        0.0
    } else {
        correct as f64 / total as f64
    };
    let max_count = confusion.iter().flatten().copied().max().unwrap_or(0);
    let counts = Panel {
        index: 0,
        title: "Counts".into(),
        values: confusion
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect(),
        max: max_count.max(1) as f64,
        text: Box::new(|v: f64| format!("{}", v.round() as u64)),
        ticks: count_ticks(max_count),
    };
    let normalized = Panel {
        index: 1,
        title: "Normalised over each true class (recall on the diagonal)".into(),
        values: confusion
            .iter()
            .map(|r| {
                let sum: usize = r.iter().sum();
                r.iter()
                    .map(|&v| if sum == 0 { 0.0 } else { v as f64 / sum as f64 })
                    .collect()
            })
            .collect(),
        max: 1.0,
        text: Box::new(|v: f64| {
            if v == 0.0 {
                "0".into()
            } else {
                format!("{v:.2}")
            }
        }),
        ticks: vec![(0.0, "0".into()), (0.5, "0.5".into()), (1.0, "1".into())],
    };
    let mut labels = Vec::new();
    let title = format!(
        "Confusion matrix: {total} image{}, accuracy {accuracy:.3}",
        if total == 1 { "" } else { "s" }
    );
    labels.push(
        Label::new(
            title,
            ((layout.width / 2) as i32, (TITLE_HEIGHT / 2 + 2) as i32),
            22.0,
            TEXT_COLOR,
        )
        .anchor(HAlign::Center, VAlign::Center),
    );
    for panel in [&counts, &normalized] {
        draw_panel(&mut canvas, font, &layout, panel, &names, &mut labels);
    }
    for label in &labels {
        text::draw(&mut canvas, font, label);
    }
    write_png(path, &canvas)
}

/// One matrix of the picture.
struct Panel {
    index: usize,
    title: String,
    values: Vec<Vec<f64>>,
    /// The value of the darkest colour.
    max: f64,
    text: Box<dyn Fn(f64) -> String>,
    /// Colour-bar ticks: value and label.
    ticks: Vec<(f64, String)>,
}

/// Ticks of the counts colour bar: 0, the middle and the largest count (whole numbers only).
fn count_ticks(max: usize) -> Vec<(f64, String)> {
    let mut ticks = vec![(0.0, "0".to_string())];
    if max >= 4 && max.is_multiple_of(2) {
        ticks.push(((max / 2) as f64, (max / 2).to_string()));
    }
    if max > 0 {
        ticks.push((max as f64, max.to_string()));
    }
    ticks
}

/// Draws `panel`'s cells and colour bar on `canvas`, and pushes its texts to `labels`.
fn draw_panel(
    canvas: &mut RgbImage,
    font: &FontRef<'static>,
    layout: &ConfusionLayout,
    panel: &Panel,
    names: &[String],
    labels: &mut Vec<Label>,
) {
    let n = layout.classes;
    let cell = layout.cell;
    let side = layout.side();
    let (mx, my) = if panel.index == 0 {
        layout.counts_origin
    } else {
        layout.normalized_origin
    };
    let panel_left = mx - (MARGIN + AXIS_TITLE + NAME_AREA);
    let panel_width = layout.width / 2;

    // Cells, with white lines between them when there is room.
    let gap = u32::from(cell >= 12);
    for t in 0..n {
        for p in 0..n {
            let v = panel.values[t][p];
            let colour = Colormap::Blues.rgb((v / panel.max) as f32);
            let (x, y) = (mx + p as u32 * cell, my + t as u32 * cell);
            fill(canvas, x, y, cell - gap, cell - gap, colour);
        }
    }

    // Numbers in the cells, one size for the panel: the largest that fits every cell.
    if cell >= 16 {
        let texts: Vec<Vec<String>> = panel
            .values
            .iter()
            .map(|r| r.iter().map(|&v| (panel.text)(v)).collect())
            .collect();
        let max_size = (cell as f32 * 0.36).min(24.0);
        let widest = texts
            .iter()
            .flatten()
            .map(|t| text::text_size(font, max_size, t).0)
            .max()
            .unwrap_or(0);
        // Text widths scale with the size.
        let room = (cell as f32 - 4.0).max(1.0);
        let size = if widest as f32 > room {
            (max_size * room / widest as f32).floor().max(8.0)
        } else {
            max_size
        };
        for (t, (values, texts)) in panel.values.iter().zip(&texts).enumerate() {
            for (p, (&v, text)) in values.iter().zip(texts).enumerate() {
                let colour = Colormap::Blues.rgb((v / panel.max) as f32);
                let colour = if lightness(colour) < 0.55 {
                    LIGHT_TEXT
                } else {
                    DARK_TEXT
                };
                let center = (
                    (mx + p as u32 * cell + (cell - gap) / 2) as i32,
                    (my + t as u32 * cell + (cell - gap) / 2) as i32,
                );
                labels.push(
                    Label::new(text.clone(), center, size, colour)
                        .anchor(HAlign::Center, VAlign::Center),
                );
            }
        }
    }

    // Class names: rows on the left, columns below. How far they reach places the axis titles.
    let mut row_names_width = 0;
    let mut col_names_height = 0;
    if cell >= 10 {
        let name_size = (cell as f32 * 0.62).clamp(8.0, 15.0);
        let area = NAME_AREA as i32 - 8;
        let fits = |t: &str, w: i32| text::text_size(font, name_size, t).0 <= w;
        for (c, name) in names.iter().enumerate() {
            let centre = (my + c as u32 * cell + (cell - gap) / 2) as i32;
            let row_name = shorten_middle(name, |t| fits(t, area));
            let label = Label::new(row_name, (mx as i32 - 6, centre), name_size, TEXT_COLOR)
                .anchor(HAlign::Right, VAlign::Center);
            row_names_width = row_names_width.max(label.bounds(font).2);
            labels.push(label);
            let col_centre = (mx + c as u32 * cell + (cell - gap) / 2) as i32;
            let top = (my + side + 6) as i32;
            let label = if layout.horizontal_names {
                let text = shorten_middle(name, |t| fits(t, cell as i32 - 6));
                Label::new(text, (col_centre, top), name_size, TEXT_COLOR)
                    .anchor(HAlign::Center, VAlign::Top)
            } else {
                let text = shorten_middle(name, |t| fits(t, area));
                Label::new(text, (col_centre, top), name_size, TEXT_COLOR)
                    .anchor(HAlign::Center, VAlign::Top)
                    .vertical()
            };
            col_names_height = col_names_height.max(label.bounds(font).3);
            labels.push(label);
        }
    }

    // Panel title over the matrix (kept inside the panel), axis titles next to the names.
    let centre_x = (mx + side / 2) as i32;
    let title_size = fitting_size(font, &panel.title, 17.0, panel_width as i32 - 20);
    let title_half = text::text_size(font, title_size, &panel.title).0 / 2;
    let (lo, hi) = (
        panel_left as i32 + title_half + 6,
        (panel_left + panel_width) as i32 - title_half - 6,
    );
    let title_x = if lo <= hi {
        centre_x.clamp(lo, hi)
    } else {
        (panel_left + panel_width / 2) as i32
    };
    labels.push(
        Label::new(
            panel.title.clone(),
            (title_x, (TITLE_HEIGHT + PANEL_TITLE_HEIGHT / 2) as i32),
            title_size,
            TEXT_COLOR,
        )
        .anchor(HAlign::Center, VAlign::Center),
    );
    labels.push(
        Label::new(
            "predicted class",
            (centre_x, (my + side) as i32 + 6 + col_names_height + 10),
            16.0,
            TEXT_COLOR,
        )
        .anchor(HAlign::Center, VAlign::Top),
    );
    let axis_x = (mx as i32 - 6 - row_names_width - 22).max((panel_left + MARGIN) as i32 + 10);
    labels.push(
        Label::new(
            "true class",
            (axis_x, (my + side / 2) as i32),
            16.0,
            TEXT_COLOR,
        )
        .anchor(HAlign::Center, VAlign::Center)
        .vertical(),
    );

    // Colour bar, darkest at the top, with its ticks.
    let bar_x = mx + side + BAR_GAP;
    let bar_h = side.max(2);
    for y in 0..bar_h {
        let t = 1.0 - y as f32 / (bar_h - 1) as f32;
        fill(canvas, bar_x, my + y, BAR_WIDTH, 1, Colormap::Blues.rgb(t));
    }
    outline(canvas, bar_x, my, BAR_WIDTH, bar_h, [120, 120, 120]);
    for (value, text) in &panel.ticks {
        let y = my + ((1.0 - value / panel.max) * f64::from(bar_h - 1)).round() as u32;
        fill(canvas, bar_x + BAR_WIDTH, y, 4, 1, [120, 120, 120]);
        labels.push(
            Label::new(
                text.clone(),
                ((bar_x + BAR_WIDTH + 7) as i32, y as i32),
                13.0,
                TEXT_COLOR,
            )
            .anchor(HAlign::Left, VAlign::Center),
        );
    }
}

/// The largest size up to `size` (down to 10) at which `text` is at most `width` pixels wide.
fn fitting_size(font: &FontRef<'static>, text: &str, size: f32, width: i32) -> f32 {
    let mut size = size;
    while size > 10.0 && text::text_size(font, size, text).0 > width {
        size -= 1.0;
    }
    size
}

/// `name` as it is if it `fits`, else shortened in the middle ("a rather…number 7"): class names
/// often differ only at their end ("class 1", "class 2"), and their beginning reads first.
fn shorten_middle(name: &str, fits: impl Fn(&str) -> bool) -> String {
    if fits(name) {
        return name.to_string();
    }
    let chars: Vec<char> = name.chars().collect();
    // Names are at most a cell or the name area wide: longer texts cannot fit.
    let mut keep = chars.len().min(128);
    while keep > 0 {
        keep -= 1;
        // A little more of the beginning than of the end.
        let tail = keep * 2 / 5;
        let head = keep - tail;
        let text: String = chars[..head]
            .iter()
            .chain(['…'].iter())
            .chain(chars[chars.len() - tail..].iter())
            .collect();
        if fits(&text) {
            return text;
        }
    }
    "…".to_string()
}

/// Relative lightness of `colour` in [0, 1] (Rec. 601 luma).
fn lightness([r, g, b]: [u8; 3]) -> f32 {
    (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)) / 255.0
}

/// Paints the `w` × `h` rectangle at (`x`, `y`) of `canvas` (clipped) with `colour`.
fn fill(canvas: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    for py in y..(y + h).min(canvas.height()) {
        for px in x..(x + w).min(canvas.width()) {
            canvas.put_pixel(px, py, Rgb(colour));
        }
    }
}

/// A one-pixel outline of the `w` × `h` rectangle at (`x`, `y`).
fn outline(canvas: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: [u8; 3]) {
    fill(canvas, x, y, w, 1, colour);
    fill(canvas, x, y + h.saturating_sub(1), w, 1, colour);
    fill(canvas, x, y, 1, h, colour);
    fill(canvas, x + w.saturating_sub(1), y, 1, h, colour);
}

//! A grid of images captioned with their true and predicted labels.

use std::path::Path;

use super::text::{self, HAlign, Label, VAlign};
use super::{VizError, ensure_font, write_png};
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

/// Default number of columns (and rows) of [`prediction_grid`]: a 3 × 3 grid, as in the Keras
/// and PyTorch tutorials.
pub const DEFAULT_GRID: usize = 3;
/// Largest number of columns (and rows) [`prediction_grid`] accepts.
pub const MAX_GRID: usize = 16;
/// Side in pixels of the square each image is scaled to fit in.
pub const GRID_CELL_SIZE: u32 = 224;
/// Height in pixels of the caption band above each image.
pub const GRID_CAPTION_HEIGHT: u32 = 28;
/// Blank margin in pixels on every side of a cell (caption band and image square).
pub const GRID_PADDING: u32 = 10;

/// Colour of the caption of a right prediction.
pub(super) const RIGHT_COLOR: [u8; 3] = [0, 120, 0];
/// Colour of the caption and frame of a wrong prediction.
pub(super) const WRONG_COLOR: [u8; 3] = [215, 0, 0];
/// Width in pixels of the frame drawn on the border of a wrongly predicted image.
const FRAME_WIDTH: u32 = 3;
/// Caption font sizes tried, largest first, until every caption fits its cell.
const CAPTION_SIZES: [f32; 5] = [19.0, 17.0, 15.0, 13.0, 11.0];

/// One image of a [`prediction_grid`] with its true and its predicted class name.
#[derive(Debug, Clone, PartialEq)]
pub struct GridItem {
    /// The image, at any size: it is scaled to fit a [`GRID_CELL_SIZE`] square.
    pub image: RgbImage,
    /// The true class name.
    pub label: String,
    /// The predicted class name.
    pub predicted: String,
}

impl GridItem {
    /// Whether the prediction is right (`predicted == label`).
    pub fn is_correct(&self) -> bool {
        self.label == self.predicted
    }
}

/// Width and height in pixels of the picture [`prediction_grid`] writes for `columns` columns:
/// `columns` cells of `GRID_CELL_SIZE + 2 * GRID_PADDING` pixels across and `columns` cells of
/// `GRID_CAPTION_HEIGHT + GRID_CELL_SIZE + 2 * GRID_PADDING` pixels down.
pub fn prediction_grid_size(columns: usize) -> (u32, u32) {
    let n = columns.min(MAX_GRID) as u32;
    (n * cell_width(), n * cell_height())
}

fn cell_width() -> u32 {
    GRID_CELL_SIZE + 2 * GRID_PADDING
}

fn cell_height() -> u32 {
    GRID_CAPTION_HEIGHT + GRID_CELL_SIZE + 2 * GRID_PADDING
}

/// Draws `items` as a `columns` × `columns` grid (use [`DEFAULT_GRID`] for 3 × 3) and writes it
/// as a PNG of [`prediction_grid_size`]`(columns)` pixels at `path`, on a white background.
///
/// Items fill the grid row by row. Each cell holds a caption "Label: x, Pred: y" above the image,
/// which is scaled (up or down) to fit a [`GRID_CELL_SIZE`] square keeping its aspect ratio,
/// centred across and set at the top of the square, right under its caption. A right prediction
/// is captioned in green; a wrong one is captioned in red and its image framed in red. All
/// captions share one font size, the largest at which they all fit their cells; a caption still
/// too long at the smallest size is shortened with "…". When there are fewer items than cells the
/// remaining cells stay empty; items beyond `columns²` are not drawn. Missing parent folders of
/// `path` are created and the file is replaced atomically.
///
/// # Errors
/// [`VizError::NoItems`] when `items` is empty, [`VizError::InvalidColumns`] when `columns` is 0
/// or above [`MAX_GRID`]; otherwise an error naming `path` when rendering, encoding or writing
/// fails.
pub fn prediction_grid(items: &[GridItem], columns: usize, path: &Path) -> Result<(), VizError> {
    if items.is_empty() {
        return Err(VizError::NoItems {
            path: path.to_path_buf(),
        });
    }
    if columns == 0 || columns > MAX_GRID {
        return Err(VizError::InvalidColumns {
            path: path.to_path_buf(),
            columns,
            max: MAX_GRID,
        });
    }
    let font = ensure_font(path)?;
    let (width, height) = prediction_grid_size(columns);
    let cells = columns * columns;
    let shown = &items[..items.len().min(cells)];

    // Images and frames, pixel by pixel.
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (k, item) in shown.iter().enumerate() {
        let (x0, y0) = cell_origin(k, columns);
        let (bx, by) = (x0 + GRID_PADDING, y0 + GRID_PADDING + GRID_CAPTION_HEIGHT);
        let Some(scaled) = fit(&item.image) else {
            continue;
        };
        let ix = bx + (GRID_CELL_SIZE - scaled.width()) / 2;
        let iy = by;
        imageops::replace(&mut canvas, &scaled, i64::from(ix), i64::from(iy));
        if !item.is_correct() {
            frame(&mut canvas, ix, iy, scaled.width(), scaled.height());
        }
    }

    // Captions, with the embedded font, all at the largest size at which they fit.
    let captions: Vec<String> = shown
        .iter()
        .map(|item| format!("Label: {}, Pred: {}", item.label, item.predicted))
        .collect();
    let max_width = (cell_width() - 6) as i32;
    let fits = |text: &str, size: f32| text::text_size(font, size, text).0 <= max_width;
    let size = CAPTION_SIZES
        .into_iter()
        .find(|&size| captions.iter().all(|c| fits(c, size)))
        .unwrap_or(CAPTION_SIZES[CAPTION_SIZES.len() - 1]);
    for (k, (item, caption)) in shown.iter().zip(captions).enumerate() {
        let (x0, y0) = cell_origin(k, columns);
        let color = if item.is_correct() {
            RIGHT_COLOR
        } else {
            WRONG_COLOR
        };
        let caption = shorten(caption, |t| fits(t, size));
        let center = (
            (x0 + cell_width() / 2) as i32,
            (y0 + GRID_PADDING + GRID_CAPTION_HEIGHT / 2) as i32,
        );
        let label = Label::new(caption, center, size, color).anchor(HAlign::Center, VAlign::Center);
        text::draw(&mut canvas, font, &label);
    }
    write_png(path, &canvas)
}

/// Top-left pixel of cell `k` of a grid of `columns` columns, filled row by row.
fn cell_origin(k: usize, columns: usize) -> (u32, u32) {
    let (row, col) = ((k / columns) as u32, (k % columns) as u32);
    (col * cell_width(), row * cell_height())
}

/// `image` scaled to fit a [`GRID_CELL_SIZE`] square keeping its aspect ratio; `None` when it
/// has no pixel.
pub(super) fn fit(image: &RgbImage) -> Option<RgbImage> {
    let (w, h) = image.dimensions();
    if w == 0 || h == 0 {
        return None;
    }
    let side = f64::from(GRID_CELL_SIZE);
    let scale = (side / f64::from(w)).min(side / f64::from(h));
    let tw = ((f64::from(w) * scale).round() as u32).clamp(1, GRID_CELL_SIZE);
    let th = ((f64::from(h) * scale).round() as u32).clamp(1, GRID_CELL_SIZE);
    if (tw, th) == (w, h) {
        return Some(image.clone());
    }
    let filter = if scale < 1.0 {
        FilterType::Triangle
    } else {
        FilterType::CatmullRom
    };
    Some(imageops::resize(image, tw, th, filter))
}

/// Paints a red frame on the border of the `w` × `h` rectangle at (`x`, `y`) of `canvas`.
pub(super) fn frame(canvas: &mut RgbImage, x: u32, y: u32, w: u32, h: u32) {
    let red = Rgb(WRONG_COLOR);
    let t = FRAME_WIDTH.min(w).min(h);
    for py in y..y + h {
        for px in x..x + w {
            let border = px < x + t || px >= x + w - t || py < y + t || py >= y + h - t;
            if border && px < canvas.width() && py < canvas.height() {
                canvas.put_pixel(px, py, red);
            }
        }
    }
}

/// `caption` as it is if it `fits`, else its longest beginning that fits once ended with "…".
fn shorten(caption: String, fits: impl Fn(&str) -> bool) -> String {
    // Captions are at most a cell wide, a few dozen glyphs: longer beginnings cannot fit.
    shorten_keeping(caption, "", cell_width() as usize / 2, fits)
}

/// `head + tail` as it is if it `fits`, else the longest beginning of `head` (at most `max_chars`
/// characters) that fits once followed by "…" and `tail`; `tail` alone after "…" if none does.
pub(super) fn shorten_keeping(
    head: String,
    tail: &str,
    max_chars: usize,
    fits: impl Fn(&str) -> bool,
) -> String {
    let whole = format!("{head}{tail}");
    if fits(&whole) {
        return whole;
    }
    let mut chars: Vec<char> = head.chars().take(max_chars).collect();
    while chars.pop().is_some() {
        let text: String = chars.iter().collect::<String>() + "…" + tail;
        if fits(&text) {
            return text;
        }
    }
    format!("…{tail}")
}

//! Pictures of a training run: the accuracy and loss curves of a [`History`], a grid of
//! images captioned with their true and predicted labels, and pictures that explain the model's
//! errors: the confusion matrix ([`confusion_matrix_png`]), the images it is most confidently
//! wrong about ([`top_losses_grid`]) and Grad-CAM heatmaps over photos ([`grad_cam_grid`],
//! [`heatmap_overlay`]).
//!
//! Both are rendered in memory with [plotters](https://docs.rs/plotters) and a font embedded in
//! the crate (DejaVu Sans), so they work on a headless machine without any system font, then
//! encoded as PNG and written atomically (to a temporary file, then renamed): a reader never sees
//! a half-written picture. Missing parent folders of the output path are created. The output is
//! always a PNG, whatever the extension of the path.
//!
//! ```no_run
//! use std::path::Path;
//! use transfer_vision::train::History;
//! use transfer_vision::viz::{plot_history, prediction_grid, GridItem, DEFAULT_GRID};
//!
//! # fn main() -> Result<(), transfer_vision::viz::VizError> {
//! let history = History::default(); // from `fit`
//! plot_history(&history, Path::new("runs/history.png"))?;
//!
//! let items = vec![GridItem {
//!     image: image::RgbImage::new(64, 64),
//!     label: "ants".into(),
//!     predicted: "bees".into(),
//! }];
//! prediction_grid(&items, DEFAULT_GRID, Path::new("runs/predictions.png"))?;
//! # Ok(())
//! # }
//! ```
//!
//! [`History`]: crate::train::History

mod colormap;
mod confusion;
mod explain;
mod grid;
mod history;
mod text;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::FontRef;
use image::{ExtendedColorType, ImageEncoder, RgbImage, codecs::png::PngEncoder};
use plotters::style::FontStyle;

pub use grid::{
    DEFAULT_GRID, GRID_CAPTION_HEIGHT, GRID_CELL_SIZE, GRID_PADDING, GridItem, MAX_GRID,
    prediction_grid, prediction_grid_size,
};
pub use history::{HISTORY_HEIGHT, HISTORY_WIDTH, plot_history};

pub use colormap::{CAM_ALPHA, Colormap, heatmap_overlay};
pub use confusion::{ConfusionLayout, MAX_CONFUSION_CLASSES, confusion_matrix_png};
pub use explain::{
    CamItem, LossItem, MAX_EXPLAIN_ITEMS, grad_cam_grid, grad_cam_grid_size, top_losses_grid,
    top_losses_grid_size,
};

/// The font every picture is drawn with, embedded so that no system font is needed.
static FONT: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/fonts/DejaVuSans.ttf"
));

/// Why a picture could not be made. Every message names the output file.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// The history has no epoch, so there is nothing to plot.
    #[error("cannot plot {}: the history is empty (no epoch to plot)", path.display())]
    EmptyHistory {
        /// The output file.
        path: PathBuf,
    },
    /// The prediction grid was given no item.
    #[error("cannot draw the prediction grid {}: no items were given", path.display())]
    NoItems {
        /// The output file.
        path: PathBuf,
    },
    /// The number of grid columns is outside `1..=MAX_GRID`.
    #[error(
        "cannot draw the prediction grid {}: {columns} columns requested, expected 1 to {max}",
        path.display()
    )]
    InvalidColumns {
        /// The output file.
        path: PathBuf,
        /// The number of columns requested.
        columns: usize,
        /// The largest number of columns allowed ([`MAX_GRID`]).
        max: usize,
    },
    /// A picture was given nothing to draw (no item, an empty matrix).
    #[error("cannot draw the {what} {}: nothing to draw (no items were given)", path.display())]
    NothingToDraw {
        /// The output file.
        path: PathBuf,
        /// The picture (`confusion matrix`, `top-losses grid`, ...).
        what: String,
    },
    /// The confusion matrix is not square.
    #[error("cannot draw the confusion matrix {}: {message}", path.display())]
    BadConfusion {
        /// The output file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The confusion matrix has more classes than can be drawn.
    #[error(
        "cannot draw the confusion matrix {}: {classes} classes, at most {max} can be drawn",
        path.display()
    )]
    TooManyClasses {
        /// The output file.
        path: PathBuf,
        /// The number of classes.
        classes: usize,
        /// The largest number drawn ([`MAX_CONFUSION_CLASSES`]).
        max: usize,
    },
    /// The embedded font could not be loaded.
    #[error("cannot render {}: the embedded font could not be loaded", path.display())]
    Font {
        /// The output file.
        path: PathBuf,
    },
    /// Drawing the picture failed.
    #[error("cannot render {}: {message}", path.display())]
    Render {
        /// The output file.
        path: PathBuf,
        /// What went wrong, as the drawing library reports it.
        message: String,
    },
    /// Encoding the picture as PNG failed.
    #[error("cannot encode {} as PNG: {source}", path.display())]
    Encode {
        /// The output file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The folder of the output file could not be created.
    #[error("cannot create the folder {} for {}: {source}", dir.display(), path.display())]
    CreateDir {
        /// The folder that could not be created.
        dir: PathBuf,
        /// The output file.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The embedded font, also registered under the family names plotters asks for (once per
/// process, in case plotters lays out text of its own).
fn ensure_font(path: &Path) -> Result<&'static FontRef<'static>, VizError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        ["sans-serif", "serif", "monospace"]
            .iter()
            .all(|family| plotters::style::register_font(family, FontStyle::Normal, FONT).is_ok())
    });
    match text::font() {
        Some(font) if registered => Ok(font),
        _ => Err(VizError::Font {
            path: path.to_path_buf(),
        }),
    }
}

/// Wraps a drawing error into [`VizError::Render`].
fn render_error(path: &Path, error: impl std::fmt::Display) -> VizError {
    VizError::Render {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Encodes `image` as PNG and writes it atomically to `path`, creating the missing parent
/// folders first.
fn write_png(path: &Path, image: &RgbImage) -> Result<(), VizError> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|source| VizError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| VizError::CreateDir {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            source,
        })?;
    }
    crate::io::atomic_write(path, &png).map_err(|source| VizError::Write {
        path: path.to_path_buf(),
        source,
    })
}

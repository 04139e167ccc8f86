//! Pictures: the history plot and the prediction grid are decoded back and checked for size and
//! content.

use std::collections::HashSet;
use std::path::Path;

use image::{Rgb, RgbImage};
use transfer_vision::train::{EpochStats, History};
use transfer_vision::viz::{
    DEFAULT_GRID, GRID_CAPTION_HEIGHT, GRID_CELL_SIZE, GRID_PADDING, GridItem, HISTORY_HEIGHT,
    HISTORY_WIDTH, MAX_GRID, VizError, plot_history, prediction_grid, prediction_grid_size,
};

fn epoch(
    i: usize,
    phase: &str,
    train_acc: f64,
    val_acc: f64,
    train_loss: f64,
    val_loss: f64,
) -> EpochStats {
    EpochStats {
        epoch: i,
        phase: phase.to_string(),
        train_loss,
        train_accuracy: train_acc,
        val_loss,
        val_accuracy: val_acc,
        learning_rate: 1e-3,
        seconds: 1.0,
        images_per_second: 100.0,
    }
}

/// Ten epochs of feature extraction followed by ten of fine-tuning.
fn two_phase_history() -> History {
    let mut epochs = Vec::new();
    for i in 0..20 {
        let t = i as f64 / 19.0;
        let phase = if i < 10 {
            "feature_extraction"
        } else {
            "fine_tuning"
        };
        epochs.push(epoch(
            i,
            phase,
            0.55 + 0.4 * t,
            0.6 + 0.35 * t.sqrt(),
            0.9 - 0.7 * t,
            0.8 - 0.5 * t.sqrt(),
        ));
    }
    History { epochs }
}

fn decode(path: &Path) -> RgbImage {
    image::open(path)
        .expect("the written file decodes")
        .to_rgb8()
}

/// Number of distinct colours and fraction of pixels that are not white.
fn content(img: &RgbImage) -> (usize, f64) {
    let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    (
        colours.len(),
        non_white as f64 / (img.width() * img.height()) as f64,
    )
}

fn strongly_red(p: &Rgb<u8>) -> bool {
    let [r, g, b] = p.0;
    r >= 170 && g <= 60 && b <= 60
}

/// Strongly red pixels in the caption band of cell `k` of a grid of `columns` columns.
fn red_caption_pixels(img: &RgbImage, k: usize, columns: usize) -> usize {
    let cw = GRID_CELL_SIZE + 2 * GRID_PADDING;
    let ch = GRID_CAPTION_HEIGHT + GRID_CELL_SIZE + 2 * GRID_PADDING;
    let (x0, y0) = ((k % columns) as u32 * cw, (k / columns) as u32 * ch);
    let mut n = 0;
    for y in y0..y0 + GRID_PADDING + GRID_CAPTION_HEIGHT {
        for x in x0..x0 + cw {
            n += usize::from(strongly_red(img.get_pixel(x, y)));
        }
    }
    n
}

/// A blue-grey gradient (no red in it), `w` × `h`.
fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (40 + x * 60 / w.max(1)) as u8,
            (60 + y * 120 / h.max(1)) as u8,
            (120 + (x + y) * 120 / (w + h).max(1)) as u8,
        ])
    })
}

fn item(label: &str, predicted: &str, w: u32, h: u32) -> GridItem {
    GridItem {
        image: gradient(w, h),
        label: label.to_string(),
        predicted: predicted.to_string(),
    }
}

#[test]
fn history_with_phase_boundary_renders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.png");
    let history = two_phase_history();
    assert_eq!(history.phase_boundaries(), vec![10]);
    plot_history(&history, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), (HISTORY_WIDTH, HISTORY_HEIGHT));
    assert_eq!(img.dimensions(), (1200, 500));
    let (colours, non_white) = content(&img);
    assert!(colours > 50, "only {colours} colours");
    assert!(non_white > 0.02, "only {non_white} of the pixels are drawn");
    // The curves are drawn in their colours (training blue, validation orange).
    let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
    let orange = img.pixels().filter(|p| p.0 == [255, 127, 14]).count();
    assert!(blue > 200 && orange > 200, "blue {blue}, orange {orange}");
    // The phase boundary is drawn in green in both panels.
    let left = (0..HISTORY_WIDTH / 2)
        .flat_map(|x| (0..HISTORY_HEIGHT).map(move |y| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 == [44, 160, 44])
        .count();
    let right = (HISTORY_WIDTH / 2..HISTORY_WIDTH)
        .flat_map(|x| (0..HISTORY_HEIGHT).map(move |y| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 == [44, 160, 44])
        .count();
    assert!(
        left > 100 && right > 100,
        "boundary pixels: {left} left, {right} right"
    );
}

#[test]
fn history_without_boundary_has_no_boundary_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.png");
    let mut history = two_phase_history();
    history.epochs.truncate(10);
    plot_history(&history, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), (HISTORY_WIDTH, HISTORY_HEIGHT));
    let green = img.pixels().filter(|p| p.0 == [44, 160, 44]).count();
    assert_eq!(green, 0);
}

#[test]
fn one_epoch_history_renders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.png");
    let history = History {
        epochs: vec![epoch(0, "feature_extraction", 0.7, 0.8, 0.6, 0.5)],
    };
    plot_history(&history, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), (1200, 500));
    let (colours, non_white) = content(&img);
    assert!(
        colours > 30 && non_white > 0.01,
        "{colours} colours, {non_white} drawn"
    );
    // The single epoch shows as a marker per curve.
    let blue = img.pixels().filter(|p| p.0 == [31, 119, 180]).count();
    let orange = img.pixels().filter(|p| p.0 == [255, 127, 14]).count();
    assert!(blue > 20 && orange > 20, "blue {blue}, orange {orange}");
}

#[test]
fn non_finite_values_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = two_phase_history();
    history.epochs[3].train_loss = f64::NAN;
    history.epochs[4].val_loss = f64::INFINITY;
    history.epochs[5].val_accuracy = f64::NEG_INFINITY;
    history.epochs[12].train_accuracy = f64::NAN;
    let path = dir.path().join("nan.png");
    plot_history(&history, &path).unwrap();
    assert_eq!(decode(&path).dimensions(), (1200, 500));

    // Nothing finite at all, one epoch or several: still a picture.
    for n in [1, 4] {
        let history = History {
            epochs: (0..n)
                .map(|i| epoch(i, "x", f64::NAN, f64::INFINITY, f64::NAN, f64::NEG_INFINITY))
                .collect(),
        };
        let path = dir.path().join(format!("all_nan_{n}.png"));
        plot_history(&history, &path).unwrap();
        assert_eq!(decode(&path).dimensions(), (1200, 500));
    }

    // Constant and extreme values, up to the ends of f64.
    let extremes = [
        (1.0, 1.0, 0.0, 1e300),
        (-f64::MAX, f64::MAX, f64::MAX, -f64::MAX),
        (1e-300, 0.0, 1e-30, 1e-30),
        (f64::MAX, 0.5, 1.7e308, 0.3),
    ];
    for (k, &(ta, va, tl, vl)) in extremes.iter().enumerate() {
        let history = History {
            epochs: (0..3)
                .map(|i| epoch(i, "x", ta, va, tl * (i as f64 - 1.0), vl))
                .collect(),
        };
        let path = dir.path().join(format!("extreme_{k}.png"));
        plot_history(&history, &path).unwrap();
        assert_eq!(decode(&path).dimensions(), (1200, 500));
    }
}

#[test]
fn empty_history_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty_history.png");
    let err = plot_history(&History::default(), &path).unwrap_err();
    assert!(matches!(err, VizError::EmptyHistory { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("empty_history.png"), "{message}");
    assert!(message.contains("empty"), "{message}");
    assert!(!path.exists());
}

#[test]
fn grid_size_is_as_documented() {
    assert_eq!(DEFAULT_GRID, 3);
    assert_eq!(prediction_grid_size(3), (3 * 244, 3 * 272));
    assert_eq!(
        prediction_grid_size(2),
        (
            2 * (GRID_CELL_SIZE + 2 * GRID_PADDING),
            2 * (GRID_CAPTION_HEIGHT + GRID_CELL_SIZE + 2 * GRID_PADDING)
        )
    );
}

#[test]
fn grid_marks_wrong_predictions_in_red() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grid.png");
    // Various shapes: landscape, portrait, tiny (scaled up), large (scaled down).
    let items = vec![
        item("ants", "ants", 500, 375),
        item("bees", "ants", 300, 450),
        item("ants", "ants", 16, 16),
        item("bees", "bees", 1024, 768),
        item("ants", "ants", 224, 224),
    ];
    prediction_grid(&items, DEFAULT_GRID, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), prediction_grid_size(DEFAULT_GRID));
    let (colours, non_white) = content(&img);
    assert!(colours > 100, "only {colours} colours");
    assert!(non_white > 0.2, "only {non_white} of the pixels are drawn");
    // Only the wrong prediction (cell 1) has a red caption.
    for k in 0..9 {
        let red = red_caption_pixels(&img, k, DEFAULT_GRID);
        if k == 1 {
            assert!(red > 30, "cell {k}: {red} red caption pixels");
        } else {
            assert_eq!(red, 0, "cell {k}");
        }
    }
    // Right captions are green.
    let green = img.pixels().filter(|p| p.0 == [0, 120, 0]).count();
    assert!(green > 50, "{green} green pixels");
    // Cells 5..9 are empty: all white.
    let cw = GRID_CELL_SIZE + 2 * GRID_PADDING;
    let ch = GRID_CAPTION_HEIGHT + GRID_CELL_SIZE + 2 * GRID_PADDING;
    for k in 5..9u32 {
        let (x0, y0) = ((k % 3) * cw, (k / 3) * ch);
        for y in y0..y0 + ch {
            for x in x0..x0 + cw {
                assert_eq!(
                    img.get_pixel(x, y).0,
                    [255, 255, 255],
                    "cell {k} at ({x}, {y})"
                );
            }
        }
    }
}

#[test]
fn grid_with_all_right_has_no_red() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("right.png");
    let items: Vec<_> = (0..9)
        .map(|i| item("bees", "bees", 100 + 40 * i, 300))
        .collect();
    prediction_grid(&items, DEFAULT_GRID, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), prediction_grid_size(3));
    let red = img.pixels().filter(|p| strongly_red(p)).count();
    assert_eq!(red, 0);
}

#[test]
fn grid_columns_are_configurable_and_extra_items_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.png");
    // Five items in a 2 × 2 grid: the fifth (the only wrong one) is not drawn.
    let mut items: Vec<_> = (0..4).map(|_| item("a", "a", 64, 48)).collect();
    items.push(item("a", "b", 64, 48));
    prediction_grid(&items, 2, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), prediction_grid_size(2));
    assert_eq!(img.pixels().filter(|p| strongly_red(p)).count(), 0);

    // One column, one item.
    let path = dir.path().join("one.png");
    prediction_grid(&items[4..], 1, &path).unwrap();
    let img = decode(&path);
    assert_eq!(img.dimensions(), prediction_grid_size(1));
    assert!(red_caption_pixels(&img, 0, 1) > 30);
}

#[test]
fn grid_handles_odd_items() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.png");
    let long = "a very long class name that cannot possibly fit in one cell of the grid";
    let items = vec![
        GridItem {
            image: RgbImage::new(0, 0),
            label: "empty image".into(),
            predicted: "x".into(),
        },
        item(long, long, 1, 1000),
        item("ünïcödé ✓", "", 1000, 1),
    ];
    prediction_grid(&items, DEFAULT_GRID, &path).unwrap();
    assert_eq!(decode(&path).dimensions(), prediction_grid_size(3));
}

#[test]
fn grid_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_items.png");
    let err = prediction_grid(&[], DEFAULT_GRID, &path).unwrap_err();
    assert!(matches!(err, VizError::NoItems { .. }), "{err:?}");
    assert!(err.to_string().contains("no_items.png"), "{err}");
    assert!(err.to_string().contains("no items"), "{err}");
    assert!(!path.exists());

    let items = [item("a", "a", 8, 8)];
    for columns in [0, MAX_GRID + 1] {
        let err = prediction_grid(&items, columns, &path).unwrap_err();
        assert!(matches!(err, VizError::InvalidColumns { .. }), "{err:?}");
        assert!(err.to_string().contains("no_items.png"), "{err}");
    }
}

#[test]
fn missing_parent_folders_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let history_path = dir.path().join("a/b/c/history.png");
    plot_history(&two_phase_history(), &history_path).unwrap();
    assert_eq!(decode(&history_path).dimensions(), (1200, 500));

    let grid_path = dir.path().join("d/e/grid.png");
    prediction_grid(&[item("a", "b", 50, 50)], DEFAULT_GRID, &grid_path).unwrap();
    assert_eq!(decode(&grid_path).dimensions(), prediction_grid_size(3));

    // No temporary file is left beside the outputs.
    for folder in [history_path.parent().unwrap(), grid_path.parent().unwrap()] {
        let names: Vec<_> = std::fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

#[test]
fn overwriting_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    std::fs::write(&path, b"not a png").unwrap();
    plot_history(&two_phase_history(), &path).unwrap();
    assert_eq!(decode(&path).dimensions(), (1200, 500));
    prediction_grid(&[item("a", "b", 50, 50)], 2, &path).unwrap();
    assert_eq!(decode(&path).dimensions(), prediction_grid_size(2));
}

#[test]
fn unwritable_path_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a folder is expected.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("sub/plot.png");
    let err = plot_history(&two_phase_history(), &path).unwrap_err();
    assert!(matches!(err, VizError::CreateDir { .. }), "{err:?}");
    assert!(err.to_string().contains("plot.png"), "{err}");
    assert!(
        err.to_string().contains("cannot create the folder"),
        "{err}"
    );

    // The output path is an existing folder.
    let err = prediction_grid(&[item("a", "a", 8, 8)], 1, dir.path()).unwrap_err();
    assert!(matches!(err, VizError::Write { .. }), "{err:?}");
}

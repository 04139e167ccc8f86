//! Explaining a model's errors: per-class metrics, per-image results and top losses, Grad-CAM
//! (checked against Grad-CAM computed with autodiff) and the pictures (decoded back and checked
//! for size and content). With `../shared` present, `real_photos_samples` also draws every
//! picture from real photos and ImageNet MobileNetV2 (into `$TV_VIZ_SAMPLES` when set).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transfer_vision::backend::{Cpu, CpuAutodiff};
use transfer_vision::data::{DataLoader, ImageBatch, ImageFolder, LoaderConfig};
// Batches held in memory.
use transfer_vision::models::{
    EfficientNetConfig, ImageClassifier, MobileNetV2Config, MobileNetV3Config, ResNetConfig,
};
use transfer_vision::train::MemoryBatches as Batches;
use transfer_vision::train::{
    ClassMetrics, ClassificationReport, EvalReport, ExplainError, Heatmap, ImageResult, TrainError,
    evaluate, explain_image, grad_cam, image_results, model_view, predict, top_losses,
};
use transfer_vision::viz::{
    CAM_ALPHA, CamItem, Colormap, ConfusionLayout, LossItem, MAX_CONFUSION_CLASSES, VizError,
    confusion_matrix_png, grad_cam_grid, grad_cam_grid_size, heatmap_overlay, top_losses_grid,
    top_losses_grid_size,
};

/// Runs `init` with the backends' random generator seeded with `seed`, one test at a time: the
/// generator is shared by the tests running in parallel, and a model built while another test
/// draws from it would differ from run to run.
fn seeded<T>(seed: u64, init: impl FnOnce() -> T) -> T {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    <Cpu as Backend>::seed(&Default::default(), seed);
    <CpuAutodiff as Backend>::seed(&Default::default(), seed);
    init()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Rows true, columns predicted; class 2 has no image and is predicted once.
fn confusion3() -> Vec<Vec<usize>> {
    vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 0]]
}

#[test]
fn class_metrics_follow_sklearn_with_zero_division_0() {
    // sklearn.metrics.precision_recall_fscore_support(..., zero_division=0) on these counts.
    let m = ClassMetrics::from_confusion(&confusion3());
    assert_eq!(m.len(), 3);
    assert!(close(m[0].precision, 5.0 / 7.0, 1e-12));
    assert!(close(m[0].recall, 5.0 / 6.0, 1e-12));
    assert!(close(m[0].f1, 10.0 / 13.0, 1e-12));
    assert_eq!(m[0].support, 6);
    assert!(close(m[1].precision, 0.75, 1e-12));
    assert!(close(m[1].recall, 0.5, 1e-12));
    assert!(close(m[1].f1, 0.6, 1e-12));
    // Predicted once, never right, no support: all 0, no NaN.
    assert_eq!(
        m[2],
        ClassMetrics {
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: 0
        }
    );

    let report = ClassificationReport::from_confusion(&confusion3(), &names(&["ants", "bees"]));
    assert_eq!(report.classes, names(&["ants", "bees", "2"]));
    assert!(close(report.accuracy, 8.0 / 12.0, 1e-12));
    assert!(close(
        report.macro_avg.precision,
        (5.0 / 7.0 + 0.75) / 3.0,
        1e-12
    ));
    assert!(close(
        report.weighted_avg.precision,
        (6.0 * 5.0 / 7.0 + 6.0 * 0.75) / 12.0,
        1e-12
    ));
    assert!(close(
        report.weighted_avg.f1,
        (6.0 * 10.0 / 13.0 + 6.0 * 0.6) / 12.0,
        1e-12
    ));
    assert_eq!(report.macro_avg.support, 12);
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("NaN") && !json.contains("null"), "{json}");
    let back: ClassificationReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);

    // Nothing at all: zeros, not NaN.
    let empty = ClassificationReport::from_confusion(&[vec![0, 0], vec![0, 0]], &[]);
    assert_eq!(empty.accuracy, 0.0);
    assert_eq!(empty.weighted_avg, ClassMetrics::default());
}

#[test]
fn eval_report_table_reads_like_sklearn() {
    let report = EvalReport {
        loss: 0.4321,
        accuracy: 8.0 / 12.0,
        per_class_accuracy: vec![5.0 / 6.0, 0.5, 0.0],
        confusion: confusion3(),
        count: 12,
    };
    assert_eq!(report.class_metrics()[1].support, 6);
    let table = report.table(&names(&["ants", "bees", "wasps"]));
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("precision") && lines[0].contains("f1-score"));
    let ants = lines
        .iter()
        .find(|l| l.trim_start().starts_with("ants "))
        .unwrap();
    let cols: Vec<&str> = ants.split_whitespace().collect();
    assert_eq!(cols, ["ants", "0.714", "0.833", "0.769", "6"]);
    let accuracy = lines
        .iter()
        .find(|l| l.trim_start().starts_with("accuracy"))
        .unwrap();
    assert_eq!(
        accuracy.split_whitespace().collect::<Vec<_>>(),
        ["accuracy", "0.667", "12"]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("macro avg"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("weighted avg"))
    );
    // The confusion matrix rows, after its header.
    let bees_row = lines.iter().rfind(|l| l.starts_with("bees")).unwrap();
    assert_eq!(
        bees_row.split_whitespace().collect::<Vec<_>>(),
        ["bees", "2", "3", "1"]
    );
    assert!(table.contains("0.4321"));
}

// ---------------------------------------------------------------------------------------------
// Per-image results and top losses
// ---------------------------------------------------------------------------------------------

fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn batch(labels: &[i64], first: usize, side: usize, seed: u64) -> ImageBatch {
    let n = labels.len();
    ImageBatch {
        images: random_values(n * 3 * side * side, seed),
        shape: [n, 3, side, side],
        labels: labels.to_vec(),
        paths: (first..first + n)
            .map(|i| PathBuf::from(format!("img_{i}.png")))
            .collect(),
        indices: (first..first + n).collect(),
    }
}

#[test]
fn image_results_give_probabilities_and_losses_per_image() {
    let device = Default::default();
    let model = seeded(11, || {
        MobileNetV2Config::new()
            .with_num_classes(3)
            .with_width_mult(0.35)
            .init::<Cpu>(&device)
    });
    let source = Batches {
        batches: vec![batch(&[0, 1, 2], 0, 64, 1), batch(&[2, 0], 3, 64, 2)],
        classes: names(&["a", "b", "c"]),
    };
    let results = image_results(&model, &source, &device).unwrap();
    assert_eq!(results.len(), 5);
    let labels: Vec<usize> = results.iter().map(|r| r.label).collect();
    assert_eq!(labels, [0, 1, 2, 2, 0]);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.path, PathBuf::from(format!("img_{i}.png")));
        assert_eq!(r.index, i);
        let sum: f32 = r.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!((r.loss + r.label_probability().ln()).abs() < 1e-4);
        assert_eq!(r.confidence(), r.probabilities[r.predicted]);
    }
    // The same probabilities as `predict`, and the mean loss is `evaluate`'s.
    let all = &source.batches[0];
    let predictions = predict(&model, all.images_tensor::<Cpu>(&device), &source.classes);
    for (p, r) in predictions.iter().zip(&results) {
        assert_eq!(p.class, r.predicted);
        for (a, b) in p.probabilities.iter().zip(&r.probabilities) {
            assert!((a - b).abs() < 1e-5);
        }
    }
    let report = evaluate(&model, &source, &device).unwrap();
    let mean = results.iter().map(|r| f64::from(r.loss)).sum::<f64>() / 5.0;
    assert!(
        (mean - report.loss).abs() < 1e-4,
        "{mean} vs {}",
        report.loss
    );

    let bad = Batches {
        batches: vec![batch(&[0, 3], 0, 64, 1)],
        classes: names(&["a", "b", "c"]),
    };
    let err = image_results(&model, &bad, &device).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Label {
                label: 3,
                classes: 3
            }
        ),
        "{err}"
    );
}

fn result(index: usize, label: usize, predicted: usize, loss: f32) -> ImageResult {
    ImageResult {
        path: PathBuf::from(format!("{index}.jpg")),
        index,
        label,
        predicted,
        probabilities: vec![0.5, 0.5],
        loss,
    }
}

#[test]
fn top_losses_put_the_most_confidently_wrong_first() {
    let results = vec![
        result(0, 0, 0, 0.9), // right, unsure
        result(1, 0, 1, 1.2), // wrong
        result(2, 1, 0, 3.5), // wrong, very sure
        result(3, 1, 1, 0.1), // right
        result(4, 1, 0, 1.2), // wrong, ties with 1
        result(5, 0, 0, 2.0), // right but high loss: after every wrong one
    ];
    let order = |k| -> Vec<usize> { top_losses(&results, k).iter().map(|r| r.index).collect() };
    assert_eq!(order(2), [2, 1]);
    assert_eq!(order(3), [2, 1, 4]);
    assert_eq!(order(5), [2, 1, 4, 5, 0]);
    assert_eq!(order(100), [2, 1, 4, 5, 0, 3]);
    assert!(order(0).is_empty());
    let with_nan = vec![result(0, 0, 1, 2.0), result(1, 0, 1, f32::NAN)];
    assert_eq!(top_losses(&with_nan, 1)[0].index, 1);
}

// ---------------------------------------------------------------------------------------------
// Grad-CAM
// ---------------------------------------------------------------------------------------------

/// Grad-CAM as its paper defines it, with autodiff: the gradient of the class score with respect
/// to the last block's output, averaged over space, weighs the channels; ReLU; min-max
/// normalisation.
fn reference_grad_cam<M: ImageClassifier<CpuAutodiff>>(
    model: &M,
    x: Tensor<CpuAutodiff, 4>,
    class: usize,
) -> (Vec<f32>, [usize; 4], f32) {
    let model = model.clone().no_grad();
    let blocks = model.block_paths().len();
    let a = model.forward_blocks(x, 0..blocks).detach().require_grad();
    let logits = model.classify(model.pool(a.clone()));
    let score = logits.slice([0..1, class..class + 1]).sum();
    let grads = score.backward();
    let g = a.grad(&grads).expect("the activations get a gradient");
    let dims = a.dims();
    let [_, k, h, w] = dims;
    let host = |t: Tensor<Cpu, 4>| t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let av = host(a.inner());
    let gv = host(g);
    let mut cam = vec![0f64; h * w];
    for c in 0..k {
        let alpha: f64 = gv[c * h * w..(c + 1) * h * w]
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
            / (h * w) as f64;
        for (i, v) in cam.iter_mut().enumerate() {
            *v += alpha * f64::from(av[c * h * w + i]);
        }
    }
    let cam: Vec<f64> = cam.into_iter().map(|v| v.max(0.0)).collect();
    let (lo, hi) = cam
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let raw_max = hi as f32;
    let norm = cam
        .iter()
        .map(|&v| {
            if hi > lo {
                ((v - lo) / (hi - lo)) as f32
            } else {
                0.0
            }
        })
        .collect();
    (norm, dims, raw_max)
}

fn check_grad_cam_against_autodiff<M: ImageClassifier<CpuAutodiff> + AutodiffModule<CpuAutodiff>>(
    model: M,
    side: usize,
    what: &str,
) where
    M::InnerModule: ImageClassifier<Cpu>,
{
    let device = Default::default();
    let x = Tensor::<CpuAutodiff, 4>::from_data(
        TensorData::new(random_values(3 * side * side, 5), [1, 3, side, side]),
        &device,
    );
    let mut informative = 0;
    for class in 0..3 {
        let ours = grad_cam(&model, x.clone(), class).unwrap();
        let (reference, [_, _, h, w], raw_max) = reference_grad_cam(&model, x.clone(), class);
        assert_eq!((ours.width(), ours.height()), (w, h), "{what}");
        assert!(w * h > 1, "{what}: a {w}x{h} map says nothing");
        let worst = ours
            .values()
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{what} class {class}: differs by {worst}");
        if raw_max > 0.0 {
            informative += 1;
            let peak = ours.peak().unwrap().2;
            assert!(
                (peak - 1.0).abs() < 1e-6,
                "{what}: normalised to a peak of 1"
            );
        } else {
            assert!(ours.values().iter().all(|&v| v == 0.0));
        }
        // The same map on the backend without autodiff.
        let plain = grad_cam(&model.valid(), x.clone().inner(), class).unwrap();
        for (a, b) in plain.values().iter().zip(ours.values()) {
            assert!((a - b).abs() < 1e-5, "{what}: backends differ");
        }
    }
    eprintln!("{what}: {informative} of 3 class maps are not flat");
    assert!(
        informative >= 2,
        "{what}: only {informative} class maps are not flat"
    );
}

#[test]
fn grad_cam_equals_autodiff_grad_cam_on_mobilenet_v2() {
    let device = Default::default();
    let model = seeded(21, || {
        MobileNetV2Config::new()
            .with_num_classes(3)
            .init::<CpuAutodiff>(&device)
    });
    check_grad_cam_against_autodiff(model, 128, "MobileNetV2");
}

#[test]
fn grad_cam_equals_autodiff_grad_cam_on_resnet18() {
    let device = Default::default();
    let model = seeded(22, || {
        ResNetConfig::resnet18(3).init::<CpuAutodiff>(&device)
    });
    check_grad_cam_against_autodiff(model, 128, "ResNet18");
}

/// Through MobileNetV3's hidden classifier layer (Hardswish) the channel weights are the chain
/// rule's gradient, not a row of the head; EfficientNet is pool + linear.
#[test]
fn grad_cam_equals_autodiff_grad_cam_on_mobilenet_v3_and_efficientnet() {
    let device = Default::default();
    let model = seeded(23, || {
        MobileNetV3Config::small(3)
            .with_dropout(0.0)
            .init::<CpuAutodiff>(&device)
    });
    check_grad_cam_against_autodiff(model, 128, "MobileNetV3-Small");
    let model = seeded(24, || {
        EfficientNetConfig::b0(3)
            .with_dropout(0.0)
            .init::<CpuAutodiff>(&device)
    });
    check_grad_cam_against_autodiff(model, 128, "EfficientNet-B0");
}

#[test]
fn grad_cam_refuses_bad_classes_and_inputs() {
    let device = Default::default();
    let model = seeded(12, || {
        MobileNetV2Config::new()
            .with_num_classes(3)
            .with_width_mult(0.35)
            .init::<Cpu>(&device)
    });
    let one = Tensor::<Cpu, 4>::zeros([1, 3, 64, 64], &device);
    let err = grad_cam(&model, one, 3).unwrap_err();
    assert!(
        matches!(
            err,
            ExplainError::Class {
                class: 3,
                classes: 3
            }
        ),
        "{err}"
    );
    let two = Tensor::<Cpu, 4>::zeros([2, 3, 64, 64], &device);
    let err = grad_cam(&model, two, 0).unwrap_err();
    assert!(
        matches!(
            err,
            ExplainError::Input {
                dims: [2, 3, 64, 64]
            }
        ),
        "{err}"
    );
    let photo = RgbImage::new(80, 60);
    let pre = transfer_vision::data::Preprocessing::imagenet(64);
    let err = explain_image(&model, &photo, &pre.eval_transform(), Some(7), &device).unwrap_err();
    assert!(matches!(err, ExplainError::Class { class: 7, .. }), "{err}");
    // What the model sees: resized to 73 on the shorter side, centre-cropped to 64.
    let shown = model_view(&photo, &pre.eval_transform()).unwrap();
    assert_eq!(shown.dimensions(), (64, 64));
    let explained = explain_image(&model, &photo, &pre.eval_transform(), None, &device).unwrap();
    assert_eq!(explained.shown.dimensions(), (64, 64));
    assert_eq!(explained.class, explained.predicted);
    assert_eq!(
        (explained.heatmap.width(), explained.heatmap.height()),
        (2, 2)
    );
}

#[test]
fn heatmaps_resize_bilinearly_and_normalise() {
    let map = Heatmap::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    assert!(Heatmap::new(2, 2, vec![0.0; 3]).is_none());
    let big = map.resized(4, 4);
    let row0: Vec<f32> = (0..4).map(|x| big.get(x, 0).unwrap()).collect();
    assert_eq!(row0, [0.0, 0.25, 0.75, 1.0]);
    let col0: Vec<f32> = (0..4).map(|y| big.get(0, y).unwrap()).collect();
    assert_eq!(col0, [0.0, 0.5, 1.5, 2.0]);
    assert_eq!(big.get(3, 3), Some(3.0));
    assert_eq!(map.normalized().values(), [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    let flat = Heatmap::new(2, 1, vec![4.0, 4.0]).unwrap();
    assert_eq!(flat.normalized().values(), [0.0, 0.0]);
    assert_eq!(map.peak(), Some((1, 1, 3.0)));
}

// ---------------------------------------------------------------------------------------------
// Pictures
// ---------------------------------------------------------------------------------------------

/// Copies the picture at `path` to `$TV_VIZ_SAMPLES/name` when that variable is set, to look at.
fn keep(path: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("TV_VIZ_SAMPLES") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(path, dir.join(name)).unwrap();
    }
}

fn decode(path: &Path) -> RgbImage {
    image::open(path)
        .expect("the written file decodes")
        .to_rgb8()
}

fn lightness(p: &Rgb<u8>) -> f32 {
    let [r, g, b] = p.0;
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}

/// Pixels of a rectangle of `img`.
fn pixels(img: &RgbImage, (x, y, w, h): (u32, u32, u32, u32)) -> Vec<Rgb<u8>> {
    let mut out = Vec::new();
    for py in y..y + h {
        for px in x..x + w {
            out.push(*img.get_pixel(px, py));
        }
    }
    out
}

fn strongly_red(p: &Rgb<u8>) -> bool {
    let [r, g, b] = p.0;
    r >= 170 && g <= 60 && b <= 60
}

#[test]
fn heatmap_overlay_colours_hot_areas_red_and_cold_ones_blue() {
    let photo = RgbImage::from_pixel(64, 64, Rgb([128, 128, 128]));
    let map = Heatmap::new(2, 2, vec![0.0, 0.0, 0.0, 1.0]).unwrap();
    let overlay = heatmap_overlay(&photo, &map, Colormap::Jet, CAM_ALPHA);
    assert_eq!(overlay.dimensions(), (64, 64));
    let hot = overlay.get_pixel(60, 60).0;
    let cold = overlay.get_pixel(3, 3).0;
    assert!(hot[0] > hot[2] + 40, "hot corner is red: {hot:?}");
    assert!(cold[2] > cold[0] + 20, "cold corner is blue: {cold:?}");
    assert_ne!(hot, [128, 128, 128]);
    // No opacity: the photo itself.
    assert_eq!(heatmap_overlay(&photo, &map, Colormap::Turbo, 0.0), photo);
    // The colour maps' ends.
    assert_eq!(Colormap::Blues.rgb(0.0), [247, 251, 255]);
    assert_eq!(Colormap::Blues.rgb(1.0), [8, 48, 107]);
    assert_eq!(Colormap::Jet.rgb(0.5), [128, 255, 128]);
    let t = Colormap::Turbo.rgb(1.0);
    assert!(t[0] > 100 && t[2] < 20, "{t:?}");
}

#[test]
fn confusion_matrix_png_colours_cells_by_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/confusion.png");
    let confusion = vec![vec![50, 2], vec![5, 10]];
    confusion_matrix_png(&confusion, &names(&["ants", "bees"]), &path).unwrap();
    let img = decode(&path);
    let layout = ConfusionLayout::new(2);
    assert_eq!(img.dimensions(), (layout.width, layout.height));
    // Inside a cell, away from its number: the cell's colour.
    let corner = |panel, t, p| {
        let (x, y, _, _) = layout.cell_rect(panel, t, p).unwrap();
        *img.get_pixel(x + 3, y + 3)
    };
    for panel in 0..2 {
        let (big, small, off) = (
            corner(panel, 0, 0),
            corner(panel, 1, 1),
            corner(panel, 0, 1),
        );
        assert_ne!(
            big, small,
            "panel {panel}: different values, different colours"
        );
        assert!(
            lightness(&big) < lightness(&small),
            "panel {panel}: more is darker"
        );
        assert!(lightness(&small) < lightness(&off), "panel {panel}");
        assert_ne!(
            off,
            Rgb([255, 255, 255]),
            "panel {panel}: a cell is coloured"
        );
    }
    // Numbers in readable colours: white on the darkest cell, dark on the lightest.
    let dark_cell = pixels(&img, layout.cell_rect(0, 0, 0).unwrap());
    assert!(dark_cell.iter().filter(|p| lightness(p) > 230.0).count() > 20);
    let light_cell = pixels(&img, layout.cell_rect(0, 0, 1).unwrap());
    assert!(light_cell.iter().filter(|p| lightness(p) < 80.0).count() > 10);
    // The same cell with another count gets another colour.
    let other = dir.path().join("other.png");
    confusion_matrix_png(
        &[vec![10, 2], vec![5, 50]],
        &names(&["ants", "bees"]),
        &other,
    )
    .unwrap();
    let other_img = decode(&other);
    let (x, y, _, _) = layout.cell_rect(0, 0, 0).unwrap();
    assert_ne!(
        other_img.get_pixel(x + 3, y + 3),
        img.get_pixel(x + 3, y + 3)
    );
    // Class names left of the rows: dark pixels there.
    let (mx, my) = layout.counts_origin;
    let names_area = pixels(&img, (mx - 100, my, 94, 2 * layout.cell));
    assert!(names_area.iter().filter(|p| lightness(p) < 100.0).count() > 30);
}

#[test]
fn confusion_matrix_png_stays_legible_with_twenty_classes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("confusion20.png");
    let n = 20;
    let confusion: Vec<Vec<usize>> = (0..n)
        .map(|t| {
            (0..n)
                .map(|p| if t == p { 20 + t } else { (t * p) % 3 })
                .collect()
        })
        .collect();
    let class_names: Vec<String> = (0..n)
        .map(|k| format!("a rather long class name number {k}"))
        .collect();
    confusion_matrix_png(&confusion, &class_names, &path).unwrap();
    keep(&path, "confusion_20_classes.png");
    let img = decode(&path);
    let layout = ConfusionLayout::new(n);
    assert_eq!(img.dimensions(), (layout.width, layout.height));
    assert!(layout.cell >= 20 && !layout.horizontal_names);
    assert!(layout.width <= 2000 && layout.height <= 1000, "{layout:?}");
    let corner = |t, p| {
        let (x, y, _, _) = layout.cell_rect(0, t, p).unwrap();
        *img.get_pixel(x + 2, y + 2)
    };
    assert!(lightness(&corner(19, 19)) < lightness(&corner(0, 0)));
    assert!(lightness(&corner(0, 0)) < lightness(&corner(0, 1)));
    // Turned column names below the matrix.
    let (mx, my) = layout.counts_origin;
    let below = pixels(&img, (mx, my + 20 * layout.cell + 8, 20 * layout.cell, 100));
    assert!(below.iter().filter(|p| lightness(p) < 100.0).count() > 500);
}

#[test]
fn confusion_matrix_png_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let err = confusion_matrix_png(&[], &[], &path).unwrap_err();
    assert!(matches!(err, VizError::NothingToDraw { .. }));
    assert!(err.to_string().contains("bad.png"), "{err}");
    let err = confusion_matrix_png(&[vec![1, 2], vec![3]], &[], &path).unwrap_err();
    assert!(matches!(err, VizError::BadConfusion { .. }));
    assert!(err.to_string().contains("bad.png"), "{err}");
    let big = vec![vec![0; MAX_CONFUSION_CLASSES + 1]; MAX_CONFUSION_CLASSES + 1];
    let err = confusion_matrix_png(&big, &[], &path).unwrap_err();
    assert!(matches!(err, VizError::TooManyClasses { .. }), "{err}");
    assert!(!path.exists());
}

fn tinted(w: u32, h: u32, colour: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let wave = ((x + y) % 16) as u8;
        Rgb([
            colour[0].saturating_add(wave),
            colour[1].saturating_add(wave),
            colour[2].saturating_add(wave),
        ])
    })
}

#[test]
fn top_losses_grid_captions_and_frames_wrong_images() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("top_losses.png");
    let items: Vec<LossItem> = (0..5)
        .map(|k| LossItem {
            image: tinted(300, 200, [30 + 40 * k as u8, 120, 200 - 30 * k as u8]),
            label: "ants".into(),
            predicted: match k {
                1 => "a very long class name that cannot fit in one cell".into(),
                0 | 2 | 3 => "bees".into(),
                _ => "ants".into(),
            },
            probability: 0.9 - 0.1 * k as f32,
            loss: 3.0 - 0.5 * k as f32,
        })
        .collect();
    top_losses_grid(&items, &path).unwrap();
    keep(&path, "top_losses_synthetic.png");
    let img = decode(&path);
    assert_eq!(img.dimensions(), top_losses_grid_size(5));
    assert_eq!(top_losses_grid_size(5), (3 * 244, 44 + 2 * (20 + 69 + 224)));
    let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 100);
    // Cell 0 (wrong): red caption pixels and a red frame; cell 4 (right): no red at all.
    let cell = |k: u32| {
        let (x, y) = ((k % 3) * 244, 44 + (k / 3) * 313);
        pixels(&img, (x, y, 244, 313))
    };
    assert!(cell(0).iter().filter(|p| strongly_red(p)).count() > 500);
    assert_eq!(cell(4).iter().filter(|p| strongly_red(p)).count(), 0);
    // The image is drawn (its tint shows in the middle of its square).
    let middle = img.get_pixel(122, 44 + 10 + 69 + 70);
    assert!(middle.0[2] > 150 && middle.0[0] < 80, "{middle:?}");
    // The sixth cell stays blank.
    assert!(cell(5).iter().all(|p| p.0 == [255, 255, 255]));

    let err = top_losses_grid(&[], &path).unwrap_err();
    assert!(matches!(err, VizError::NothingToDraw { .. }));
    assert!(err.to_string().contains("top_losses.png"), "{err}");
}

#[test]
fn grad_cam_grid_overlays_the_heatmap_where_it_is_hot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam/grad_cam.png");
    // Hot on the right half, cold on the left.
    let heatmap = Heatmap::new(2, 1, vec![0.0, 1.0]).unwrap();
    let item = |predicted: &str| CamItem {
        image: RgbImage::from_pixel(224, 224, Rgb([128, 128, 128])),
        heatmap: heatmap.clone(),
        label: "ants".into(),
        predicted: predicted.into(),
        probability: 0.87,
        heatmap_class: predicted.into(),
    };
    grad_cam_grid(&[item("ants"), item("bees")], &path).unwrap();
    keep(&path, "grad_cam_synthetic.png");
    let img = decode(&path);
    assert_eq!(img.dimensions(), grad_cam_grid_size(2));
    assert_eq!(
        grad_cam_grid_size(2),
        (2 * 10 + 2 * 224 + 8, 44 + 2 * (20 + 69 + 224))
    );
    let top = 44 + 10 + 69;
    let photo_x = 10;
    let overlay_x = 10 + 224 + 8;
    // The plain photo is the photo; the overlay is red where hot and blue where cold.
    assert_eq!(img.get_pixel(photo_x + 200, top + 100).0, [128, 128, 128]);
    let hot = img.get_pixel(overlay_x + 210, top + 100).0;
    let cold = img.get_pixel(overlay_x + 10, top + 100).0;
    assert!(hot[0] > hot[2] + 40, "{hot:?}");
    assert!(cold[2] > cold[0] + 20, "{cold:?}");
    // The wrong second item is framed in red, the right first one is not.
    let second = top + 224 + 20 + 69;
    assert!(strongly_red(img.get_pixel(photo_x + 1, second + 100)));
    assert!(!strongly_red(img.get_pixel(photo_x + 1, top + 100)));
}

// ---------------------------------------------------------------------------------------------
// Real photos (needs ../shared)
// ---------------------------------------------------------------------------------------------

/// Draws every picture from the ants/bees validation photos and ImageNet MobileNetV2 turned
/// into a zero-shot ants-vs-bees classifier (its head's "ant" and "bee" rows), and Grad-CAM of
/// the full ImageNet model's top class. Written to `$TV_VIZ_SAMPLES` when set (to look at).
#[test]
fn real_photos_samples() {
    let (Some(weights), Some(val)) = (
        common::shared("weights/mobilenet_v2_tf_imagenet.onnx"),
        common::shared("datasets/hymenoptera_data/val"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = std::env::var_os("TV_VIZ_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let device = Default::default();
    use transfer_vision::models::{Architecture, MobileNetV2};
    // Building the network draws from the shared random generator before the weights load.
    let (imagenet, import) =
        seeded(0, || MobileNetV2::<Cpu>::from_onnx(&weights, &device)).unwrap();
    let pre = import.preprocessing;
    let classes = transfer_vision::imagenet::imagenet_classes();
    let offset = imagenet.num_classes() - classes.len(); // 1 for a background class
    let index = |name: &str| classes.iter().position(|c| *c == name).unwrap() + offset;

    // Zero-shot ants vs bees: the ImageNet head's two rows.
    let mut model = imagenet.clone();
    let rows =
        Tensor::<Cpu, 1, Int>::from_data([index("ant") as i64, index("bee") as i64], &device);
    let head = model.head_mut();
    head.weight = Param::from_tensor(head.weight.val().select(0, rows.clone()));
    head.bias = Param::from_tensor(head.bias.val().select(0, rows));
    let folder = ImageFolder::new(&val).unwrap();
    let loader = DataLoader::new(
        &folder,
        pre.eval_transform(),
        LoaderConfig::new(16).with_shuffle(false),
    )
    .unwrap();
    let class_names = folder.classes().to_vec();
    let results = image_results(&model, &loader, &device).unwrap();
    assert_eq!(results.len(), folder.samples().len());
    let report = evaluate(&model, &loader, &device).unwrap();
    println!("{}", report.table(&class_names));
    assert!(
        report.accuracy > 0.75,
        "zero-shot accuracy {}",
        report.accuracy
    );
    confusion_matrix_png(&report.confusion, &class_names, &out.join("confusion.png")).unwrap();

    let worst = top_losses(&results, 9);
    assert!(!worst[0].is_correct());
    let transform = pre.eval_transform();
    let mut loss_items = Vec::new();
    let mut cam_items = Vec::new();
    for r in &worst {
        let photo = transfer_vision::data::decode_rgb(&r.path, &Default::default()).unwrap();
        loss_items.push(LossItem {
            image: model_view(&photo, &transform).unwrap(),
            label: class_names[r.label].clone(),
            predicted: class_names[r.predicted].clone(),
            probability: r.confidence(),
            loss: r.loss,
        });
        if cam_items.len() < 4 {
            let e = explain_image(&model, &photo, &transform, None, &device).unwrap();
            assert_eq!(e.predicted, r.predicted);
            cam_items.push(CamItem {
                image: e.shown,
                heatmap: e.heatmap,
                label: class_names[r.label].clone(),
                predicted: class_names[e.predicted].clone(),
                probability: e.probabilities[e.predicted],
                heatmap_class: class_names[e.class].clone(),
            });
        }
    }
    top_losses_grid(&loss_items, &out.join("top_losses.png")).unwrap();
    grad_cam_grid(&cam_items, &out.join("grad_cam_top_losses.png")).unwrap();

    // Grad-CAM of the ImageNet model's own top class on the first photos of each class.
    let mut items = Vec::new();
    let mut imagenet_losses = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        for r in results.iter().filter(|r| r.label == label).take(3) {
            let photo = transfer_vision::data::decode_rgb(&r.path, &Default::default()).unwrap();
            let e = explain_image(&imagenet, &photo, &transform, None, &device).unwrap();
            imagenet_losses.push(-e.probabilities[index(class.trim_end_matches('s'))].ln());
            let name = |c: usize| {
                c.checked_sub(offset)
                    .and_then(|c| classes.get(c))
                    .map_or("background".to_string(), |s| s.to_string())
            };
            items.push(CamItem {
                probability: e.confidence(),
                image: e.shown,
                heatmap: e.heatmap,
                // The ImageNet names are singular ("ant", "bee").
                label: class.trim_end_matches('s').to_string(),
                predicted: name(e.predicted),
                heatmap_class: name(e.class),
            });
        }
    }
    grad_cam_grid(&items, &out.join("grad_cam_imagenet.png")).unwrap();
    // The same photos with the ImageNet model's loss (long class names).
    let loss_items: Vec<LossItem> = items
        .iter()
        .zip(&imagenet_losses)
        .map(|(item, &loss)| LossItem {
            image: item.image.clone(),
            label: item.label.clone(),
            predicted: item.predicted.clone(),
            probability: item.probability,
            loss,
        })
        .collect();
    top_losses_grid(&loss_items, &out.join("top_losses_imagenet.png")).unwrap();
    for file in [
        "confusion.png",
        "top_losses.png",
        "grad_cam_top_losses.png",
        "grad_cam_imagenet.png",
    ] {
        let img = decode(&out.join(file));
        assert!(img.width() > 400 && img.height() > 300, "{file}");
    }
}

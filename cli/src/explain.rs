//! The pictures that explain a model's errors, written by `train` and `eval`: the confusion
//! matrix, the top losses, and Grad-CAM heatmaps.

use std::path::Path;

use transfer_vision::data::{DataLoader, DecodeOptions, decode_rgb};
use transfer_vision::kernels::ConvBackend;
use transfer_vision::models::ImageClassifier;
use transfer_vision::train::{
    EvalReport, ImageResult, explain_image, image_results, model_view, top_losses,
};
use transfer_vision::viz::{
    CamItem, LossItem, confusion_matrix_png, grad_cam_grid, top_losses_grid,
};
use transfer_vision::weights::ModelInfo;

use crate::error::CliError;

/// Images in the top-losses grid.
const TOP_LOSSES: usize = 9;
/// Images with a heatmap.
const HEATMAPS: usize = 6;

/// Writes `confusion_matrix.png` (from `report`), `top_losses.png` (the images of `source`
/// `model` is most confidently wrong about) and `grad_cam.png` (heatmaps of the predicted class
/// on the worst and the surest images) into `dir`.
pub fn write_pictures<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    info: &ModelInfo,
    report: &EvalReport,
    source: &DataLoader,
    dir: &Path,
    device: &B::Device,
) -> Result<(), CliError> {
    let names = &info.class_names;
    let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
    confusion_matrix_png(&report.confusion, names, &dir.join("confusion_matrix.png"))?;

    let results = image_results(model, source, device)?;
    let transform = info.preprocessing.eval_transform();
    let decode = DecodeOptions::default();
    let worst = top_losses(&results, TOP_LOSSES);
    let mut losses = Vec::with_capacity(worst.len());
    for r in &worst {
        let photo = decode_rgb(&r.path, &decode)?;
        losses.push(LossItem {
            image: model_view(&photo, &transform)?,
            label: name(r.label),
            predicted: name(r.predicted),
            probability: r.confidence(),
            loss: r.loss,
        });
    }
    top_losses_grid(&losses, &dir.join("top_losses.png"))?;

    let mut cams = Vec::with_capacity(HEATMAPS);
    for r in heatmap_choice(&results, &worst) {
        let photo = decode_rgb(&r.path, &decode)?;
        let explained = explain_image(model, &photo, &transform, None, device)
            .map_err(|e| CliError::Check(format!("{}: {e}", r.path.display())))?;
        cams.push(CamItem {
            label: name(r.label),
            predicted: name(explained.predicted),
            probability: explained.confidence(),
            heatmap_class: name(explained.class),
            image: explained.shown,
            heatmap: explained.heatmap,
        });
    }
    grad_cam_grid(&cams, &dir.join("grad_cam.png"))?;
    Ok(())
}

/// Half the heatmaps on the worst images, half on the most confidently right ones: where the
/// model looks when it errs, and when it is sure.
fn heatmap_choice<'a>(
    results: &'a [ImageResult],
    worst: &'a [ImageResult],
) -> Vec<&'a ImageResult> {
    let mut chosen: Vec<&ImageResult> = worst.iter().take(HEATMAPS / 2).collect();
    let mut right: Vec<&ImageResult> = results.iter().filter(|r| r.is_correct()).collect();
    right.sort_by(|a, b| b.confidence().total_cmp(&a.confidence()));
    for r in right {
        if chosen.len() >= HEATMAPS {
            break;
        }
        if !chosen.iter().any(|c| c.index == r.index) {
            chosen.push(r);
        }
    }
    chosen
}

//! Explaining a model's errors: per-image results (probabilities and loss) for "top losses",
//! and class activation maps (Grad-CAM) showing where in a photo the evidence for a class lies.
//!
//! ```no_run
//! use transfer_vision::prelude::*;
//! use transfer_vision::train::{explain_image, image_results, top_losses};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Default::default();
//! let (model, import) = MobileNetV2::<Cpu>::from_onnx("weights/mobilenet_v2.onnx", &device)?;
//! let pre = import.preprocessing;
//! let val = ImageFolder::new("data/val")?;
//! let loader = DataLoader::new(&val, pre.eval_transform(), LoaderConfig::new(16).with_shuffle(false))?;
//! let results = image_results(&model, &loader, &device)?;
//! for worst in top_losses(&results, 9) {
//!     let photo = transfer_vision::data::decode_rgb(&worst.path, &Default::default())?;
//!     let explained = explain_image(&model, &photo, &pre.eval_transform(), None, &device)?;
//!     println!("{}: loss {:.2}, heatmap {}x{}", worst.path.display(), worst.loss,
//!              explained.heatmap.width(), explained.heatmap.height());
//! }
//! # Ok(()) }
//! ```
//!
//! # Why the class activation map here *is* Grad-CAM
//!
//! Grad-CAM (Selvaraju et al., 2017) weighs each channel `k` of the last convolutional block's
//! output `A` (`K × h × w`) by the spatial mean of the gradient of the class score `y_c`,
//! `α_k = (1 / hw) Σ_ij ∂y_c / ∂A_k[i, j]`, and keeps `ReLU(Σ_k α_k A_k)`. In the networks of
//! this crate the last block is followed by a global average pool `p_k = (1 / hw) Σ_ij
//! A_k[i, j]` and the classifier (dropout is off at inference), so `∂y_c / ∂A_k[i, j] =
//! (∂y_c / ∂p_k) / hw` at every position and `α_k = (∂y_c / ∂p_k) / hw`. For a linear head
//! `∂y_c / ∂p_k = W[c, k]` and Grad-CAM is the class activation map (CAM, Zhou et al., 2016),
//! `ReLU(Σ_k W[c, k] A_k)`, up to a positive constant that normalisation to [0, 1] removes;
//! through a hidden layer (MobileNetV3) the chain rule gives `∂y_c / ∂p` exactly
//! ([`ImageClassifier::logit_gradient`]). [`grad_cam`] therefore computes it from one forward
//! pass, on any backend, without autodiff; the tests check it against Grad-CAM computed with
//! gradients.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::evaluate::{check_labels, inference_copy};
use super::predict::{argmax, host_rows};
use super::source::BatchSource;
use super::{FittingPasses, TrainError};
use crate::data::{Compose, DataError, DecodeOptions, Pixels, Transform, decode_rgb};
use crate::kernels::ConvBackend;
use crate::models::ImageClassifier;

/// Why an image could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The class asked for is not one of the model's.
    #[error("class {class} is not a class of the model ({classes} classes)")]
    Class {
        /// The class asked for.
        class: usize,
        /// The model's number of classes.
        classes: usize,
    },
    /// The input is not one image `[1, 3, H, W]`.
    #[error("expected one image [1, 3, H, W], got a tensor of shape {dims:?}")]
    Input {
        /// The shape of the tensor given.
        dims: [usize; 4],
    },
    /// The photo could not be read or prepared (the error names the file where known).
    #[error(transparent)]
    Data(#[from] DataError),
}

// ---------------------------------------------------------------------------------------------
// Per-image results and top losses
// ---------------------------------------------------------------------------------------------

/// What a model made of one image of a batch source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageResult {
    /// The image file.
    pub path: PathBuf,
    /// Its index in the dataset's sample list.
    pub index: usize,
    /// Its true class.
    pub label: usize,
    /// The most probable class (the first of equals).
    pub predicted: usize,
    /// Probability of every class (softmax of the logits).
    pub probabilities: Vec<f32>,
    /// Cross-entropy of the true class, `-ln p(label)`, computed from the logits (finite even
    /// where the probability rounds to 0 in `f32`).
    pub loss: f32,
}

impl ImageResult {
    /// Whether the prediction is right.
    pub fn is_correct(&self) -> bool {
        self.label == self.predicted
    }

    /// Probability of the predicted class.
    pub fn confidence(&self) -> f32 {
        self.probabilities
            .get(self.predicted)
            .copied()
            .unwrap_or(0.0)
    }

    /// Probability of the true class.
    pub fn label_probability(&self) -> f32 {
        self.probabilities.get(self.label).copied().unwrap_or(0.0)
    }
}

/// Runs `model` over every batch of `source`'s epoch 0 and returns, per image in the order the
/// source gives them, its file, label, prediction, class probabilities and loss. Inference mode
/// whatever model is given (a copy without gradients and with its BatchNorms folded runs, as in
/// [`evaluate`](super::evaluate)): the mean of the losses is `evaluate`'s loss.
///
/// # Errors
/// A batch's error (an image that cannot be read, naming the file), [`TrainError::Label`] when a
/// label is not a class of the model, [`TrainError::Config`] when a batch holds more or fewer
/// labels than images.
pub fn image_results<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    source: &dyn BatchSource,
    device: &B::Device,
) -> Result<Vec<ImageResult>, TrainError> {
    let model = inference_copy(model);
    let classes = model.num_classes();
    let mut results = Vec::with_capacity(source.num_samples());
    let mut passes = FittingPasses::new(&model, device);
    for batch in source.batches(0) {
        let batch = batch?;
        check_labels(&batch.labels, classes)?;
        let logits = host_rows(passes.run(batch.images_tensor::<B>(device), M::forward));
        if logits.len() != batch.labels.len() {
            return Err(TrainError::Config(format!(
                "a batch holds {} images but {} labels",
                logits.len(),
                batch.labels.len()
            )));
        }
        for (i, (row, &label)) in logits.iter().zip(&batch.labels).enumerate() {
            // Checked above: a class of the model.
            let label = usize::try_from(label).unwrap_or(0);
            let (probabilities, log_sum_exp) = softmax_row(row);
            let loss = (log_sum_exp - row.get(label).copied().map_or(f64::NAN, f64::from)) as f32;
            results.push(ImageResult {
                path: batch.paths.get(i).cloned().unwrap_or_default(),
                index: batch.indices.get(i).copied().unwrap_or(i),
                label,
                predicted: argmax(row),
                probabilities,
                loss,
            });
        }
    }
    Ok(results)
}

/// Softmax of `row` and its log-sum-exp, in `f64`.
fn softmax_row(row: &[f32]) -> (Vec<f32>, f64) {
    let max = row
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let lse = max + sum.ln();
    let probabilities = row
        .iter()
        .map(|&x| (f64::from(x) - lse).exp() as f32)
        .collect();
    (probabilities, lse)
}

/// The `k` images to look at first ("top losses"): the misclassified images by decreasing loss
/// (the most confidently wrong first), then, if fewer than `k` are wrong, the correctly
/// classified ones by decreasing loss (the least sure right answers). Equal losses keep the
/// order of `results`; a NaN loss counts as the highest.
///
/// Wrong images come first whatever their loss because a wrong answer with a moderate loss says
/// more about the model than a right one with a high loss (possible with many classes).
pub fn top_losses(results: &[ImageResult], k: usize) -> Vec<ImageResult> {
    let by_loss = |a: &&ImageResult, b: &&ImageResult| {
        let key = |r: &ImageResult| {
            if r.loss.is_nan() {
                f32::INFINITY
            } else {
                r.loss
            }
        };
        key(b).total_cmp(&key(a))
    };
    let mut wrong: Vec<&ImageResult> = results.iter().filter(|r| !r.is_correct()).collect();
    let mut right: Vec<&ImageResult> = results.iter().filter(|r| r.is_correct()).collect();
    wrong.sort_by(by_loss);
    right.sort_by(by_loss);
    wrong.into_iter().chain(right).take(k).cloned().collect()
}

// ---------------------------------------------------------------------------------------------
// Heatmaps and Grad-CAM
// ---------------------------------------------------------------------------------------------

/// A map of values over an image, row by row (`values[y * width + x]`), in [0, 1] when it comes
/// from [`grad_cam`].
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    width: usize,
    height: usize,
    values: Vec<f32>,
}

impl Heatmap {
    /// A `width` × `height` map of `values` (row by row); `None` when their number is not
    /// `width · height`.
    pub fn new(width: usize, height: usize, values: Vec<f32>) -> Option<Self> {
        (width.checked_mul(height) == Some(values.len())).then_some(Self {
            width,
            height,
            values,
        })
    }

    /// Width in cells.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in cells.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The values, row by row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The value at column `x`, row `y` (`None` outside the map).
    pub fn get(&self, x: usize, y: usize) -> Option<f32> {
        (x < self.width && y < self.height).then(|| self.values[y * self.width + x])
    }

    /// The largest value and its position `(x, y)` (the first of equals); `None` for an empty
    /// map.
    pub fn peak(&self) -> Option<(usize, usize, f32)> {
        let k = argmax(&self.values);
        let v = *self.values.get(k)?;
        Some((k % self.width, k / self.width, v))
    }

    /// The map stretched to [0, 1]: `(v - min) / (max - min)`, with values that are not finite
    /// read as 0; all zeros when the map is flat.
    pub fn normalized(&self) -> Heatmap {
        let finite = |v: f32| if v.is_finite() { v } else { 0.0 };
        let (min, max) = self
            .values
            .iter()
            .map(|&v| finite(v))
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let range = max - min;
        let values = if range > 0.0 && range.is_finite() {
            self.values
                .iter()
                .map(|&v| ((finite(v) - min) / range).clamp(0.0, 1.0))
                .collect()
        } else {
            vec![0.0; self.values.len()]
        };
        Heatmap { values, ..*self }
    }

    /// The map resampled to `width` × `height` by bilinear interpolation with pixel centres
    /// aligned (OpenCV's `resize`, PyTorch's `align_corners=False`), edges clamped. An empty map
    /// gives zeros.
    pub fn resized(&self, width: usize, height: usize) -> Heatmap {
        if self.values.is_empty() {
            return Heatmap {
                width,
                height,
                values: vec![0.0; width * height],
            };
        }
        let axis = |dst: usize, src: usize| -> Vec<(usize, usize, f32)> {
            let scale = src as f32 / dst.max(1) as f32;
            (0..dst)
                .map(|d| {
                    let s = ((d as f32 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f32);
                    let lo = s.floor() as usize;
                    let hi = (lo + 1).min(src - 1);
                    (lo, hi, s - lo as f32)
                })
                .collect()
        };
        let xs = axis(width, self.width);
        let ys = axis(height, self.height);
        let at = |x: usize, y: usize| self.values[y * self.width + x];
        let mut values = Vec::with_capacity(width * height);
        for &(y0, y1, ty) in &ys {
            for &(x0, x1, tx) in &xs {
                let top = at(x0, y0) * (1.0 - tx) + at(x1, y0) * tx;
                let bottom = at(x0, y1) * (1.0 - tx) + at(x1, y1) * tx;
                values.push(top * (1.0 - ty) + bottom * ty);
            }
        }
        Heatmap {
            width,
            height,
            values,
        }
    }
}

/// Grad-CAM of class `class` for one image `[1, 3, H, W]` (prepared as the model expects), on
/// the output of the model's last convolutional block: an `h × w` map (7 × 7 for a 224 × 224
/// input) normalised to [0, 1], hot where the evidence for `class` lies. Computed exactly as the
/// module documentation explains, as `ReLU(Σ_k W[c, k] A_k)` from one forward pass of the
/// inference copy of `model` (BatchNorms folded, no dropout, no gradients), so it runs on any
/// backend. A class with no positive evidence anywhere gives a map of zeros.
///
/// # Errors
/// [`ExplainError::Input`] when `image` is not one 3-channel image, [`ExplainError::Class`] when
/// `class` is not a class of the model.
pub fn grad_cam<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    image: Tensor<B, 4>,
    class: usize,
) -> Result<Heatmap, ExplainError> {
    check_image(&image)?;
    let classes = model.num_classes();
    if class >= classes {
        return Err(ExplainError::Class { class, classes });
    }
    let model = inference_copy(model);
    let activations = last_block(&model, image);
    Ok(class_map(&model, activations, class))
}

/// Everything [`explain_image`] found for one photo.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The photo as the model saw it: the geometry steps of the transform (resize, crop, ...)
    /// applied, before `ToTensor` and normalisation.
    pub shown: RgbImage,
    /// Probability of every class.
    pub probabilities: Vec<f32>,
    /// The most probable class.
    pub predicted: usize,
    /// The class the heatmap explains.
    pub class: usize,
    /// Grad-CAM of `class` (see [`grad_cam`]), over `shown`.
    pub heatmap: Heatmap,
}

impl Explanation {
    /// Probability of the predicted class.
    pub fn confidence(&self) -> f32 {
        self.probabilities
            .get(self.predicted)
            .copied()
            .unwrap_or(0.0)
    }
}

/// Prepares `photo` with `transform` (an evaluation pipeline, such as
/// [`Preprocessing::eval_transform`](crate::data::Preprocessing::eval_transform)), classifies it
/// and computes the Grad-CAM of `class`, or of the predicted class when `None`, from the same
/// forward pass. Inference mode whatever model is given.
///
/// # Errors
/// [`ExplainError::Data`] when the transform fails, [`ExplainError::Class`] when `class` is not
/// a class of the model.
pub fn explain_image<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    photo: &RgbImage,
    transform: &Compose,
    class: Option<usize>,
    device: &B::Device,
) -> Result<Explanation, ExplainError> {
    let classes = model.num_classes();
    if let Some(class) = class.filter(|&c| c >= classes) {
        return Err(ExplainError::Class { class, classes });
    }
    let shown = model_view(photo, transform)?;
    // Evaluation transforms draw nothing from the RNG; a random one gets a fixed draw.
    let chw = transform.apply_ref(photo, &mut ChaCha8Rng::seed_from_u64(0))?;
    let [c, h, w] = chw.shape();
    let x = Tensor::<B, 4>::from_data(TensorData::new(chw.data, [1, c, h, w]), device);
    check_image(&x)?;
    let model = inference_copy(model);
    let activations = last_block(&model, x);
    let logits = model.classify(model.pool(activations.clone()));
    let row = host_rows(logits).pop().unwrap_or_default();
    let (probabilities, _) = softmax_row(&row);
    let predicted = argmax(&row);
    let class = class.unwrap_or(predicted);
    let heatmap = class_map(&model, activations, class);
    Ok(Explanation {
        shown,
        probabilities,
        predicted,
        class,
        heatmap,
    })
}

/// [`explain_image`] for the image file at `path`, decoded with `decode`.
///
/// # Errors
/// As [`explain_image`]; decoding and transform errors name `path`.
pub fn explain_file<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    path: &Path,
    decode: &DecodeOptions,
    transform: &Compose,
    class: Option<usize>,
    device: &B::Device,
) -> Result<Explanation, ExplainError> {
    let photo = decode_rgb(path, decode)?;
    explain_image(model, &photo, transform, class, device).map_err(|e| match e {
        ExplainError::Data(DataError::Transform { message, .. }) => {
            ExplainError::Data(DataError::Transform {
                path: path.to_path_buf(),
                message,
            })
        }
        other => other,
    })
}

/// `photo` as a model sees it through `transform`: the steps before `ToTensor` (resize, crop,
/// and for a training pipeline its random steps with a fixed draw), as an 8-bit image to draw.
///
/// # Errors
/// [`DataError::Transform`] (without a path) when a step fails or the photo is empty.
pub fn model_view(photo: &RgbImage, transform: &Compose) -> Result<RgbImage, DataError> {
    if photo.width() == 0 || photo.height() == 0 {
        return Err(DataError::Transform {
            path: PathBuf::new(),
            message: format!("the photo is empty ({}x{})", photo.width(), photo.height()),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut pixels = Pixels::Rgb(photo.clone());
    for step in &transform.steps {
        if matches!(step, Transform::ToTensor | Transform::Normalize(_)) {
            break;
        }
        pixels = step.apply(pixels, &mut rng)?;
    }
    match pixels {
        Pixels::Rgb(image) => Ok(image),
        Pixels::Chw(_) => Ok(photo.clone()),
    }
}

/// An error unless `image` is `[1, 3, H, W]`.
fn check_image<B: ConvBackend>(image: &Tensor<B, 4>) -> Result<(), ExplainError> {
    let dims = image.dims();
    if dims[0] != 1 || dims[1] != 3 || dims[2] == 0 || dims[3] == 0 {
        return Err(ExplainError::Input { dims });
    }
    Ok(())
}

/// The output of the last backbone block, `[1, K, h, w]`.
fn last_block<B: ConvBackend, M: ImageClassifier<B>>(model: &M, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let blocks = model.block_paths().len();
    model.forward_blocks(x, 0..blocks)
}

/// Grad-CAM for activations `[1, K, h, w]`: `ReLU(Σ_k α_k A_k)` with `α_k = ∂ logit[class] /
/// ∂ pooled_k` ([`ImageClassifier::logit_gradient`]; Grad-CAM's spatial mean of the gradient is
/// the same up to the factor `1 / hw`, which the normalisation to [0, 1] removes). For a pool +
/// linear head `α` is the head's row `W[class]`. `class` must be a class of the model.
fn class_map<B: ConvBackend, M: ImageClassifier<B>>(
    model: &M,
    activations: Tensor<B, 4>,
    class: usize,
) -> Heatmap {
    let [_, k, h, w] = activations.dims();
    let pooled = model.pool(activations.clone());
    let weights = model.logit_gradient(pooled, class).reshape([1, k, 1, 1]);
    let cam = (activations * weights).sum_dim(1).reshape([h * w]);
    let values: Vec<f32> = cam
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    Heatmap::new(w, h, values)
        .unwrap_or_else(|| Heatmap {
            width: w,
            height: h,
            values: vec![0.0; w * h],
        })
        .normalized()
}

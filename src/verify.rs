//! Parity checks against PyTorch / onnxruntime goldens, on any backend.
//!
//! The same checks back the test suite (on the CPU) and `examples/device_check.rs` (on CUDA or
//! the CPU): ONNX fixtures whose logits onnxruntime computed (`fixtures/onnx/fixtures.json`) and
//! training fixtures whose per-step losses and final head PyTorch computed
//! (`fixtures/train/train_fixtures.json`), in the layout of `../shared/fixtures`; and
//! [`feature_cache_parity`], which trains a head on cached features and without them.

use crate::kernels::{AutodiffConvBackend, ConvBackend};
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Param};
use burn::tensor::{Tensor, TensorData};
use thiserror::Error;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::ImageBatch;
use crate::models::layers::Linear;
use crate::models::{AnyModel, Architecture, ImageClassifier};
use crate::train::freeze::under_prefix;
use crate::train::{
    FitConfig, FitOutcome, Learner, MemoryBatches, OptimizerConfig, Trainable, fit, set_trainable,
    trainable_keys,
};
use crate::weights::WeightsError;

/// What can go wrong reading a fixture. Every message names the file.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not what the fixture layout says it should be.
    #[error("{}: {reason}", path.display())]
    Fixture {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The fixture's weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// Setting up the training step failed.
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
}

fn fixture_err(path: &Path, reason: impl Into<String>) -> VerifyError {
    VerifyError::Fixture {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A NumPy array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy<T> {
    /// Shape, C order.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub data: Vec<T>,
}

fn read_npy_raw(
    path: &Path,
    descr: &str,
    width: usize,
) -> Result<(Vec<usize>, Vec<u8>), VerifyError> {
    let bytes = std::fs::read(path).map_err(|source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: &str| fixture_err(path, format!("not a .npy file: {reason}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        _ if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("truncated header")),
    };
    let header = bytes
        .get(start..start + header_len)
        .map(String::from_utf8_lossy)
        .ok_or_else(|| bad("truncated header"))?;
    if !header.contains(&format!("'descr': '{descr}'")) {
        return Err(fixture_err(
            path,
            format!("expected dtype {descr}: {header}"),
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err(fixture_err(path, "Fortran order is not supported"));
    }
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let body = bytes[start + header_len..].to_vec();
    if body.len() != shape.iter().product::<usize>() * width {
        return Err(bad("data length does not match the shape"));
    }
    Ok((shape, body))
}

/// Reads a little-endian float32 `.npy` file.
///
/// # Errors
/// [`VerifyError::Io`] or [`VerifyError::Fixture`] naming `path`.
pub fn read_npy_f32(path: &Path) -> Result<Npy<f32>, VerifyError> {
    let (shape, body) = read_npy_raw(path, "<f4", 4)?;
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Npy { shape, data })
}

/// Reads a little-endian int64 `.npy` file.
///
/// # Errors
/// [`VerifyError::Io`] or [`VerifyError::Fixture`] naming `path`.
pub fn read_npy_i64(path: &Path) -> Result<Npy<i64>, VerifyError> {
    let (shape, body) = read_npy_raw(path, "<i8", 8)?;
    let data = body
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok(Npy { shape, data })
}

/// How far computed logits are from golden ones.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsComparison {
    /// Largest absolute difference.
    pub max_abs_diff: f32,
    /// Largest absolute golden logit.
    pub max_abs_logit: f32,
    /// `max_abs_diff / max_abs_logit`: the figure the tolerances are stated in.
    pub ratio: f32,
    /// Rows whose arg-max agrees.
    pub top1_agree: usize,
    /// Rows compared.
    pub rows: usize,
}

/// Compares `ours` (row-major `[rows, classes]`, same shape as `golden`).
pub fn compare_logits(ours: &[f32], golden: &Npy<f32>) -> LogitsComparison {
    let classes = golden.shape.last().copied().unwrap_or(1).max(1);
    let max_abs_logit = golden.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_abs_diff = ours
        .iter()
        .zip(&golden.data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0
    };
    let top1_agree = ours
        .chunks(classes)
        .zip(golden.data.chunks(classes))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    LogitsComparison {
        max_abs_diff,
        max_abs_logit,
        ratio: max_abs_diff / max_abs_logit.max(f32::MIN_POSITIVE),
        top1_agree,
        rows: golden.data.len() / classes,
    }
}

/// Loads `dir/{name}.onnx` onto `device`, runs `dir/{name}.input.npy` through it and compares
/// the logits with `dir/{name}.logits.npy` (the layout of `../shared/fixtures/onnx`).
///
/// # Errors
/// A missing or malformed file, or weights that do not load.
pub fn onnx_fixture_parity<B: ConvBackend>(
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<LogitsComparison, VerifyError> {
    let onnx_path = dir.join(format!("{name}.onnx"));
    let input_path = dir.join(format!("{name}.input.npy"));
    let input = read_npy_f32(&input_path)?;
    let golden = read_npy_f32(&dir.join(format!("{name}.logits.npy")))?;
    let shape: [usize; 4] = input
        .shape
        .clone()
        .try_into()
        .map_err(|_| fixture_err(&input_path, "expected a 4-D input"))?;
    let x = Tensor::<B, 4>::from_data(TensorData::new(input.data, shape), device);
    let (model, _) = AnyModel::<B>::from_onnx(&onnx_path, device)?;
    let logits = model.forward(x);
    let ours = logits
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| fixture_err(&onnx_path, format!("logits: {e:?}")))?;
    Ok(compare_logits(&ours, &golden))
}

/// The outcome of one training-parity case.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainParity {
    /// Case name (a key of `train_fixtures.json`).
    pub case: String,
    /// Our loss at each step.
    pub losses: Vec<f64>,
    /// PyTorch's loss at each step.
    pub golden_losses: Vec<f64>,
    /// Largest relative loss difference over the steps.
    pub max_rel_loss: f64,
    /// Largest absolute difference of the final head weight / bias from PyTorch's.
    pub head_max_diff: (f32, f32),
    /// Parameters that trained here, as torchvision keys.
    pub trainable_keys: Vec<String>,
    /// Parameters that trained in PyTorch.
    pub golden_keys: Vec<String>,
    /// The optimizer of the case (`adam` or `sgd`): SGD with momentum amplifies differences.
    pub optimizer: String,
}

fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The case names of `dir/train_fixtures.json`.
///
/// # Errors
/// A missing or malformed file.
pub fn train_fixture_cases(dir: &Path) -> Result<Vec<String>, VerifyError> {
    Ok(train_fixtures(dir)?.keys().cloned().collect())
}

fn train_fixtures(dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>, VerifyError> {
    let path = dir.join("train_fixtures.json");
    let text = std::fs::read_to_string(&path).map_err(|source| VerifyError::Io {
        path: path.clone(),
        source,
    })?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(fixture_err(&path, "expected a JSON object of cases")),
        Err(e) => Err(fixture_err(&path, e.to_string())),
    }
}

/// Runs training case `case` of `dir/train_fixtures.json` (the layout of
/// `../shared/fixtures/train`) on `device`: the case's backbone from ONNX, a head with its
/// initial weights, its trainable prefixes and optimizer, its steps on its fixed batches.
///
/// # Errors
/// A missing or malformed file, or weights that do not load.
pub fn train_fixture_parity<B: AutodiffConvBackend>(
    dir: &Path,
    case: &str,
    device: &B::Device,
) -> Result<TrainParity, VerifyError> {
    let json_path = dir.join("train_fixtures.json");
    let fixtures = train_fixtures(dir)?;
    let f = fixtures
        .get(case)
        .ok_or_else(|| fixture_err(&json_path, format!("no case '{case}'")))?;
    let field = |name: &str| {
        f.get(name)
            .ok_or_else(|| fixture_err(&json_path, format!("{case}: no field '{name}'")))
    };
    let npy = |what: &str| read_npy_f32(&dir.join(format!("{case}.{what}.npy")));
    let onnx = dir.join(field("backbone_onnx")?.as_str().unwrap_or_default());
    let lr = field("lr")?.as_f64().unwrap_or_default();
    let optimizer_name = field("optimizer")?.as_str().unwrap_or_default().to_string();
    let optimizer = match optimizer_name.as_str() {
        "adam" => OptimizerConfig::adam(lr),
        "sgd" => OptimizerConfig::sgd(lr, field("sgd_momentum")?.as_f64().unwrap_or(0.0)),
        other => {
            return Err(fixture_err(
                &json_path,
                format!("{case}: unknown optimizer {other}"),
            ));
        }
    };
    let prefixes = json_strings(field("trainable_prefixes")?);
    let init = npy("head_init_weight")?;
    let [out, inp]: [usize; 2] = init
        .shape
        .clone()
        .try_into()
        .map_err(|_| fixture_err(&json_path, format!("{case}: head weight is not 2-D")))?;
    let head = Linear {
        weight: Param::from_data(TensorData::new(init.data, [out, inp]), device),
        bias: Param::from_data(TensorData::new(vec![0f32; out], [out]), device),
    };
    let steps = Steps {
        inputs: npy("inputs")?,
        labels: read_npy_i64(&dir.join(format!("{case}.labels.npy")))?,
        count: field("steps")?.as_u64().unwrap_or(0) as usize,
        batch: field("batch")?.as_u64().unwrap_or(0) as usize,
        optimizer,
        trainable: Trainable::Prefixes(prefixes),
    };
    let expected = field("model")?.as_str().unwrap_or_default();
    let (model, _) = AnyModel::<B>::from_onnx(&onnx, device)?;
    if model.spec().name() != expected {
        return Err(fixture_err(
            &json_path,
            format!(
                "{case}: {} holds a {}, not a {expected}",
                onnx.display(),
                model.spec().name()
            ),
        ));
    }
    // The fixtures run the head without dropout.
    let mut model = model.with_dropout(0.0);
    *model.head_mut() = head;
    let (losses, weight, bias, keys) = steps.run(model, device)?;
    let golden_losses: Vec<f64> = field("losses")?
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let max_rel_loss = max_relative_difference(&losses, &golden_losses);
    let max_diff = |ours: &[f32], theirs: &[f32]| {
        ours.iter()
            .zip(theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    };
    Ok(TrainParity {
        case: case.to_string(),
        head_max_diff: (
            max_diff(&weight, &npy("head_final_weight")?.data),
            max_diff(&bias, &npy("head_final_bias")?.data),
        ),
        losses,
        golden_losses,
        max_rel_loss,
        trainable_keys: keys,
        golden_keys: json_strings(field("trainable_params")?),
        optimizer: optimizer_name,
    })
}

/// A training case's steps: `inputs` `[steps, batch, 3, H, W]`, `labels` `[steps, batch]`.
struct Steps {
    inputs: Npy<f32>,
    labels: Npy<i64>,
    count: usize,
    batch: usize,
    optimizer: OptimizerConfig,
    trainable: Trainable,
}

type StepResult = (Vec<f64>, Vec<f32>, Vec<f32>, Vec<String>);

impl Steps {
    fn run<B, M>(self, model: M, device: &B::Device) -> Result<StepResult, VerifyError>
    where
        B: AutodiffConvBackend,
        M: ImageClassifier<B> + AutodiffModule<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        let model = set_trainable(model, &self.trainable)?;
        let keys = trainable_keys::<B, M>(&model);
        let classifier: Vec<String> = model
            .classifier_paths()
            .into_iter()
            .map(String::from)
            .collect();
        let head_only = keys.iter().all(|k| under_prefix(k, &classifier));
        let [c, h, w] = match self.inputs.shape[..] {
            [_, _, c, h, w] => [c, h, w],
            _ => {
                return Err(VerifyError::Fixture {
                    path: PathBuf::from("inputs.npy"),
                    reason: format!(
                        "expected [steps, batch, 3, H, W], got {:?}",
                        self.inputs.shape
                    ),
                });
            }
        };
        let per_batch = self.batch * c * h * w;
        if self.inputs.data.len() < self.count * per_batch
            || self.labels.data.len() < self.count * self.batch
        {
            return Err(VerifyError::Fixture {
                path: PathBuf::from("inputs.npy / labels.npy"),
                reason: format!(
                    "{} steps of {} images need more data than the files hold",
                    self.count, self.batch
                ),
            });
        }
        let mut learner = Learner::<B, M>::new(&self.optimizer, 0.0);
        let mut model = model;
        let mut losses = Vec::with_capacity(self.count);
        for step in 0..self.count {
            let data = self.inputs.data[step * per_batch..(step + 1) * per_batch].to_vec();
            let images =
                Tensor::<B, 4>::from_data(TensorData::new(data, [self.batch, c, h, w]), device);
            let y = &self.labels.data[step * self.batch..(step + 1) * self.batch];
            let (next, out) = learner.step(model, images, y, 0, head_only);
            model = next;
            losses.push(out.loss);
        }
        let head = model.head();
        let to_vec = |t: Tensor<B, 1>| {
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap_or_default()
        };
        let weight = head
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        Ok((losses, weight, to_vec(head.bias.val()), keys))
    }
}

/// What [`feature_cache_parity`] measured: one head-only phase trained twice on the same fixed
/// data, on cached backbone features and on images through the frozen backbone every epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureCacheParity {
    /// Whether the first run trained on cached features (it must: its data is not random).
    pub used_cache: bool,
    /// Per epoch, the training loss then the validation loss, trained on cached features.
    pub cached: Vec<f64>,
    /// The same, trained without the cache.
    pub uncached: Vec<f64>,
    /// Largest relative difference between `cached` and `uncached`.
    pub max_rel: f64,
}

/// `count` images of `size` × `size` in batches of `batch`, drawn from `seed`: uniform noise in
/// the normalised range, brighter for class 1, so the head has something to learn.
fn noise_batches(count: usize, batch: usize, size: usize, seed: u64) -> MemoryBatches {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let per_image = 3 * size * size;
    let batches = (0..count)
        .step_by(batch.max(1))
        .map(|first| {
            let indices: Vec<usize> = (first..count.min(first + batch.max(1))).collect();
            let labels: Vec<i64> = indices.iter().map(|i| (i % 2) as i64).collect();
            let images = labels
                .iter()
                .flat_map(|&label| {
                    let shift = 0.5 * label as f32;
                    (0..per_image)
                        .map(|_| rng.random_range(-1.5f32..1.5) + shift)
                        .collect::<Vec<_>>()
                })
                .collect();
            ImageBatch {
                images,
                shape: [indices.len(), 3, size, size],
                labels,
                paths: indices
                    .iter()
                    .map(|i| PathBuf::from(format!("noise_{i}.png")))
                    .collect(),
                indices,
            }
        })
        .collect();
    MemoryBatches {
        batches,
        classes: vec!["dark".into(), "bright".into()],
    }
}

/// Trains a new two-class head on `model`'s frozen backbone (feature extraction, two epochs of
/// Adam, no dropout) on fixed noise images of `image_size` in batches of 8, once on cached
/// features and once without the cache, on `device`.
///
/// The head's initial weights and the data are drawn from fixed seeds on the host, so the
/// figures of one device can be compared with another's (`examples/device_check` compares them
/// with the CPU's).
///
/// # Errors
/// A training error (e.g. a batch that does not fit the device).
pub fn feature_cache_parity<B, M>(
    model: M,
    image_size: usize,
    device: &B::Device,
) -> Result<FeatureCacheParity, VerifyError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let train = noise_batches(16, 8, image_size, 1);
    let val = noise_batches(8, 8, image_size, 2);
    let inputs = model.feature_dim();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let bound = 1.0 / (inputs as f32).sqrt();
    let weight: Vec<f32> = (0..2 * inputs)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    let mut model = model.with_dropout(0.0);
    *model.head_mut() = Linear {
        weight: Param::from_data(TensorData::new(weight, [2, inputs]), device),
        bias: Param::from_data(TensorData::new(vec![0f32; 2], [2]), device),
    };
    let config = FitConfig::new(2, OptimizerConfig::adam(1e-2), Trainable::HeadOnly)
        .with_quiet(true)
        .with_seed(0);
    let losses = |outcome: &FitOutcome<M>| -> Vec<f64> {
        outcome
            .history
            .epochs
            .iter()
            .flat_map(|e| [e.train_loss, e.val_loss])
            .collect()
    };
    let with_cache = fit(model.clone(), &train, &val, &config, device)?;
    let without = fit(
        model,
        &train,
        &val,
        &config.clone().with_feature_cache(false),
        device,
    )?;
    let (cached, uncached) = (losses(&with_cache), losses(&without));
    Ok(FeatureCacheParity {
        used_cache: with_cache.used_feature_cache && !without.used_feature_cache,
        max_rel: max_relative_difference(&cached, &uncached),
        cached,
        uncached,
    })
}

/// The largest `|a - b| / |b|` over pairs, infinite when the lengths differ.
pub fn max_relative_difference(ours: &[f64], reference: &[f64]) -> f64 {
    if ours.len() != reference.len() {
        return f64::INFINITY;
    }
    ours.iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs() / b.abs().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

//! What the `alpaca` and `ants_bees` examples share: flags, device dispatch, finding inputs,
//! and writing the run's outputs (plots, metrics, model).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::Serialize;
use transfer_vision::data::{Compose, DataLoader, ImageFolder, decode_rgb};
use transfer_vision::models::{Architecture, ImageClassifier};
use transfer_vision::train::{EvalReport, FitConfig, History, evaluate, predict};
use transfer_vision::viz::{GridItem, plot_history, prediction_grid};
use transfer_vision::weights::{ModelInfo, save_model};

/// Flags both examples take.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images per batch (default: the recipe's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// Threads decoding and augmenting images.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seed of the split, the shuffles, the augmentations and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// A small subset and one epoch per phase: a smoke test of the whole flow.
    #[arg(long)]
    pub quick: bool,
    /// Output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Float precision on CUDA: `f32`, `f16` or `bf16` (mixed-precision training and inference).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Checkpoint every epoch into OUT/checkpoints/ and, when restarted (after a crash or a
    /// kill), resume from there; delete that folder to start over.
    #[arg(long)]
    pub resume: bool,
}

impl CommonArgs {
    /// The output folder: `--out`, else `runs/<example>`.
    pub fn out_dir(&self, example: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(example))
    }

    /// `config` with its phase's checkpoint under `out/checkpoints/` when `--resume` is given.
    pub fn checkpointed(&self, mut config: FitConfig, out: &Path) -> FitConfig {
        if self.resume {
            config.checkpoint = Some(
                out.join("checkpoints")
                    .join(format!("{}.ckpt", config.phase)),
            );
        }
        config
    }
}

/// Calls `run::<B>(args.., device, &spec)` with the autodiff backend that `--device` and
/// `--precision` pick (f16 / bf16 only on CUDA), or exits with the flag's error.
macro_rules! on_backend {
    ($common:expr, $run:ident($($arg:expr),*)) => {{
        use transfer_vision::backend::{DeviceSpec, Precision};
        let spec = common::or_exit(DeviceSpec::parse_compiled(&$common.device), "--device");
        let precision = common::or_exit(
            Precision::parse(&$common.precision).and_then(|p| p.check_device(&spec).map(|()| p)),
            "--precision",
        );
        match (&spec, precision) {
            #[cfg(feature = "cuda")]
            (DeviceSpec::Cuda(_), Precision::F16) => $run::<transfer_vision::backend::CudaF16Autodiff>(
                $($arg,)* spec.cuda_device().unwrap_or_default(), &spec,
            ),
            #[cfg(feature = "cuda")]
            (DeviceSpec::Cuda(_), Precision::Bf16) => $run::<transfer_vision::backend::CudaBf16Autodiff>(
                $($arg,)* spec.cuda_device().unwrap_or_default(), &spec,
            ),
            #[cfg(feature = "cuda")]
            (DeviceSpec::Cuda(_), _) => $run::<transfer_vision::backend::CudaAutodiff>(
                $($arg,)* spec.cuda_device().unwrap_or_default(), &spec,
            ),
            _ => $run::<transfer_vision::backend::CpuAutodiff>($($arg,)* Default::default(), &spec),
        }
    }};
}
pub(crate) use on_backend;

/// Exits with `message` (no panic, no backtrace) when `result` is an error.
pub fn or_exit<T, E: std::fmt::Display>(result: Result<T, E>, context: &str) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("error: {context}: {e}");
        std::process::exit(1)
    })
}

/// Checks that `path` exists, else explains where it was looked for and how to get it.
pub fn require(path: &Path, what: &str, how: &str) {
    if !path.exists() {
        eprintln!(
            "error: {what} not found at {}\n\nHow to get it:\n{how}\n\n(Run from the repository root, or pass the path explicitly.)",
            path.display()
        );
        std::process::exit(2);
    }
}

/// How to obtain the ImageNet weights this crate imports.
pub const WEIGHTS_HELP: &str = "\
  - a TensorFlow-trained MobileNetV2 converted to ONNX (the file used here comes with the
    project's shared data: ../shared/weights/mobilenet_v2_tf_imagenet.onnx), or
  - torchvision's ImageNet weights exported to ONNX: python weights/export_torchvision.py
    (writes weights/mobilenet_v2.onnx and weights/resnet18.onnx; needs torch and torchvision), or
  - the ONNX model zoo files (see weights/README.md for URLs and checksums; building with
    `--features download` fetches them).
Then pass --weights FILE.onnx.";

/// Fetches the hymenoptera data (into `data/`) and ONNX model zoo weights when they are
/// missing (`download` feature): returns the paths to use.
#[cfg(feature = "download")]
pub fn fetch_missing(data: &Path, weights: PathBuf, model: &str) -> (PathBuf, PathBuf) {
    use transfer_vision::weights::download::{Pretrained, fetch, fetch_hymenoptera_in};
    let data = if data.exists() {
        data.to_path_buf()
    } else {
        or_exit(
            fetch_hymenoptera_in(Path::new("data")),
            "downloading the hymenoptera dataset",
        )
    };
    let entry = match model {
        "mobilenet_v2" => Pretrained::MobileNetV2,
        _ => Pretrained::ResNet18V1,
    };
    let weights = if weights.exists() {
        weights
    } else {
        or_exit(fetch(entry), "downloading the weights")
    };
    (data, weights)
}

/// Where every output of a run goes.
pub struct RunOutputs {
    /// The folder.
    pub dir: PathBuf,
}

/// The figures written to `metrics.json`.
#[derive(Serialize)]
pub struct Metrics<'a> {
    pub example: &'a str,
    pub model: String,
    pub backend: String,
    pub device: String,
    pub precision: &'a str,
    pub classes: &'a [String],
    pub train_images: usize,
    pub val_images: usize,
    pub history: &'a History,
    pub final_evaluation: &'a EvalReport,
    pub seconds_per_phase: Vec<(String, f64)>,
    pub total_seconds: f64,
    pub quick: bool,
}

impl RunOutputs {
    /// Creates `dir`.
    pub fn new(dir: PathBuf) -> Self {
        or_exit(
            std::fs::create_dir_all(&dir),
            &format!("cannot create {}", dir.display()),
        );
        Self { dir }
    }

    /// Writes history.png, predictions.png, metrics.json and model.tvm.
    pub fn write<B, M>(
        &self,
        model: &M,
        info: &ModelInfo,
        val_set: &ImageFolder,
        val_transform: &Compose,
        metrics: &Metrics<'_>,
        device: &B::Device,
    ) where
        B: AutodiffBackend,
        M: Architecture<B> + AutodiffModule<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        let history_png = self.dir.join("history.png");
        or_exit(
            plot_history(metrics.history, &history_png),
            "plotting the history",
        );
        let grid_png = self.dir.join("predictions.png");
        let items = grid_items::<B, M>(model, val_set, val_transform, &info.class_names, 9, device);
        or_exit(
            prediction_grid(&items, 3, &grid_png),
            "drawing the predictions",
        );
        let json = or_exit(serde_json::to_string_pretty(metrics), "encoding metrics");
        or_exit(
            transfer_vision::io::atomic_write(&self.dir.join("metrics.json"), json.as_bytes()),
            "writing metrics.json",
        );
        or_exit(
            save_model(model, info, &self.dir.join("model.tvm")),
            "saving the model",
        );
        println!(
            "wrote {}, {}, metrics.json and model.tvm to {}",
            history_png
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            grid_png.file_name().unwrap_or_default().to_string_lossy(),
            self.dir.display()
        );
    }
}

/// Up to `n` validation images (spread over the set) with their true and predicted labels.
pub fn grid_items<B, M>(
    model: &M,
    val_set: &ImageFolder,
    transform: &Compose,
    class_names: &[String],
    n: usize,
    device: &B::Device,
) -> Vec<GridItem>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let inner = model.valid();
    let samples = val_set.samples();
    let step = (samples.len() / n.max(1)).max(1);
    let mut items = Vec::new();
    for sample in samples.iter().step_by(step).take(n) {
        let Ok(image) = decode_rgb(&sample.path, &Default::default()) else {
            continue;
        };
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0); // eval transforms draw nothing
        let Ok(chw) = transform.apply_ref(&image, &mut rng) else {
            continue;
        };
        let [c, h, w] = chw.shape();
        let x = burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(chw.data, [1, c, h, w]),
            device,
        );
        let prediction = predict(&inner, x, class_names).remove(0);
        items.push(GridItem {
            image,
            label: class_names.get(sample.label).cloned().unwrap_or_default(),
            predicted: prediction.name,
        });
    }
    items
}

/// Evaluates the final model on the validation loader.
pub fn final_evaluation<B, M>(model: &M, val: &DataLoader, device: &B::Device) -> EvalReport
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    or_exit(evaluate(&model.valid(), val, device), "evaluating")
}

/// Prints the closing report.
pub fn report(report: &EvalReport, classes: &[String], history: &History, total_seconds: f64) {
    println!("\n== Final report");
    println!(
        "validation accuracy {:.4} (loss {:.4}) on {} images",
        report.accuracy, report.loss, report.count
    );
    for (i, name) in classes.iter().enumerate() {
        println!(
            "  {name:>12}: accuracy {:.4}, confusion row {:?}",
            report.per_class_accuracy[i], report.confusion[i]
        );
    }
    if let Some(best) = history.best() {
        println!(
            "best epoch {} ({}) val accuracy {:.4}",
            best.epoch + 1,
            best.phase,
            best.val_accuracy
        );
    }
    println!("total time {total_seconds:.1}s");
}

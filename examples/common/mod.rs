//! What the `alpaca` and `ants_bees` examples share: their flags, the backend chosen by
//! `--device`, finding their inputs, and the closing steps (evaluate, write the run's outputs,
//! report). The training flow itself is in each example.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;
use transfer_vision::kernels::AutodiffConvBackend;

use burn::module::AutodiffModule;
use clap::Args;
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::{
    Compose, DataError, DataLoader, FolderOptions, LoaderConfig, TrainVal,
};
use transfer_vision::imagenet::imagenet_classes;
use transfer_vision::models::{Architecture, ImageClassifier};
use transfer_vision::run::{RunOutputs, RunSummary};
use transfer_vision::train::{TransferRecipe, TransferRun, predict};
use transfer_vision::weights::ModelInfo;

/// Flags both examples take.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (the CUDA / wgpu builds: `--features cuda` / `wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images per batch (default: the recipe's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// Threads decoding and augmenting images.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seed of the split, the shuffles, the augmentations, the new head and dropout.
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
    /// Leave out images that cannot be decoded (truncated, corrupt), one warning each, instead
    /// of stopping before training with the list of them.
    #[arg(long)]
    pub skip_bad_images: bool,
}

impl CommonArgs {
    /// The output folder: `--out`, else `runs/<example>`.
    pub fn out_dir(&self, example: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(example))
    }

    /// `recipe` as these flags ask: one epoch per phase with `--quick`, the seed, quiet,
    /// checkpoints under `out/checkpoints/` with `--resume`.
    pub fn adjust(&self, recipe: TransferRecipe, out: &Path) -> TransferRecipe {
        let (head, fine) = (recipe.feature_extraction.epochs, recipe.fine_tuning.epochs);
        let mut recipe = recipe.with_seed(self.seed).with_quiet(self.quiet);
        if self.quick {
            recipe = recipe.with_epochs(head.min(1), fine.min(1));
        }
        if self.resume {
            recipe = recipe.with_checkpoints_in(&out.join("checkpoints"));
        }
        recipe
    }

    /// The training loader (shuffled, `train` transform) and the validation loader (in order,
    /// `eval` transform) of `sets`, batches of `batch_size` unless `--batch-size`.
    pub fn loaders(
        &self,
        sets: &TrainVal,
        train: Compose,
        eval: Compose,
        batch_size: usize,
    ) -> Result<(DataLoader, DataLoader), DataError> {
        let config = LoaderConfig::new(self.batch_size.map_or(batch_size, |b| b as usize))
            .with_seed(self.seed)
            .with_workers(self.workers);
        Ok((
            DataLoader::new(&sets.train, train, config)?,
            DataLoader::new(&sets.val, eval, config.with_shuffle(false))?,
        ))
    }

    /// The data at `path`: `train/` and `val/` class folders, or one folder of class folders
    /// split `val_fraction` with the seed; a small subset with `--quick`.
    pub fn open_data(&self, path: &Path, val_fraction: f64) -> Result<TrainVal, DataError> {
        let options = FolderOptions::default().lenient(self.skip_bad_images);
        let mut sets = TrainVal::open(path, options, val_fraction, self.seed)?;
        if self.quick {
            sets.train = sets.train.split(0.2, self.seed)?.1;
            sets.val = sets.val.split(0.2, self.seed)?.1;
            sets.check_trainable()?;
        }
        // Every photo decoded once: damaged ones stop the run here, listed, or are left out.
        let skipped = sets.verify(self.workers)?;
        if skipped > 0 {
            for warning in sets.warnings() {
                eprintln!("warning: {warning}");
            }
        }
        println!(
            "classes {:?}: {} training / {} validation images",
            sets.train.classes(),
            sets.train.len(),
            sets.val.len()
        );
        Ok(sets)
    }
}

/// Calls `run::<B>(args.., device, &spec)` with the autodiff backend that `--device` and
/// `--precision` pick (f16 / bf16 only on CUDA), or exits with the flag's error; an error `run`
/// returns is printed (`error: ...`, exit status 1), never a panic. The process keeps the
/// memory it frees for reuse (`backend::reuse_freed_memory`): a program that only trains and
/// exits loses nothing by it, and each step skips faulting in fresh pages.
macro_rules! on_backend {
    ($common:expr, $run:ident($($arg:expr),*)) => {{
        transfer_vision::backend::reuse_freed_memory();
        use transfer_vision::backend::{DeviceSpec, Precision};
        let spec = common::or_exit(DeviceSpec::parse_compiled(&$common.device), "--device");
        let precision = common::or_exit(
            Precision::parse(&$common.precision).and_then(|p| p.check_device(&spec).map(|()| p)),
            "--precision",
        );
        let result = match (&spec, precision) {
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
            #[cfg(feature = "wgpu")]
            (DeviceSpec::Wgpu(_), _) => $run::<transfer_vision::backend::WgpuAutodiff>(
                $($arg,)* common::or_exit(spec.wgpu_device(), "--device"), &spec,
            ),
            _ => $run::<transfer_vision::backend::CpuAutodiff>($($arg,)* Default::default(), &spec),
        };
        if let Err(e) = result {
            eprintln!("error: {e}");
            std::process::exit(1);
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
  - the ONNX model zoo files (see weights/README.md for URLs and checksums; the examples fetch
    them when run without --weights).
Then pass --weights FILE.onnx.";

/// The hymenoptera data at `data` when it exists. When it does not and `data` is the example's
/// default (not a `--data` the user gave), the PyTorch tutorial's archive is fetched into
/// `data/` and extracted (as torchvision's datasets do with `download=True`); offline, the
/// message says how to get it by hand.
pub fn find_hymenoptera(data: &Path, user_given: bool) -> PathBuf {
    if !data.exists() && !user_given {
        use transfer_vision::weights::download::fetch_hymenoptera_in;
        return or_exit(
            fetch_hymenoptera_in(Path::new("data")),
            "the hymenoptera dataset is not in data/ and could not be downloaded",
        );
    }
    require(
        data,
        "the hymenoptera dataset",
        "  download https://download.pytorch.org/tutorial/hymenoptera_data.zip and unzip it into data/\n  (run without --data to fetch it), or pass --data ../shared/datasets/hymenoptera_data",
    );
    data.to_path_buf()
}

/// `weights` when it exists. When it does not, `weights` is the example's default (not a
/// `--weights` the user gave) and the ONNX model zoo has `model`, the zoo's file is fetched
/// (verified against its sha256, cached; see `weights::download`); offline, the message says how
/// to get it by hand.
pub fn find_weights(weights: &Path, model: &str, user_given: bool) -> PathBuf {
    use transfer_vision::weights::download::{Pretrained, fetch};
    if let Some(entry) = Pretrained::for_model(model).filter(|_| !weights.exists() && !user_given) {
        return or_exit(
            fetch(entry),
            &format!(
                "{} is missing and could not be downloaded",
                weights.display()
            ),
        );
    }
    require(weights, &format!("ImageNet {model} weights"), WEIGHTS_HELP);
    weights.to_path_buf()
}

/// Prints the untouched ImageNet model's top-1 class for the first `n` images of `loader`:
/// what the pretrained features see before any fine-tuning.
pub fn show_imagenet_guesses<B, M>(model: &M, loader: &DataLoader, n: usize, device: &B::Device)
where
    B: AutodiffConvBackend,
    M: ImageClassifier<B>,
{
    let names: Vec<String> = imagenet_classes().iter().map(|s| s.to_string()).collect();
    let Some(Ok(batch)) = loader.epoch(0).next() else {
        return; // an image that cannot be read is reported by training, naming it
    };
    let predictions = predict(model, batch.images_tensor::<B>(device), &names);
    for (p, path) in predictions.iter().zip(&batch.paths).take(n) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "ImageNet top-1 for {name}: {} ({:.2})",
            p.name, p.probabilities[p.class]
        );
    }
}

/// A run of an example: what its closing steps need besides the data and the models.
pub struct Run<'a> {
    example: &'a str,
    started: Instant,
    common: &'a CommonArgs,
    device_spec: &'a DeviceSpec,
}

impl<'a> Run<'a> {
    /// The run of `example` starts now.
    pub fn start(example: &'a str, common: &'a CommonArgs, device_spec: &'a DeviceSpec) -> Self {
        Self {
            example,
            started: Instant::now(),
            common,
            device_spec,
        }
    }

    /// The output folder.
    pub fn out_dir(&self) -> PathBuf {
        self.common.out_dir(self.example)
    }

    /// Evaluates the fine-tuned model, writes history.png, predictions.png, metrics.json and
    /// model.tvm (with `info`) to the output folder, and prints the closing report.
    pub fn finish<B, M>(
        &self,
        sets: &TrainVal,
        val: &DataLoader,
        info: ModelInfo,
        outcome: &TransferRun<M>,
        device: &B::Device,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        B: AutodiffConvBackend,
        M: Architecture<B> + AutodiffModule<B>,
        M::InnerModule: ImageClassifier<B::InnerBackend>,
    {
        let summary = RunSummary {
            run: self.example.into(),
            backend: self.device_spec.backend_name().into(),
            device: self.device_spec.to_string(),
            precision: self.common.precision.clone(),
            total_seconds: self.started.elapsed().as_secs_f64(),
            quick: self.common.quick,
            ..RunSummary::of_transfer(outcome, sets, val, &info.class_names, device)?
        };
        let tuned = &outcome.fine_tuning;
        let outputs = RunOutputs::create(self.out_dir())?;
        let files = outputs.write(&tuned.model, &info, &sets.val, &summary, device)?;
        println!(
            "wrote {}, {}, {} and {}",
            files.history_png.display(),
            files.predictions_png.display(),
            files.metrics_json.display(),
            files.model.display()
        );
        println!("\n{summary}");
        Ok(())
    }
}

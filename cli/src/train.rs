//! `transfer-vision train`: a folder of photos in, a fine-tuned model and its report out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::module::AutodiffModule;
use clap::builder::PossibleValuesParser;
use clap::{Args, ValueEnum};
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::{
    Compose, DataLoader, FolderOptions, LoaderConfig, Preprocessing, TrainVal, presets,
};
use transfer_vision::kernels::AutodiffConvBackend;
use transfer_vision::models::{AnyModel, Architecture, ImageClassifier, ModelSpec};
use transfer_vision::run::{RunOutputs, RunSummary};
use transfer_vision::train::{TransferRecipe, TransferRun};
use transfer_vision::weights::ModelInfo;

use crate::backend::{DeviceArgs, with_autodiff_backend};
use crate::error::{CliError, existing_file, existing_folder};
use crate::explain;

/// The optimisation recipe of both phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecipeArg {
    /// The Keras MobileNetV2 exercise (the `alpaca` example): 5 epochs of Adam at 1e-3 on the
    /// head, 5 at 1e-4 fine-tuning; flips and rotations; images resized whole; batch 32.
    Keras,
    /// The PyTorch transfer-learning tutorial (the `ants_bees` example): SGD 1e-3, momentum
    /// 0.9, ×0.1 every 7 epochs; 10 + 5 epochs; RandomResizedCrop and flips; batch 16. The
    /// default: with the ImageNet MobileNetV2 it reached 0.961 on hymenoptera and 0.969 on
    /// alpaca, where `keras` reached 0.948 and 0.954.
    Pytorch,
}

/// `transfer-vision train`.
#[derive(Debug, Args)]
#[command(after_help = "\
The data folder holds train/ and val/, each with one folder per class (the hymenoptera layout),
or directly one folder per class, split into training and validation with --val-fraction and
--seed. The run folder receives model.tvm, metrics.json, history.png, predictions.png,
confusion_matrix.png, top_losses.png and grad_cam.png; while it is being written it holds a file
INCOMPLETE, removed last.")]
pub struct TrainArgs {
    /// Folder of class folders, or with `train/` and `val/` of class folders.
    #[arg(long)]
    data: PathBuf,
    /// Architecture to train [default: whatever --weights holds; mobilenet_v2 without --weights].
    #[arg(long, value_parser = PossibleValuesParser::new(ModelSpec::names()))]
    model: Option<String>,
    /// ImageNet weights as ONNX [default: weights/<model>.onnx].
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Run folder [default: runs/<data folder>-<model>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace a finished run in the run folder.
    #[arg(long)]
    force: bool,
    /// Optimisation recipe.
    #[arg(long, value_enum, default_value = "pytorch")]
    recipe: RecipeArg,
    /// Epochs of feature extraction (backbone frozen) [default: the recipe's].
    #[arg(long)]
    epochs_head: Option<usize>,
    /// Epochs of fine-tuning [default: the recipe's; 0 skips fine-tuning].
    #[arg(long)]
    epochs_finetune: Option<usize>,
    /// Learning rate of feature extraction [default: the recipe's].
    #[arg(long, value_parser = positive_float)]
    lr_head: Option<f64>,
    /// Learning rate of fine-tuning [default: the recipe's].
    #[arg(long, value_parser = positive_float)]
    lr_finetune: Option<f64>,
    /// First block fine-tuning unfreezes, a torchvision path such as `features.14` or `layer4`
    /// [default: the architecture's last stage].
    #[arg(long)]
    unfreeze_from: Option<String>,
    /// Input size in pixels.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(32..=1024))]
    image_size: u32,
    /// Images per batch [default: the recipe's].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Fraction of the images kept for validation when the folder has no `train/`, `val/`.
    #[arg(long, default_value_t = 0.2, value_parser = fraction)]
    val_fraction: f64,
    /// Threads decoding and augmenting images.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: u32,
    /// Seed of the split, the shuffles, the augmentation, the new head and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Checkpoint every epoch into RUN/checkpoints/ and continue from there when restarted.
    #[arg(long)]
    resume: bool,
    /// Train without the images that cannot be decoded (one warning each) instead of stopping
    /// with their list.
    #[arg(long)]
    skip_bad_images: bool,
    /// A fifth of the images and one epoch per phase: a smoke test of the whole run.
    #[arg(long)]
    quick: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// A positive, finite number.
fn positive_float(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("'{text}' is not a positive number")),
    }
}

/// A number in [0, 1).
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!("'{text}' is not a fraction in [0, 1)")),
    }
}

/// Runs `train`.
pub fn run(args: &TrainArgs) -> Result<ExitCode, CliError> {
    with_autodiff_backend!(args.device, train(args))
}

/// Files of a finished run; with `INCOMPLETE` absent, their presence marks the run as done.
const RUN_FILES: [&str; 7] = [
    "model.tvm",
    "metrics.json",
    "history.png",
    "predictions.png",
    "confusion_matrix.png",
    "top_losses.png",
    "grad_cam.png",
];
/// Present while a run folder is being written.
const INCOMPLETE: &str = "INCOMPLETE";

fn train<B: AutodiffConvBackend>(
    args: &TrainArgs,
    device: B::Device,
    spec: &DeviceSpec,
) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    if args.epochs_head == Some(0) && args.epochs_finetune == Some(0) {
        return Err(CliError::Usage(
            "--epochs-head 0 and --epochs-finetune 0: nothing would train".into(),
        ));
    }

    // 1. The data, every image decoded once before anything is written.
    let mut sets = open_data(args)?;
    let classes = sets.train.classes().to_vec();

    // 2. The pretrained network, and the recipe for it.
    let weights = find_weights(args)?;
    let (model, import) = AnyModel::<B>::from_onnx(&weights, &device)?;
    if let Some(wanted) = &args.model {
        import
            .spec
            .expect(wanted, &weights)
            .map_err(|e| CliError::Check(format!("--model {wanted}: {e}")))?;
    }
    let model_name = import.spec.name();
    let recipe_kind = args.recipe;
    let unfreeze = args
        .unfreeze_from
        .clone()
        .unwrap_or_else(|| import.spec.fine_tune_from().to_string());
    let (recipe, pre, augment, batch) =
        recipe_for(recipe_kind, &import.preprocessing, args, &unfreeze);
    // The check `TransferRecipe::run` makes, made before the run folder exists.
    recipe
        .fine_tuning
        .trainable
        .prefixes(&model)
        .map_err(|e| CliError::Usage(format!("--unfreeze-from {unfreeze}: {model_name}: {e}")))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.data, &model_name));
    let run_dir = RunDir::prepare(&out, args.force, args.resume)?;

    let config = LoaderConfig::new(args.batch_size.map_or(batch, |b| b as usize))
        .with_seed(args.seed)
        .with_workers(args.workers as usize);
    let train_loader = DataLoader::new(&sets.train, augment, config)?;
    let val_loader = DataLoader::new(&sets.val, pre.eval_transform(), config.with_shuffle(false))?;
    println!(
        "{model_name} from {}, {} recipe, unfreezing from {unfreeze}, {}x{} input, batch {}",
        weights.display(),
        recipe_kind.name(),
        pre.image_size,
        pre.image_size,
        config.batch_size
    );

    // 3. A new head, feature extraction, fine-tuning.
    B::seed(&device, args.seed);
    let model = model.with_new_head(classes.len(), &device);
    let mut recipe = recipe.with_seed(args.seed).with_quiet(args.quiet);
    if args.resume {
        recipe = recipe.with_checkpoints_in(&out.join("checkpoints"));
    }
    let outcome = recipe.run(model, &train_loader, &val_loader, &device)?;

    // 4. The run folder: model, metrics, pictures; INCOMPLETE removed last.
    let mut info = ModelInfo::new(classes, pre);
    info.metadata = provenance(args, &sets, &weights, recipe_kind, &unfreeze);
    let summary = summarize(
        args,
        spec,
        &sets,
        &val_loader,
        &info,
        &outcome,
        started,
        &device,
    )?;
    let written = write_outputs(
        &run_dir,
        &outcome,
        &info,
        &mut sets,
        &val_loader,
        &summary,
        &device,
    );
    if let Err(e) = written {
        run_dir.remove_outputs();
        return Err(e);
    }
    run_dir.finish()?;
    println!("\n{summary}");
    println!("run folder: {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The sets at `--data`, each image decoded once (damaged ones listed, or left out with
/// `--skip-bad-images`), a fifth of them with `--quick`.
fn open_data(args: &TrainArgs) -> Result<TrainVal, CliError> {
    existing_folder("--data", &args.data)?;
    let options = FolderOptions::default().lenient(args.skip_bad_images);
    let mut sets = TrainVal::open(&args.data, options, args.val_fraction, args.seed)?;
    if args.quick {
        sets.train = sets.train.split(0.2, args.seed)?.1;
        sets.val = sets.val.split(0.2, args.seed)?.1;
        sets.check_trainable()?;
    }
    sets.verify(args.workers as usize)?;
    for warning in sets.warnings() {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: classes {:?}, {} training / {} validation images{}",
        args.data.display(),
        sets.train.classes(),
        sets.train.len(),
        sets.val.len(),
        if sets.presplit {
            " (train/ and val/)".to_string()
        } else {
            format!(" (split {} with seed {})", args.val_fraction, args.seed)
        }
    );
    Ok(sets)
}

/// `--weights`, or `weights/<model>.onnx`, or (with the `download` feature) the ONNX model
/// zoo's file, fetched and verified.
fn find_weights(args: &TrainArgs) -> Result<PathBuf, CliError> {
    if let Some(path) = &args.weights {
        return existing_file("--weights", path).map(|()| path.clone());
    }
    let model = args.model.as_deref().unwrap_or("mobilenet_v2");
    let local = PathBuf::from(format!("weights/{model}.onnx"));
    if local.is_file() {
        return Ok(local);
    }
    #[cfg(feature = "download")]
    {
        use transfer_vision::weights::download::{Pretrained, fetch};
        if let Some(entry) = Pretrained::for_model(model) {
            return fetch(entry).map_err(|e| CliError::Check(format!("downloading {model}: {e}")));
        }
    }
    Err(CliError::Usage(format!(
        "no --weights given and {} does not exist: pass --weights FILE.onnx (ImageNet {model} \
         as ONNX; see weights/README.md, e.g. python weights/export_torchvision.py)",
        local.display()
    )))
}

impl RecipeArg {
    /// The name `--recipe` takes.
    fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// The recipe (with the flags' epochs and rates), the preprocessing, the training transform
/// and the batch size of `kind`.
fn recipe_for(
    kind: RecipeArg,
    imported: &Preprocessing,
    args: &TrainArgs,
    unfreeze: &str,
) -> (TransferRecipe, Preprocessing, Compose, usize) {
    let size = args.image_size;
    let (mut recipe, pre, augment, batch) = match kind {
        RecipeArg::Keras => {
            let pre = imported.with_image_size(size).with_exact_resize();
            let augment = presets::alpaca_train(size, pre.normalization);
            (TransferRecipe::keras_exercise(unfreeze), pre, augment, 32)
        }
        RecipeArg::Pytorch => {
            let pre = imported.with_image_size(size);
            let augment = pre.train_transform();
            (
                TransferRecipe::pytorch_tutorial(10, 5, unfreeze),
                pre,
                augment,
                16,
            )
        }
    };
    let (head, fine) = (recipe.feature_extraction.epochs, recipe.fine_tuning.epochs);
    let (head, fine) = (
        args.epochs_head.unwrap_or(head),
        args.epochs_finetune.unwrap_or(fine),
    );
    recipe = if args.quick {
        recipe.with_epochs(head.min(1), fine.min(1))
    } else {
        recipe.with_epochs(head, fine)
    };
    if let Some(lr) = args.lr_head {
        recipe.feature_extraction.optimizer.lr = lr;
    }
    if let Some(lr) = args.lr_finetune {
        recipe.fine_tuning.optimizer.lr = lr;
    }
    (recipe, pre, augment, batch)
}

/// `runs/<data folder name>-<model>`.
fn default_out(data: &Path, model: &str) -> PathBuf {
    let name = std::fs::canonicalize(data)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "data".into());
    Path::new("runs").join(format!("{}-{model}", name.replace(' ', "_")))
}

/// What `eval` needs to find the same validation images again, and what made the model.
fn provenance(
    args: &TrainArgs,
    sets: &TrainVal,
    weights: &Path,
    recipe: RecipeArg,
    unfreeze: &str,
) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    let split = if sets.presplit { "folders" } else { "random" };
    meta.insert("data".into(), args.data.display().to_string());
    meta.insert("split".into(), split.into());
    meta.insert("val_fraction".into(), args.val_fraction.to_string());
    meta.insert("seed".into(), args.seed.to_string());
    meta.insert("quick".into(), args.quick.to_string());
    meta.insert("weights".into(), weights.display().to_string());
    meta.insert("recipe".into(), recipe.name());
    meta.insert("unfreeze_from".into(), unfreeze.into());
    meta
}

#[allow(clippy::too_many_arguments)]
fn summarize<B, M>(
    args: &TrainArgs,
    spec: &DeviceSpec,
    sets: &TrainVal,
    val: &DataLoader,
    info: &ModelInfo,
    outcome: &TransferRun<M>,
    started: Instant,
    device: &B::Device,
) -> Result<RunSummary, CliError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
{
    Ok(RunSummary {
        run: "train".into(),
        backend: spec.backend_name().into(),
        device: spec.to_string(),
        precision: args.device.precision.clone(),
        total_seconds: started.elapsed().as_secs_f64(),
        quick: args.quick,
        ..RunSummary::of_transfer(outcome, sets, val, &info.class_names, device)?
    })
}

fn write_outputs<B, M>(
    run_dir: &RunDir,
    outcome: &TransferRun<M>,
    info: &ModelInfo,
    sets: &mut TrainVal,
    val: &DataLoader,
    summary: &RunSummary,
    device: &B::Device,
) -> Result<(), CliError>
where
    B: AutodiffConvBackend,
    M: Architecture<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let model = &outcome.fine_tuning.model;
    let outputs = RunOutputs::create(&run_dir.dir)?;
    outputs.write(model, info, &sets.val, summary, device)?;
    // The pictures of the errors, from the inference model (what `eval` loads).
    let inference = model.valid();
    explain::write_pictures::<B::InnerBackend, _>(
        &inference,
        info,
        &summary.final_evaluation,
        val,
        &run_dir.dir,
        &device.clone(),
    )?;
    Ok(())
}

/// The run folder, marked `INCOMPLETE` until every file is written.
struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// Creates `dir` (refusing one that holds a finished run, unless `force` or `resume`) and
    /// marks it incomplete.
    fn prepare(dir: &Path, force: bool, resume: bool) -> Result<Self, CliError> {
        let finished = dir.join("model.tvm").exists() && !dir.join(INCOMPLETE).exists();
        if finished && !force && !resume {
            return Err(CliError::Usage(format!(
                "{}: holds a finished run; pass --force to replace it, or --out another folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
        let run = Self {
            dir: dir.to_path_buf(),
        };
        run.remove_outputs();
        let marker = dir.join(INCOMPLETE);
        std::fs::write(
            &marker,
            "transfer-vision train has not finished writing this folder (or it stopped): its \
             files are not a complete run.\n",
        )
        .map_err(|e| CliError::io(&marker, e))?;
        Ok(run)
    }

    /// Removes the files of a run (not checkpoints, not anything else in the folder).
    fn remove_outputs(&self) {
        for name in RUN_FILES {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// Marks the run complete.
    fn finish(&self) -> Result<(), CliError> {
        let marker = self.dir.join(INCOMPLETE);
        std::fs::remove_file(&marker).map_err(|e| CliError::io(&marker, e))
    }
}

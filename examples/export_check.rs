//! Exports a model to ONNX and writes what an outside runtime needs to check the file against
//! this crate: preprocessed images and the crate's logits for them, as `.npy` arrays.
//!
//! ```text
//! cargo run --release --example export_check -- --model runs/ants_bees/model.tvm \
//!     --data ../shared/datasets/hymenoptera_data --onnx runs/export/model.onnx --out runs/export
//! python3 scripts/check_onnx_export.py --onnx runs/export/model.onnx --dir runs/export
//! ```
//!
//! `--model` is a `.tvm` saved by this crate or an ONNX file (told apart by their content). The
//! model is exported with `export_onnx` to `--onnx`; then up to `--limit` images of `--data` (a
//! folder of class folders, or one with a `val/` folder, which is then used) are decoded and
//! prepared as the model's preprocessing says (`Preprocessing::eval_transform`, as predictions
//! are), and `--out` receives:
//!
//! - `inputs.npy`: float32 `[N, 3, H, W]`, the prepared images;
//! - `logits.npy`: float32 `[N, C]`, the crate's logits for them (the model as loaded, its
//!   BatchNorms not folded, so that the check covers the folding the export does);
//! - `files.txt`: the N image files, one per line, in order.
//!
//! `--new-head` replaces the head with a fresh one (seeded by `--seed`) for the data's classes,
//! named after them: an ImageNet ONNX file becomes the shape of a fine-tuned model;
//! `--save-model` also saves the model that is exported as a `.tvm`. Exit status 1 on any error,
//! with the message naming the file.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use transfer_vision::backend::DeviceSpec;
use transfer_vision::data::{ImageFolder, decode_rgb};
use transfer_vision::imagenet::imagenet_classes;
use transfer_vision::kernels::ConvBackend;
use transfer_vision::models::{AnyModel, Architecture, ImageClassifier};
use transfer_vision::weights::{ModelInfo, export_onnx, load_model, save_model};

/// Export a model to ONNX and write images and the crate's logits for an onnxruntime check.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The model: a `.tvm` saved by this crate, or an ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// Images: a folder of class folders, or one with a `val/` folder of them.
    #[arg(long)]
    data: PathBuf,
    /// Where to write the exported ONNX file.
    #[arg(long)]
    onnx: PathBuf,
    /// Folder for `inputs.npy`, `logits.npy` and `files.txt`.
    #[arg(long)]
    out: PathBuf,
    /// At most this many images (default: all).
    #[arg(long)]
    limit: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Replace the head with a fresh one for the data's classes.
    #[arg(long)]
    new_head: bool,
    /// Seed of the new head.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also save the exported model as a `.tvm` here.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (the CUDA / wgpu builds: `--features cuda` / `wgpu`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// The first bytes of a model saved by `save_model`.
const SAVED_MODEL_MAGIC: &[u8] = b"TVMODEL1";

fn is_saved_model(path: &Path) -> bool {
    std::fs::File::open(path)
        .and_then(|mut f| {
            let mut magic = [0u8; 8];
            std::io::Read::read_exact(&mut f, &mut magic).map(|()| magic)
        })
        .is_ok_and(|magic| magic == SAVED_MODEL_MAGIC)
}

/// The model and its info, from a `.tvm` or an ONNX file.
fn load<B: ConvBackend>(
    path: &Path,
    device: &B::Device,
) -> Result<(AnyModel<B>, ModelInfo), Box<dyn Error>> {
    if is_saved_model(path) {
        return Ok(load_model::<B, AnyModel<B>>(path, device)?);
    }
    let (model, report) = AnyModel::<B>::from_onnx(path, device)?;
    let classes = model.num_classes();
    let names = report.class_names.unwrap_or_else(|| {
        if classes == imagenet_classes().len() {
            imagenet_classes().iter().map(|s| s.to_string()).collect()
        } else {
            (0..classes).map(|i| i.to_string()).collect()
        }
    });
    Ok((model, ModelInfo::new(names, report.preprocessing)))
}

/// Writes a little-endian float32 `.npy` file (format version 1.0).
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), Box<dyn Error>> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = match dims.as_slice() {
        [one] => format!("{one},"),
        _ => dims.join(", "),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded to a multiple of 64, ending
    // with a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let header_len = u16::try_from(header.len())?;
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn run<B: ConvBackend>(args: &Args, device: &B::Device) -> Result<(), Box<dyn Error>> {
    let (mut model, mut info) = load::<B>(&args.model, device)?;
    let val = args.data.join("val");
    let root = if val.is_dir() { val } else { args.data.clone() };
    let set = ImageFolder::new(&root)?;
    if args.new_head {
        B::seed(device, args.seed);
        model = model.with_new_head(set.classes().len(), device);
        info.class_names = set.classes().to_vec();
    }
    if let Some(path) = &args.save_model {
        save_model(&model, &info, path)?;
        eprintln!("saved {}", path.display());
    }
    let report = export_onnx(&model, &info, &args.onnx)?;
    eprintln!(
        "{}: {} ({} classes), opset {}, {} nodes, {} initializers, {} parameters, {} bytes",
        report.path.display(),
        report.model,
        report.num_classes,
        report.opset,
        report.nodes,
        report.initializers,
        report.parameters,
        report.bytes
    );

    // The images, prepared as predictions prepare them.
    let transform = info.preprocessing.eval_transform();
    let size = info.preprocessing.image_size as usize;
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut inputs = Vec::new();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for sample in set.samples() {
        if files.len() >= limit {
            break;
        }
        let image = match decode_rgb(&sample.path, &set.options().decode) {
            Ok(image) => image,
            Err(e) => {
                eprintln!("skipped: {e}");
                continue;
            }
        };
        // Evaluation transforms draw nothing from the RNG.
        let chw = transform.apply_ref(&image, &mut ChaCha8Rng::seed_from_u64(0))?;
        if chw.shape() != [3, size, size] {
            return Err(format!(
                "{}: prepared to {:?}, not [3, {size}, {size}]",
                sample.path.display(),
                chw.shape()
            )
            .into());
        }
        inputs.extend_from_slice(&chw.data);
        files.push(sample.path.clone());
        labels.push(sample.label);
    }
    let n = files.len();
    if n == 0 {
        return Err(format!("{}: no image could be read", root.display()).into());
    }

    // The crate's logits, batch by batch, on the model as loaded (inference: no autodiff).
    let per_image = 3 * size * size;
    let mut logits = Vec::with_capacity(n * model.num_classes());
    for chunk in inputs.chunks(args.batch as usize * per_image) {
        let batch = chunk.len() / per_image;
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(chunk.to_vec(), [batch, 3, size, size]),
            device,
        );
        let y = model
            .forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| format!("logits: {e:?}"))?;
        logits.extend(y);
    }
    let classes = model.num_classes();
    let correct = logits
        .chunks(classes)
        .zip(&labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 == **label
        })
        .count();

    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    write_npy(&args.out.join("inputs.npy"), &[n, 3, size, size], &inputs)?;
    write_npy(&args.out.join("logits.npy"), &[n, classes], &logits)?;
    let list = args.out.join("files.txt");
    let mut text = Vec::new();
    for f in &files {
        writeln!(text, "{}", f.display())?;
    }
    std::fs::write(&list, text).map_err(|e| format!("{}: {e}", list.display()))?;
    eprintln!(
        "{n} images of {} at {size}x{size}, {classes} classes; top-1 agrees with the folder's \
         label on {correct}/{n} (meaningful only when the classes are the data's)",
        root.display()
    );
    eprintln!(
        "wrote {}/{{inputs.npy, logits.npy, files.txt}}; check with: python3 \
         scripts/check_onnx_export.py --onnx {} --dir {}",
        args.out.display(),
        args.onnx.display(),
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let spec = match DeviceSpec::parse_compiled(&args.device) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --device: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &spec {
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => match spec.cuda_device() {
            Some(device) => run::<transfer_vision::backend::Cuda>(&args, &device),
            None => return ExitCode::from(2),
        },
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) => match spec.wgpu_device() {
            Ok(device) => run::<transfer_vision::backend::Wgpu>(&args, &device),
            Err(e) => {
                eprintln!("error: --device: {e}");
                return ExitCode::from(2);
            }
        },
        #[cfg(any(feature = "flex", feature = "ndarray"))]
        DeviceSpec::Cpu => run::<transfer_vision::backend::Cpu>(&args, &Default::default()),
        #[allow(unreachable_patterns)]
        _ => {
            eprintln!("error: --device {spec}: backend not compiled in");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

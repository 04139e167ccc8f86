//! Classifies images with a model read from ONNX (ImageNet weights) or saved by this crate
//! (a fine-tuned `model.tvm`) and prints the top-k classes.
//!
//! ```text
//! cargo run --release --example predict -- --weights ../shared/weights/mobilenet_v2_tf_imagenet.onnx \
//!     photo.jpg other.png
//! cargo run --release --example predict -- --weights runs/alpaca/model.tvm --json --top 2 *.jpg
//! ```
//!
//! `--model auto` takes whatever architecture the file holds; `--preprocess auto` scales pixels
//! as the file says (an ONNX file's `preprocessing` metadata or TF-SAME padding, a saved model's
//! stored preprocessing). Images are resized and centre-cropped as the file says (ImageNet files:
//! shorter side 256, Pillow's antialiased bilinear, crop 224); `--resize`/`--crop` set them
//! explicitly, `--resize none --crop none` feeds the decoded pixels as they are. With only
//! `--crop`, the resize is `round(crop * 256 / 224)`.
//!
//! Output: per image, the file and one line per class (probability, name, index); with `--json`,
//! one JSON object per line: `{"file", "indices", "names", "probabilities"}`. An image that cannot
//! be read is reported on stderr with its name and the others go on; the exit code is then 1.
//! A bad flag or an unloadable weights file exits with 2.

use std::path::PathBuf;
use std::process::ExitCode;
use transfer_vision::kernels::ConvBackend;

use clap::{Parser, ValueEnum};
use transfer_vision::backend::DeviceSpec;
use transfer_vision::models::ModelSpec;
use transfer_vision::predict::{PredictOptions, Predictor, Preprocess};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PreprocessArg {
    Auto,
    Imagenet,
    Tf,
}

/// A size in pixels, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(Option<u32>);

fn parse_size(text: &str) -> Result<Size, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Size(None));
    }
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Size(Some(n))),
        _ => Err(format!(
            "'{text}' is not a positive number of pixels or 'none'"
        )),
    }
}

/// Top-k ImageNet classes of images, with a MobileNetV2 or ResNet read from ONNX.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The model file: ONNX, or a `.tvm` saved by this crate.
    #[arg(long)]
    weights: PathBuf,
    /// Architecture the file must hold (`auto`: whatever it holds).
    #[arg(long, default_value = "auto", value_parser = model_names())]
    model: String,
    /// Pixel scaling: `tf` = p / 127.5 - 1, `imagenet` = mean/std, `auto` = what the file asks for.
    #[arg(long, value_enum, default_value = "auto")]
    preprocess: PreprocessArg,
    /// Shorter side after resizing, or `none` [default: the file's; round(crop * 256 / 224)
    /// with `--crop`].
    #[arg(long, value_parser = parse_size)]
    resize: Option<Size>,
    /// Side of the centre crop, or `none` [default: the file's; 224 with `--resize`].
    #[arg(long, value_parser = parse_size)]
    crop: Option<Size>,
    /// Number of classes to show per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    top: u16,
    /// One JSON object per image and line.
    #[arg(long)]
    json: bool,
    /// `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N` (the CUDA / wgpu builds: `--features cuda` / `wgpu`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// The images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// `auto` and every architecture name.
fn model_names() -> clap::builder::PossibleValuesParser {
    let mut names = vec!["auto"];
    names.extend(ModelSpec::names());
    clap::builder::PossibleValuesParser::new(names)
}

impl Args {
    fn options(&self) -> PredictOptions {
        let base = PredictOptions {
            model: (self.model != "auto").then(|| self.model.clone()),
            preprocess: match self.preprocess {
                PreprocessArg::Auto => Preprocess::Auto,
                PreprocessArg::Imagenet => Preprocess::ImageNet,
                PreprocessArg::Tf => Preprocess::Tf,
            },
            batch_size: self.batch as usize,
            ..PredictOptions::from_model()
        };
        if self.resize.is_none() && self.crop.is_none() {
            return base;
        }
        let crop = self.crop.map_or(Some(224), |Size(c)| c);
        let resize = match self.resize {
            Some(Size(r)) => r,
            None => Some(crop.map_or(256, |c| (f64::from(c) * 256.0 / 224.0).round() as u32)),
        };
        PredictOptions {
            resize,
            crop,
            size_from_model: false,
            ..base
        }
    }
}

fn run<B: ConvBackend>(args: &Args, device: &B::Device) -> ExitCode {
    let predictor = match Predictor::<B>::from_file_with(&args.weights, &args.options(), device) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.json {
        eprintln!(
            "{}: {} ({} classes), {:?} preprocessing",
            args.weights.display(),
            predictor.spec().name(),
            predictor.class_names().len(),
            predictor.normalization(),
        );
    }
    let mut failed = 0usize;
    for (i, result) in predictor
        .predict_files(&args.images, usize::from(args.top))
        .into_iter()
        .enumerate()
    {
        match result {
            Ok(top) if args.json => println!("{}", top.to_json()),
            Ok(top) => {
                if i > 0 {
                    println!();
                }
                println!("{top}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} images failed", args.images.len());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
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
    match &spec {
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(_) => match spec.cuda_device() {
            Some(device) => run::<transfer_vision::backend::Cuda>(&args, &device),
            None => ExitCode::from(2),
        },
        #[cfg(feature = "wgpu")]
        DeviceSpec::Wgpu(_) => match spec.wgpu_device() {
            Ok(device) => run::<transfer_vision::backend::Wgpu>(&args, &device),
            Err(e) => {
                eprintln!("error: --device: {e}");
                ExitCode::from(2)
            }
        },
        #[cfg(any(feature = "flex", feature = "ndarray"))]
        DeviceSpec::Cpu => run::<transfer_vision::backend::Cpu>(&args, &Default::default()),
        #[allow(unreachable_patterns)]
        _ => {
            eprintln!("error: --device {spec}: backend not compiled in");
            ExitCode::from(2)
        }
    }
}

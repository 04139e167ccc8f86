//! Checks a device end to end: ONNX logits and training steps against the PyTorch /
//! onnxruntime goldens (`transfer_vision::verify`, the same code as the test suite), a save/load
//! round trip, feature extraction on cached features against the uncached path and the CPU, then
//! optionally benchmarks forward passes and training steps. Used by `scripts/gpu_check.sh` on
//! CUDA; runs the same on the CPU.
//!
//! `cargo run --release --features cuda --example device_check -- --device cuda --bench`
//! `cargo run --release --features wgpu --example device_check -- --device wgpu`
//!
//! Exit status 1 when a parity check fails (or finds no fixture), 2 for bad flags.

use std::path::{Path, PathBuf};
use std::time::Instant;
use transfer_vision::kernels::ConvBackend;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use clap::Parser;
use serde::Serialize;
use transfer_vision::backend::Cpu;
use transfer_vision::backend::{DeviceSpec, Precision};
use transfer_vision::models::{
    Architecture, ImageClassifier, MobileNetV2, MobileNetV2Config, ResNetConfig,
};
use transfer_vision::train::{Learner, OptimizerConfig, Trainable, set_trainable};
use transfer_vision::verify::{
    feature_cache_parity, max_relative_difference, onnx_fixture_parity, train_fixture_cases,
    train_fixture_parity,
};
use transfer_vision::weights::{ModelInfo, load_model, save_model};

/// Parity checks and benchmarks on one device.
#[derive(Parser, Debug)]
struct Args {
    /// `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// `f32`, or on CUDA `f16` / `bf16` (training parity runs in f32 only).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Folder laid out as `../shared/fixtures` (`onnx/fixtures.json`, `train/train_fixtures.json`).
    #[arg(long, default_value = "../shared/fixtures")]
    fixtures: PathBuf,
    /// Only these training cases (default: every case whose files are present).
    #[arg(long)]
    train_case: Vec<String>,
    /// Also time forward passes and training steps.
    #[arg(long)]
    bench: bool,
    /// Forward batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    forward_batches: Vec<usize>,
    /// Training-step batch size to time.
    #[arg(long, default_value_t = 32)]
    train_batch: usize,
    /// Input size of the benchmarks.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Timed repetitions per benchmark (after 3 untimed ones); the median is reported.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Default)]
struct Report {
    device: String,
    precision: String,
    onnx: Vec<OnnxRow>,
    train: Vec<TrainRow>,
    feature_cache: Option<FeatureCacheRow>,
    bench: Vec<BenchRow>,
    failures: Vec<String>,
}

#[derive(Serialize)]
struct OnnxRow {
    fixture: String,
    ratio: f32,
    max_abs_diff: f32,
    top1_agree: String,
    tolerance: f32,
    pass: bool,
}

#[derive(Serialize)]
struct TrainRow {
    case: String,
    losses: Vec<f64>,
    golden: Vec<f64>,
    max_rel_loss: f64,
    tolerance: f64,
    pass: bool,
}

#[derive(Serialize)]
struct FeatureCacheRow {
    cached: Vec<f64>,
    uncached: Vec<f64>,
    cpu: Vec<f64>,
    max_rel_vs_uncached: f64,
    max_rel_vs_cpu: f64,
    pass: bool,
}

#[derive(Serialize)]
struct BenchRow {
    model: String,
    what: String,
    batch: usize,
    median_ms: f64,
    images_per_second: f64,
}

fn main() {
    let args = Args::parse();
    let parsed = DeviceSpec::parse_compiled(&args.device).and_then(|spec| {
        let precision = Precision::parse(&args.precision)?;
        precision.check_device(&spec)?;
        Ok((spec, precision))
    });
    let (spec, precision) = parsed.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    });
    let report = match (&spec, precision) {
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(_), Precision::F16) => run::<transfer_vision::backend::CudaF16>(
            &args,
            spec.cuda_device().unwrap_or_default(),
            precision,
            false,
        ),
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(_), Precision::Bf16) => run::<transfer_vision::backend::CudaBf16>(
            &args,
            spec.cuda_device().unwrap_or_default(),
            precision,
            false,
        ),
        #[cfg(feature = "cuda")]
        (DeviceSpec::Cuda(_), Precision::F32) => run::<transfer_vision::backend::Cuda>(
            &args,
            spec.cuda_device().unwrap_or_default(),
            precision,
            false,
        ),
        #[cfg(feature = "wgpu")]
        (DeviceSpec::Wgpu(_), _) => match spec.wgpu_device() {
            Ok(device) => {
                for adapter in transfer_vision::backend::wgpu_adapters() {
                    println!("{adapter}");
                }
                run::<transfer_vision::backend::Wgpu>(&args, device, precision, true)
            }
            Err(e) => {
                eprintln!("error: --device: {e}");
                std::process::exit(2)
            }
        },
        _ => run::<transfer_vision::backend::Cpu>(&args, Default::default(), precision, true),
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, &json) {
            eprintln!("error: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if report.failures.is_empty() {
        println!("device_check: all checks passed");
    } else {
        for f in &report.failures {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// `strict`: the device sums in plain f32 (the CPU; wgpu, whose WGSL kernels have no TF32), so
/// the CPU's tolerances apply; CUDA's matrix units round inputs to TF32 and get looser ones.
fn run<B: ConvBackend>(
    args: &Args,
    device: B::Device,
    precision: Precision,
    strict: bool,
) -> Report {
    let f32_precision = precision == Precision::F32;
    let mut report = Report {
        device: args.device.clone(),
        precision: precision.to_string(),
        ..Report::default()
    };

    // 1. ONNX logits vs onnxruntime. TF32 differs from plain f32 sums: 1e-3 of the largest logit
    // on CUDA, 1e-4 on the CPU and wgpu; reduced precision is reported against a looser 5e-2.
    let onnx_dir = args.fixtures.join("onnx");
    let tolerance = match (f32_precision, strict) {
        (false, _) => 5e-2,
        (true, true) => 1e-4,
        (true, false) => 1e-3,
    };
    println!(
        "| fixture | max diff / max logit | top-1 agree | tolerance | |\n|---|---|---|---|---|"
    );
    for name in fixture_names(&onnx_dir) {
        match onnx_fixture_parity::<B>(&onnx_dir, &name, &device) {
            Ok(c) => {
                let pass = c.ratio <= tolerance && c.top1_agree == c.rows;
                println!(
                    "| {name} | {:.2e} | {}/{} | {tolerance:.0e} | {} |",
                    c.ratio,
                    c.top1_agree,
                    c.rows,
                    if pass { "ok" } else { "FAILED" }
                );
                if !pass {
                    report
                        .failures
                        .push(format!("onnx {name}: ratio {:.2e}", c.ratio));
                }
                report.onnx.push(OnnxRow {
                    fixture: name,
                    ratio: c.ratio,
                    max_abs_diff: c.max_abs_diff,
                    top1_agree: format!("{}/{}", c.top1_agree, c.rows),
                    tolerance,
                    pass,
                });
            }
            Err(e) => report.failures.push(format!("onnx {name}: {e}")),
        }
    }
    if report.onnx.is_empty() {
        report
            .failures
            .push(format!("no ONNX fixture found in {}", onnx_dir.display()));
    }

    // Saving and reloading on the device gives the same logits, bit for bit.
    save_load_roundtrip::<B>(&onnx_dir, &device, &mut report);

    // 2. Training steps vs PyTorch (f32 only: the fixtures are f32 runs), then a head trained on
    // cached backbone features against the same without the cache and against the CPU.
    if f32_precision {
        train_parity::<B>(args, &device, strict, &mut report);
        feature_cache_check::<B>(&onnx_dir, &device, strict, &mut report);
    }

    // 3. Benchmarks.
    if args.bench {
        bench::<B>(args, &device, &mut report);
    }
    report
}

/// ONNX MobileNetV2 → `save_model` → `load_model` on the device: identical logits.
fn save_load_roundtrip<B: ConvBackend>(onnx_dir: &Path, device: &B::Device, report: &mut Report) {
    let onnx = onnx_dir.join("mobilenet_v2.onnx");
    if !onnx.exists() {
        return;
    }
    let result = (|| -> Result<bool, Box<dyn std::error::Error>> {
        let (model, _) = MobileNetV2::<B>::from_onnx(&onnx, device)?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("model.tvm");
        save_model(&model, &ModelInfo::default(), &path)?;
        let (loaded, _) = load_model::<B, MobileNetV2<B>>(&path, device)?;
        let x = random_images::<B>(2, 96, device);
        let a = model.forward(x.clone()).into_data();
        let b = loaded.forward(x).into_data();
        Ok(a == b)
    })();
    let pass = matches!(result, Ok(true));
    println!(
        "\nsave → load on the device: {}",
        match &result {
            Ok(true) => "identical logits".to_string(),
            Ok(false) => "logits differ".to_string(),
            Err(e) => format!("error: {e}"),
        }
    );
    if !pass {
        report.failures.push("save/load round trip".into());
    }
}

/// Feature extraction on the fixture MobileNetV2 (`verify::feature_cache_parity`, 96 × 96 noise
/// images, batches of 8: the alpaca smoke's size, whose kernels are then compiled): on the
/// device with and without the feature cache, and on the CPU with it.
fn feature_cache_check<B: ConvBackend>(
    onnx_dir: &Path,
    device: &B::Device,
    strict: bool,
    report: &mut Report,
) {
    const IMAGE_SIZE: usize = 96;
    let onnx = onnx_dir.join("mobilenet_v2.onnx");
    if !onnx.exists() {
        return;
    }
    let result = (|| -> Result<_, Box<dyn std::error::Error>> {
        let (model, _) = MobileNetV2::<Autodiff<B>>::from_onnx(&onnx, device)?;
        let here = feature_cache_parity(model, IMAGE_SIZE, device)?;
        let cpu_device = Default::default();
        let (model, _) = MobileNetV2::<Autodiff<Cpu>>::from_onnx(&onnx, &cpu_device)?;
        let cpu = feature_cache_parity(model, IMAGE_SIZE, &cpu_device)?;
        Ok((here, cpu))
    })();
    let (here, cpu) = match result {
        Ok(both) => both,
        Err(e) => {
            report.failures.push(format!("feature cache: {e}"));
            return;
        }
    };
    let tolerance = if strict { 1e-4 } else { 1e-3 };
    let vs_cpu = max_relative_difference(&here.cached, &cpu.cached);
    let pass = here.used_cache && here.max_rel <= tolerance && vs_cpu <= tolerance;
    let losses = |l: &[f64]| {
        l.iter()
            .map(|v| format!("{v:.5}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\nfeature cache (MobileNetV2 head, 2 epochs, train / val loss): cached {}; \
         without the cache {}; CPU {}",
        losses(&here.cached),
        losses(&here.uncached),
        losses(&cpu.cached)
    );
    println!(
        "| feature cache | used | vs no cache | vs CPU | tolerance | |\n|---|---|---|---|---|---|\n\
         | mobilenet_v2 {IMAGE_SIZE} px | {} | {:.2e} | {vs_cpu:.2e} | {tolerance:.0e} | {} |",
        here.used_cache,
        here.max_rel,
        if pass { "ok" } else { "FAILED" }
    );
    if !pass {
        report.failures.push(format!(
            "feature cache: used {}, max rel vs no cache {:.2e}, vs CPU {vs_cpu:.2e}",
            here.used_cache, here.max_rel
        ));
    }
    report.feature_cache = Some(FeatureCacheRow {
        cached: here.cached,
        uncached: here.uncached,
        cpu: cpu.cached,
        max_rel_vs_uncached: here.max_rel,
        max_rel_vs_cpu: vs_cpu,
        pass,
    });
}

/// Fixture names listed in `dir/fixtures.json` whose `.onnx` file is present.
fn fixture_names(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(dir.join("fixtures.json")) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else {
        return Vec::new();
    };
    map.keys()
        .filter(|name| dir.join(format!("{name}.onnx")).exists())
        .cloned()
        .collect()
}

fn train_parity<B: ConvBackend>(
    args: &Args,
    device: &B::Device,
    strict: bool,
    report: &mut Report,
) {
    let dir = args.fixtures.join("train");
    let cases = if args.train_case.is_empty() {
        train_fixture_cases(&dir).unwrap_or_default()
    } else {
        args.train_case.clone()
    };
    println!(
        "\n| training case | losses (ours / PyTorch) | max rel | tolerance | |\n|---|---|---|---|---|"
    );
    for case in cases {
        // Skip cases whose inputs did not travel (a trimmed fixture folder), unless named.
        if !dir.join(format!("{case}.inputs.npy")).exists() {
            if !args.train_case.is_empty() {
                report
                    .failures
                    .push(format!("train {case}: no inputs in {}", dir.display()));
            }
            continue;
        }
        match train_fixture_parity::<Autodiff<B>>(&dir, &case, device) {
            Ok(r) => {
                // SGD with momentum amplifies differences (1e-3 on the CPU in the test suite).
                let sgd = r.optimizer == "sgd";
                let tolerance = match (strict, sgd) {
                    (true, false) => 1e-4,
                    (true, true) | (false, false) => 1e-3,
                    (false, true) => 1e-2,
                };
                let pass = r.max_rel_loss <= tolerance
                    && r.trainable_keys == r.golden_keys
                    && r.losses.len() == r.golden_losses.len();
                let pairs: Vec<String> = r
                    .losses
                    .iter()
                    .zip(&r.golden_losses)
                    .map(|(a, b)| format!("{a:.5}/{b:.5}"))
                    .collect();
                println!(
                    "| {case} | {} | {:.2e} | {tolerance:.0e} | {} |",
                    pairs.join(", "),
                    r.max_rel_loss,
                    if pass { "ok" } else { "FAILED" }
                );
                if !pass {
                    report
                        .failures
                        .push(format!("train {case}: max rel loss {:.2e}", r.max_rel_loss));
                }
                report.train.push(TrainRow {
                    case,
                    losses: r.losses,
                    golden: r.golden_losses,
                    max_rel_loss: r.max_rel_loss,
                    tolerance,
                    pass,
                });
            }
            Err(e) => report.failures.push(format!("train {case}: {e}")),
        }
    }
}

/// Median milliseconds of `repeats` runs of `f` after 3 untimed ones; `f` must finish its work
/// (read a result or sync the device) before returning.
fn median_ms(repeats: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn random_images<B: ConvBackend>(batch: usize, size: usize, device: &B::Device) -> Tensor<B, 4> {
    let n = batch * 3 * size * size;
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [batch, 3, size, size]), device)
}

fn bench<B: ConvBackend>(args: &Args, device: &B::Device, report: &mut Report) {
    println!("\n| model | what | batch | median ms | images/s |\n|---|---|---|---|---|");
    let mut push = |model: &str, what: &str, batch: usize, ms: f64| {
        println!(
            "| {model} | {what} | {batch} | {ms:.2} | {:.0} |",
            batch as f64 * 1e3 / ms
        );
        report.bench.push(BenchRow {
            model: model.into(),
            what: what.into(),
            batch,
            median_ms: ms,
            images_per_second: batch as f64 * 1e3 / ms,
        });
    };
    let size = args.image_size;
    for model_name in ["mobilenet_v2", "resnet18"] {
        // Inference: BatchNorm folded into the convolutions, as `predict` and evaluation run.
        for &batch in &args.forward_batches {
            let x = random_images::<B>(batch, size, device);
            let ms = match model_name {
                "mobilenet_v2" => {
                    let m = MobileNetV2Config::new()
                        .init::<B>(device)
                        .fuse_for_inference();
                    median_ms(args.repeats, || sync(m.forward(x.clone())))
                }
                _ => {
                    let m = ResNetConfig::new([2, 2, 2, 2])
                        .init::<B>(device)
                        .fuse_for_inference();
                    median_ms(args.repeats, || sync(m.forward(x.clone())))
                }
            };
            push(model_name, "forward", batch, ms);
        }
        // One full fine-tuning step (everything trains, Adam) on a fresh 2-class head.
        let batch = args.train_batch;
        let x = random_images::<Autodiff<B>>(batch, size, device);
        let labels: Vec<i64> = (0..batch as i64).map(|i| i % 2).collect();
        let adam = OptimizerConfig::adam(1e-3);
        let ms = match model_name {
            "mobilenet_v2" => {
                let m = MobileNetV2Config::new()
                    .with_num_classes(2)
                    .init::<Autodiff<B>>(device);
                train_steps(m, &adam, &x, &labels, args.repeats)
            }
            _ => {
                let m = ResNetConfig::new([2, 2, 2, 2])
                    .with_num_classes(2)
                    .init::<Autodiff<B>>(device);
                train_steps(m, &adam, &x, &labels, args.repeats)
            }
        };
        push(model_name, "train step (full)", batch, ms);
    }
}

fn train_steps<B, M>(
    model: M,
    adam: &OptimizerConfig,
    x: &Tensor<B, 4>,
    labels: &[i64],
    repeats: usize,
) -> f64
where
    B: transfer_vision::kernels::AutodiffConvBackend,
    M: ImageClassifier<B> + burn::module::AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let Ok(model) = set_trainable(model, &Trainable::All) else {
        return f64::NAN;
    };
    let mut learner = Learner::<B, M>::new(adam, 0.0);
    let mut slot = Some(model);
    // `step` reads the loss back to the host, which waits for the device.
    median_ms(repeats, || {
        if let Some(m) = slot.take() {
            let (next, _) = learner.step(m, x.clone(), labels, 0, false);
            slot = Some(next);
        }
    })
}

/// Waits for `t` to be computed (reads one value back).
fn sync<B: ConvBackend>(t: Tensor<B, 2>) {
    let _ = t.slice([0..1, 0..1]).into_data();
}

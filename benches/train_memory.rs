//! Peak resident memory of one full training step (everything trains, Adam, 2-class head) at
//! batch 32, 224×224, for MobileNetV2 and ResNet18 on the CPU backend: each model in a fresh
//! child process, which reports its peak (`VmHWM`, Linux) before and after the first step (the
//! one that allocates Adam's state). `benches/pytorch_reference.py --only memory` measures
//! PyTorch the same way.
//!
//! `cargo bench --bench train_memory` (Linux only). Results: BENCHMARKS.md.

use std::process::Command;
use transfer_vision::kernels::AutodiffConvBackend;

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use transfer_vision::backend::CpuAutodiff;
use transfer_vision::models::{ImageClassifier, MobileNetV2Config, ResNetConfig};
use transfer_vision::train::{Learner, OptimizerConfig, Trainable, set_trainable};

const BATCH: usize = 32;

/// Peak resident set size of this process so far, MiB.
fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn one_step<B, M>(model: M)
where
    B: AutodiffConvBackend,
    M: ImageClassifier<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let device = B::Device::default();
    let model = set_trainable(model, &Trainable::All).expect("all trainable");
    let x = Tensor::<B, 4>::random([BATCH, 3, 224, 224], Distribution::Default, &device);
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % 2).collect();
    let mut learner = Learner::<B, M>::new(&OptimizerConfig::adam(1e-3), 0.0);
    let before = peak_mib();
    let (_, out) = learner.step(model, x, &labels, 0, false);
    println!(
        "peak before the step {before:.0} MiB, after {:.0} MiB (loss {:.3})",
        peak_mib(),
        out.loss
    );
}

fn main() {
    let device = Default::default();
    match std::env::args().nth(1).as_deref() {
        Some("child-mobilenet_v2") => one_step(
            MobileNetV2Config::new()
                .with_num_classes(2)
                .init::<CpuAutodiff>(&device),
        ),
        Some("child-resnet18") => one_step(
            ResNetConfig::new([2, 2, 2, 2])
                .with_num_classes(2)
                .init::<CpuAutodiff>(&device),
        ),
        _ => {
            // `cargo bench` passes `--bench`; anything but a child argument runs both models.
            let exe = std::env::current_exe().expect("own path");
            for model in ["mobilenet_v2", "resnet18"] {
                let out = Command::new(&exe)
                    .arg(format!("child-{model}"))
                    .output()
                    .expect("child process");
                print!("{model}, full training step, batch {BATCH}, 224: ");
                print!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
}

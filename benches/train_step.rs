//! One training step at batch 16, 224×224, Adam, 2-class head: head only (feature extraction),
//! last blocks (fine-tuning) and full training, for MobileNetV2, ResNet18, MobileNetV3 Small and
//! Large and EfficientNet-B0 on the CPU backend. "Last blocks" unfreezes what torchvision-style
//! fine-tuning does: MobileNetV2 `features.14` on, ResNet18 `layer4`, MobileNetV3 Small
//! `features.9` on, Large `features.13` on, EfficientNet-B0 `features.6` on (plus the classifier).
//! Head only and last blocks run as `fit` runs them: the frozen backbone / frozen leading blocks
//! folded once and run without autodiff (`Learner::step_frozen`, `Learner::step_frozen_prefix`).
//!
//! With `--features wgpu`, MobileNetV2 and ResNet18 also on wgpu's default adapter
//! (`train_step/wgpu/…`).
//!
//! `cargo bench --bench train_step` (`BENCH_QUICK=1` for a smoke run); a criterion filter picks
//! some (`cargo bench --bench train_step -- 'train_step/efficientnet_b0/'`). Results:
//! BENCHMARKS.md.

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use transfer_vision::backend::CpuAutodiff;
use transfer_vision::kernels::AutodiffConvBackend;
use transfer_vision::models::{
    EfficientNetConfig, ImageClassifier, MobileNetV2Config, MobileNetV3Config, ResNetConfig,
};
use transfer_vision::train::{Learner, OptimizerConfig, Trainable, set_trainable};

fn bench_model<B, M>(c: &mut Criterion, group: &str, model: M, last_blocks: &str)
where
    B: AutodiffConvBackend,
    M: ImageClassifier<B> + AutodiffModule<B>,
    M::InnerModule: ImageClassifier<B::InnerBackend>,
{
    let device = B::Device::default();
    let x = Tensor::<B, 4>::random([16, 3, 224, 224], Distribution::Default, &device);
    let labels: Vec<i64> = (0..16).map(|i| i % 2).collect();
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for (regime, trainable) in [
        ("head_only", Trainable::HeadOnly),
        ("last_blocks", Trainable::FromBlock(last_blocks.into())),
        ("full", Trainable::All),
    ] {
        let mut model = Some(set_trainable(model.clone(), &trainable).expect("valid blocks"));
        // As `fit` runs them: head only on the frozen backbone folded once per phase; last
        // blocks with the frozen blocks before them folded once, without autodiff.
        let current = model.as_ref().expect("model");
        let backbone =
            (trainable == Trainable::HeadOnly).then(|| current.valid().fuse_for_inference());
        let first = format!("{last_blocks}.");
        let prefix = current
            .block_paths()
            .iter()
            .position(|b| b == last_blocks || b.starts_with(&first))
            .filter(|_| regime == "last_blocks")
            .map(|blocks| (blocks, current.valid().fuse_for_inference()));
        let mut learner = Learner::<B, M>::new(&OptimizerConfig::adam(1e-3), 0.0);
        group.bench_function(regime, |b| {
            b.iter(|| {
                let current = model.take().expect("model");
                let (next, out) = match (&backbone, &prefix) {
                    (Some(backbone), _) => {
                        learner.step_frozen(current, backbone, x.clone(), &labels, 0)
                    }
                    (None, Some((blocks, prefix))) => {
                        learner.step_frozen_prefix(current, prefix, *blocks, x.clone(), &labels, 0)
                    }
                    (None, None) => learner.step(current, x.clone(), &labels, 0, false),
                };
                model = Some(next);
                out.loss
            })
        });
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let device = Default::default();
    let mobilenet = MobileNetV2Config::new()
        .with_num_classes(2)
        .init::<CpuAutodiff>(&device);
    bench_model(c, "train_step/mobilenet_v2", mobilenet, "features.14");
    let resnet = ResNetConfig::resnet18(2).init::<CpuAutodiff>(&device);
    bench_model(c, "train_step/resnet18", resnet, "layer4");
    let small = MobileNetV3Config::small(2).init::<CpuAutodiff>(&device);
    bench_model(c, "train_step/mobilenet_v3_small", small, "features.9");
    let large = MobileNetV3Config::large(2).init::<CpuAutodiff>(&device);
    bench_model(c, "train_step/mobilenet_v3_large", large, "features.13");
    let efficientnet = EfficientNetConfig::b0(2).init::<CpuAutodiff>(&device);
    bench_model(c, "train_step/efficientnet_b0", efficientnet, "features.6");
    #[cfg(feature = "wgpu")]
    {
        // wgpu's default adapter: `train_step/wgpu/MODEL/REGIME`.
        use transfer_vision::backend::WgpuAutodiff;
        let device = Default::default();
        let mobilenet = MobileNetV2Config::new()
            .with_num_classes(2)
            .init::<WgpuAutodiff>(&device);
        bench_model(c, "train_step/wgpu/mobilenet_v2", mobilenet, "features.14");
        let resnet = ResNetConfig::resnet18(2).init::<WgpuAutodiff>(&device);
        bench_model(c, "train_step/wgpu/resnet18", resnet, "layer4");
    }
}

fn config() -> Criterion {
    let c = Criterion::default().without_plots();
    if std::env::var("BENCH_QUICK").is_ok() {
        c.warm_up_time(std::time::Duration::from_millis(500))
            .measurement_time(std::time::Duration::from_secs(2))
    } else {
        c
    }
}

criterion_group! { name = benches; config = config(); targets = train_step }
criterion_main!(benches);

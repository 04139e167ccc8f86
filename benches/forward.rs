//! Forward-pass speed of the native models on each CPU backend compiled in.
//!
//! `cargo bench --bench forward --features ndarray` measures both burn-flex and burn-ndarray;
//! `BENCH_QUICK=1` shortens the runs. `forward/…` runs the models as built (BatchNorm applied
//! separately), `forward_fused/…` after `fuse_for_inference()` (the inference path). Results go
//! to BENCHMARKS.md.

use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use transfer_vision::kernels::ConvBackend;
use transfer_vision::models::{
    ImageClassifier, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig,
};

fn bench_models<B: ConvBackend>(
    c: &mut Criterion,
    group: String,
    mobilenet: &MobileNetV2<B>,
    resnet: &ResNet<B>,
) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for (batch, size) in [(1, 160), (1, 224), (16, 160), (16, 224)] {
        let x = Tensor::<B, 4>::random([batch, 3, size, size], Distribution::Default, &device);
        let id = format!("b{batch}_{size}");
        group.bench_with_input(BenchmarkId::new("mobilenet_v2", &id), &x, |b, x| {
            b.iter(|| mobilenet.forward(x.clone()).into_data())
        });
        group.bench_with_input(BenchmarkId::new("resnet18", &id), &x, |b, x| {
            b.iter(|| resnet.forward(x.clone()).into_data())
        });
    }
    group.finish();
}

fn bench_backend<B: ConvBackend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mobilenet = MobileNetV2Config::new().init::<B>(&device);
    let resnet = ResNetConfig::resnet18(1000).init::<B>(&device);
    bench_models(c, format!("forward/{backend}"), &mobilenet, &resnet);
    // The inference path: BatchNorm folded into the convolutions.
    let (mobilenet, resnet) = (mobilenet.fuse_for_inference(), resnet.fuse_for_inference());
    bench_models(c, format!("forward_fused/{backend}"), &mobilenet, &resnet);
}

fn forward(c: &mut Criterion) {
    #[cfg(feature = "flex")]
    bench_backend::<burn::backend::Flex>(c, "flex");
    #[cfg(feature = "ndarray")]
    bench_backend::<burn::backend::NdArray<f32>>(c, "ndarray");
}

fn config() -> Criterion {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let c = Criterion::default().without_plots();
    if quick {
        c.warm_up_time(std::time::Duration::from_millis(500))
            .measurement_time(std::time::Duration::from_secs(2))
    } else {
        c
    }
}

criterion_group! { name = benches; config = config(); targets = forward }
criterion_main!(benches);

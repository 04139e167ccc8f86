//! Forward-pass speed of the native models on each CPU backend compiled in, and on wgpu's
//! default adapter with `--features wgpu` (`forward_fused/wgpu/…`).
//!
//! `cargo bench --bench forward --features ndarray` measures both burn-flex and burn-ndarray;
//! `BENCH_QUICK=1` shortens the runs. `forward/…` runs the models as built (BatchNorm applied
//! separately), `forward_fused/…` after `fuse_for_inference()` (the inference path). Ids are
//! `GROUP/BACKEND/MODEL/bBATCH_SIZE` (`forward_fused/flex/mobilenet_v3_small/b1_224`); a
//! criterion filter picks some (`cargo bench --bench forward -- 'efficientnet_b0|resnet18'`).
//! Results go to BENCHMARKS.md.

use burn::tensor::{Distribution, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use transfer_vision::kernels::ConvBackend;
use transfer_vision::models::{
    EfficientNetConfig, ImageClassifier, MobileNetV2Config, MobileNetV3Config, ResNetConfig,
};

/// One model's forward pass, boxed so that models of different types share one list.
type Forward<B> = Box<dyn Fn(Tensor<B, 4>) -> TensorData>;

/// `model`'s forward pass, after folding its BatchNorms into the convolutions when `fused`.
fn forward_of<B: ConvBackend, M: ImageClassifier<B> + 'static>(
    model: M,
    fused: bool,
) -> Forward<B> {
    let model = if fused {
        model.fuse_for_inference()
    } else {
        model
    };
    Box::new(move |x| model.forward(x).into_data())
}

/// The models measured (random weights, 1000 classes), each with its benchmark id.
fn models<B: ConvBackend>(fused: bool) -> Vec<(&'static str, Forward<B>)> {
    let device = &B::Device::default();
    vec![
        (
            "mobilenet_v2",
            forward_of(MobileNetV2Config::new().init(device), fused),
        ),
        (
            "resnet18",
            forward_of(ResNetConfig::resnet18(1000).init(device), fused),
        ),
        (
            "mobilenet_v3_small",
            forward_of(MobileNetV3Config::small(1000).init(device), fused),
        ),
        (
            "mobilenet_v3_large",
            forward_of(MobileNetV3Config::large(1000).init(device), fused),
        ),
        (
            "efficientnet_b0",
            forward_of(EfficientNetConfig::b0(1000).init(device), fused),
        ),
    ]
}

fn bench_models<B: ConvBackend>(c: &mut Criterion, group: String, fused: bool) {
    let device = B::Device::default();
    let models = models::<B>(fused);
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for (batch, size) in [(1, 160), (1, 224), (16, 160), (16, 224)] {
        let x = Tensor::<B, 4>::random([batch, 3, size, size], Distribution::Default, &device);
        let id = format!("b{batch}_{size}");
        for (name, forward) in &models {
            group.bench_with_input(BenchmarkId::new(*name, &id), &x, |b, x| {
                b.iter(|| forward(x.clone()))
            });
        }
    }
    group.finish();
}

fn bench_backend<B: ConvBackend>(c: &mut Criterion, backend: &str) {
    bench_models::<B>(c, format!("forward/{backend}"), false);
    // The inference path: BatchNorm folded into the convolutions.
    bench_models::<B>(c, format!("forward_fused/{backend}"), true);
}

fn forward(c: &mut Criterion) {
    #[cfg(feature = "flex")]
    bench_backend::<burn::backend::Flex>(c, "flex");
    #[cfg(feature = "ndarray")]
    bench_backend::<burn::backend::NdArray<f32>>(c, "ndarray");
    // wgpu's default adapter; each pass ends reading the logits back, so it is timed whole.
    #[cfg(feature = "wgpu")]
    bench_models::<transfer_vision::backend::Wgpu>(c, "forward_fused/wgpu".into(), true);
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

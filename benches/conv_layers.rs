//! ResNet18's convolutions one by one, at batch 16, 224×224: the forward pass, the input
//! gradient and the weight gradient of each distinct shape, on the crate's CPU kernels
//! (`kernels::cpu`, what burn-flex runs through the seam). `benches/conv_layers.json` lists the
//! shapes (named after torchvision's modules, with how many convolutions of the network share
//! each); `pytorch_reference.py --only conv_layers` times PyTorch on the same list, and
//! `compare.py` prints both side by side with their count-weighted sums: how much of a training
//! step's gap to PyTorch lies in the convolutions and how much around them.
//!
//! `cargo bench --bench conv_layers` (`BENCH_QUICK=1` for a smoke run); ids are
//! `conv_layers/resnet18/LAYER/PASS` with PASS one of `forward`, `input_grad`, `weight_grad`
//! (the stem has no input gradient: a training step does not compute it).

use burn::tensor::ops::ConvOptions;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use transfer_vision::kernels::cpu::{
    ConvGeometry, SimdLevel, conv2d_forward, conv2d_input_grad, conv2d_weight_grad,
};

/// One distinct convolution of the list.
struct Layer {
    name: String,
    geometry: ConvGeometry,
    input_grad: bool,
}

/// The layers of `benches/conv_layers.json`.
fn layers() -> (String, Vec<Layer>) {
    let list: Value =
        serde_json::from_str(include_str!("conv_layers.json")).expect("conv_layers.json parses");
    let number = |layer: &Value, key: &str| {
        layer[key]
            .as_u64()
            .unwrap_or_else(|| panic!("conv_layers.json: `{key}` is not a number in {layer}"))
            as usize
    };
    let batch = number(&list, "batch");
    let layers = list["layers"]
        .as_array()
        .expect("conv_layers.json: `layers` is a list")
        .iter()
        .map(|layer| {
            let [c_in, c_out, size, kernel, stride, padding] =
                ["c_in", "c_out", "size", "kernel", "stride", "padding"].map(|k| number(layer, k));
            let options = ConvOptions::new([stride; 2], [padding; 2], [1, 1], 1);
            let geometry = ConvGeometry::new(
                [batch, c_in, size, size],
                [c_out, c_in, kernel, kernel],
                &options,
            )
            .unwrap_or_else(|| {
                panic!("conv_layers.json: not a convolution the kernels run: {layer}")
            });
            Layer {
                name: layer["name"].as_str().expect("a layer name").to_string(),
                geometry,
                input_grad: layer["input_grad"].as_bool().unwrap_or(true),
            }
        })
        .collect();
    let network = list["network"]
        .as_str()
        .expect("a network name")
        .to_string();
    (network, layers)
}

/// `len` values in [-0.5, 0.5), the same on every run.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn conv_layers(c: &mut Criterion) {
    let level = SimdLevel::current();
    let (network, layers) = layers();
    for layer in &layers {
        let g = &layer.geometry;
        let (x_len, weight_len, y_len) = g.lens();
        let (x, weight, dy) = (values(x_len, 1), values(weight_len, 2), values(y_len, 3));
        let mut group = c.benchmark_group(format!("conv_layers/{network}/{}", layer.name));
        group.sample_size(10);
        group.bench_function("forward", |b| {
            b.iter(|| conv2d_forward(g, &x, &weight, None, level))
        });
        if layer.input_grad {
            group.bench_function("input_grad", |b| {
                b.iter(|| conv2d_input_grad(g, &weight, &dy, level))
            });
        }
        group.bench_function("weight_grad", |b| {
            b.iter(|| conv2d_weight_grad(g, &x, &dy, level))
        });
        group.finish();
    }
}

fn config() -> Criterion {
    let c = Criterion::default().without_plots();
    if std::env::var("BENCH_QUICK").is_ok() {
        c.warm_up_time(std::time::Duration::from_millis(300))
            .measurement_time(std::time::Duration::from_secs(1))
    } else {
        c.warm_up_time(std::time::Duration::from_secs(1))
            .measurement_time(std::time::Duration::from_secs(3))
    }
}

criterion_group! { name = benches; config = config(); targets = conv_layers }
criterion_main!(benches);

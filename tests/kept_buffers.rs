//! `TRANSFER_VISION_KEEP_BUFFERS_MIB` (burn-flex only): with output buffers kept and reused, a
//! training step's loss and gradients are the same bit for bit as the step before, which ran on
//! fresh buffers; a reused buffer's old contents never leak into a result. Its own test binary:
//! the variable is read once per process.
#![cfg(feature = "flex")]

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use transfer_vision::backend::CpuAutodiff;
use transfer_vision::kernels::cpu::buffers;
use transfer_vision::models::{ImageClassifier, MobileNetV2Config};

type A = CpuAutodiff;

#[test]
fn a_step_on_kept_buffers_equals_the_step_on_fresh_ones() {
    // SAFETY: set before anything reads the environment, in this binary's only test.
    unsafe { std::env::set_var("TRANSFER_VISION_KEEP_BUFFERS_MIB", "256") };
    assert_eq!(buffers::max_kept_bytes(), 256 << 20);
    let device = Default::default();
    let model = MobileNetV2Config::new()
        .with_num_classes(3)
        .with_dropout(0.0)
        .init::<A>(&device);
    // No dropout: the two steps must see the same network. The stem's output, 2 × 32 × 48 × 48,
    // is above the size buffers are kept from.
    let x = Tensor::<A, 4>::random([2, 3, 96, 96], Distribution::Default, &device);
    let step = || {
        // The input's gradient runs through every layer's backward.
        let x = x.clone().require_grad();
        let loss = model.forward(x.clone()).square().mean();
        let grads = loss.backward();
        let dx = x.grad(&grads).expect("the input's gradient");
        (loss.into_data(), dx.into_data())
    };
    let (loss_fresh, grad_fresh) = step();
    assert!(
        buffers::kept_bytes() > 0,
        "the first step's buffers are kept"
    );
    let (loss_kept, grad_kept) = step();
    assert_eq!(loss_fresh, loss_kept);
    assert_eq!(grad_fresh, grad_kept);
    let _ = model.valid();
    buffers::release();
    assert_eq!(buffers::kept_bytes(), 0);
}

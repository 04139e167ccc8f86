//! Training parity with PyTorch (`../shared/fixtures/train`): seed-0 backbones from ONNX, a fresh
//! 2-class head with the fixture's initial weights, some layers frozen, 3 optimizer steps on
//! fixed batches. Losses per step and the final head must match PyTorch's. The check itself is
//! `transfer_vision::verify::train_fixture_parity`, which `examples/device_check.rs` runs on CUDA.

mod common;

use transfer_vision::backend::CpuAutodiff;
use transfer_vision::verify::{train_fixture_cases, train_fixture_parity};

/// Losses to 1e-4 relative and the final head to 1e-4 absolute, as PyTorch's.
fn check_case(dir: &std::path::Path, case: &str) {
    let device = Default::default();
    let r =
        train_fixture_parity::<CpuAutodiff>(dir, case, &device).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.trainable_keys, r.golden_keys,
        "{case}: trainable parameters"
    );
    assert_eq!(r.losses.len(), r.golden_losses.len(), "{case}: steps");
    for (step, (ours, theirs)) in r.losses.iter().zip(&r.golden_losses).enumerate() {
        eprintln!("{case} step {step}: ours {ours:.7} torch {theirs:.7}");
    }
    // SGD with momentum 0.9 and a large first step amplifies float differences.
    let rel_tol = if r.optimizer == "sgd" { 1e-3 } else { 1e-4 };
    assert!(
        r.max_rel_loss <= rel_tol,
        "{case}: losses {:?} vs {:?} (max rel {:.2e})",
        r.losses,
        r.golden_losses,
        r.max_rel_loss
    );
    let (w, b) = r.head_max_diff;
    eprintln!("{case}: head max |diff| weight {w:.2e} bias {b:.2e}");
    assert!(
        w <= 1e-4 && b <= 1e-4,
        "{case}: head differs (weight {w}, bias {b})"
    );
}

/// The architectures added later (MobileNetV3-Small, EfficientNet-B0): goldens made by
/// `scripts/make_train_fixtures.py` into `tests/fixtures/train`, by the same method, from the
/// backbones of `../shared/fixtures/onnx`.
#[test]
fn training_steps_of_the_newer_backbones_match_pytorch() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train");
    let cases = train_fixture_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 2);
    for case in cases {
        let model = case.split("_last_block").next().unwrap_or_default();
        if common::shared(&format!("fixtures/onnx/{model}.onnx")).is_none() {
            return;
        }
        check_case(&dir, &case);
    }
}

#[test]
fn training_steps_match_pytorch() {
    let Some(dir) = common::shared("fixtures/train") else {
        return;
    };
    let cases = train_fixture_cases(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 4);
    for case in cases {
        check_case(&dir, &case);
    }
}

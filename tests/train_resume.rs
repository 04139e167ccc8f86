//! Resuming from a checkpoint: stop after epoch 1 of 3, resume, and get the same history and
//! weights as an uninterrupted run.
//!
//! Runs in its own test binary with a single rayon thread: burn-flex sums large tensors with
//! rayon's adaptive splitting, whose float association (and so the last bits) can differ from run
//! to run on several threads. Bit-for-bit comparisons need one thread; the resume logic itself
//! is the same either way.

mod common;

use transfer_vision::backend::CpuAutodiff;
use transfer_vision::models::MobileNetV2Config;
use transfer_vision::train::{FitConfig, OptimizerConfig, StopAfter, Trainable, fit, fit_with};

type B = CpuAutodiff;
type Device = burn::tensor::Device<B>;

/// Sets rayon's global pool to one thread and holds the lock that runs this binary's tests one
/// at a time. Every test calls it first: whichever test touches rayon first fixes the global pool
/// for all of them (burn-flex runs on it), and dropout draws from the backend's one global RNG,
/// which `fit` re-seeds each epoch: a test training beside another would draw from the other's
/// sequence.
fn serial_on_one_rayon_thread() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let _serial = serial_on_one_rayon_thread();
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(&dir.path().join("data"), &["a", "b", "c"], 6, 48);
    let (train, val) = common::small_loaders(&dir.path().join("data"), 40, 4);
    let model = MobileNetV2Config::new()
        .with_num_classes(3)
        .init::<B>(&device);
    let config =
        FitConfig::new(3, OptimizerConfig::adam(1e-3), Trainable::LastBlocks(3)).with_quiet(true);

    let full = fit(model.clone(), &train, &val, &config, &device).unwrap();

    let ckpt = dir.path().join("run.ckpt");
    let interrupted = config.clone().with_checkpoint(&ckpt);
    let first = fit_with(
        model.clone(),
        &train,
        &val,
        &interrupted,
        &device,
        &mut StopAfter::epochs(1),
    )
    .unwrap();
    assert_eq!(first.history.epochs.len(), 1);
    // A fresh process would start from the initial model again; the checkpoint carries the rest.
    let resumed = fit(
        model,
        &train,
        &val,
        &config.clone().with_checkpoint(&ckpt),
        &device,
    )
    .unwrap();
    assert_eq!(resumed.resumed_epochs, 1);
    assert_eq!(
        common::without_timings(&resumed.history),
        common::without_timings(&full.history)
    );
    assert_eq!(resumed.best_epoch, full.best_epoch);
    assert_eq!(
        common::snapshot::<B, _>(&resumed.model),
        common::snapshot::<B, _>(&full.model)
    );
}

#[test]
fn an_altered_or_torn_checkpoint_is_refused_naming_the_file() {
    let _serial = serial_on_one_rayon_thread();
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(&dir.path().join("data"), &["a", "b"], 4, 32);
    let (train, val) = common::small_loaders(&dir.path().join("data"), 32, 4);
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(2)
        .init::<B>(&device);
    let ckpt = dir.path().join("run.ckpt");
    let config = FitConfig::new(2, OptimizerConfig::adam(1e-3), Trainable::HeadOnly)
        .with_quiet(true)
        .with_checkpoint(&ckpt);
    let stop = &mut StopAfter::epochs(1);
    fit_with(model.clone(), &train, &val, &config, &device, stop).unwrap();
    let good = std::fs::read(&ckpt).unwrap();
    let mut altered = good.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x40;
    for (bytes, expected) in [
        (altered, "fails its checksum"),
        (good[..good.len() - 100].to_vec(), "truncated"),
        (good[..10].to_vec(), "bad magic"),
    ] {
        std::fs::write(&ckpt, bytes).unwrap();
        let Err(err) = fit(model.clone(), &train, &val, &config, &device) else {
            panic!("{expected}: the checkpoint was accepted");
        };
        let err = err.to_string();
        assert!(
            err.contains("run.ckpt") && err.contains(expected),
            "{expected}: {err}"
        );
    }
}

#[test]
fn a_phase_that_stopped_early_stays_stopped_when_resumed() {
    let _serial = serial_on_one_rayon_thread();
    let device = Device::default();
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(&dir.path().join("data"), &["a", "b"], 4, 32);
    let (train, val) = common::small_loaders(&dir.path().join("data"), 32, 4);
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(2)
        .init::<B>(&device);
    // Patience 0: the phase ends after its first epoch.
    let config = FitConfig::new(3, OptimizerConfig::adam(1e-3), Trainable::HeadOnly)
        .with_early_stopping(0)
        .with_quiet(true)
        .with_checkpoint(dir.path().join("run.ckpt"));
    let first = fit(model.clone(), &train, &val, &config, &device).unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.history.epochs.len(), 1);
    let resumed = fit(model, &train, &val, &config, &device).unwrap();
    assert!(resumed.stopped_early, "the resumed phase trained on");
    assert_eq!(resumed.resumed_epochs, 1);
    assert_eq!(
        common::without_timings(&resumed.history),
        common::without_timings(&first.history)
    );
    assert_eq!(
        common::snapshot::<B, _>(&resumed.model),
        common::snapshot::<B, _>(&first.model)
    );
}

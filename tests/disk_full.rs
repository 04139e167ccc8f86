//! A full disk, or a write that fails half way: saving a model, writing a checkpoint or a run's
//! pictures and metrics must end with an error naming the file, leave the previous file intact
//! and loadable, and leave no temporary file behind.
//!
//! The writes run in a child process (this test binary run again with `DISK_FULL_CHILD=<dir>`)
//! under a file-size limit (`ulimit -f`, with SIGXFSZ ignored so that an oversized write fails
//! with "File too large" instead of killing the process): a disk that fills up, without root.
#![cfg(unix)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use transfer_vision::backend::{Cpu, CpuAutodiff};
use transfer_vision::data::Preprocessing;
use transfer_vision::models::{MobileNetV2, MobileNetV2Config};
use transfer_vision::train::{
    EvalReport, FitConfig, History, OptimizerConfig, StopAfter, TrainError, Trainable, fit,
    fit_with, read_checkpoint,
};
use transfer_vision::weights::{ModelInfo, WeightsError, load_model, save_model};

const CHILD_DIR: &str = "DISK_FULL_CHILD";
const CHILD_WRITE: &str = "DISK_FULL_WRITE";

/// A MobileNetV2 of ~14 MB, with seeded weights.
fn model() -> MobileNetV2<Cpu> {
    let device = Default::default();
    <Cpu as burn::tensor::backend::Backend>::seed(&device, 3);
    MobileNetV2Config::new()
        .with_num_classes(2)
        .init::<Cpu>(&device)
}

fn info() -> ModelInfo {
    ModelInfo::new(vec!["a".into(), "b".into()], Preprocessing::imagenet(224))
}

fn checkpoint_run(dir: &Path) -> (FitConfig, impl Fn() -> MobileNetV2<CpuAutodiff>) {
    let config = FitConfig::new(2, OptimizerConfig::adam(1e-3), Trainable::HeadOnly)
        .with_quiet(true)
        .with_checkpoint(dir.join("run.ckpt"));
    let make = || {
        let device = Default::default();
        <CpuAutodiff as burn::tensor::backend::Backend>::seed(&device, 3);
        MobileNetV2Config::new()
            .with_width_mult(0.35)
            .with_num_classes(2)
            .init::<CpuAutodiff>(&device)
    };
    (config, make)
}

/// The child: one write that the file-size limit makes fail. Passes when the error names the
/// file it was writing.
#[test]
fn child_write_under_a_file_size_limit() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let what = std::env::var(CHILD_WRITE).unwrap_or_default();
    let (message, file) = match what.as_str() {
        "model" => {
            let Err(e) = save_model(&model(), &info(), &dir.join("model.tvm")) else {
                panic!("the model was saved in spite of the limit");
            };
            assert!(matches!(e, WeightsError::Io { .. }), "{e:?}");
            (e.to_string(), "model.tvm")
        }
        "checkpoint" => {
            let (train, val) = common::small_loaders(&dir.join("data"), 32, 4);
            let (config, make) = checkpoint_run(&dir);
            let Err(e) = fit(make(), &train, &val, &config, &Default::default()) else {
                panic!("the checkpoint was written in spite of the limit");
            };
            assert!(matches!(e, TrainError::Weights(_)), "{e:?}");
            (e.to_string(), "run.ckpt")
        }
        "outputs" => {
            let sets = transfer_vision::data::TrainVal::open(
                dir.join("data"),
                Default::default(),
                0.25,
                7,
            )
            .unwrap();
            let history: History = serde_json::from_str(
                r#"{"epochs":[{"epoch":0,"phase":"p","train_loss":1.0,"train_accuracy":0.5,"val_loss":1.0,"val_accuracy":0.5,"learning_rate":0.001,"seconds":1.0,"images_per_second":1.0}]}"#,
            )
            .unwrap();
            let summary = transfer_vision::run::RunSummary {
                run: "disk_full".into(),
                model: "mobilenet_v2".into(),
                backend: "flex".into(),
                device: "cpu".into(),
                precision: "f32".into(),
                classes: info().class_names,
                train_images: sets.train.len(),
                val_images: sets.val.len(),
                skipped_images: Vec::new(),
                history,
                final_evaluation: EvalReport {
                    loss: 1.0,
                    accuracy: 0.5,
                    per_class_accuracy: vec![0.5, 0.5],
                    confusion: vec![vec![1, 1], vec![1, 1]],
                    count: 4,
                },
                seconds_per_phase: Vec::new(),
                total_seconds: 1.0,
                quick: true,
            };
            let outputs = transfer_vision::run::RunOutputs::create(dir.join("run")).unwrap();
            let Err(e) = outputs.write(&model(), &info(), &sets.val, &summary, &Default::default())
            else {
                panic!("the run's outputs were written in spite of the limit");
            };
            (e.to_string(), "history.png")
        }
        other => panic!("unknown write {other:?}"),
    };
    assert!(
        message.contains(file),
        "the error does not name {file}: {message}"
    );
    assert!(message.contains("too large"), "{message}");
    eprintln!("child error: {message}");
}

/// Runs the child for `what` in `dir` under a file-size limit of `blocks` blocks (`ulimit -f`
/// counts 512- or 1024-byte blocks, depending on the shell).
fn run_child_with_full_disk(dir: &Path, what: &str, blocks: u32) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args([
            "--exact",
            "child_write_under_a_file_size_limit",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_WRITE, what)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the child writing the {what} failed:\n{stderr}"
    );
    assert!(
        stderr.contains("child error:"),
        "the child did not run:\n{stderr}"
    );
    stderr
}

/// Files left behind by interrupted atomic writes.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.to_string_lossy().ends_with(".tmp") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn saving_a_model_on_a_full_disk_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.tvm");
    let previous = MobileNetV2Config::new()
        .with_width_mult(0.5)
        .with_num_classes(2)
        .init::<Cpu>(&Default::default());
    save_model(&previous, &info(), &file).unwrap();
    let before = std::fs::read(&file).unwrap();
    run_child_with_full_disk(dir.path(), "model", 1024);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the previous model changed"
    );
    let (_, loaded_info) = load_model::<Cpu, MobileNetV2<Cpu>>(&file, &Default::default()).unwrap();
    assert_eq!(loaded_info, info());
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_checkpoint_on_a_full_disk_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(&dir.path().join("data"), &["a", "b"], 4, 32);
    let (train, val) = common::small_loaders(&dir.path().join("data"), 32, 4);
    // The previous checkpoint: one epoch of two, written without a limit.
    let (config, make) = checkpoint_run(dir.path());
    let device = Default::default();
    fit_with(
        make(),
        &train,
        &val,
        &config,
        &device,
        &mut StopAfter::epochs(1),
    )
    .unwrap();
    let path = dir.path().join("run.ckpt");
    let before = std::fs::read(&path).unwrap();
    // The child resumes it and fails to write the next one.
    run_child_with_full_disk(dir.path(), "checkpoint", 1024);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the checkpoint changed"
    );
    assert_eq!(read_checkpoint(&path).unwrap().epochs_done, 1);
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
    // And it still resumes to the end.
    let done = fit(make(), &train, &val, &config, &device).unwrap();
    assert_eq!((done.resumed_epochs, done.history.epochs.len()), (1, 2));
}

#[test]
fn a_run_writing_its_pictures_on_a_full_disk_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    common::synthetic_folder(&dir.path().join("data"), &["a", "b"], 4, 32);
    // Small enough that the first picture, history.png (~60 KB), does not fit.
    run_child_with_full_disk(dir.path(), "outputs", 32);
    assert_eq!(temp_files(dir.path()), Vec::<PathBuf>::new());
}

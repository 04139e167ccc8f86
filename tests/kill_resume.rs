//! The kill test: a two-phase training run (feature extraction, then fine-tuning, each
//! checkpointed every epoch, then the model saved) is killed with SIGKILL at random points —
//! some timed at random, some the instant a checkpoint write begins — and restarted each time.
//! Every restart must find a readable checkpoint (or none), and the run that finally completes
//! must leave the same history and bit-for-bit the same saved model as a run never interrupted.
//!
//! The training runs in a child process: this test binary re-runs itself with
//! `KILL_TEST_CHILD=<dir>`, which makes `child_training_run` train in `<dir>` instead of
//! returning at once. Children use one rayon thread, as bit-for-bit comparisons need (see
//! tests/train_resume.rs).
//!
//! Shortened in `cargo test` (4 kills); the full run is
//! `KILL_TEST_ROUNDS=30 cargo test --release --test kill_resume -- --nocapture`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transfer_vision::MobileNetV2;
use transfer_vision::backend::{Cpu, CpuAutodiff};
use transfer_vision::models::MobileNetV2Config;
use transfer_vision::train::{FitConfig, History, OptimizerConfig, Trainable, fit};
use transfer_vision::weights::{ModelInfo, load_model, save_model};

const CHILD_ENV: &str = "KILL_TEST_CHILD";
const PHASES: [&str; 2] = ["feature_extraction", "fine_tuning"];

/// The training run of the child process; a no-op unless `KILL_TEST_CHILD` names a folder.
#[test]
fn child_training_run() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    type B = CpuAutodiff;
    let device = Default::default();
    let (train, val) = common::small_loaders(&dir.join("data"), 40, 4);
    // A restart before the first checkpoint must start from the same initial weights.
    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    let model = MobileNetV2Config::new()
        .with_num_classes(3)
        .init::<B>(&device);
    let head = FitConfig::new(2, OptimizerConfig::adam(1e-3), Trainable::HeadOnly)
        .with_phase(PHASES[0])
        .with_checkpoint(dir.join("feature_extraction.ckpt"))
        .with_quiet(true);
    let first = fit(model, &train, &val, &head, &device).unwrap();
    let tune = FitConfig::new(3, OptimizerConfig::adam(1e-4), Trainable::LastBlocks(3))
        .with_phase(PHASES[1])
        .with_first_epoch(2)
        .with_checkpoint(dir.join("fine_tuning.ckpt"))
        .with_quiet(true);
    let second = fit(first.model, &train, &val, &tune, &device).unwrap();
    let mut history = first.history;
    history.extend(&second.history);
    let json = serde_json::to_vec(&common::without_timings(&history)).unwrap();
    save_model(&second.model, &ModelInfo::default(), &dir.join("model.tvm")).unwrap();
    // Written whole or not at all: the child may be killed at any instant.
    let tmp = dir.join("history.json.partial");
    std::fs::write(&tmp, &json).unwrap();
    std::fs::rename(&tmp, dir.join("history.json")).unwrap();
}

fn spawn_child(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_training_run", "--test-threads", "1"])
        .env(CHILD_ENV, dir)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn run_to_completion(dir: &Path) {
    let status = spawn_child(dir).wait().unwrap();
    assert!(
        status.success(),
        "training child failed in {}",
        dir.display()
    );
}

/// Names of the temporary files `atomic_write` leaves while a write is in flight.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills `child` once a checkpoint write is seen in flight, or at `deadline` if none is.
fn kill_during_write(child: &mut Child, dir: &Path, deadline: Instant) -> bool {
    loop {
        if !temp_files(dir).is_empty() {
            let _ = child.kill();
            return true;
        }
        if Instant::now() >= deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What survives a kill must be whole: each checkpoint present reads back (its checksums hold).
fn assert_checkpoints_readable(dir: &Path) {
    for phase in PHASES {
        let path = dir.join(format!("{phase}.ckpt"));
        if path.exists() {
            let read = transfer_vision::train::read_checkpoint(&path);
            assert!(read.is_ok(), "{}: {:?}", path.display(), read.err());
        }
    }
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let rounds: usize = std::env::var("KILL_TEST_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let root = tempfile::tempdir().unwrap();
    let [reference, killed] = ["reference", "killed"].map(|name| {
        let dir = root.path().join(name);
        common::synthetic_folder(&dir.join("data"), &["a", "b", "c"], 6, 48);
        dir
    });

    let started = Instant::now();
    run_to_completion(&reference);
    let full_run = started.elapsed();

    let mut rng = ChaCha8Rng::seed_from_u64(0x6b696c6c);
    let (mut during_write, mut completed) = (0, 0);
    for round in 0..rounds {
        let mut child = spawn_child(&killed);
        if round % 2 == 1 {
            // Aim at a checkpoint write; fall back to a random instant.
            let deadline = Instant::now() + full_run.mul_f64(rng.random_range(0.2..1.0));
            during_write += usize::from(kill_during_write(&mut child, &killed, deadline));
        } else {
            std::thread::sleep(full_run.mul_f64(rng.random_range(0.05..0.9)));
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        assert_checkpoints_readable(&killed);
        if status.success() {
            // The run completed before the kill landed: check it, then start a new run.
            assert_same_outputs(&killed, &reference);
            for file in [
                "feature_extraction.ckpt",
                "fine_tuning.ckpt",
                "model.tvm",
                "history.json",
            ] {
                std::fs::remove_file(killed.join(file)).unwrap();
            }
            completed += 1;
        }
    }
    run_to_completion(&killed);
    println!(
        "{rounds} kills ({during_write} during a checkpoint write); {} runs completed through \
         them, each equal to the uninterrupted run of {:.1} s",
        completed + 1,
        full_run.as_secs_f64()
    );
    assert_same_outputs(&killed, &reference);
    // Interrupted writes leave no temporary files behind once the run has completed.
    assert_eq!(temp_files(&killed), Vec::<String>::new());
}

/// The same history (timings aside) and bit-for-bit the same saved model.
fn assert_same_outputs(run: &Path, reference: &Path) {
    let read = |dir: &Path| std::fs::read(dir.join("history.json")).unwrap();
    assert_eq!(read(run), read(reference), "histories differ");
    let history: History = serde_json::from_slice(&read(run)).unwrap();
    assert_eq!(history.epochs.len(), 5);
    let device = Default::default();
    let load = |dir: &Path| load_model::<Cpu, MobileNetV2<Cpu>>(&dir.join("model.tvm"), &device);
    let (a, b) = (load(run).unwrap().0, load(reference).unwrap().0);
    assert_eq!(
        common::snapshot::<Cpu, _>(&a),
        common::snapshot::<Cpu, _>(&b),
        "saved models differ"
    );
}

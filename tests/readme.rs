//! The README's "Using the crate" code is `examples/readme.rs`, verbatim, and it works: run as a
//! new user would (from a folder holding `data/` and `weights/`) on a subset of the ants/bees
//! photos with the real ImageNet MobileNetV2 (`../shared`), fine-tuning must keep what feature
//! extraction learned. Reading the README needs nothing; the run needs `../shared` (skipped
//! without it, failing under `CI=true`) and the example binary `cargo test` builds.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const MARKERS: (&str, &str) = ("// README:start\n", "// README:end\n");

/// The first ```rust block of the README's "Using the crate" section.
fn readme_code() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Using the crate")
        .nth(1)
        .expect("a 'Using the crate' section");
    let start = section.find("```rust").expect("a rust block") + "```rust".len();
    let body = &section[start..];
    let body = &body[body.find('\n').expect("newline") + 1..];
    body[..body.find("```").expect("end of block")].to_string()
}

fn example_code() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/readme.rs");
    let text = std::fs::read_to_string(&path).expect("examples/readme.rs");
    let start = text.find(MARKERS.0).expect("start marker") + MARKERS.0.len();
    let end = text.find(MARKERS.1).expect("end marker");
    text[start..end].to_string()
}

#[test]
fn the_readme_code_is_the_readme_example() {
    assert_eq!(
        readme_code(),
        example_code(),
        "README.md's 'Using the crate' code and examples/readme.rs differ: copy one into the other"
    );
}

/// The first `n` images (by name) of `from/class` copied to `to/class`, for each class.
fn copy_subset(from: &Path, to: &Path, n: usize) {
    for class in ["ants", "bees"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(from.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        std::fs::create_dir_all(to.join(class)).unwrap();
        for file in files.into_iter().take(n) {
            std::fs::copy(&file, to.join(class).join(file.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn shared_the_readme_code_fine_tunes_folded_weights_without_breaking_them() {
    let (Some(weights), Some(data)) = (
        common::shared("weights/mobilenet_v2_tf_imagenet.onnx"),
        common::shared("datasets/hymenoptera_data"),
    ) else {
        return;
    };
    let Some(binary) = common::example_binary("readme") else {
        return;
    };
    // A new user's folder: the data and weights where the README's code looks for them.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data/hymenoptera_data");
    copy_subset(&data.join("train"), &root.join("train"), 24);
    copy_subset(&data.join("val"), &root.join("val"), 24);
    std::fs::create_dir_all(dir.path().join("weights")).unwrap();
    std::fs::copy(
        &weights,
        dir.path().join("weights/mobilenet_v2_tf_imagenet.onnx"),
    )
    .unwrap();

    let out = Command::new(&binary)
        .current_dir(dir.path())
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let epochs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("epoch")).collect();
    eprintln!("{}", epochs.join("\n"));
    let accuracy: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("validation accuracy "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no final accuracy in:\n{stdout}"));
    // Feature extraction reaches ~0.9 here; fine-tuning BatchNorms of folded weights with
    // batch statistics (the old default) fell to chance, ~0.5.
    assert!(accuracy >= 0.8, "final validation accuracy {accuracy}");
    let fine_tuning: Vec<&&str> = epochs
        .iter()
        .filter(|l| l.contains("fine_tuning"))
        .collect();
    assert_eq!(fine_tuning.len(), 5, "{stdout}");
    for file in ["history.png", "model.tvm"] {
        assert!(dir.path().join(file).exists(), "{file} was not written");
    }
}

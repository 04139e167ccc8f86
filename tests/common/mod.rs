//! Helpers shared by the integration tests: locating `../shared` and reading `.npy` goldens.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a file under `../shared` (relative to the crate root).
///
/// Returns `None` when the file is missing so that tests users run from a clone without
/// `../shared` can skip; under CI (`CI=true`) a missing file is a test failure instead.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("CI=true but ../shared/{rel} is missing: this test needs the shared fixtures");
    }
    eprintln!("skipping: ../shared/{rel} not found");
    None
}

pub use transfer_vision::verify::Npy;

pub mod onnx_edit;

/// `target/<profile>/examples/<name>`, found from the test binary's own path: `cargo test`
/// builds the examples beside the tests. `None` (skip) when it is not built, a failure under
/// `CI=true`.
pub fn example_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} not built: run `cargo test --release` (it builds the examples)",
        path.display()
    );
    eprintln!("skipping: {} not built", path.display());
    None
}

/// Reads a little-endian float32 `.npy` file (panics with the file's name on error).
pub fn npy_f32(path: &std::path::Path) -> Npy<f32> {
    transfer_vision::verify::read_npy_f32(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads a little-endian int64 `.npy` file (panics with the file's name on error).
pub fn npy_i64(path: &std::path::Path) -> Npy<i64> {
    transfer_vision::verify::read_npy_i64(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes a small class-per-folder dataset of PNGs to `root`: class `k` images are tinted with
/// a distinct colour plus a deterministic pattern, so a classifier can learn them.
pub fn synthetic_folder(root: &std::path::Path, classes: &[&str], per_class: usize, size: u32) {
    for (k, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(size, size, |x, y| {
                let wave = ((x * (3 + i as u32) + y * (5 + k as u32)) % 64) as u8;
                let base = [
                    (k * 97 % 256) as u8,
                    (k * 53 % 256) as u8 ^ 0x80,
                    (255 - k * 71 % 256) as u8,
                ];
                image::Rgb([
                    base[0].wrapping_add(wave),
                    base[1].wrapping_add(wave / 2),
                    base[2].wrapping_sub(wave),
                ])
            });
            img.save(dir.join(format!("{class}_{i:03}.png"))).unwrap();
        }
    }
}

/// Every tensor of a module by key, as raw bits (for bit-for-bit comparisons).
pub fn snapshot<B: transfer_vision::kernels::ConvBackend, M: burn::module::Module<B>>(
    model: &M,
) -> Vec<(String, Vec<u32>)> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct V(Vec<String>, Vec<(String, Vec<u32>)>);
    impl<B: transfer_vision::kernels::ConvBackend> ModuleVisitor<B> for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let bits = p
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            self.1.push((self.0.join("."), bits));
        }
    }
    let mut v = V(Vec::new(), Vec::new());
    model.visit(&mut v);
    v.1
}

/// Training (ImageNet train preset) and validation (eval preset) loaders over a 75/25 split.
pub fn small_loaders(
    root: &std::path::Path,
    size: u32,
    batch: usize,
) -> (
    transfer_vision::data::DataLoader,
    transfer_vision::data::DataLoader,
) {
    use transfer_vision::data::{
        DataLoader, FolderOptions, LoaderConfig, Normalization, TrainVal, presets,
    };
    let sets = TrainVal::open(root, FolderOptions::default(), 0.25, 7).unwrap();
    let mut cfg = LoaderConfig::new(batch);
    cfg.seed = 3;
    let train = DataLoader::new(
        &sets.train,
        presets::imagenet_train(size, Normalization::ImageNet),
        cfg,
    )
    .unwrap();
    cfg.shuffle = false;
    let val = DataLoader::new(
        &sets.val,
        presets::imagenet_eval(size, Normalization::ImageNet),
        cfg,
    )
    .unwrap();
    (train, val)
}

/// `history` with its wall-clock figures zeroed, for comparing runs.
pub fn without_timings(
    history: &transfer_vision::train::History,
) -> transfer_vision::train::History {
    let mut h = history.clone();
    for e in &mut h.epochs {
        e.seconds = 0.0;
        e.images_per_second = 0.0;
    }
    h
}

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

/// A dense array read from a `.npy` file.
#[derive(Debug, Clone)]
pub struct Npy<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn read_npy_raw(path: &std::path::Path) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not a .npy file",
        path.display()
    );
    let major = bytes[6];
    let (header_len, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = String::from_utf8_lossy(&bytes[start..start + header_len]).to_string();
    assert!(
        header.contains("'fortran_order': False"),
        "{}: fortran order",
        path.display()
    );
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .unwrap_or_else(|| panic!("{}: no descr", path.display()))
        .to_string();
    let shape_str = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("{}: no shape", path.display()));
    let shape = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("shape"))
        .collect();
    (descr, shape, bytes[start + header_len..].to_vec())
}

/// Reads a little-endian float32 `.npy` file.
pub fn npy_f32(path: &std::path::Path) -> Npy<f32> {
    let (descr, shape, body) = read_npy_raw(path);
    assert_eq!(descr, "<f4", "{}: expected float32", path.display());
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Npy { shape, data }
}

/// Reads a little-endian int64 `.npy` file.
pub fn npy_i64(path: &std::path::Path) -> Npy<i64> {
    let (descr, shape, body) = read_npy_raw(path);
    assert_eq!(descr, "<i8", "{}: expected int64", path.display());
    let data = body
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Npy { shape, data }
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
pub fn snapshot<B: burn::tensor::backend::Backend, M: burn::module::Module<B>>(
    model: &M,
) -> Vec<(String, Vec<u32>)> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct V(Vec<String>, Vec<(String, Vec<u32>)>);
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for V {
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

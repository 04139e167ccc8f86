//! The fuzz targets' bodies (fuzz/harness.rs) on stable Rust: every seed (fuzz/seeds/) and every
//! crasher the fuzzer ever found (fuzz/regressions/) must run clean, and a short deterministic
//! mutation run over the seeds (bit flips, byte overwrites, truncations, splices) is the fuzz
//! smoke of `cargo test`. The coverage-guided runs are `cargo +nightly fuzz run <target>`
//! (see RELIABILITY.md).

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transfer_vision::backend::Cpu;
use transfer_vision::models::ModelSpec;
use transfer_vision::weights::onnx::read_onnx_bytes;
use transfer_vision::weights::{detect_spec, load_onnx_into};

type Target = fn(&[u8]);
const TARGETS: [(&str, Target); 3] = [
    ("onnx_load", harness::onnx_load),
    ("image_decode", harness::image_decode),
    ("saved_model", harness::saved_model),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (none if the folder does not exist).
fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

#[test]
fn seeds_and_found_crashers_run_clean() {
    for (target, run) in TARGETS {
        let seeds = files("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (path, bytes) in seeds.iter().chain(&files("regressions", target)) {
            println!("{target}: {}", path.display());
            run(bytes);
        }
    }
}

/// One random edit of the kinds libFuzzer makes most.
fn mutate(rng: &mut ChaCha8Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    if out.is_empty() {
        return (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
    }
    for _ in 0..rng.random_range(1..=4) {
        let i = rng.random_range(0..out.len());
        match rng.random_range(0..6) {
            0 => out[i] ^= 1 << rng.random_range(0..8),
            1 => out[i] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)],
            2 => {
                let end = (i + 8).min(out.len());
                out[i..end].fill(0xff);
            }
            3 => out.truncate(i.max(1)),
            4 if !other.is_empty() => {
                let j = rng.random_range(0..other.len());
                let n = rng
                    .random_range(1..=64)
                    .min(other.len() - j)
                    .min(out.len() - i);
                out[i..i + n].copy_from_slice(&other[j..j + n]);
            }
            _ => out.insert(i, rng.random()),
        }
        if out.is_empty() {
            break;
        }
    }
    out
}

#[test]
fn mutated_seeds_run_clean() {
    let per_seed: usize = std::env::var("FUZZ_SMOKE_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let mut rng = ChaCha8Rng::seed_from_u64(0xf022);
    let mut runs = 0;
    for (target, run) in TARGETS {
        let seeds = files("seeds", target);
        for (k, (_, seed)) in seeds.iter().enumerate() {
            let other = &seeds[(k + 1) % seeds.len()].1;
            for _ in 0..per_seed {
                let input = mutate(&mut rng, seed, other);
                run(&input);
                runs += 1;
            }
        }
    }
    println!("{runs} mutated inputs ran clean");
}

/// The ONNX seeds are real enough to reach the model loader (so fuzzing them covers it).
#[test]
fn onnx_seeds_reach_the_model_loader() {
    let device = Default::default();
    let mut loaded = 0;
    for (path, bytes) in files("seeds", "onnx_load") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("mobilenet_v2") {
            continue;
        }
        let onnx = read_onnx_bytes(&bytes, &path).unwrap_or_else(|e| panic!("{e}"));
        let spec = detect_spec(&onnx).unwrap_or_else(|e| panic!("{e}"));
        let ModelSpec::MobileNetV2(config) = spec else {
            panic!("{name}: detected {}", spec.name())
        };
        assert_eq!(config.num_classes, 2, "{name}");
        let (_, report) =
            load_onnx_into(&onnx, config.init::<Cpu>(&device)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.batch_norm_folded, name.contains("folded"), "{name}");
        loaded += 1;
    }
    assert_eq!(loaded, 3);
}

/// Regenerates `fuzz/seeds/saved_model/` (run by hand, see fuzz/make_seeds.py).
#[test]
#[ignore]
fn write_saved_model_seed() {
    use transfer_vision::models::MobileNetV2Config;
    use transfer_vision::weights::{ModelInfo, save_model};
    let device = Default::default();
    let model = MobileNetV2Config::new()
        .with_width_mult(0.1)
        .with_num_classes(2)
        .init::<Cpu>(&device);
    let info = ModelInfo {
        class_names: vec!["a".into(), "b".into()],
        ..ModelInfo::default()
    };
    let path = fuzz_dir().join("seeds/saved_model/mobilenet_v2_w010.tvm");
    save_model(&model, &info, Path::new(&path)).unwrap();
}

/// Regenerates the truncation seeds `fuzz/seeds/image_decode/cut_*` (run by hand, see
/// fuzz/make_seeds.py): the damaged-image fixtures (`tests/fixtures/damaged`: baseline and
/// progressive JPEG, PNG, GIF, lossy WebP) cut at every 1/16 of their length, each behind a
/// decode-mode parameter prefix, so that fuzzing starts from files that end early.
#[test]
#[ignore]
fn write_truncation_seeds() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/damaged");
    let out = fuzz_dir().join("seeds/image_decode");
    for name in [
        "photo.jpg",
        "photo_progressive.jpg",
        "photo.png",
        "photo.gif",
        "photo.webp",
    ] {
        let bytes = std::fs::read(fixtures.join(name)).unwrap();
        let stem = name.replace('.', "_");
        for k in 1..16 {
            // Mode 0 (decode, ImageNet eval preset), size 24, then fixed parameters and seed.
            let mut seed = vec![0u8, 24, 7, 9, 11];
            seed.extend(1234u64.to_le_bytes());
            seed.extend_from_slice(&bytes[..bytes.len() * k / 16]);
            std::fs::write(out.join(format!("cut_{stem}_{k:02}_of_16")), seed).unwrap();
        }
    }
}

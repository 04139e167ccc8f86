//! Damaged photos are refused, not learned. Real photos (`tests/fixtures/damaged`, made by
//! `tools/make_damaged_fixtures.py`: baseline and progressive JPEG, PNG, GIF, lossy WebP) are cut
//! at every 1/16 of their length and just before their end. A cut that loses image data (the
//! `image` crate's lenient decoders, which paint missing JPEG rows grey, then give other pixels
//! than the whole file, or fail) must be refused by decoding, `Predictor`, a strict `ImageFolder`
//! and the data loader, each naming the file; lenient mode must skip exactly the refused files
//! and train on the rest, with and without the feature cache. A JPEG that lacks only its end
//! marker may go either way (its data is complete; a progressive one is refused, as Pillow
//! refuses every such file). Needs nothing from `../shared`.

mod common;

use std::path::{Path, PathBuf};

use transfer_vision::backend::{Cpu, CpuAutodiff};
use transfer_vision::data::{
    DataError, DataLoader, DecodeOptions, FolderOptions, LoaderConfig, Normalization,
    Preprocessing, TrainVal, WarningKind, decode_rgb, decode_rgb_bytes, presets,
};
use transfer_vision::models::{ImageClassifier, MobileNetV2Config};
use transfer_vision::predict::Predictor;
use transfer_vision::train::{FitConfig, OptimizerConfig, Trainable, fit};
use transfer_vision::weights::{ModelInfo, save_model};

const PHOTOS: [&str; 5] = [
    "photo.jpg",
    "photo_progressive.jpg",
    "photo.png",
    "photo.gif",
    "photo.webp",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/damaged")
        .join(name)
}

/// One cut of a photo: where it was cut and whether it still holds the whole image.
struct Cut {
    /// `<stem>_cut<bytes>.<ext>`.
    name: String,
    bytes: Vec<u8>,
    complete: bool,
    /// Whether only a JPEG's end marker (or part of it) was cut off.
    only_end_marker_lost: bool,
    /// What this crate's decoding does with it.
    refused: bool,
    /// What Pillow (the reference torchvision users have) does with it.
    pillow_refuses: bool,
}

/// Every 1/16 of the length, and the length minus 1 and 2 (as the fixture script).
fn cut_points(n: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (1..16).map(|k| n * k / 16).collect();
    cuts.extend([n - 1, n - 2]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn cuts() -> Vec<Cut> {
    let pillow: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("pillow.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for photo in PHOTOS {
        let full = std::fs::read(fixture(photo)).unwrap();
        let whole = image::load_from_memory(&full).unwrap().to_rgb8();
        let (stem, ext) = photo.rsplit_once('.').unwrap();
        for cut in cut_points(full.len()) {
            let bytes = full[..cut].to_vec();
            let complete = image::load_from_memory(&bytes).is_ok_and(|i| i.to_rgb8() == whole);
            let name = format!("{stem}_cut{cut}.{ext}");
            let refused = decode_rgb_bytes(&bytes, Path::new(&name), &Default::default()).is_err();
            out.push(Cut {
                name,
                bytes,
                complete,
                only_end_marker_lost: ext == "jpg" && full.len() - cut <= 2,
                refused,
                pillow_refuses: pillow[photo][cut.to_string()].as_bool().unwrap(),
            });
        }
    }
    out
}

/// Writes each cut into `dir`, returning its path.
fn write_cuts(dir: &Path, cuts: &[Cut]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    cuts.iter()
        .map(|c| {
            let path = dir.join(&c.name);
            std::fs::write(&path, &c.bytes).unwrap();
            path
        })
        .collect()
}

#[test]
fn every_cut_that_loses_image_data_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cuts = cuts();
    let paths = write_cuts(dir.path(), &cuts);
    let (mut refused, mut incomplete, mut agree_with_pillow) = (0, 0, 0);
    for (cut, path) in cuts.iter().zip(&paths) {
        let result = decode_rgb(path, &DecodeOptions::default());
        if !cut.complete {
            incomplete += 1;
            let Err(e) = &result else {
                panic!(
                    "{}: an incomplete image was returned as a picture",
                    cut.name
                );
            };
            assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
            assert!(e.to_string().contains(&cut.name), "{e}");
        }
        assert_eq!(result.is_err(), cut.refused);
        assert!(
            result.is_ok() || !cut.complete || cut.only_end_marker_lost,
            "{}: a complete image was refused",
            cut.name
        );
        refused += usize::from(result.is_err());
        agree_with_pillow += usize::from(result.is_err() == cut.pillow_refuses);
        eprintln!(
            "{:<32} complete {:<5} refused {:<5} pillow refuses {}",
            cut.name,
            cut.complete,
            result.is_err(),
            cut.pillow_refuses
        );
    }
    eprintln!(
        "{} cuts: {incomplete} incomplete, {refused} refused, same verdict as Pillow on {agree_with_pillow}",
        cuts.len()
    );
    // The whole photos decode, to the pixels of the `image` crate's decoders.
    for photo in PHOTOS {
        let ours = decode_rgb(&fixture(photo), &DecodeOptions::default()).unwrap();
        let theirs = image::open(fixture(photo)).unwrap().to_rgb8();
        assert!(ours == theirs, "{photo} decodes to other pixels");
    }
}

#[test]
fn predict_refuses_damaged_photos_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(2)
        .init::<Cpu>(&device);
    let file = dir.path().join("model.tvm");
    let info = ModelInfo::new(vec!["a".into(), "b".into()], Preprocessing::imagenet(64));
    save_model(&model, &info, &file).unwrap();
    let predictor = Predictor::<Cpu>::from_file(&file, &device).unwrap();
    let cuts = cuts();
    let paths = write_cuts(&dir.path().join("photos"), &cuts);
    let mut files = paths.clone();
    files.extend(PHOTOS.iter().map(|p| fixture(p)));
    let results = predictor.predict_files(&files, 1);
    for ((cut, path), result) in cuts.iter().zip(&paths).zip(&results) {
        if !cut.complete {
            let Err(e) = result else {
                panic!("{}: predicted on an incomplete image", cut.name);
            };
            assert_eq!(e.path(), path.as_path());
            assert!(e.to_string().contains(&cut.name), "{e}");
        }
    }
    for result in &results[paths.len()..] {
        assert!(result.is_ok(), "{result:?}");
    }
}

/// A train/val folder whose two classes hold the whole photos (each in both sets) and, spread
/// over the four class folders, every cut. Returns the paths of the cuts that decoding refuses
/// (every incomplete one among them).
fn dataset_with_damaged_photos(root: &Path) -> Vec<PathBuf> {
    let folders = ["train/a", "train/b", "val/a", "val/b"];
    for folder in folders {
        std::fs::create_dir_all(root.join(folder)).unwrap();
        for photo in PHOTOS {
            std::fs::copy(fixture(photo), root.join(folder).join(photo)).unwrap();
        }
    }
    let mut incomplete = Vec::new();
    for (i, cut) in cuts().iter().enumerate() {
        let path = root.join(folders[i % 4]).join(&cut.name);
        std::fs::write(&path, &cut.bytes).unwrap();
        assert!(cut.refused || cut.complete);
        if cut.refused {
            incomplete.push(path);
        }
    }
    incomplete.sort();
    incomplete
}

fn loaders(sets: &TrainVal, random: bool) -> (DataLoader, DataLoader) {
    let train_transform = if random {
        presets::imagenet_train(40, Normalization::ImageNet)
    } else {
        presets::imagenet_eval(40, Normalization::ImageNet)
    };
    let config = LoaderConfig::new(4).with_seed(1);
    let train = DataLoader::new(&sets.train, train_transform, config).unwrap();
    let eval = presets::imagenet_eval(40, Normalization::ImageNet);
    let val = DataLoader::new(&sets.val, eval, config.with_shuffle(false)).unwrap();
    (train, val)
}

#[test]
fn a_strict_folder_lists_every_damaged_file_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let incomplete = dataset_with_damaged_photos(dir.path());
    let strict = FolderOptions::default().with_extension("gif");
    let mut sets = TrainVal::open(dir.path(), strict.clone(), 0.2, 0).unwrap();
    let Err(e) = sets.verify(2) else {
        panic!("damaged photos passed verification");
    };
    let DataError::Damaged { path, files } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(path, dir.path());
    let mut listed: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    listed.sort();
    assert_eq!(
        listed, incomplete,
        "the list is not exactly the damaged files"
    );
    let message = e.to_string();
    for file in &incomplete {
        assert!(message.contains(&*file.to_string_lossy()), "{message}");
    }

    // Without verification, the strict loader stops at the first damaged file, naming it.
    let sets = TrainVal::open(dir.path(), strict, 0.2, 0).unwrap();
    let (train, _) = loaders(&sets, false);
    let error = train
        .epoch(0)
        .find_map(Result::err)
        .expect("a damaged file loaded");
    assert!(incomplete.contains(&error.path().to_path_buf()), "{error}");
}

#[test]
fn lenient_mode_skips_exactly_the_damaged_files_and_trains_on_the_rest() {
    type B = CpuAutodiff;
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let incomplete = dataset_with_damaged_photos(dir.path());
    // GIFs too (torchvision's extension list, the default, leaves them out).
    let lenient = FolderOptions::default().with_extension("gif").lenient(true);
    let model = MobileNetV2Config::new()
        .with_width_mult(0.35)
        .with_num_classes(2)
        .init::<B>(&device);
    let config =
        FitConfig::new(1, OptimizerConfig::adam(1e-3), Trainable::HeadOnly).with_quiet(true);

    // Verified up front: the damaged files leave with one warning each.
    let mut sets = TrainVal::open(dir.path(), lenient.clone(), 0.2, 0).unwrap();
    let whole = sets.train.len() + sets.val.len();
    assert_eq!(sets.verify(2).unwrap(), incomplete.len());
    let mut skipped: Vec<PathBuf> = sets
        .warnings()
        .into_iter()
        .filter(|w| matches!(w.kind, WarningKind::Undecodable(_)))
        .map(|w| w.path)
        .collect();
    skipped.sort();
    assert_eq!(skipped, incomplete);
    assert_eq!(sets.train.len() + sets.val.len(), whole - incomplete.len());
    for random in [false, true] {
        let (train, val) = loaders(&sets, random);
        let out = fit(model.clone(), &train, &val, &config, &device).unwrap();
        assert_eq!(out.used_feature_cache, !random);
        assert!(out.history.epochs[0].train_loss.is_finite());
    }

    // Not verified: the loader skips them as it meets them, also while caching features
    // (where a skipped image once indexed out of bounds).
    let sets = TrainVal::open(dir.path(), lenient, 0.2, 0).unwrap();
    for random in [false, true] {
        let (train, val) = loaders(&sets, random);
        let out = fit(model.clone(), &train, &val, &config, &device).unwrap();
        assert_eq!(out.used_feature_cache, !random);
        let mut met: Vec<PathBuf> = train
            .warnings()
            .into_iter()
            .chain(val.warnings())
            .map(|w| w.path)
            .collect();
        met.sort();
        met.dedup();
        assert_eq!(met, incomplete);
        assert_eq!(out.model.num_classes(), 2);
    }
}

#[test]
fn shared_every_photo_of_the_datasets_decodes_to_the_image_crates_pixels() {
    // Strict decoding refuses no real photo, and gives the pixels `image` gave before it.
    let Some(datasets) = common::shared("datasets") else {
        return;
    };
    let mut folders = vec![datasets];
    let (mut jpegs, mut others) = (0, 0);
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let Ok(theirs) = image::load_from_memory(&bytes) else {
                continue; // labels.tsv
            };
            let ours = decode_rgb_bytes(&bytes, &path, &DecodeOptions::default())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(ours == theirs.to_rgb8(), "{}: other pixels", path.display());
            if bytes.starts_with(&[0xff, 0xd8]) {
                jpegs += 1;
            } else {
                others += 1;
            }
        }
    }
    eprintln!("{jpegs} JPEGs and {others} other images decode as before");
    assert!(jpegs > 1000, "only {jpegs} JPEGs found");
}

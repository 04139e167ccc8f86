//! DataLoader: reproducibility, ordering, workers, partial batches, lenient mode, cache.

mod common;

use std::path::Path;

use image::{Rgb, RgbImage};
use transfer_vision::data::{
    CacheMode, Compose, DataError, DataLoader, FolderOptions, ImageBatch, ImageFolder,
    LoaderConfig, Normalization, Transform, WarningKind, presets,
};

/// `n` images per class in two classes, each with distinct content and sizes.
fn make_folder(root: &Path, n: usize) {
    for (c, class) in ["one", "two"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).expect("mkdir");
        for i in 0..n {
            let (w, h) = (40 + (i as u32 * 7) % 23, 30 + (i as u32 * 5) % 17);
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([
                    (x * 5 + i as u32) as u8,
                    (y * 7 + c as u32 * 80) as u8,
                    (x ^ y) as u8,
                ])
            });
            img.save(root.join(format!("{class}/img_{i:02}.png")))
                .expect("write");
        }
    }
}

fn collect(loader: &DataLoader, epoch: u64) -> Vec<ImageBatch> {
    loader
        .epoch(epoch)
        .collect::<Result<Vec<_>, _>>()
        .expect("epoch")
}

fn train_pipeline() -> Compose {
    presets::imagenet_train(24, Normalization::ImageNet)
}

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers,
        seed: 5,
        ..LoaderConfig::default()
    }
}

#[test]
fn last_partial_batch_is_kept_and_every_sample_seen_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_folder(dir.path(), 11);
    let f = ImageFolder::new(dir.path()).expect("scan");
    let loader = DataLoader::new(&f, train_pipeline(), config(5, 2)).expect("loader");
    assert_eq!(loader.len(), 5);
    let batches = collect(&loader, 0);
    let sizes: Vec<usize> = batches.iter().map(ImageBatch::len).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 2]);
    assert_eq!(batches[0].shape, [5, 3, 24, 24]);
    assert_eq!(batches[0].images.len(), 5 * 3 * 24 * 24);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, loader.order(0));
    seen.sort();
    assert_eq!(seen, (0..22).collect::<Vec<_>>());
    for b in &batches {
        for (i, &idx) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[i] as usize, f.samples()[idx].label);
            assert_eq!(b.paths[i], f.samples()[idx].path);
        }
    }
}

#[test]
fn same_seed_same_batches_and_epochs_differ() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_folder(dir.path(), 8);
    let f = ImageFolder::new(dir.path()).expect("scan");
    let loader = DataLoader::new(&f, train_pipeline(), config(4, 2)).expect("loader");
    let a = collect(&loader, 0);
    assert_eq!(
        a,
        collect(&loader, 0),
        "same seed and epoch must repeat exactly"
    );
    let again = DataLoader::new(&f, train_pipeline(), config(4, 2)).expect("loader");
    assert_eq!(a, collect(&again, 0));
    assert_ne!(
        loader.order(0),
        loader.order(1),
        "epochs must be shuffled differently"
    );
    let b = collect(&loader, 1);
    assert_ne!(a[0].indices, b[0].indices);
    let other_seed = DataLoader::new(
        &f,
        train_pipeline(),
        LoaderConfig {
            seed: 6,
            ..config(4, 2)
        },
    )
    .expect("loader");
    assert_ne!(other_seed.order(0), loader.order(0));
    // Without shuffling the order is the folder's.
    let plain = DataLoader::new(
        &f,
        train_pipeline(),
        LoaderConfig {
            shuffle: false,
            ..config(4, 2)
        },
    )
    .expect("loader");
    assert_eq!(plain.order(3), (0..16).collect::<Vec<_>>());
}

#[test]
fn worker_count_batch_size_and_cache_do_not_change_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_folder(dir.path(), 9);
    let f = ImageFolder::new(dir.path()).expect("scan");
    let reference = collect(
        &DataLoader::new(&f, train_pipeline(), config(4, 0)).expect("loader"),
        2,
    );
    for workers in [1, 2, 3, 8] {
        let l = DataLoader::new(
            &f,
            train_pipeline(),
            LoaderConfig {
                prefetch: 1,
                ..config(4, workers)
            },
        )
        .expect("loader");
        assert_eq!(collect(&l, 2), reference, "{workers} workers");
    }
    // Every sample gets the same augmentation whatever batch it lands in.
    let b6 = collect(
        &DataLoader::new(&f, train_pipeline(), config(6, 2)).expect("loader"),
        2,
    );
    let flat = |bs: &[ImageBatch]| {
        bs.iter()
            .flat_map(|b| b.images.clone())
            .collect::<Vec<f32>>()
    };
    assert_eq!(flat(&b6), flat(&reference));
    let cached = DataLoader::new(
        &f,
        train_pipeline(),
        LoaderConfig {
            cache: CacheMode::Decoded,
            ..config(4, 2)
        },
    )
    .expect("loader");
    assert_eq!(collect(&cached, 2), reference);
    assert_eq!(cached.cached_images(), 18);
    assert_eq!(collect(&cached, 2), reference, "second pass from the cache");
    // A tiny budget caches nothing but still works.
    let tiny = DataLoader::new(
        &f,
        train_pipeline(),
        LoaderConfig {
            cache: CacheMode::Decoded,
            cache_budget_bytes: 10,
            ..config(4, 2)
        },
    )
    .expect("loader");
    assert_eq!(collect(&tiny, 2), reference);
    assert_eq!(tiny.cached_images(), 0);
}

#[test]
fn strict_mode_error_names_the_file_lenient_mode_skips_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_folder(dir.path(), 4);
    std::fs::write(dir.path().join("one/broken.jpg"), b"not a jpeg").expect("write");
    let strict = ImageFolder::new(dir.path()).expect("scan");
    let loader = DataLoader::new(
        &strict,
        train_pipeline(),
        LoaderConfig {
            shuffle: false,
            ..config(3, 2)
        },
    )
    .expect("loader");
    let results: Vec<_> = loader.epoch(0).collect();
    assert_eq!(results.len(), 3);
    let errs: Vec<&DataError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].path().ends_with("broken.jpg"), "{:?}", errs[0]);

    let lenient = ImageFolder::with_options(dir.path(), FolderOptions::default().lenient(true))
        .expect("scan");
    let loader = DataLoader::new(&lenient, train_pipeline(), config(3, 2)).expect("loader");
    let batches = collect(&loader, 0);
    assert_eq!(batches.iter().map(ImageBatch::len).sum::<usize>(), 8);
    let w = loader.warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].path.ends_with("broken.jpg"));
    assert!(matches!(w[0].kind, WarningKind::Undecodable(_)));
}

#[test]
fn mixed_shapes_are_an_error_naming_the_file_and_zero_batch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_folder(dir.path(), 3);
    let f = ImageFolder::new(dir.path()).expect("scan");
    let loader = DataLoader::new(
        &f,
        Compose::new(vec![Transform::ToTensor]),
        LoaderConfig {
            shuffle: false,
            ..config(6, 1)
        },
    )
    .expect("loader");
    let e = loader
        .epoch(0)
        .next()
        .expect("one batch")
        .expect_err("shapes differ");
    assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("img_01.png"), "{e}");
    assert!(DataLoader::new(&f, train_pipeline(), config(0, 1)).is_err());
}

#[test]
fn dropping_an_epoch_early_stops_the_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_folder(dir.path(), 10);
    let f = ImageFolder::new(dir.path()).expect("scan");
    let loader = DataLoader::new(&f, train_pipeline(), config(2, 2)).expect("loader");
    let mut it = loader.epoch(0);
    let first = it.next().expect("batch").expect("ok");
    drop(it);
    assert_eq!(first, collect(&loader, 0)[0]);
}

#[test]
fn hymenoptera_val_eval_batches_shared() {
    let Some(root) = common::shared("datasets/hymenoptera_data/val") else {
        return;
    };
    let f = ImageFolder::new(&root).expect("scan");
    let loader = DataLoader::new(
        &f,
        presets::imagenet_eval(224, Normalization::ImageNet),
        LoaderConfig {
            shuffle: false,
            ..config(16, 2)
        },
    )
    .expect("loader");
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 10);
    assert_eq!(batches[9].shape, [9, 3, 224, 224]);
    let labels: Vec<i64> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 70);
    assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 83);
}

//! Images per second through decode + ImageNet train transforms (RandomResizedCrop 224, flip,
//! ToTensor, Normalize; batch 16) on `../shared/datasets/hymenoptera_data/train` (244 images),
//! with 0, 1 and 2 worker threads, and with the in-memory cache of decoded images.
//!
//! Reference (same machine, 2 cores): torchvision's DataLoader did 466 images/s with 0 workers
//! and 560 with 2 (`benches/torchvision_loading.py`). Run: `cargo bench --bench data_loading`.

use std::cell::Cell;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use transfer_vision::data::{
    CacheMode, DataLoader, ImageFolder, LoaderConfig, Normalization, presets,
};

fn bench_loading(c: &mut Criterion) {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/hymenoptera_data/train");
    if !root.is_dir() {
        eprintln!("skipping: {} not found", root.display());
        return;
    }
    let folder = ImageFolder::new(&root).expect("hymenoptera train");
    let mut group = c.benchmark_group("hymenoptera_train_imagenet_train_b16");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(folder.len() as u64));
    let cases = [
        ("workers_0", 0, CacheMode::Off),
        ("workers_1", 1, CacheMode::Off),
        ("workers_2", 2, CacheMode::Off),
        ("workers_2_cache_decoded", 2, CacheMode::Decoded),
        (
            "workers_2_cache_shorter_256",
            2,
            CacheMode::ShorterSide(256),
        ),
    ];
    for (name, workers, cache) in cases {
        let config = LoaderConfig {
            batch_size: 16,
            workers,
            prefetch: 2 * workers,
            cache,
            ..LoaderConfig::default()
        };
        let loader = DataLoader::new(
            &folder,
            presets::imagenet_train(224, Normalization::ImageNet),
            config,
        )
        .expect("loader");
        let epoch = Cell::new(0u64);
        group.bench_function(name, |b| {
            b.iter(|| {
                let e = epoch.get();
                epoch.set(e + 1);
                let mut n = 0;
                for batch in loader.epoch(e) {
                    n += batch.expect("batch").len();
                }
                assert_eq!(n, 244);
            })
        });
        if cache != CacheMode::Off {
            eprintln!(
                "{name}: cache holds {} images, {:.1} MB",
                loader.cached_images(),
                loader.cached_bytes() as f64 / 1e6
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_loading);
criterion_main!(benches);

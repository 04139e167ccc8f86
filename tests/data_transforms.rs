//! Transforms: goldens from torchvision (`../shared/fixtures/transforms`, skipped outside CI when
//! missing) and properties of the random transforms.

mod common;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use transfer_vision::data::transforms::{crop, hflip, rotate_nearest, to_tensor};
use transfer_vision::data::{
    CenterCrop, ColorJitter, Compose, DecodeOptions, Normalization, Normalize,
    RandomHorizontalFlip, RandomResizedCrop, RandomRotation, Resize, RgbImage, Transform,
    decode_rgb, presets,
};

fn golden_case(name: &str, pipeline: Compose) {
    let Some(dir) = common::shared("fixtures/transforms") else {
        return;
    };
    let Some(datasets) = common::shared("datasets") else {
        return;
    };
    let meta = std::fs::read_to_string(dir.join("transforms.json")).expect("transforms.json");
    // The image list, in order, from the JSON (no JSON dependency: the paths are the only
    // strings of the "images" array).
    let images_part = meta
        .split("\"images\"")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("images");
    let images: Vec<&str> = images_part.split('"').skip(1).step_by(2).collect();
    assert_eq!(images.len(), 6);
    let golden = common::npy_f32(&dir.join(format!("{name}.npy")));
    let per = golden.shape[1..].iter().product::<usize>();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut worst_mean = 0f64;
    let mut worst_max = 0f32;
    for (i, rel) in images.iter().enumerate() {
        let img = decode_rgb(&datasets.join(rel), &DecodeOptions::default()).expect("decode");
        let out = pipeline.apply(img, &mut rng).expect("apply");
        assert_eq!(out.shape()[..], golden.shape[1..], "{name} {rel}: shape");
        let want = &golden.data[i * per..(i + 1) * per];
        let mut sum = 0f64;
        let mut max = 0f32;
        for (a, b) in out.data.iter().zip(want) {
            let d = (a - b).abs();
            sum += f64::from(d);
            max = max.max(d);
        }
        let mean = sum / per as f64;
        eprintln!("{name:26} {rel:55} mean {mean:.5} max {max:.4}");
        assert!(mean <= 0.01, "{name} {rel}: mean abs diff {mean}");
        assert!(max <= 0.15, "{name} {rel}: max abs diff {max}");
        worst_mean = worst_mean.max(mean);
        worst_max = worst_max.max(max);
    }
    eprintln!("{name}: worst mean {worst_mean:.5}, worst max {worst_max:.4}");
}

#[test]
fn golden_imagenet_eval_224_matches_torchvision_shared() {
    golden_case(
        "imagenet_eval_224",
        presets::imagenet_eval(224, Normalization::ImageNet),
    );
}

#[test]
fn golden_resize_160_half_matches_torchvision_shared() {
    golden_case(
        "resize_160_half",
        presets::alpaca_eval(160, Normalization::Tf),
    );
}

#[test]
fn golden_to_tensor_center_crop_96_matches_torchvision_shared() {
    golden_case(
        "to_tensor_center_crop_96",
        Compose::new(vec![CenterCrop::new(96).into(), Transform::ToTensor]),
    );
}

/// A deterministic test picture with structure in both directions.
fn test_image(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, (x ^ y) as u8])
    })
}

#[test]
fn resize_shorter_side_truncates_long_side_like_torchvision() {
    let r = Resize::shorter(256);
    assert_eq!(r.output_size(500, 375), (341, 256)); // int(256 * 500 / 375) = 341
    assert_eq!(r.output_size(375, 500), (256, 341));
    assert_eq!(r.output_size(300, 300), (256, 256));
    assert_eq!(Resize::exact(160, 120).output_size(500, 375), (120, 160));
    let out = r.apply(&test_image(500, 375));
    assert_eq!(out.dimensions(), (341, 256));
}

#[test]
fn same_size_resize_and_full_crops_are_identities() {
    let img = test_image(64, 48);
    assert_eq!(Resize::exact(48, 64).apply(&img), img);
    assert_eq!(CenterCrop::rect(48, 64).apply(&img), img);
    assert_eq!(crop(&img, 0, 0, 64, 48), img);
    // A RandomResizedCrop whose window is the whole image at its own size.
    let rrc = RandomResizedCrop {
        height: 48,
        width: 64,
        scale: (1.0, 1.0),
        ratio: (64.0 / 48.0, 64.0 / 48.0),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    assert_eq!(rrc.apply(&img, &mut rng), img);
}

#[test]
fn center_crop_offsets_and_zero_padding() {
    let img = test_image(10, 7);
    // round((10 - 4) / 2) = 3, round((7 - 4) / 2) = round(1.5) = 2 (ties to even)
    let c = CenterCrop::new(4).apply(&img);
    assert_eq!(c.get_pixel(0, 0), img.get_pixel(3, 2));
    // Larger than the image: padded with zeros, left pad (12 - 10) // 2 = 1, top (9 - 7) // 2 = 1.
    let p = CenterCrop::rect(9, 12).apply(&img);
    assert_eq!(p.dimensions(), (12, 9));
    assert_eq!(p.get_pixel(0, 0).0, [0, 0, 0]);
    assert_eq!(p.get_pixel(1, 1), img.get_pixel(0, 0));
    assert_eq!(p.get_pixel(10, 7), img.get_pixel(9, 6));
    assert_eq!(p.get_pixel(11, 8).0, [0, 0, 0]);
}

#[test]
fn flip_is_an_exact_mirror() {
    let img = test_image(31, 20);
    let f = hflip(&img);
    for y in 0..20 {
        for x in 0..31 {
            assert_eq!(f.get_pixel(x, y), img.get_pixel(30 - x, y));
        }
    }
    assert_eq!(hflip(&f), img);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert_eq!(
        RandomHorizontalFlip::new(1.0).apply(img.clone(), &mut rng),
        f
    );
    assert_eq!(
        RandomHorizontalFlip::new(0.0).apply(img.clone(), &mut rng),
        img
    );
}

#[test]
fn rotation_by_zero_is_identity_and_180_is_point_mirror() {
    let img = test_image(33, 20);
    assert_eq!(rotate_nearest(&img, 0.0), img);
    assert_eq!(rotate_nearest(&img, 360.0), img);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert_eq!(RandomRotation::new(0.0).apply(&img, &mut rng), img);
    let r = rotate_nearest(&img, 180.0);
    for y in 0..20 {
        for x in 0..33 {
            assert_eq!(r.get_pixel(x, y), img.get_pixel(32 - x, 19 - y));
        }
    }
    // 90 degrees counter-clockwise on a square: the top row becomes the left column, reversed;
    // the corners fall outside and are filled with zeros for non-square images.
    let sq = test_image(16, 16);
    let r = rotate_nearest(&sq, 90.0);
    for i in 0..16 {
        assert_eq!(r.get_pixel(0, 15 - i), sq.get_pixel(i, 0));
    }
    let r = rotate_nearest(&img, 45.0);
    assert_eq!(r.dimensions(), (33, 20));
    assert_eq!(r.get_pixel(0, 0).0, [0, 0, 0]);
}

#[test]
fn random_resized_crop_shapes_and_windows() {
    let rrc = RandomResizedCrop::new(56);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (w, h) in [
        (500, 375),
        (375, 500),
        (60, 900),
        (900, 60),
        (56, 56),
        (10, 10),
    ] {
        for _ in 0..50 {
            let b = rrc.get_params(w, h, &mut rng);
            assert!(b.width > 0 && b.height > 0);
            assert!(
                b.left + b.width <= w && b.top + b.height <= h,
                "{b:?} in {w}x{h}"
            );
        }
        let out = rrc.apply(&test_image(w, h), &mut rng);
        assert_eq!(out.dimensions(), (56, 56));
    }
    // An extreme aspect ratio always ends in the fallback: a centred window of ratio 3/4.
    let b = rrc.get_params(60, 900, &mut rng);
    assert!(b.height >= 60, "{b:?}");
}

#[test]
fn same_seed_same_output_for_every_random_transform() {
    let img = test_image(120, 90);
    let pipeline = Compose::new(vec![
        RandomResizedCrop::new(64).into(),
        RandomHorizontalFlip::new(0.5).into(),
        RandomRotation::new(30.0).into(),
        ColorJitter::new(0.4, 0.4, 0.4).into(),
        Transform::ToTensor,
        Normalize::imagenet().into(),
    ]);
    let run = |seed| {
        pipeline
            .apply(img.clone(), &mut ChaCha8Rng::seed_from_u64(seed))
            .expect("apply")
    };
    let a = run(11);
    assert_eq!(a.shape(), [3, 64, 64]);
    assert_eq!(a, run(11));
    assert_ne!(a, run(12));
    assert_eq!(
        pipeline
            .apply_ref(&img, &mut ChaCha8Rng::seed_from_u64(11))
            .expect("apply"),
        a
    );
}

#[test]
fn color_jitter_zero_is_identity_and_to_tensor_range() {
    let img = test_image(20, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    assert_eq!(
        ColorJitter::new(0.0, 0.0, 0.0).apply(img.clone(), &mut rng),
        img
    );
    let t = to_tensor(&img);
    assert_eq!(t.shape(), [3, 10, 20]);
    assert!(t.data.iter().all(|v| (0.0..=1.0).contains(v)));
    // CHW layout: channel 1 of pixel (x=3, y=2).
    assert_eq!(
        t.data[200 + 2 * 20 + 3],
        f32::from(img.get_pixel(3, 2).0[1]) / 255.0
    );
}

#[test]
fn presets_shapes_and_tf_normalisation() {
    let img = test_image(300, 200);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for (p, s) in [
        (presets::imagenet_eval(224, Normalization::ImageNet), 224),
        (presets::imagenet_train(224, Normalization::Tf), 224),
        (presets::alpaca_train(160, Normalization::Tf), 160),
        (presets::imagenet_eval(96, Normalization::Tf), 96),
    ] {
        let t = p.apply(img.clone(), &mut rng).expect("apply");
        assert_eq!(t.shape(), [3, s, s]);
    }
    let t = presets::alpaca_eval(8, Normalization::Tf)
        .apply(
            RgbImage::from_pixel(8, 8, image::Rgb([0, 255, 51])),
            &mut rng,
        )
        .expect("apply");
    assert_eq!((t.data[0], t.data[64]), (-1.0, 1.0));
    assert!((t.data[128] - (51.0 / 127.5 - 1.0)).abs() < 1e-6);
}

#[test]
fn misordered_pipeline_is_an_error() {
    let img = test_image(20, 10);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let bad = Compose::new(vec![Normalize::imagenet().into()]);
    assert!(bad.apply(img.clone(), &mut rng).is_err());
    let bad = Compose::new(vec![Transform::ToTensor, CenterCrop::new(4).into()]);
    assert!(bad.apply(img, &mut rng).is_err());
}

#[test]
fn resized_crop_equals_crop_then_resize() {
    use transfer_vision::data::resize::{
        resize_bilinear, resize_bilinear_box, resize_crop_bilinear,
    };
    let img = test_image(120, 90);
    for (l, t, w, h, ow, oh) in [
        (10, 5, 90, 75, 37, 29),
        (0, 0, 120, 90, 224, 224),
        (7, 3, 50, 60, 50, 20),
        (30, 20, 40, 40, 40, 40),
    ] {
        let want = resize_bilinear(&crop(&img, l, t, w, h), ow, oh);
        assert_eq!(
            resize_crop_bilinear(&img, l as u32, t as u32, w, h, ow, oh),
            want
        );
        let rrc = RandomResizedCrop {
            height: oh,
            width: ow,
            ..RandomResizedCrop::new(1)
        };
        let bx = transfer_vision::data::CropBox {
            top: t as u32,
            left: l as u32,
            height: h,
            width: w,
        };
        assert_eq!(rrc.apply_box(&img, bx), want);
    }
    // Pillow's box resize reads outside the box at the edges, so it differs from crop+resize.
    let boxed = resize_bilinear_box(&img, 37, 29, (10.0, 5.0, 100.0, 80.0));
    assert_eq!(boxed.dimensions(), (37, 29));
    // Windows outside the image give black, never a panic.
    assert_eq!(
        resize_crop_bilinear(&img, 100, 0, 50, 10, 8, 8),
        RgbImage::new(8, 8)
    );
    assert_eq!(
        resize_bilinear_box(&img, 8, 8, (50.0, 0.0, 10.0, 10.0)),
        RgbImage::new(8, 8)
    );
}

/// Expected values computed with Pillow 12 (`Image.resize(BILINEAR)`, `crop().resize()`,
/// `rotate(23.5, NEAREST, fillcolor=0)`) on the 13x9 image below: bit-exact agreement.
#[test]
fn bit_exact_with_pillow_on_a_small_image() {
    use transfer_vision::data::resize::{resize_bilinear, resize_crop_bilinear};
    let img = RgbImage::from_fn(13, 9, |x, y| {
        image::Rgb([
            ((x * 37 + y * 11) % 256) as u8,
            ((y * 53 + x * 5) % 256) as u8,
            ((x * y * 7) % 256) as u8,
        ])
    });
    let resize: [u8; 60] = [
        48, 49, 6, 133, 61, 20, 151, 74, 35, 73, 87, 50, 158, 99, 64, 70, 150, 21, 155, 162, 67,
        150, 175, 119, 95, 157, 155, 180, 144, 160, 96, 84, 38, 178, 96, 121, 101, 109, 173, 121,
        92, 121, 200, 78, 135, 118, 129, 54, 172, 141, 155, 78, 154, 123, 143, 167, 154, 166, 179,
        127,
    ];
    assert_eq!(resize_bilinear(&img, 5, 4).as_raw()[..], resize[..]);
    let crop: [u8; 36] = [
        125, 112, 37, 193, 122, 63, 91, 134, 93, 103, 144, 119, 149, 151, 79, 177, 161, 136, 75,
        165, 168, 127, 98, 143, 173, 84, 122, 147, 94, 184, 80, 106, 116, 151, 116, 138,
    ];
    assert_eq!(
        resize_crop_bilinear(&img, 2, 1, 9, 7, 4, 3).as_raw()[..],
        crop[..]
    );
    let up = resize_bilinear(&img, 20, 11);
    assert_eq!(
        up.as_raw().iter().map(|&v| u64::from(v)).sum::<u64>(),
        75059
    );
    assert_eq!(up.get_pixel(7, 5).0, [206, 234, 123]);
    let rot = rotate_nearest(&img, 23.5);
    let rot_row0: [u8; 39] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 222, 30, 0, 3, 35, 0, 40, 40, 0, 88, 98, 63, 88, 98,
        63, 136, 156, 140, 173, 161, 154, 210, 166, 168, 0, 0, 0,
    ];
    let rot_row8: [u8; 39] = [
        0, 0, 0, 66, 62, 0, 103, 67, 42, 140, 72, 84, 188, 130, 147, 188, 130, 147, 236, 188, 224,
        17, 193, 24, 54, 198, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(rot.as_raw()[..39], rot_row0[..]);
    assert_eq!(rot.as_raw()[8 * 39..], rot_row8[..]);
}

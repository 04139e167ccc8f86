//! The bodies of the fuzz targets, shared by `cargo fuzz` (fuzz/fuzz_targets/) and the stable
//! replay test (tests/fuzz_regressions.rs), so a crasher found by the fuzzer is replayed by
//! `cargo test` through exactly the code that found it.
//!
//! Each function must return normally for every input: a panic, abort or runaway allocation is
//! a finding.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use transfer_vision::backend::Cpu;
use transfer_vision::data::{
    CenterCrop, ColorJitter, Compose, DecodeOptions, Normalization, Normalize,
    RandomHorizontalFlip, RandomResizedCrop, RandomRotation, Resize, RgbImage, Transform,
    decode_rgb_bytes, presets,
};
use transfer_vision::models::{AnyModel, Architecture, MobileNetV2, ResNet};
use transfer_vision::weights::onnx::{OnnxError, anonymize_names, read_onnx_bytes};
use transfer_vision::weights::{detect_spec, load_model_bytes, load_onnx_into};

/// Pixel limit while fuzzing: small enough that every accepted image decodes in milliseconds.
const FUZZ_MAX_PIXELS: u64 = 1 << 20;

/// ONNX bytes → parsed graph → detected architecture → weights loaded into a native model.
pub fn onnx_load(data: &[u8]) {
    let label = Path::new("fuzz.onnx");
    let _ = anonymize_names(data, label);
    let onnx = match read_onnx_bytes(data, label) {
        Ok(onnx) => onnx,
        // The reader's last line of defence caught a panic (in onnx-ir): still a finding, since
        // the panic message reached stderr. Checks before onnx-ir must refuse such files.
        Err(e @ OnnxError::Panicked { .. }) => panic!("{e}"),
        Err(_) => return,
    };
    let _ = (onnx.num_classes(), onnx.classifier(), onnx.weight_names());
    let Ok(spec) = detect_spec(&onnx) else {
        return;
    };
    let device = Default::default();
    // The spec comes from tensors present in the file, so the model is no larger than the input.
    if let Some(model) = AnyModel::<Cpu>::from_spec(&spec, &device) {
        let _ = load_onnx_into(&onnx, model);
    }
}

/// Image bytes (or raw pixels) → decode with a pixel limit → a transform pipeline whose
/// parameters come from the input too (sizes 0 to 63, any rotation, jitter and crop range).
///
/// Layout: `[mode, size, a, b, c, seed x8, rest...]`; mode bit 0 picks raw pixels
/// (`rest` = `a % 17 x b % 17` RGB image, zero sizes included) over encoded image bytes.
pub fn image_decode(data: &[u8]) {
    if data.len() < 13 {
        return;
    }
    let (head, rest) = data.split_at(13);
    let [mode, size, a, b, c] = [head[0], head[1], head[2], head[3], head[4]];
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&head[5..13]);
    let image = if mode & 1 == 1 {
        let (w, h) = (u32::from(a % 17), u32::from(b % 17));
        let pixels: Vec<u8> = (0..(w * h * 3) as usize)
            .map(|i| rest.get(i).copied().unwrap_or(i as u8))
            .collect();
        match RgbImage::from_raw(w, h, pixels) {
            Some(img) => img,
            None => return,
        }
    } else {
        let options = DecodeOptions {
            max_pixels: FUZZ_MAX_PIXELS,
        };
        match decode_rgb_bytes(rest, Path::new("fuzz.img"), &options) {
            Ok(img) => {
                assert_no_cut_jpeg(rest, &img);
                img
            }
            Err(_) => return,
        }
    };
    let size = u32::from(size % 64);
    let side = u32::from(c % 64);
    let pipeline = match mode >> 1 & 7 {
        0 => presets::imagenet_eval(size, Normalization::ImageNet),
        1 => presets::imagenet_train(size, Normalization::Tf),
        2 => presets::alpaca_train(size, Normalization::Tf),
        3 => presets::alpaca_eval(size, Normalization::Tf),
        _ => Compose::new(vec![
            Resize::exact(size, side).into(),
            RandomResizedCrop {
                scale: (f64::from(a) / 128.0, f64::from(b) / 64.0),
                ratio: (f64::from(c) / 32.0, f64::from(a ^ b) / 16.0),
                ..RandomResizedCrop::new(side)
            }
            .into(),
            CenterCrop::rect(side, size).into(),
            RandomHorizontalFlip::new(f64::from(a) / 255.0).into(),
            RandomRotation::new(f64::from(b) * 7.5 - 900.0).into(),
            ColorJitter::new(
                f32::from(a) / 50.0,
                f32::from(b) / 50.0,
                f32::from(c) / 50.0,
            )
            .into(),
            Transform::ToTensor,
            Normalize::new([0.5; 3], [f32::from(c) / 255.0; 3]).into(),
        ]),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from_le_bytes(seed));
    if let Ok(t) = pipeline.apply_ref(&image, &mut rng) {
        let [ch, h, w] = t.shape();
        assert_eq!(
            t.data.len(),
            ch * h * w,
            "tensor length disagrees with its shape"
        );
    }
}

/// A JPEG the crate returned as a picture must decode to the same pixels with `image`'s own
/// (lenient) decoder, which paints the blocks of a cut file grey where the crate refuses it:
/// a cut JPEG is never returned as a picture.
fn assert_no_cut_jpeg(bytes: &[u8], decoded: &RgbImage) {
    if !bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        return;
    }
    if let Ok(lenient) = image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg) {
        assert!(
            lenient.to_rgb8() == *decoded,
            "a JPEG was returned as a picture where a lenient decoder fills in missing data"
        );
    }
}

/// Saved-model bytes (the `.tvm` container, then burn's record inside it) → a native model.
pub fn saved_model(data: &[u8]) {
    let device = Default::default();
    let label = Path::new("fuzz.tvm");
    let _ = load_model_bytes::<Cpu, MobileNetV2<Cpu>>(data, label, &device);
    let _ = load_model_bytes::<Cpu, ResNet<Cpu>>(data, label, &device);
    let _ = load_model_bytes::<Cpu, AnyModel<Cpu>>(data, label, &device);
}

//! How images must be prepared for a network, carried with its weights: what torchvision's
//! `weights.transforms()` gives. An import finds it ([`ImportReport::preprocessing`]), a saved
//! model stores it ([`ModelInfo::preprocessing`]), and presets and the `Predictor` take it from
//! there, so the normalisation a network was trained with is never picked by hand.
//!
//! [`ImportReport::preprocessing`]: crate::weights::ImportReport::preprocessing
//! [`ModelInfo::preprocessing`]: crate::weights::ModelInfo::preprocessing

use serde::{Deserialize, Serialize};

use super::transforms::{CenterCrop, Compose, Normalization, Resize, Transform, presets};

/// How an image is brought to the network's input size for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvalResize {
    /// Shorter side to this many pixels, then a centre crop of the input size (torchvision's
    /// `Resize(256)` + `CenterCrop(224)`).
    ShorterSide(u32),
    /// Straight to the input size, both sides, without a crop (Keras'
    /// `image_dataset_from_directory(image_size=...)`).
    Exact,
}

/// The preprocessing a network expects: pixel normalisation and input geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Pixel scaling after `ToTensor`.
    pub normalization: Normalization,
    /// Side of the square input.
    pub image_size: u32,
    /// How images reach that size for evaluation.
    pub resize: EvalResize,
}

impl Default for Preprocessing {
    /// torchvision's ImageNet preprocessing at 224.
    fn default() -> Self {
        Self::imagenet(224)
    }
}

impl Preprocessing {
    /// torchvision's ImageNet evaluation at `size`: ImageNet mean/std, shorter side
    /// `round(size · 256 / 224)`, centre crop `size`.
    pub fn imagenet(size: u32) -> Self {
        Self::new(Normalization::ImageNet, size)
    }

    /// TensorFlow-trained weights: pixels scaled to `[-1, 1]`, geometry as [`Self::imagenet`].
    pub fn tf(size: u32) -> Self {
        Self::new(Normalization::Tf, size)
    }

    fn new(normalization: Normalization, size: u32) -> Self {
        Self {
            normalization,
            image_size: size,
            resize: EvalResize::ShorterSide(shorter_side_for(size)),
        }
    }

    /// The same preprocessing at another input size (a shorter-side resize scales with it).
    pub fn with_image_size(self, size: u32) -> Self {
        let resize = match self.resize {
            EvalResize::ShorterSide(_) => EvalResize::ShorterSide(shorter_side_for(size)),
            EvalResize::Exact => EvalResize::Exact,
        };
        Self {
            image_size: size,
            resize,
            ..self
        }
    }

    /// The same preprocessing resizing images straight to the input size, without a crop.
    pub fn with_exact_resize(self) -> Self {
        Self {
            resize: EvalResize::Exact,
            ..self
        }
    }

    /// Largest side, in pixels, that preprocessing may resize or crop to.
    pub const MAX_SIDE: u32 = 8192;

    /// Checks that the sizes are ones the networks take (32 to [`Self::MAX_SIDE`] pixels):
    /// preprocessing read from a file must not ask for a giant or empty image.
    pub fn check(&self) -> Result<(), String> {
        let shorter = match self.resize {
            EvalResize::ShorterSide(n) => n,
            EvalResize::Exact => self.image_size,
        };
        let valid = 32..=Self::MAX_SIDE;
        if !valid.contains(&self.image_size) || !valid.contains(&shorter) {
            return Err(format!(
                "preprocessing asks for an input of {} pixels resized from {shorter}; both must \
                 lie in 32..={}",
                self.image_size,
                Self::MAX_SIDE
            ));
        }
        Ok(())
    }

    /// The evaluation pipeline: resize (and crop), `ToTensor`, normalisation.
    pub fn eval_transform(&self) -> Compose {
        let size = self.image_size;
        match self.resize {
            EvalResize::ShorterSide(shorter) => Compose::new(vec![
                Resize::shorter(shorter).into(),
                CenterCrop::new(size).into(),
                Transform::ToTensor,
                self.normalization.normalize().into(),
            ]),
            EvalResize::Exact => presets::alpaca_eval(size, self.normalization),
        }
    }

    /// torchvision's ImageNet training augmentation at this size and normalisation
    /// (`RandomResizedCrop`, horizontal flip); see [`presets`] for others.
    pub fn train_transform(&self) -> Compose {
        presets::imagenet_train(self.image_size, self.normalization)
    }
}

/// torchvision's ratio of resize to crop, 256 / 224 (256 for 224, 183 for 160).
fn shorter_side_for(size: u32) -> u32 {
    (f64::from(size) * 256.0 / 224.0).round() as u32
}

//! Batches sized to a backend's cap on the size of one buffer.
//!
//! Some backends cannot hold a tensor larger than a fixed size whatever memory is free: wgpu
//! binds every tensor as one storage buffer, and adapters cap that buffer (lavapipe, Mesa's
//! software Vulkan driver: 128 MiB; a batch of 32 MobileNetV2 images at 224 × 224 needs 154 MB
//! for one activation). cubecl aborts the process on a larger allocation, so the crate sizes
//! batches first: inference (evaluation, prediction, feature caches) splits a batch into passes
//! that fit, and training, where splitting would change what a step computes, refuses the
//! batch with an error that gives the largest one that fits. Backends without such a cap (the
//! CPU backends, CUDA) skip all of this.

use std::fmt;

use burn::tensor::Tensor;

use super::TrainError;
use crate::kernels::ConvBackend;
use crate::models::{ImageClassifier, LayerRow, Summary};

/// How many images one pass of a model may take on a device whose backend caps the size of one
/// buffer ([`ConvBackend::max_buffer_bytes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceBatchLimit {
    /// The most images per pass (0 when even one image does not fit).
    pub images: usize,
    /// Image shape `[3, H, W]` the limit was computed for.
    pub image: [usize; 3],
    /// The layer whose buffer sets the limit (its output, or its unfolded input for a dense
    /// convolution, whichever is larger; see [`LayerRow::largest_buffer`]).
    pub layer: LayerRow,
    /// Bytes of that buffer per image.
    pub bytes_per_image: u64,
    /// The backend's cap on one buffer, in bytes.
    pub max_buffer_bytes: u64,
}

impl DeviceBatchLimit {
    /// The limit for `model` on images of shape `image` on `device`; `None` where the backend
    /// has no cap on one buffer. Runs the model once on one image to find its largest buffer
    /// (as [`Summary::of`] does).
    pub fn of<B: ConvBackend, M: ImageClassifier<B>>(
        model: &M,
        image: [usize; 3],
        device: &B::Device,
    ) -> Option<Self> {
        let max_buffer_bytes = B::max_buffer_bytes(device)?;
        let element_bytes = std::mem::size_of::<B::FloatElem>();
        Some(Self::from_summary(
            &Summary::of(model, image),
            max_buffer_bytes,
            element_bytes,
        ))
    }

    /// The limit for the model `summary` describes, on a backend whose buffers hold at most
    /// `max_buffer_bytes` bytes, with floats of `element_bytes` bytes.
    pub fn from_summary(summary: &Summary, max_buffer_bytes: u64, element_bytes: usize) -> Self {
        let layer = summary.largest_buffer();
        let bytes_per_image = (layer.largest_buffer() * element_bytes).max(1) as u64;
        Self {
            images: usize::try_from(max_buffer_bytes / bytes_per_image).unwrap_or(usize::MAX),
            image: summary.input,
            layer,
            bytes_per_image,
            max_buffer_bytes,
        }
    }

    /// `Ok` when a training step on `batch` images fits; else [`TrainError::BatchTooLarge`].
    pub fn check(&self, batch: usize) -> Result<(), TrainError> {
        if batch <= self.images {
            Ok(())
        } else {
            Err(TrainError::BatchTooLarge {
                batch,
                limit: Box::new(self.clone()),
            })
        }
    }
}

impl fmt::Display for DeviceBatchLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let [c, h, w] = self.image;
        let shape: Vec<String> = self
            .layer
            .output_shape
            .iter()
            .map(|d| d.to_string())
            .collect();
        write!(
            f,
            "{:.1} MiB per {c}x{h}x{w} image for `{}` ({} output {}{}), against this device's \
             limit of {:.0} MiB per buffer",
            mib(self.bytes_per_image),
            self.layer.path,
            self.layer.kind,
            shape.join("x"),
            if self.layer.largest_is_unfolded() {
                ", unfolded input"
            } else {
                ""
            },
            mib(self.max_buffer_bytes),
        )
    }
}

/// Runs inference passes of a model in batches that fit the device: the limit is found at the
/// first batch (one extra pass on one image, only on backends with a cap) and kept for later
/// batches of the same image shape.
pub(crate) struct FittingPasses<'a, B: ConvBackend, M> {
    model: &'a M,
    device: B::Device,
    limit: Option<([usize; 3], Option<usize>)>,
}

impl<'a, B: ConvBackend, M: ImageClassifier<B>> FittingPasses<'a, B, M> {
    /// Passes of `model` on `device`.
    pub(crate) fn new(model: &'a M, device: &B::Device) -> Self {
        Self {
            model,
            device: device.clone(),
            limit: None,
        }
    }

    /// Passes of at most `images` images for images of shape `image`, whatever the device.
    #[cfg(test)]
    fn with_images_per_pass(mut self, image: [usize; 3], images: usize) -> Self {
        self.limit = Some((image, Some(images)));
        self
    }

    /// `pass(model, images)` on `images` `[N, 3, H, W]`, split along the batch where the device
    /// cannot hold it at once (at least one image per pass), the results concatenated.
    pub(crate) fn run<const D: usize>(
        &mut self,
        images: Tensor<B, 4>,
        pass: impl Fn(&M, Tensor<B, 4>) -> Tensor<B, D>,
    ) -> Tensor<B, D> {
        let [n, c, h, w] = images.dims();
        let image = [c, h, w];
        let per_pass = match self.limit {
            Some((shape, per_pass)) if shape == image => per_pass,
            _ => {
                let per_pass = DeviceBatchLimit::of(self.model, image, &self.device)
                    .map(|limit| limit.images.max(1));
                self.limit = Some((image, per_pass));
                per_pass
            }
        };
        match per_pass {
            Some(per_pass) if n > per_pass => {
                let parts = images
                    .split(per_pass, 0)
                    .into_iter()
                    .map(|part| pass(self.model, part))
                    .collect();
                Tensor::cat(parts, 0)
            }
            _ => pass(self.model, images),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::models::{MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig};
    use burn::module::Module;

    const LAVAPIPE_BUFFER: u64 = 128 << 20;

    #[test]
    fn the_largest_buffer_sets_the_batch() {
        let device = Default::default();
        let model: MobileNetV2<Cpu> = MobileNetV2Config::new().with_num_classes(2).init(&device);
        let limit =
            DeviceBatchLimit::from_summary(&model.summary([3, 224, 224]), LAVAPIPE_BUFFER, 4);
        // The first expansion, 16 -> 96 channels at 112 x 112: 4.6 MiB an image.
        assert_eq!(limit.layer.path, "features.2.conv.0.0");
        assert_eq!(limit.bytes_per_image, 96 * 112 * 112 * 4);
        assert_eq!(limit.images, 27);
        assert!(limit.check(27).is_ok());
        let refused = limit.check(32).unwrap_err().to_string();
        for part in [
            "batch of 32",
            "features.2.conv.0.0",
            "96x112x112",
            "128 MiB",
            "--batch-size 27",
        ] {
            assert!(refused.contains(part), "{part:?} not in {refused:?}");
        }
        // ResNet18's stem unfolds 3 x 7 x 7 values per output pixel, more than its output.
        let resnet: ResNet<Cpu> = ResNetConfig::resnet18(2).init(&device);
        let limit =
            DeviceBatchLimit::from_summary(&resnet.summary([3, 224, 224]), LAVAPIPE_BUFFER, 4);
        assert_eq!(limit.layer.path, "conv1");
        assert_eq!(limit.bytes_per_image, 3 * 49 * 112 * 112 * 4);
        assert!(limit.to_string().contains("unfolded input"));
        let tiny = DeviceBatchLimit::from_summary(&resnet.summary([3, 224, 224]), 1 << 20, 4);
        assert_eq!(tiny.images, 0);
        assert!(
            tiny.check(1)
                .unwrap_err()
                .to_string()
                .contains("even one image")
        );
    }

    #[test]
    fn split_passes_give_the_whole_batch_result() {
        let device = Default::default();
        let model: MobileNetV2<Cpu> = MobileNetV2Config::new().with_num_classes(3).init(&device);
        let model = model.no_grad();
        let images = Tensor::<Cpu, 4>::random(
            [7, 3, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let whole = model.forward(images.clone());
        let mut passes = FittingPasses::new(&model, &device).with_images_per_pass([3, 32, 32], 3);
        let split = passes.run(images.clone(), MobileNetV2::forward);
        assert_eq!(split.dims(), [7, 3]);
        split
            .into_data()
            .assert_approx_eq::<f32>(&whole.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        // Without a cap (the CPU), one pass.
        let mut passes = FittingPasses::new(&model, &device);
        assert_eq!(passes.run(images, MobileNetV2::forward).dims(), [7, 3]);
        assert_eq!(passes.limit, Some(([3, 32, 32], None)));
    }
}

//! From CPU batches to burn tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::ImageBatch;

impl ImageBatch {
    /// The images as a `[N, 3, H, W]` tensor on `device`.
    pub fn images_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 4> {
        Tensor::from_data(TensorData::new(self.images.clone(), self.shape), device)
    }

    /// The labels as a `[N]` integer tensor on `device`.
    pub fn labels_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        Tensor::from_data(
            TensorData::new(self.labels.clone(), [self.labels.len()]),
            device,
        )
    }
}

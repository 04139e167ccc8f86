//! Feature extraction's shortcut: with a frozen backbone and deterministic transforms, every
//! epoch would compute the same backbone features, so they are computed once and the head
//! trains on them.

use crate::kernels::ConvBackend;
use burn::tensor::{Int, Tensor, TensorData};

use super::observer::FitObserver;
use super::source::BatchSource;
use super::{FittingPasses, TrainError};
use crate::models::ImageClassifier;

/// Backbone features of a whole dataset, computed once.
pub(crate) struct FeatureCache<B: ConvBackend> {
    features: Tensor<B, 2>,
    labels: Vec<i64>,
    /// Row of each dataset index; `None` for images the source left out (lenient mode).
    row_of: Vec<Option<usize>>,
}

impl<B: ConvBackend> FeatureCache<B> {
    /// Runs `model`'s backbone (a frozen, inference-mode copy) over `source`'s epoch 0.
    pub(crate) fn build<M: ImageClassifier<B>>(
        model: &M,
        source: &dyn BatchSource,
        device: &B::Device,
        observer: &mut dyn FitObserver,
        what: &str,
    ) -> Result<Self, TrainError> {
        observer.caching_started(what, source.num_batches());
        let mut chunks = Vec::new();
        let mut labels = Vec::new();
        let mut row_of = vec![None; source.num_samples()];
        let mut passes = FittingPasses::new(model, device);
        for batch in source.batches(0) {
            let batch = batch?;
            chunks.push(passes.run(batch.images_tensor::<B>(device), M::features));
            for (&index, &label) in batch.indices.iter().zip(&batch.labels) {
                if let Some(slot) = row_of.get_mut(index) {
                    *slot = Some(labels.len());
                }
                labels.push(label);
            }
            observer.caching_step();
        }
        observer.caching_finished();
        if chunks.is_empty() {
            return Err(TrainError::Config(format!(
                "no {what} images to cache features of"
            )));
        }
        Ok(Self {
            features: Tensor::cat(chunks, 0),
            labels,
            row_of,
        })
    }

    /// Features and labels of the dataset indices `indices`, leaving out the images the source
    /// skipped, as its batches do; `None` when none is left.
    pub(crate) fn batch(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> Option<(Tensor<B, 2>, Vec<i64>)> {
        let rows: Vec<usize> = indices
            .iter()
            .filter_map(|&i| self.row_of.get(i).copied().flatten())
            .collect();
        if rows.is_empty() {
            return None;
        }
        let labels = rows.iter().map(|&r| self.labels[r]).collect();
        let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), device);
        Some((self.features.clone().select(0, index), labels))
    }

    /// Every cached row in dataset order, in batches of `batch_size`.
    pub(crate) fn in_order(
        &self,
        batch_size: usize,
        device: &B::Device,
    ) -> Vec<(Tensor<B, 2>, Vec<i64>)> {
        let indices: Vec<usize> = (0..self.row_of.len()).collect();
        indices
            .chunks(batch_size.max(1))
            .filter_map(|chunk| self.batch(chunk, device))
            .collect()
    }
}

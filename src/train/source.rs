//! Where `fit` and `evaluate` get their batches: any source of labelled image batches, the
//! crate's [`DataLoader`] or one of the user's.

use crate::data::{DataError, DataLoader, ImageBatch};

/// A source of labelled image batches, epoch after epoch.
///
/// Implemented by [`DataLoader`]; implement it to train on images that come from elsewhere (a
/// database, a stream, tensors already in memory). Every epoch must visit each sample once, and
/// an epoch's batches must follow [`BatchSource::order`] (the feature cache replays that order).
pub trait BatchSource {
    /// Number of samples (dataset indices run from 0 to this, excluded).
    fn num_samples(&self) -> usize;

    /// Images per batch (the last batch of an epoch may hold fewer).
    fn batch_size(&self) -> usize;

    /// Batches per epoch.
    fn num_batches(&self) -> usize {
        self.num_samples().div_ceil(self.batch_size().max(1))
    }

    /// The class names, index = label.
    fn classes(&self) -> &[String];

    /// Whether images differ from epoch to epoch (random augmentation). When they do not, a
    /// frozen backbone's features can be computed once.
    fn is_random(&self) -> bool;

    /// Dataset indices in the order epoch `epoch` visits them.
    fn order(&self, epoch: u64) -> Vec<usize>;

    /// The batches of epoch `epoch`, each a batch or the error of one of its images.
    fn batches(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<ImageBatch, DataError>> + '_>;
}

impl BatchSource for DataLoader {
    fn num_samples(&self) -> usize {
        DataLoader::num_samples(self)
    }

    fn batch_size(&self) -> usize {
        self.config().batch_size
    }

    fn classes(&self) -> &[String] {
        DataLoader::classes(self)
    }

    fn is_random(&self) -> bool {
        DataLoader::is_random(self)
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        DataLoader::order(self, epoch)
    }

    fn batches(&self, epoch: u64) -> Box<dyn Iterator<Item = Result<ImageBatch, DataError>> + '_> {
        Box::new(self.epoch(epoch))
    }
}

/// Batches held in memory, the same every epoch, visited in the order given: a [`BatchSource`]
/// for images already decoded (generated images, tests, another pipeline's output). `fit` may
/// cache a frozen backbone's features of it, since it is not random.
#[derive(Debug, Clone, Default)]
pub struct MemoryBatches {
    /// The batches; each one's `indices` must number the samples `0..num_samples` in order.
    pub batches: Vec<ImageBatch>,
    /// The class names, index = label.
    pub classes: Vec<String>,
}

impl BatchSource for MemoryBatches {
    fn num_samples(&self) -> usize {
        self.batches.iter().map(ImageBatch::len).sum()
    }
    fn batch_size(&self) -> usize {
        self.batches.first().map_or(1, ImageBatch::len)
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn is_random(&self) -> bool {
        false
    }
    fn order(&self, _epoch: u64) -> Vec<usize> {
        (0..self.num_samples()).collect()
    }
    fn batches(&self, _epoch: u64) -> Box<dyn Iterator<Item = Result<ImageBatch, DataError>> + '_> {
        Box::new(self.batches.iter().cloned().map(Ok))
    }
}

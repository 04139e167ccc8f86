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

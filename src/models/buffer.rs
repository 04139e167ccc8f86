//! A non-trainable tensor a layer updates during its forward pass (BatchNorm's running
//! statistics), with value semantics.
//!
//! burn's `RunningState` shares its storage between clones, so a cloned model (a "best weights"
//! snapshot, or two runs started from one initial model) would keep receiving the live model's
//! updates. A [`Buffer`] clone is a snapshot: tensors are immutable values in burn, so copying
//! the handle is cheap and later updates of either copy never reach the other. Its record is a
//! `Param`, like `RunningState`'s, so saved files look the same.

use crate::kernels::{AutodiffConvBackend, ConvBackend};
use std::sync::{Arc, Mutex, PoisonError};

use burn::module::{
    AutodiffModule, Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper,
    ModuleVisitor, Param, ParamId,
};
use burn::tensor::Tensor;

/// A tensor updated in place by its layer, never by the optimizer.
#[derive(Debug)]
pub(crate) struct Buffer<const D: usize, B: ConvBackend> {
    id: ParamId,
    value: Arc<Mutex<Tensor<B, D>>>,
}

impl<const D: usize, B: ConvBackend> Clone for Buffer<D, B> {
    fn clone(&self) -> Self {
        Self::with_id(self.id, self.value())
    }
}

impl<const D: usize, B: ConvBackend> Buffer<D, B> {
    /// A buffer holding `value`.
    pub fn new(value: Tensor<B, D>) -> Self {
        Self::with_id(ParamId::new(), value)
    }

    fn with_id(id: ParamId, value: Tensor<B, D>) -> Self {
        Self {
            id,
            value: Arc::new(Mutex::new(value)),
        }
    }

    /// The current value.
    pub fn value(&self) -> Tensor<B, D> {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the value (seen by this buffer only, not by earlier clones).
    pub fn update(&self, value: Tensor<B, D>) {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }

    fn param(&self) -> Param<Tensor<B, D>> {
        Param::initialized(self.id, self.value())
    }
}

impl<const D: usize, B: ConvBackend> Module<B> for Buffer<D, B> {
    type Record = Param<Tensor<B, D>>;

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        visitor.visit_float(&self.param())
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        let (id, tensor, _) = mapper.map_float(self.param()).consume();
        Self::with_id(id, tensor)
    }

    fn into_record(self) -> Self::Record {
        self.param()
    }

    fn load_record(self, record: Self::Record) -> Self {
        let device = self.value().device();
        Self::with_id(record.id, record.val().to_device(&device))
    }

    fn to_device(self, device: &B::Device) -> Self {
        Self::with_id(self.id, self.value().to_device(device))
    }

    fn fork(self, device: &B::Device) -> Self {
        self.to_device(device)
    }

    fn collect_devices(&self, mut devices: Devices<B>) -> Devices<B> {
        let device = self.value().device();
        if !devices.contains(&device) {
            devices.push(device);
        }
        devices
    }
}

impl<const D: usize, B: AutodiffConvBackend> AutodiffModule<B> for Buffer<D, B> {
    type InnerModule = Buffer<D, B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        Buffer::with_id(self.id, self.value().inner())
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        Buffer::with_id(module.id, Tensor::from_inner(module.value()))
    }
}

impl<const D: usize, B: ConvBackend> ModuleDisplayDefault for Buffer<D, B> {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_formatted(&format!("Buffer{:?}", self.value().dims()))
            .optional()
    }
}

impl<const D: usize, B: ConvBackend> ModuleDisplay for Buffer<D, B> {}

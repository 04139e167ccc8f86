//! Parameter paths, shapes and counts, in torchvision's terms.
//!
//! The crate's layers store tensors under torchvision's names and layouts (`weight`, `bias`,
//! `running_mean`, `running_var`; Linear weights `[out, in]`), so a burn module path *is* the
//! torchvision state-dict key: `torchvision_key` is the identity on every path this crate
//! produces and exists to document that contract in one place. The one torchvision key burn has
//! no tensor for is BatchNorm's `num_batches_tracked` counter, which no recipe here reads.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// One tensor of a module's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// torchvision state-dict key, e.g. `features.3.conv.1.0.weight`.
    pub key: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Whether it is a buffer (BatchNorm running statistics) rather than a parameter.
    pub buffer: bool,
    /// Whether the optimizer updates it (parameters of an autodiff module that require grad).
    pub trainable: bool,
    /// burn's id of the tensor (what optimizers and gradients key it by).
    pub id: ParamId,
}

/// Maps a burn parameter path of this crate's models to the torchvision state-dict key.
///
/// Identity, by construction of [`crate::models::layers`]: burn's own `nn` layers would need
/// `gamma → weight`, `beta → bias` and a transposed Linear weight here.
pub(crate) fn torchvision_key(burn_path: &str) -> String {
    burn_path.to_string()
}

/// Whether a key names a BatchNorm running statistic (a buffer in PyTorch's terms).
pub(crate) fn is_buffer_key(key: &str) -> bool {
    key.ends_with(".running_mean") || key.ends_with(".running_var")
}

struct Collector {
    path: Vec<String>,
    entries: Vec<StateEntry>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let key = torchvision_key(&self.path.join("."));
        let buffer = is_buffer_key(&key);
        let tensor = param.val();
        let trainable = !buffer && (!B::ad_enabled(&tensor.device()) || tensor.is_require_grad());
        self.entries.push(StateEntry {
            shape: param.shape().to_vec(),
            key,
            buffer,
            trainable,
            id: param.id,
        });
    }
}

/// Every parameter and buffer of `module` with its torchvision key, in declaration order.
///
/// On a backend without autodiff nothing can train, but a parameter is reported trainable
/// unless it is a buffer, as PyTorch reports `requires_grad` of a fresh model.
pub fn state_dict<B: Backend, M: Module<B>>(module: &M) -> Vec<StateEntry> {
    let mut collector = Collector {
        path: Vec::new(),
        entries: Vec::new(),
    };
    module.visit(&mut collector);
    collector.entries
}

/// Parameter counts as PyTorch reports them (buffers excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCount {
    /// All parameters.
    pub total: usize,
    /// Parameters the optimizer updates.
    pub trainable: usize,
}

/// Counts `module`'s parameters (not its BatchNorm buffers), as `sum(p.numel())` in PyTorch.
pub fn param_count<B: Backend, M: Module<B>>(module: &M) -> ParamCount {
    let mut count = ParamCount {
        total: 0,
        trainable: 0,
    };
    for entry in state_dict(module).into_iter().filter(|e| !e.buffer) {
        let n: usize = entry.shape.iter().product();
        count.total += n;
        if entry.trainable {
            count.trainable += n;
        }
    }
    count
}

//! Named host tensors and their transfer into a module, checked key by key and shape by shape.

use burn::tensor::backend::Backend;
use std::collections::{BTreeMap, BTreeSet};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};

use crate::models::state_dict::torchvision_key;

/// A float tensor on the host: row-major data and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` equals the product of `shape`.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and values.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data }
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![value; n],
        }
    }
}

/// Tensors by torchvision state-dict key.
pub type StateMap = BTreeMap<String, HostTensor>;

/// What went wrong when a [`StateMap`] did not fit a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateMismatch {
    /// The module has a tensor the map lacks.
    Missing(String),
    /// The map has a tensor the module lacks.
    Unexpected(String),
    /// Same key, different shapes.
    Shape {
        /// State-dict key.
        key: String,
        /// Shape in the module.
        expected: Vec<usize>,
        /// Shape in the map.
        found: Vec<usize>,
    },
}

impl std::fmt::Display for StateMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(key) => write!(f, "no tensor for parameter '{key}'"),
            Self::Unexpected(key) => write!(f, "tensor '{key}' has no parameter in the model"),
            Self::Shape {
                key,
                expected,
                found,
            } => {
                write!(
                    f,
                    "parameter '{key}' has shape {expected:?} but the file gives {found:?}"
                )
            }
        }
    }
}

struct Loader<'a> {
    path: Vec<String>,
    state: &'a StateMap,
    used: BTreeSet<String>,
    problems: Vec<StateMismatch>,
}

impl<B: Backend> ModuleMapper<B> for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = torchvision_key(&self.path.join("."));
        let Some(host) = self.state.get(&key) else {
            self.problems.push(StateMismatch::Missing(key));
            return param;
        };
        let expected = param.shape().to_vec();
        if host.shape != expected || host.data.len() != expected.iter().product::<usize>() {
            self.problems.push(StateMismatch::Shape {
                key,
                expected,
                found: host.shape.clone(),
            });
            return param;
        }
        self.used.insert(key);
        param.map(|old| {
            let device = old.device();
            let grad = old.is_require_grad();
            let new = Tensor::<B, D>::from_data(
                TensorData::new(host.data.clone(), host.shape.clone()),
                &device,
            );
            if grad { new.require_grad() } else { new }
        })
    }
}

/// Replaces every parameter and buffer of `module` with the tensor of the same key in `state`.
///
/// All keys must match both ways and every shape must agree; otherwise the list of mismatches
/// is returned and the module is dropped (it would be half loaded).
pub fn load_state<B: Backend, M: Module<B>>(
    module: M,
    state: &StateMap,
) -> Result<M, Vec<StateMismatch>> {
    let mut loader = Loader {
        path: Vec::new(),
        state,
        used: BTreeSet::new(),
        problems: Vec::new(),
    };
    let module = module.map(&mut loader);
    let mut problems = loader.problems;
    for key in state.keys() {
        let misshapen = problems
            .iter()
            .any(|p| matches!(p, StateMismatch::Shape { key: k, .. } if k == key));
        if !loader.used.contains(key) && !misshapen {
            problems.push(StateMismatch::Unexpected(key.clone()));
        }
    }
    if problems.is_empty() {
        Ok(module)
    } else {
        Err(problems)
    }
}

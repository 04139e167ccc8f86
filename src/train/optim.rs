//! Optimizers (burn's Adam, AdamW and SGD with PyTorch's defaults) and learning-rate schedules.
//! Adam's update runs through the backend ([`ConvBackend::adam_step`]): one in-place pass per
//! parameter tensor on burn-flex, burn's own `Adam` elsewhere, the same bits and the same
//! records.

use crate::kernels::{AdamCoefficients, AdamOperands, AutodiffConvBackend, ConvBackend};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdamW, AdamWConfig, AdaptiveMomentumState, GradientsParams,
    LearningRate, Optimizer, Sgd, SgdConfig, SimpleOptimizer,
};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use serde::{Deserialize, Serialize};

use super::TrainError;

/// The optimizer algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// Adam (β = 0.9, 0.999, ε = 1e-8 as PyTorch; weight decay as an L2 term in the gradient).
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
    /// SGD with momentum (no dampening, no Nesterov: PyTorch's `SGD(momentum=…)`).
    Sgd {
        /// Momentum factor (0.9 in the PyTorch tutorial).
        momentum: f64,
    },
}

/// Learning-rate schedule over epochs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The same rate every epoch.
    Constant,
    /// Multiply by `gamma` every `step_size` epochs (`StepLR(7, 0.1)` in the tutorial).
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over `epochs` epochs.
    Cosine {
        /// Length of the annealing.
        epochs: usize,
        /// Final rate.
        min_lr: f64,
    },
}

impl Schedule {
    /// The rate for `epoch` (0-based, within the phase) from `base`.
    pub fn rate(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            Schedule::Cosine { epochs, min_lr } => {
                let t = (epoch as f64 / epochs.max(1) as f64).min(1.0);
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Optimizer settings of a training phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Algorithm.
    pub kind: OptimizerKind,
    /// Learning rate of the head (and of the backbone unless `backbone_lr` is set).
    pub lr: f64,
    /// Learning rate of the trainable backbone layers, when it differs from the head's.
    pub backbone_lr: Option<f64>,
    /// Weight decay (L2 for Adam and SGD, decoupled for AdamW).
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
}

impl OptimizerConfig {
    /// Adam at `lr`, no weight decay, constant rate.
    pub fn adam(lr: f64) -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr,
            backbone_lr: None,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
        }
    }

    /// AdamW at `lr` with decoupled weight decay 0.01 (PyTorch's default).
    pub fn adamw(lr: f64) -> Self {
        Self {
            kind: OptimizerKind::AdamW,
            weight_decay: 0.01,
            ..Self::adam(lr)
        }
    }

    /// SGD with `momentum` at `lr`.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        Self {
            kind: OptimizerKind::Sgd { momentum },
            ..Self::adam(lr)
        }
    }

    /// With a learning-rate schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// With a separate backbone learning rate.
    pub fn with_backbone_lr(mut self, lr: f64) -> Self {
        self.backbone_lr = Some(lr);
        self
    }

    /// With weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// `(head, backbone)` learning rates of `epoch` (0-based within the phase).
    pub fn rates(&self, epoch: usize) -> (f64, f64) {
        let head = self.schedule.rate(self.lr, epoch);
        let backbone = self
            .schedule
            .rate(self.backbone_lr.unwrap_or(self.lr), epoch);
        (head, backbone)
    }

    pub(crate) fn init<B: AutodiffConvBackend, M: AutodiffModule<B>>(&self) -> Optim<B, M> {
        let decay =
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        match self.kind {
            OptimizerKind::Adam => Optim::Adam(OptimizerAdaptor::from(BackendAdam::new(
                0.9,
                0.999,
                1e-8,
                self.weight_decay as f32,
            ))),
            OptimizerKind::AdamW => Optim::AdamW(
                AdamWConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(self.weight_decay as f32)
                    .init(),
            ),
            OptimizerKind::Sgd { momentum } => {
                let momentum = (momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0)
                        .with_nesterov(false)
                });
                Optim::Sgd(
                    SgdConfig::new()
                        .with_weight_decay(decay)
                        .with_momentum(momentum)
                        .init(),
                )
            }
        }
    }
}

/// burn's `Adam`, each parameter's step run by the backend where it has its own
/// ([`ConvBackend::adam_step`]: one in-place pass on burn-flex, not ten tensor operations) and by
/// burn's `Adam` elsewhere. The same bits either way, and burn's state (`AdamState`), so its
/// records are burn's `Adam`'s: checkpoints written by burn's `Adam` (this crate before it had
/// its own step) or on another backend load, and the other way round.
#[derive(Clone)]
pub(crate) struct BackendAdam {
    /// burn's, for the backends and states the backend's step does not take.
    adam: Adam,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    penalty: Option<f32>,
}

impl BackendAdam {
    /// Adam with these hyper-parameters; `weight_decay` 0 adds no L2 term.
    fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32) -> Self {
        let penalty = (weight_decay > 0.0).then_some(weight_decay);
        let adam = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(penalty.map(WeightDecayConfig::new))
            .build();
        Self {
            adam,
            beta_1,
            beta_2,
            epsilon,
            penalty,
        }
    }
}

/// The tensor around a float primitive.
fn float_tensor<B: ConvBackend, const D: usize>(
    t: burn::tensor::ops::FloatTensor<B>,
) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// burn's Adam state after `time` steps with these moments.
fn adam_state<B: ConvBackend, const D: usize>(
    time: usize,
    [moment_1, moment_2]: [Tensor<B, D>; 2],
) -> AdamState<B, D> {
    AdamState::new(AdaptiveMomentumState::new(time, moment_1, moment_2))
}

impl<B: ConvBackend> SimpleOptimizer<B> for BackendAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        // AMSGrad's state (never configured here) and quantized tensors: burn's step.
        let (time, moments) = match state {
            None => (0, None),
            Some(state) if state.momentum.max_moment_2.is_none() => {
                let m = state.momentum;
                (m.time, Some([m.moment_1, m.moment_2]))
            }
            state => return self.adam.step(lr, param, grad, state),
        };
        let quantized = |t: &Tensor<B, D>| matches!(t.dtype(), DType::QFloat(_));
        if quantized(&param) || quantized(&grad) || moments.iter().flatten().any(quantized) {
            let state = moments.map(|moments| adam_state(time, moments));
            return self.adam.step(lr, param, grad, state);
        }
        let primitive = |t: Tensor<B, D>| t.into_primitive().tensor();
        let operands = AdamOperands {
            param: primitive(param),
            grad: primitive(grad),
            moments: moments.map(|moments| moments.map(primitive)),
        };
        let coefficients = AdamCoefficients::new(
            self.beta_1,
            self.beta_2,
            self.epsilon,
            self.penalty,
            lr,
            time + 1,
        );
        match B::adam_step(operands, &coefficients) {
            Ok([param, m1, m2]) => {
                let state = adam_state(time + 1, [float_tensor(m1), float_tensor(m2)]);
                (float_tensor(param), Some(state))
            }
            Err(AdamOperands {
                param,
                grad,
                moments,
            }) => {
                let state = moments.map(|moments| adam_state(time, moments.map(float_tensor)));
                self.adam
                    .step(lr, float_tensor(param), float_tensor(grad), state)
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <Adam as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// One of burn's optimizers behind a single type.
pub(crate) enum Optim<B: AutodiffConvBackend, M: AutodiffModule<B>> {
    Adam(OptimizerAdaptor<BackendAdam, M, B>),
    AdamW(OptimizerAdaptor<AdamW, M, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::default()
}

impl<B: AutodiffConvBackend, M: AutodiffModule<B>> Optim<B, M> {
    pub(crate) fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Optim::Adam(o) => o.step(lr, model, grads),
            Optim::AdamW(o) => o.step(lr, model, grads),
            Optim::Sgd(o) => o.step(lr, model, grads),
        }
    }

    /// The optimizer state (moments, step counts) as bytes, for checkpoints.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let r = recorder();
        let bytes = match self {
            Optim::Adam(o) => Recorder::<B>::record(&r, o.to_record(), ()),
            Optim::AdamW(o) => Recorder::<B>::record(&r, o.to_record(), ()),
            Optim::Sgd(o) => Recorder::<B>::record(&r, o.to_record(), ()),
        };
        bytes.map_err(|e| TrainError::Checkpoint(format!("cannot encode optimizer state: {e}")))
    }

    /// Restores the state saved by [`Optim::to_bytes`].
    pub(crate) fn load_bytes(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self, TrainError> {
        let r = recorder();
        let err = |e: burn::record::RecorderError| {
            TrainError::Checkpoint(format!("optimizer state does not match: {e}"))
        };
        Ok(match self {
            Optim::Adam(o) => {
                Optim::Adam(o.load_record(Recorder::<B>::load(&r, bytes, device).map_err(err)?))
            }
            Optim::AdamW(o) => {
                Optim::AdamW(o.load_record(Recorder::<B>::load(&r, bytes, device).map_err(err)?))
            }
            Optim::Sgd(o) => {
                Optim::Sgd(o.load_record(Recorder::<B>::load(&r, bytes, device).map_err(err)?))
            }
        })
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Distribution;

    type B = Autodiff<Flex>;

    fn bits(model: &Linear<B>) -> Vec<u32> {
        let weight = model.weight.val().into_data().to_vec::<f32>().unwrap();
        let bias = model.bias.as_ref().unwrap().val().into_data();
        let bias = bias.to_vec::<f32>().unwrap();
        weight.iter().chain(&bias).map(|v| v.to_bits()).collect()
    }

    fn grads(model: &Linear<B>, x: Tensor<B, 2>) -> GradientsParams {
        let loss = model.forward(x).powi_scalar(2).mean();
        GradientsParams::from_grads(loss.backward(), model)
    }

    /// The backend's step (burn-flex's in-place pass) gives burn's `Adam`'s bits, step after
    /// step, with and without weight decay, on parameters shared with another model (copied,
    /// not overwritten) and on its own; and its records are burn's: either loads the other's.
    #[test]
    fn backend_adam_steps_are_burns_adam_bit_for_bit_and_share_its_records() {
        let device = Default::default();
        for weight_decay in [0.0, 0.01] {
            // 210,700 parameters: several of the kernel's parallel chunks.
            let model = LinearConfig::new(300, 700).init::<B>(&device);
            // Reading the parameters initialises them (lazily drawn; clones of an uninitialised
            // parameter would each draw their own).
            let initial = bits(&model);
            let config = OptimizerConfig::adam(1e-3).with_weight_decay(weight_decay);
            let mut ours: Optim<B, Linear<B>> = config.init();
            let decay = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
            let burns = || {
                AdamConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(decay.clone())
                    .init::<B, Linear<B>>()
            };
            let mut theirs = burns();
            let (mut a, mut b) = (model.clone(), model.clone());
            for step in 0..4 {
                if step == 2 {
                    // Swap states through bytes: ours into burn's and burn's into ours.
                    let ours_bytes = ours.to_bytes().unwrap();
                    let theirs_bytes =
                        Recorder::<B>::record(&recorder(), theirs.to_record(), ()).unwrap();
                    ours = config.init().load_bytes(theirs_bytes, &device).unwrap();
                    let record = Recorder::<B>::load(&recorder(), ours_bytes, &device).unwrap();
                    theirs = burns().load_record(record);
                }
                let x = Tensor::<B, 2>::random([8, 300], Distribution::Default, &device);
                a = ours.step(1e-3, a.clone(), grads(&a, x.clone()));
                b = theirs.step(1e-3, b.clone(), grads(&b, x));
                let (ours, theirs) = (bits(&a), bits(&b));
                let differ = ours.iter().zip(&theirs).position(|(x, y)| x != y);
                assert_eq!(
                    differ.map(|i| (i, f32::from_bits(ours[i]), f32::from_bits(theirs[i]))),
                    None,
                    "decay {weight_decay}, step {step}: first element that differs"
                );
            }
            assert_ne!(bits(&a), initial, "the parameters moved");
            assert_eq!(
                bits(&model),
                initial,
                "the shared parameters were not overwritten"
            );
        }
    }

    /// burn-flex runs the step itself (the test above would pass on burn's fallback too).
    #[test]
    fn flex_runs_adams_step_itself() {
        let device = Default::default();
        let t = || {
            Tensor::<Flex, 1>::random([1000], Distribution::Default, &device)
                .into_primitive()
                .tensor()
        };
        let c = AdamCoefficients::new(0.9, 0.999, 1e-8, None, 1e-3, 2);
        let operands = AdamOperands {
            param: t(),
            grad: t(),
            moments: Some([t(), t()]),
        };
        assert!(<Flex as ConvBackend>::adam_step(operands, &c).is_ok());
    }
}

//! Optimizers (burn's Adam, AdamW and SGD with PyTorch's defaults) and learning-rate schedules.

use crate::kernels::AutodiffConvBackend;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig,
};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
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
            OptimizerKind::Adam => Optim::Adam(
                AdamConfig::new()
                    .with_epsilon(1e-8)
                    .with_weight_decay(decay)
                    .init(),
            ),
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

/// One of burn's optimizers behind a single type.
pub(crate) enum Optim<B: AutodiffConvBackend, M: AutodiffModule<B>> {
    Adam(OptimizerAdaptor<Adam, M, B>),
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

//! [`ConvBackend`] for burn's autodiff backend: the forward convolution of the inner backend,
//! recorded with a backward step that calls the inner backend's input and weight gradients; the
//! same for SiLU, Hardtanh, Hardswish, the channel scale, the training BatchNorm and max pooling.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::{ConvOptions, FloatTensor};

use super::{ConvActivation, ConvBackend};

/// The backward step of an element-wise activation whose gradient needs its input (SiLU;
/// Hardswish, whose output does not tell `x` apart, as it is not monotonic between −3 and
/// −1.5): parent `[x]`, state the checkpointed `x`, and the gradient to call.
#[derive(Debug)]
struct ActivationBackward<B: ConvBackend> {
    grad: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: ConvBackend> Backward<B, 1> for ActivationBackward<B> {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(ops.state);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, (self.grad)(x, grad));
        }
    }
}

/// `forward(x)` on the inner backend, recorded with [`ActivationBackward`] calling `grad`.
fn recorded_activation<B: ConvBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    grad: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let step = ActivationBackward { grad };
    match step
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = prep.checkpoint(&x);
            prep.finish(state, forward(x.primitive))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

/// The backward step of a channel scale: parents `[x, scale]`, state both checkpointed. The
/// input's gradient is the output gradient scaled the same way; the scale's, one sum per
/// channel, computed only where the scale is tracked.
#[derive(Debug)]
struct ChannelScaleBackward;

impl<B: ConvBackend> Backward<B, 2> for ChannelScaleBackward {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, scale_state) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let scale = checkpointer.retrieve_node_output::<FloatTensor<B>>(scale_state);
        if let Some(node) = node_scale {
            grads.register::<B>(node.id, B::channel_scale_grad(x, grad.clone()));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::channel_scale(grad, scale));
        }
    }
}

/// The backward step of Hardtanh: parent `[x]`, state the output `y` and the bounds. The
/// gradient's mask reads `y` rather than `x` (`min < y < max` exactly where `min < x < max`,
/// NaN included, which clamps to `min`): `y` is the next layer's input and kept anyway, where
/// keeping `x` held one more activation per layer (MobileNetV2's full step at batch 32 peaked
/// at 2,474 MiB that way, 2,114 MiB before the kernel).
#[derive(Debug)]
struct HardtanhBackward;

impl<B: ConvBackend> Backward<B, 1> for HardtanhBackward {
    type State = (FloatTensor<B>, f32, f32);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (y, min, max) = ops.state;
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::hardtanh_grad(y, grad, min, max));
        }
    }
}

/// The backward step of max pooling: parent `[x]`, state the checkpointed `x` and the window
/// (the maxima are found again from `x`, so no indices are kept).
#[derive(Debug)]
struct MaxPoolBackward;

impl<B: ConvBackend> Backward<B, 1> for MaxPoolBackward {
    type State = (NodeId, [usize; 2], [usize; 2], [usize; 2]);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, kernel, stride, padding) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        if let Some(node) = node_x {
            let dx = B::max_pool2d_input_grad(x, grad, kernel, stride, padding);
            grads.register::<B>(node.id, dx);
        }
    }
}

/// The backward step of a training BatchNorm: parents `[x, gamma, beta]`; state the
/// checkpointed `x` and `gamma`, the batch's mean and variance, ε.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: ConvBackend> Backward<B, 3> for BatchNormBackward {
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, mean, var, epsilon) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        // One kernel gives all three (they share the per-channel sums).
        let (dx, dgamma, dbeta) = B::batch_norm_train_grad(x, gamma, mean, var, epsilon, grad);
        for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// The backward step of a convolution without bias: parents `[x, weight]`.
#[derive(Debug)]
struct Conv2dBackward;

/// The backward step of a convolution with bias: parents `[x, weight, bias]`.
#[derive(Debug)]
struct Conv2dBiasBackward;

impl<B: ConvBackend> Backward<B, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        // An untracked input (the stem's image, a frozen prefix's features) needs no gradient:
        // skipping it saves the most expensive half of that layer's backward pass.
        if let Some(node) = node_x {
            let dx = B::conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_weight_grad(x, weight, grad, options));
        }
    }
}

impl<B: ConvBackend> Backward<B, 3> for Conv2dBiasBackward {
    type State = (NodeId, NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, bias_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        let bias = checkpointer.retrieve_node_output::<FloatTensor<B>>(bias_state);
        if let Some(node) = node_x {
            let dx = B::conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let dw = B::conv2d_weight_grad(x.clone(), weight, grad.clone(), options);
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::conv2d_bias_backward(x, bias, grad));
        }
    }
}

impl<B: ConvBackend, C: CheckpointStrategy> ConvBackend for Autodiff<B, C> {
    const MATMUL_NEEDS_PADDING: bool = B::MATMUL_NEEDS_PADDING;
    const POINTWISE_AS_MATMUL_IN_TRAINING: bool = B::POINTWISE_AS_MATMUL_IN_TRAINING;

    fn max_buffer_bytes(device: &Self::Device) -> Option<u64> {
        B::max_buffer_bytes(device)
    }

    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match bias {
            None => match Conv2dBackward
                .prepare::<C>([x.node.clone(), weight.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    let y = B::conv2d_forward(x.primitive, weight.primitive, None, options.clone());
                    prep.finish((x_state, weight_state, options), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::conv2d_forward(
                    x.primitive,
                    weight.primitive,
                    None,
                    options,
                )),
            },
            Some(bias) => match Conv2dBiasBackward
                .prepare::<C>([x.node.clone(), weight.node.clone(), bias.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let x_state = prep.checkpoint(&x);
                    let weight_state = prep.checkpoint(&weight);
                    let bias_state = prep.checkpoint(&bias);
                    let y = B::conv2d_forward(
                        x.primitive,
                        weight.primitive,
                        Some(bias.primitive),
                        options.clone(),
                    );
                    prep.finish((x_state, weight_state, bias_state, options), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::conv2d_forward(
                    x.primitive,
                    weight.primitive,
                    Some(bias.primitive),
                    options,
                )),
            },
        }
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        recorded_activation::<B, C>(x, B::silu, B::silu_grad)
    }

    fn conv2d_activated(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
        activation: ConvActivation,
    ) -> FloatTensor<Self> {
        let tracked = [Some(&x), Some(&weight), bias.as_ref()]
            .into_iter()
            .flatten()
            .any(|t| !t.node.requirement.is_none());
        if tracked {
            return activation.apply::<Self>(Self::conv2d_forward(x, weight, bias, options));
        }
        // Nothing to record (a frozen prefix, inference on an autodiff backend): the inner
        // backend's fused operation, as an untracked result.
        let y = B::conv2d_activated(
            x.primitive,
            weight.primitive,
            bias.map(|b| b.primitive),
            options,
            activation,
        );
        Self::from_inner(y)
    }

    fn hardswish(x: FloatTensor<Self>) -> FloatTensor<Self> {
        recorded_activation::<B, C>(x, B::hardswish, B::hardswish_grad)
    }

    fn channel_scale(x: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self> {
        match ChannelScaleBackward
            .prepare::<C>([x.node.clone(), scale.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let scale_state = prep.checkpoint(&scale);
                let y = B::channel_scale(x.primitive, scale.primitive);
                prep.finish((x_state, scale_state), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::channel_scale(x.primitive, scale.primitive)),
        }
    }

    fn hardtanh(x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        match HardtanhBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // The clone keeps the inner backend from clamping `x` in place (it does when it
                // holds the only reference, as at inference): measured on burn-flex, a step that
                // records this reused the buffers differently, and the allocator then mapped
                // fresh pages for them (page faults 11 % of a MobileNetV2 full step, +35 %).
                let y = B::hardtanh(x.primitive.clone(), min, max);
                prep.finish((y.clone(), min, max), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::hardtanh(x.primitive, min, max)),
        }
    }

    fn max_pool2d_forward(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                let y = B::max_pool2d_forward(x.primitive, kernel, stride, padding);
                prep.finish((state, kernel, stride, padding), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::max_pool2d_forward(x.primitive, kernel, stride, padding))
            }
        }
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let parents = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
        match BatchNormBackward
            .prepare::<C>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let (y, mean, var) =
                    B::batch_norm_train(x.primitive, gamma.primitive, beta.primitive, epsilon);
                let state = (x_state, gamma_state, mean.clone(), var.clone(), epsilon);
                (
                    prep.finish(state, y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var) =
                    B::batch_norm_train(x.primitive, gamma.primitive, beta.primitive, epsilon);
                (
                    prep.finish(y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                )
            }
        }
    }

    // Gradients of gradients are not needed by anything the crate trains: the generic
    // implementations (burn's autodiff of a transposed convolution) serve if one ever is.
}

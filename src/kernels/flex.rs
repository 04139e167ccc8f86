//! [`ConvBackend`] for burn-flex: `f32` convolutions run the crate's kernels ([`super::cpu`]),
//! anything else (other dtypes, dilation) falls back to burn-flex's own, as does everything when
//! the environment variable `TRANSFER_VISION_KERNELS=burn` is set (read once per process: to
//! measure both in one binary, or to rule the kernels out when chasing a numerical question).
//! Outputs of the kernels are plain tensors, or, with `TRANSFER_VISION_KEEP_BUFFERS_MIB` set,
//! tensors whose buffer goes back to [`cpu::buffers`] when dropped.

use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::tensor::ops::{ConvOptions, FloatTensor, FloatTensorOps, ModuleOps};
use burn::tensor::{AllocationProperty, Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use burn_std::AllocationController;

use super::cpu::{self, ConvGeometry, SimdLevel};
use super::{
    AdamCoefficients, AdamOperands, ConvActivation, ConvBackend, batch_norm_train_grad_with_ops,
    batch_norm_train_with_ops, channel_scale_grad_with_ops, channel_scale_with_ops,
    hardswish_grad_with_ops, hardswish_with_ops, hardtanh_grad_with_ops,
    max_pool2d_input_grad_with_ops, silu_grad_with_ops, silu_with_ops,
};

/// The tensor's dims as `[usize; 4]`, if it has four.
fn dims4(t: &FlexTensor) -> Option<[usize; 4]> {
    t.layout().shape().as_slice().try_into().ok()
}

/// How long a worker that [`stay_awake`] keeps may find no work before it leaves; longer than
/// the serial stretches between a pass's parallel loops, short enough to bound what a kept
/// worker nested under another job can hold up.
const MAX_IDLE: Duration = Duration::from_micros(500);

/// Keeps this worker taking the pool's jobs, spinning between them, until `finished` is set or
/// it has found no work for [`MAX_IDLE`]. Why: at batch 1 a pass is a chain of short parallel
/// loops with short serial stretches between them; an idle rayon worker parks after a few
/// rounds and must be woken for the next loop. Kept awake, batch-1 passes of MobileNetV2 and
/// ResNet18 took 1–12 % less time on two cores, batch 16 the same within noise (onnxruntime's
/// and OpenMP's pools spin between operations too; on cores with two hardware threads a
/// spinning sibling may slow the pass's serial stretches, not measured here). On the pass's
/// own thread (which can pick this job up while waiting in a `join`) it returns at once: it
/// would sit on the pass's frame.
fn stay_awake(finished: &AtomicBool, pass_thread: Option<usize>) {
    if rayon::current_thread_index() == pass_thread {
        return;
    }
    let mut idle_since: Option<Instant> = None;
    while !finished.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = None,
            _ => {
                if idle_since.get_or_insert_with(Instant::now).elapsed() > MAX_IDLE {
                    return;
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// Sets its flag when dropped, so kept workers leave even when the pass unwinds.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Whether `TRANSFER_VISION_KERNELS=burn` asks for burn-flex's own convolutions.
fn burn_kernels_asked() -> bool {
    static ASKED: OnceLock<bool> = OnceLock::new();
    *ASKED.get_or_init(|| {
        std::env::var("TRANSFER_VISION_KERNELS")
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("burn"))
    })
}

/// The geometry of this call, when `x` and `weight` are 4-D, every operand is `f32` and the
/// kernels cover the options.
fn geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    others: &[Option<&FlexTensor>],
    options: &ConvOptions<2>,
) -> Option<ConvGeometry> {
    let operands: Vec<&FlexTensor> = [Some(x), Some(weight)]
        .into_iter()
        .chain(others.iter().copied())
        .flatten()
        .collect();
    if !elementwise_f32(&operands) {
        return None;
    }
    ConvGeometry::new(dims4(x)?, dims4(weight)?, options)
}

/// A contiguous, offset-free copy (or the tensor itself when it already is one), whose
/// `storage` is exactly its elements.
fn dense(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn from_vec(values: Vec<f32>, dims: [usize; 4]) -> FlexTensor {
    from_vec_shaped(values, Shape::new(dims))
}

/// A contiguous `f32` tensor of `values`; a large one given back to [`cpu::buffers`] when
/// dropped, when buffers are kept (see there).
fn from_vec_shaped(values: Vec<f32>, shape: Shape) -> FlexTensor {
    let bytes = if cpu::buffers::keeps(values.len()) {
        let len = size_of_val(values.as_slice());
        // SAFETY: `len` is the byte length of `values`, every one of its elements initialized.
        unsafe { Bytes::from_controller(Box::new(Recycled(values)), len) }
    } else {
        Bytes::from_elems(values)
    };
    FlexTensor::new(bytes, Layout::contiguous(shape), DType::F32)
}

/// A kernel's output buffer inside a tensor: given back to [`cpu::buffers`] when the last tensor
/// holding it is dropped, for the next output of its length.
struct Recycled(Vec<f32>);

impl AllocationController for Recycled {
    fn alloc_align(&self) -> usize {
        align_of::<f32>()
    }

    fn property(&self) -> AllocationProperty {
        AllocationProperty::Other
    }

    fn memory(&self) -> &[MaybeUninit<u8>] {
        let bytes = size_of_val(self.0.as_slice());
        // SAFETY: the vector's elements are `bytes` initialized bytes at its pointer, borrowed
        // for as long as `self` is.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), bytes) }
    }

    unsafe fn memory_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        let bytes = size_of_val(self.0.as_slice());
        // SAFETY: as in `memory`, borrowed mutably; the caller writes only initialized bytes
        // (the trait's contract), and any bit pattern is a valid `f32`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), bytes) }
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        cpu::buffers::recycle(std::mem::take(&mut self.0));
    }
}

/// `[N, C, H·W]` of a BatchNorm's `x` `[N, C, H, W]` when the kernels take it: every operand
/// `f32` and each per-channel one `[C]`.
fn batch_norm_sizes(x: &FlexTensor, per_channel: &[&FlexTensor]) -> Option<[usize; 3]> {
    let [n, c, h, w] = dims4(x)?;
    let operands: Vec<&FlexTensor> = std::iter::once(x)
        .chain(per_channel.iter().copied())
        .collect();
    let channels_ok = per_channel
        .iter()
        .all(|t| t.layout().shape().as_slice() == [c]);
    (elementwise_f32(&operands) && channels_ok).then_some([n, c, h * w])
}

/// The plane size `H·W` of a channel scale's `x` `[N, C, H, W]` when the kernels take it:
/// both operands `f32` and `scale` `[N, C]`.
fn channel_scale_plane(x: &FlexTensor, scale: &FlexTensor) -> Option<usize> {
    let [n, c, h, w] = dims4(x)?;
    (elementwise_f32(&[x, scale]) && scale.layout().shape().as_slice() == [n, c]).then_some(h * w)
}

/// The pooling geometry of `x` `[N, C, H, W]` when the kernels take it (every operand `f32`).
fn pool_geometry(
    x: &FlexTensor,
    others: &[&FlexTensor],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<cpu::pool::PoolGeometry> {
    let operands: Vec<&FlexTensor> = std::iter::once(x).chain(others.iter().copied()).collect();
    if !elementwise_f32(&operands) {
        return None;
    }
    cpu::pool::PoolGeometry::new(dims4(x)?, kernel, stride, padding)
}

/// `[N, C, oH, oW]`: the pooled shape of `x` `[N, C, H, W]`.
fn pooled_dims(x: &FlexTensor, g: &cpu::pool::PoolGeometry) -> [usize; 4] {
    let shape = x.layout().shape();
    [shape[0], shape[1], g.oh, g.ow]
}

/// The elements of a contiguous `f32` tensor that owns its storage alone (a layer's fresh
/// output), to overwrite in place: no other tensor shares them, so none sees the change.
fn owned_elements(t: &mut FlexTensor) -> Option<&mut [f32]> {
    let (start, end) = t.layout().contiguous_offsets()?;
    if t.dtype() != DType::F32 {
        return None;
    }
    t.try_storage_mut::<f32>()?.get_mut(start..end)
}

/// `t` itself when it owns its contiguous `f32` elements alone, else a copy that does: a
/// tensor to overwrite in place.
fn into_owned(mut t: FlexTensor) -> FlexTensor {
    if owned_elements(&mut t).is_some() {
        return t;
    }
    let dense = dense(&t);
    from_vec_shaped(
        dense.storage::<f32>().to_vec(),
        dense.layout().shape().clone(),
    )
}

/// Whether the crate's kernels take these operands (all `f32`, not switched off).
fn elementwise_f32(operands: &[&FlexTensor]) -> bool {
    !burn_kernels_asked() && operands.iter().all(|t| t.dtype() == DType::F32)
}

/// The forward convolution, with `activation` applied as the output is written: the crate's
/// kernels where they cover the call, else burn-flex's convolution and then the activation.
fn conv2d_with(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
    activation: Option<ConvActivation>,
) -> FlexTensor {
    let Some(g) = geometry(&x, &weight, &[bias.as_ref()], &options) else {
        let y = <Flex as ModuleOps<Flex>>::conv2d(x, weight, bias, options);
        return match activation {
            Some(activation) => activation.apply::<Flex>(y),
            None => y,
        };
    };
    let (x, weight, bias) = (dense(&x), dense(&weight), bias.as_ref().map(dense));
    let y = cpu::conv2d_activated(
        &g,
        x.storage::<f32>(),
        weight.storage::<f32>(),
        bias.as_ref().map(|b| b.storage::<f32>()),
        activation,
        SimdLevel::current(),
    );
    from_vec(y, [g.n, g.c_out, g.oh, g.ow])
}

impl ConvBackend for Flex {
    const POINTWISE_AS_MATMUL_IN_TRAINING: bool = false;

    fn on_kernel_threads<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
        // Before the pool's threads may first start: glibc attaches each thread to a heap of
        // its own on its first allocation unless the setting is already made.
        cpu::buffers::reuse_freed_memory_if_asked();
        if rayon::current_thread_index().is_some() {
            // Already on a worker (a nested pass, or one inside the caller's own parallel
            // loop): the kernels' loops split from here.
            return pass();
        }
        // `scope` runs `pass` on a worker of the global pool, so the kernels' parallel loops
        // inside it split as `join`s among the workers, and the other workers stay awake
        // between them (see `stay_awake`).
        let finished = AtomicBool::new(false);
        rayon::scope(|scope| {
            let pass_thread = rayon::current_thread_index();
            for _ in 1..rayon::current_num_threads() {
                let finished = &finished;
                scope.spawn(move |_| stay_awake(finished, pass_thread));
            }
            let _finish = SetOnDrop(&finished);
            pass()
        })
    }

    fn adam_step(
        operands: AdamOperands<Self>,
        coefficients: &AdamCoefficients,
    ) -> Result<[FloatTensor<Self>; 3], AdamOperands<Self>> {
        let shape = operands.param.layout().shape().clone();
        let mut tensors = vec![&operands.param, &operands.grad];
        tensors.extend(operands.moments.iter().flatten());
        if !elementwise_f32(&tensors) || tensors.iter().any(|t| *t.layout().shape() != shape) {
            return Err(operands);
        }
        let AdamOperands {
            param,
            grad,
            moments,
        } = operands;
        let mut param = into_owned(param);
        let grad = dense(&grad);
        let values = owned_elements(&mut param).expect("into_owned gives an owned tensor");
        let grad = grad.storage::<f32>();
        let [moment_1, moment_2] = match moments {
            Some([moment_1, moment_2]) => {
                let (mut moment_1, mut moment_2) = (into_owned(moment_1), into_owned(moment_2));
                cpu::adam::step_in_place(
                    values,
                    grad,
                    owned_elements(&mut moment_1).expect("into_owned gives an owned tensor"),
                    owned_elements(&mut moment_2).expect("into_owned gives an owned tensor"),
                    coefficients,
                );
                [moment_1, moment_2]
            }
            None => {
                let (moment_1, moment_2) =
                    cpu::adam::first_step_in_place(values, grad, coefficients);
                [
                    from_vec_shaped(moment_1, shape.clone()),
                    from_vec_shaped(moment_2, shape),
                ]
            }
        };
        Ok([param, moment_1, moment_2])
    }

    fn conv2d_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        conv2d_with(x, weight, bias, options, None)
    }

    fn conv2d_activated(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
        activation: ConvActivation,
    ) -> FloatTensor<Self> {
        conv2d_with(x, weight, bias, options, Some(activation))
    }

    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let Some(g) = geometry(&x, &weight, &[Some(&output_grad)], &options) else {
            return <Self as ModuleOps<Self>>::conv2d_x_backward(x, weight, output_grad, options);
        };
        let (weight, dy) = (dense(&weight), dense(&output_grad));
        let (weight, dy) = (weight.storage::<f32>(), dy.storage::<f32>());
        let dx = cpu::conv2d_input_grad(&g, weight, dy, SimdLevel::current());
        from_vec(dx, [g.n, g.c_in, g.h, g.w])
    }

    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let Some(g) = geometry(&x, &weight, &[Some(&output_grad)], &options) else {
            return <Self as ModuleOps<Self>>::conv2d_weight_backward(
                x,
                weight,
                output_grad,
                options,
            );
        };
        let (x, dy) = (dense(&x), dense(&output_grad));
        let dw = cpu::conv2d_weight_grad(
            &g,
            x.storage::<f32>(),
            dy.storage::<f32>(),
            SimdLevel::current(),
        );
        from_vec(dw, [g.c_out, g.c_in / g.groups, g.kh, g.kw])
    }

    fn hardtanh(mut x: FloatTensor<Self>, min: f32, max: f32) -> FloatTensor<Self> {
        if !elementwise_f32(&[&x]) {
            return <Self as FloatTensorOps<Self>>::float_clamp(x, min.into(), max.into());
        }
        if let Some(values) = owned_elements(&mut x) {
            cpu::activation::hardtanh_in_place(values, min, max, SimdLevel::current());
            return x;
        }
        let x = dense(&x);
        let y = cpu::activation::hardtanh(x.storage::<f32>(), min, max, SimdLevel::current());
        from_vec_shaped(y, x.layout().shape().clone())
    }

    fn hardtanh_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        min: f32,
        max: f32,
    ) -> FloatTensor<Self> {
        if !elementwise_f32(&[&x, &output_grad])
            || x.layout().shape() != output_grad.layout().shape()
        {
            return hardtanh_grad_with_ops::<Self>(x, output_grad, min, max);
        }
        let (x, dy) = (dense(&x), dense(&output_grad));
        let dx = cpu::activation::hardtanh_grad(
            x.storage::<f32>(),
            dy.storage::<f32>(),
            min,
            max,
            SimdLevel::current(),
        );
        from_vec_shaped(dx, x.layout().shape().clone())
    }

    fn max_pool2d_forward(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let Some(g) = pool_geometry(&x, &[], kernel, stride, padding) else {
            return <Self as ModuleOps<Self>>::max_pool2d(
                x,
                kernel,
                stride,
                padding,
                [1, 1],
                false,
            );
        };
        let x = dense(&x);
        let y = cpu::pool::max_pool2d(&g, x.storage::<f32>(), SimdLevel::current());
        from_vec(y, pooled_dims(&x, &g))
    }

    fn max_pool2d_input_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> FloatTensor<Self> {
        let Some(g) = pool_geometry(&x, &[&output_grad], kernel, stride, padding)
            .filter(|g| dims4(&output_grad).is_some_and(|d| d == pooled_dims(&x, g)))
        else {
            return max_pool2d_input_grad_with_ops::<Self>(x, output_grad, kernel, stride, padding);
        };
        let (x, dy) = (dense(&x), dense(&output_grad));
        let dx = cpu::pool::max_pool2d_grad(
            &g,
            x.storage::<f32>(),
            dy.storage::<f32>(),
            SimdLevel::current(),
        );
        from_vec_shaped(dx, x.layout().shape().clone())
    }

    fn batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let Some(sizes) = batch_norm_sizes(&x, &[&gamma, &beta]) else {
            return batch_norm_train_with_ops::<Self>(x, gamma, beta, epsilon);
        };
        let (x, gamma, beta) = (dense(&x), dense(&gamma), dense(&beta));
        let out = cpu::batch_norm::batch_norm_train(
            x.storage::<f32>(),
            gamma.storage::<f32>(),
            beta.storage::<f32>(),
            sizes,
            epsilon,
            SimdLevel::current(),
        );
        let channels = Shape::new([sizes[1]]);
        (
            from_vec_shaped(out.y, x.layout().shape().clone()),
            from_vec_shaped(out.mean, channels.clone()),
            from_vec_shaped(out.var, channels),
        )
    }

    fn batch_norm_train_grad(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let sizes = batch_norm_sizes(&x, &[&gamma, &mean, &var])
            .filter(|_| output_grad.layout().shape() == x.layout().shape())
            .filter(|_| elementwise_f32(&[&output_grad]));
        let Some(sizes) = sizes else {
            return batch_norm_train_grad_with_ops::<Self>(
                x,
                gamma,
                mean,
                var,
                epsilon,
                output_grad,
            );
        };
        let (x, gamma, dy) = (dense(&x), dense(&gamma), dense(&output_grad));
        let (mean, var) = (dense(&mean), dense(&var));
        let grads = cpu::batch_norm::batch_norm_train_grad(
            x.storage::<f32>(),
            gamma.storage::<f32>(),
            mean.storage::<f32>(),
            var.storage::<f32>(),
            dy.storage::<f32>(),
            sizes,
            epsilon,
            SimdLevel::current(),
        );
        let channels = Shape::new([sizes[1]]);
        (
            from_vec_shaped(grads.dx, x.layout().shape().clone()),
            from_vec_shaped(grads.dgamma, channels.clone()),
            from_vec_shaped(grads.dbeta, channels),
        )
    }

    fn hardswish(mut x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !elementwise_f32(&[&x]) {
            return hardswish_with_ops::<Self>(x);
        }
        if let Some(values) = owned_elements(&mut x) {
            cpu::activation::hardswish_in_place(values, SimdLevel::current());
            return x;
        }
        let x = dense(&x);
        let y = cpu::activation::hardswish(x.storage::<f32>(), SimdLevel::current());
        from_vec_shaped(y, x.layout().shape().clone())
    }

    fn hardswish_grad(x: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !elementwise_f32(&[&x, &output_grad])
            || x.layout().shape() != output_grad.layout().shape()
        {
            return hardswish_grad_with_ops::<Self>(x, output_grad);
        }
        let (x, dy) = (dense(&x), dense(&output_grad));
        let dx = cpu::activation::hardswish_grad(
            x.storage::<f32>(),
            dy.storage::<f32>(),
            SimdLevel::current(),
        );
        from_vec_shaped(dx, x.layout().shape().clone())
    }

    fn channel_scale(mut x: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self> {
        let Some(plane) = channel_scale_plane(&x, &scale) else {
            return channel_scale_with_ops::<Self>(x, scale);
        };
        let scale = dense(&scale);
        if let Some(values) = owned_elements(&mut x) {
            let scale = scale.storage::<f32>();
            cpu::channel_scale::channel_scale_in_place(values, scale, plane, SimdLevel::current());
            return x;
        }
        let x = dense(&x);
        let y = cpu::channel_scale::channel_scale(
            x.storage::<f32>(),
            scale.storage::<f32>(),
            plane,
            SimdLevel::current(),
        );
        from_vec_shaped(y, x.layout().shape().clone())
    }

    fn channel_scale_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let plane = dims4(&x)
            .filter(|_| elementwise_f32(&[&x, &output_grad]))
            .filter(|_| x.layout().shape() == output_grad.layout().shape());
        let Some([n, c, h, w]) = plane else {
            return channel_scale_grad_with_ops::<Self>(x, output_grad);
        };
        let (x, dy) = (dense(&x), dense(&output_grad));
        let ds = cpu::channel_scale::channel_scale_grad(
            x.storage::<f32>(),
            dy.storage::<f32>(),
            h * w,
            SimdLevel::current(),
        );
        from_vec_shaped(ds, Shape::new([n, c]))
    }

    fn silu(mut x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !elementwise_f32(&[&x]) {
            return silu_with_ops::<Self>(x);
        }
        if let Some(values) = owned_elements(&mut x) {
            cpu::activation::silu_in_place(values, SimdLevel::current());
            return x;
        }
        let x = dense(&x);
        let y = cpu::activation::silu(x.storage::<f32>(), SimdLevel::current());
        from_vec_shaped(y, x.layout().shape().clone())
    }

    fn silu_grad(x: FloatTensor<Self>, output_grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !elementwise_f32(&[&x, &output_grad])
            || x.layout().shape() != output_grad.layout().shape()
        {
            return silu_grad_with_ops::<Self>(x, output_grad);
        }
        let (x, dy) = (dense(&x), dense(&output_grad));
        let dx = cpu::activation::silu_grad(
            x.storage::<f32>(),
            dy.storage::<f32>(),
            SimdLevel::current(),
        );
        from_vec_shaped(dx, x.layout().shape().clone())
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use rayon::prelude::*;

    use crate::kernels::ConvBackend;

    #[test]
    fn a_pass_returns_its_value_with_its_parallel_loops_done() {
        for _ in 0..50 {
            let sum: u64 = Flex::on_kernel_threads(|| (0..100_000u64).into_par_iter().sum());
            assert_eq!(sum, 4_999_950_000);
        }
    }

    #[test]
    fn a_pass_that_panics_unwinds_to_its_caller_and_the_pool_goes_on() {
        let unwound = std::panic::catch_unwind(|| {
            Flex::on_kernel_threads(|| -> u64 { panic!("a pass that fails") })
        });
        assert!(unwound.is_err());
        let sum: u64 = Flex::on_kernel_threads(|| (0..1_000u64).into_par_iter().sum());
        assert_eq!(sum, 499_500);
    }

    #[test]
    fn passes_inside_the_callers_own_parallel_loop_run_in_place() {
        let sums: Vec<u64> = (0..16u64)
            .into_par_iter()
            .map(|i| Flex::on_kernel_threads(|| (0..1_000u64).into_par_iter().map(|j| i * j).sum()))
            .collect();
        let expected: Vec<u64> = (0..16u64).map(|i| i * 499_500).collect();
        assert_eq!(sums, expected);
    }
}

//! SiLU (`x · σ(x)`, EfficientNet's activation), Hardtanh (`clamp(x, min, max)`; ReLU6 is
//! Hardtanh(0, 6)) and Hardswish (`x · ReLU6(x + 3) / 6`, MobileNetV3's), with their gradients,
//! vectorised. burn writes Hardswish as `x · hard_sigmoid(x)`: two passes each way, and a
//! backward step that keeps both factors.
//!
//! burn's clamp records a backward step of several passes (comparisons, masks, a fill): with
//! the training BatchNorm, 40 % of a full MobileNetV2 step. Hardtanh's gradient here is one
//! pass, `dy` where `min < x < max` (torch's `hardtanh_backward`), else 0.
//!
//! burn-flex evaluates `sigmoid` one element at a time through libm's `expf`: half of an
//! EfficientNet-B0 forward pass went there (`perf`: `__expf_fma` 31 %, the scalar loop around it
//! 19 %). Here `exp` is Cephes' polynomial (max relative error about 2 ulp over the clamped
//! range), written without branches so that each [`SimdLevel`] compiles it to vector
//! instructions, and the work is split over the cores in chunks.

use rayon::prelude::*;

use super::simd::{madd, simd_dispatch};
use super::{SimdLevel, buffers};
use crate::kernels::ConvActivation;

/// Elements per parallel task: large enough to amortise the task, small enough to share a
/// 16-image batch's activations across the cores.
const CHUNK: usize = 1 << 14;

/// `e^x` for `x` clamped to `[-87, 88]` (where `e^x` is a normal `f32`).
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts (Cephes): `n · LN2_HI` is exact for the `n` that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = madd::<FMA>(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = madd::<FMA>(n, -LN2_HI, x);
    let r = madd::<FMA>(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 5e-1);
    let p = madd::<FMA>(p, r * r, r) + 1.0;
    // n = round(x · log2 e) in [-126, 127]: 2^n built from its exponent bits.
    let n = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// `σ(x) = 1 / (1 + e^(−x))`.
#[inline(always)]
fn sigmoid<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp::<FMA>(-x))
}

#[inline(always)]
fn silu_body<const FMA: bool>(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * sigmoid::<FMA>(x);
    }
}

#[inline(always)]
fn silu_in_place_body<const FMA: bool>(x: &mut [f32]) {
    for x in x.iter_mut() {
        *x *= sigmoid::<FMA>(*x);
    }
}

#[inline(always)]
fn silu_grad_body<const FMA: bool>(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let s = sigmoid::<FMA>(x);
        // d/dx x·σ(x) = σ(x) · (1 + x · (1 − σ(x)))
        *dx = dy * s * madd::<FMA>(x, 1.0 - s, 1.0);
    }
}

#[inline(always)]
fn hardtanh_body<const FMA: bool>(x: &[f32], min: f32, max: f32, y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x.max(min).min(max);
    }
}

#[inline(always)]
fn hardtanh_in_place_body<const FMA: bool>(x: &mut [f32], min: f32, max: f32) {
    for x in x.iter_mut() {
        *x = x.max(min).min(max);
    }
}

#[inline(always)]
fn hardtanh_grad_body<const FMA: bool>(x: &[f32], dy: &[f32], min: f32, max: f32, dx: &mut [f32]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        *dx = if x > min && x < max { dy } else { 0.0 };
    }
}

/// torch's Hardswish, in its order of rounding: `x · clamp(x + 3, 0, 6) / 6`.
#[inline(always)]
fn hardswish_of(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

#[inline(always)]
fn hardswish_body<const FMA: bool>(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = hardswish_of(x);
    }
}

#[inline(always)]
fn hardswish_in_place_body<const FMA: bool>(x: &mut [f32]) {
    for x in x.iter_mut() {
        *x = hardswish_of(*x);
    }
}

#[inline(always)]
fn hardswish_grad_body<const FMA: bool>(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        // torch's `hardswish_backward`, division and all, so gradients agree bit for bit.
        let middle = dy * (x / 3.0 + 0.5);
        *dx = if x < -3.0 {
            0.0
        } else if x <= 3.0 {
            middle
        } else {
            dy
        };
    }
}

/// `v = f(v)` for every element of `row`.
#[inline(always)]
fn map_in_place(row: &mut [f32], f: impl Fn(f32) -> f32) {
    for v in row.iter_mut() {
        *v = f(*v);
    }
}

/// `row = activation(pre(row))`, each activation in its own loop so that each vectorises. The
/// formulas are those of the separate passes ([`hardtanh`], [`hardswish`], [`silu`], burn-flex's
/// `relu`), so a fused convolution equals the unfused one bit for bit.
#[inline(always)]
fn activate<const FMA: bool>(
    row: &mut [f32],
    activation: Option<ConvActivation>,
    pre: impl Fn(f32) -> f32,
) {
    match activation {
        None => map_in_place(row, pre),
        Some(ConvActivation::Relu) => map_in_place(row, |v| pre(v).max(0.0)),
        Some(ConvActivation::Hardtanh { min, max }) => {
            map_in_place(row, |v| pre(v).max(min).min(max))
        }
        Some(ConvActivation::Hardswish) => map_in_place(row, |v| hardswish_of(pre(v))),
        Some(ConvActivation::Silu) => map_in_place(row, |v| {
            let x = pre(v);
            x * sigmoid::<FMA>(x)
        }),
    }
}

#[inline(always)]
fn epilogue_body<const FMA: bool>(
    row: &mut [f32],
    bias: Option<f32>,
    activation: Option<ConvActivation>,
) {
    match bias {
        Some(b) => activate::<FMA>(row, activation, move |v| v + b),
        None => activate::<FMA>(row, activation, |v| v),
    }
}

simd_dispatch! {
    /// A convolution's epilogue over one run of its output (one channel's pixels):
    /// `row = activation(row + bias)`, the bias and the activation each where given.
    pub fn epilogue => epilogue_body(row: &mut [f32], bias: Option<f32>, activation: Option<ConvActivation>)
}

simd_dispatch! {
    /// `y = hardswish(x)` over one chunk.
    fn hardswish_chunk => hardswish_body(x: &[f32], y: &mut [f32])
}

simd_dispatch! {
    /// `x = hardswish(x)` over one chunk.
    fn hardswish_in_place_chunk => hardswish_in_place_body(x: &mut [f32])
}

simd_dispatch! {
    /// `dx = dy · hardswish'(x)` over one chunk.
    fn hardswish_grad_chunk => hardswish_grad_body(x: &[f32], dy: &[f32], dx: &mut [f32])
}

/// A new buffer with `f(x, y)` applied over [`CHUNK`]-element chunks of `x` in parallel, each
/// chunk's `y` written once (see [`buffers::filled_by_chunks`]).
fn map_chunks(x: &[f32], f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    buffers::filled_by_chunks(x.len(), CHUNK, |i, y| f(&x[i * CHUNK..][..y.len()], y))
}

/// [`map_chunks`] for a gradient: `f(x, dy, dx)` over the same chunks of `x` and `dy` (same
/// length).
fn map_chunks_with_grad(
    x: &[f32],
    dy: &[f32],
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    buffers::filled_by_chunks(x.len(), CHUNK, |i, dx| {
        let at = i * CHUNK..i * CHUNK + dx.len();
        f(&x[at.clone()], &dy[at], dx)
    })
}

/// Hardswish, `x · clamp(x + 3, 0, 6) / 6`, of every element, at `level`.
pub fn hardswish(x: &[f32], level: SimdLevel) -> Vec<f32> {
    map_chunks(x, |x, y| hardswish_chunk(level, x, y))
}

/// [`hardswish`] written over `x` itself (see [`hardtanh_in_place`]).
pub fn hardswish_in_place(x: &mut [f32], level: SimdLevel) {
    x.par_chunks_mut(CHUNK)
        .for_each(|x| hardswish_in_place_chunk(level, x));
}

/// The gradient of Hardswish at `x` given the output gradient `dy` (same length), as torch's
/// `hardswish_backward`: 0 for `x < −3`, `dy · (x / 3 + 0.5)` for `−3 ≤ x ≤ 3`, `dy` above.
pub fn hardswish_grad(x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    map_chunks_with_grad(x, dy, |x, dy, dx| hardswish_grad_chunk(level, x, dy, dx))
}

simd_dispatch! {
    /// `y = clamp(x, min, max)` over one chunk.
    fn hardtanh_chunk => hardtanh_body(x: &[f32], min: f32, max: f32, y: &mut [f32])
}

simd_dispatch! {
    /// `x = clamp(x, min, max)` over one chunk.
    fn hardtanh_in_place_chunk => hardtanh_in_place_body(x: &mut [f32], min: f32, max: f32)
}

simd_dispatch! {
    /// `dx = dy` where `min < x < max`, else 0, over one chunk.
    fn hardtanh_grad_chunk => hardtanh_grad_body(x: &[f32], dy: &[f32], min: f32, max: f32, dx: &mut [f32])
}

/// `clamp(x, min, max)` of every element, at `level` (NaN stays NaN's clamp: `max(NaN, min)`
/// is `min`, as in burn's clamp on burn-flex).
pub fn hardtanh(x: &[f32], min: f32, max: f32, level: SimdLevel) -> Vec<f32> {
    map_chunks(x, |x, y| hardtanh_chunk(level, x, min, max, y))
}

/// [`hardtanh`] written over `x` itself: for an activation nothing else holds (a convolution's
/// fresh output at inference), which saves a buffer and a pass of writes to it.
pub fn hardtanh_in_place(x: &mut [f32], min: f32, max: f32, level: SimdLevel) {
    x.par_chunks_mut(CHUNK)
        .for_each(|x| hardtanh_in_place_chunk(level, x, min, max));
}

/// The gradient of Hardtanh at `x` given the output gradient `dy` (same length): `dy` where
/// `min < x < max`, else 0.
pub fn hardtanh_grad(x: &[f32], dy: &[f32], min: f32, max: f32, level: SimdLevel) -> Vec<f32> {
    map_chunks_with_grad(x, dy, |x, dy, dx| {
        hardtanh_grad_chunk(level, x, dy, min, max, dx)
    })
}

simd_dispatch! {
    /// `y = x · σ(x)` over one chunk.
    fn silu_chunk => silu_body(x: &[f32], y: &mut [f32])
}

simd_dispatch! {
    /// `x = x · σ(x)` over one chunk.
    fn silu_in_place_chunk => silu_in_place_body(x: &mut [f32])
}

simd_dispatch! {
    /// `dx = dy · SiLU'(x)` over one chunk.
    fn silu_grad_chunk => silu_grad_body(x: &[f32], dy: &[f32], dx: &mut [f32])
}

/// `x · σ(x)` of every element, at `level`.
pub fn silu(x: &[f32], level: SimdLevel) -> Vec<f32> {
    map_chunks(x, |x, y| silu_chunk(level, x, y))
}

/// [`silu`] written over `x` itself (see [`hardtanh_in_place`]).
pub fn silu_in_place(x: &mut [f32], level: SimdLevel) {
    x.par_chunks_mut(CHUNK)
        .for_each(|x| silu_in_place_chunk(level, x));
}

/// The gradient of SiLU at `x` times the output gradient `dy` (same length), at `level`.
pub fn silu_grad(x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    map_chunks_with_grad(x, dy, |x, dy, dx| silu_grad_chunk(level, x, dy, dx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm_over_the_range_at_every_level() {
        let xs: Vec<f32> = (-8700..=8800).map(|i| i as f32 * 0.01).collect();
        for level in SimdLevel::supported() {
            let y = silu(&xs, level);
            let mut in_place = xs.clone();
            silu_in_place(&mut in_place, level);
            assert_eq!(in_place, y, "{level:?}: in place");
            for (&x, &y) in xs.iter().zip(&y) {
                let reference = f64::from(x) / (1.0 + (-f64::from(x)).exp());
                let err = (f64::from(y) - reference).abs();
                assert!(
                    err <= 4.0 * f64::from(f32::EPSILON) * reference.abs().max(1e-30),
                    "{level:?}: silu({x}) = {y}, expected {reference}"
                );
            }
        }
    }

    #[test]
    fn hardtanh_and_its_gradient_at_every_level() {
        let xs: Vec<f32> = (-900..=900).map(|i| i as f32 * 0.01).collect();
        let dy: Vec<f32> = xs.iter().map(|x| 0.5 + (x * 7.0).sin()).collect();
        for level in SimdLevel::supported() {
            let y = hardtanh(&xs, 0.0, 6.0, level);
            let dx = hardtanh_grad(&xs, &dy, 0.0, 6.0, level);
            let mut in_place = xs.clone();
            hardtanh_in_place(&mut in_place, 0.0, 6.0, level);
            assert_eq!(in_place, y, "{level:?}: in place");
            for (i, &x) in xs.iter().enumerate() {
                assert_eq!(y[i], x.clamp(0.0, 6.0), "{level:?}: ReLU6({x})");
                let inside = x > 0.0 && x < 6.0;
                assert_eq!(dx[i], if inside { dy[i] } else { 0.0 }, "{level:?}: at {x}");
            }
        }
    }

    #[test]
    fn hardswish_and_its_gradient_are_torchs_at_every_level() {
        // Every quarter from −5 to 5 (the kinks at ±3 included) and values in between.
        let xs: Vec<f32> = (-500..=500).map(|i| i as f32 * 0.01).collect();
        let dy: Vec<f32> = xs.iter().map(|x| 0.5 + (x * 7.0).sin()).collect();
        for level in SimdLevel::supported() {
            let y = hardswish(&xs, level);
            let dx = hardswish_grad(&xs, &dy, level);
            let mut in_place = xs.clone();
            hardswish_in_place(&mut in_place, level);
            assert_eq!(in_place, y, "{level:?}: in place");
            for (i, &x) in xs.iter().enumerate() {
                // torch: x * min(max(x + 3, 0), 6) / 6
                assert_eq!(
                    y[i],
                    x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
                    "{level:?}: at {x}"
                );
                let expected = if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    dy[i] * (x / 3.0 + 0.5)
                } else {
                    dy[i]
                };
                assert_eq!(dx[i], expected, "{level:?}: gradient at {x}");
            }
        }
    }

    #[test]
    fn the_gradient_is_close_to_the_exact_one_at_every_level() {
        let xs: Vec<f32> = (-3000..=3000).map(|i| i as f32 * 0.01).collect();
        let dy: Vec<f32> = xs.iter().map(|x| 0.5 + (x * 7.0).sin()).collect();
        for level in SimdLevel::supported() {
            let dx = silu_grad(&xs, &dy, level);
            for ((&x, &dy), &dx) in xs.iter().zip(&dy).zip(&dx) {
                let (x, dy) = (f64::from(x), f64::from(dy));
                let s = 1.0 / (1.0 + (-x).exp());
                let reference = dy * s * (1.0 + x * (1.0 - s));
                let err = (f64::from(dx) - reference).abs();
                assert!(
                    err <= 1e-6 * dy.abs().max(1.0),
                    "{level:?}: SiLU'({x}) · {dy} = {dx}, expected {reference}"
                );
            }
        }
    }
}

//! Batch normalisation with the batch's statistics (training mode) and its gradient, on
//! contiguous `f32` NCHW slices.
//!
//! Written as burn tensor operations, a training BatchNorm is about ten passes over the
//! activation forward (sums, centring, squares, scaling, each broadcast) and as many again for
//! their recorded backward steps: with ReLU6, 40 % of a full MobileNetV2 training step on
//! burn-flex. Here the forward pass reads `x` three times (for the mean, for the squares about
//! it, for the output) and writes `y` once; the backward pass reads `x` and `dy` once for two
//! per-channel sums and once more to write `dx`.
//!
//! Sums run in `f32` over 16 lanes within one `[H, W]` plane and in `f64` across planes, so the
//! statistics of a 16 × 112 × 112 channel keep about seven digits. Work is split over channels
//! for the sums and over planes for the element-wise passes; each sum has a fixed order, so
//! results do not depend on the thread count.

use rayon::prelude::*;

use super::simd::{madd, simd_dispatch};
use super::{SimdLevel, buffers};

/// Lanes of the partial sums inside a plane (one AVX-512 register).
const LANES: usize = 16;

/// `Σ f(x)` over a plane: `f32` lanes, added in `f64`.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    let tail: f64 = rest.iter().map(|&v| f64::from(f(v))).sum();
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + tail
}

/// `Σ f(x, dy)` over a plane of two operands.
#[inline(always)]
fn lane_sum2(x: &[f32], dy: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let (xc, dc) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(dc.remainder())
        .map(|(&x, &d)| f64::from(f(x, d)))
        .sum();
    for (x, d) in xc.zip(dc) {
        for ((a, &x), &d) in acc.iter_mut().zip(x).zip(d) {
            *a += f(x, d);
        }
    }
    acc.iter().map(|&a| f64::from(a)).sum::<f64>() + tail
}

/// `sum[0] += Σ x` over one plane.
#[inline(always)]
fn sum_body<const FMA: bool>(x: &[f32], sum: &mut [f64]) {
    sum[0] += lane_sum(x, |v| v);
}

/// `sum[0] += Σ (x − shift)²` over one plane.
#[inline(always)]
fn squares_body<const FMA: bool>(x: &[f32], shift: f32, sum: &mut [f64]) {
    sum[0] += lane_sum(x, |v| (v - shift) * (v - shift));
}

/// `sums[0] += Σ dy`, `sums[1] += Σ dy · (x − mean)` over one plane.
#[inline(always)]
fn grad_sums_body<const FMA: bool>(x: &[f32], dy: &[f32], mean: &[f32], sums: &mut [f64]) {
    let m = mean[0];
    sums[0] += lane_sum(dy, |d| d);
    sums[1] += lane_sum2(x, dy, |x, d| d * (x - m));
}

/// `y = x · ab[0] + ab[1]` over one plane.
#[inline(always)]
fn affine_body<const FMA: bool>(x: &[f32], ab: &[f32], y: &mut [f32]) {
    let (a, b) = (ab[0], ab[1]);
    for (y, &x) in y.iter_mut().zip(x) {
        *y = madd::<FMA>(x, a, b);
    }
}

/// `dx = dy · k[0] + x · k[1] + k[2]` over one plane.
#[inline(always)]
fn grad_body<const FMA: bool>(x: &[f32], dy: &[f32], k: &[f32], dx: &mut [f32]) {
    let (k0, k1, k2) = (k[0], k[1], k[2]);
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        *dx = madd::<FMA>(dy, k0, madd::<FMA>(x, k1, k2));
    }
}

simd_dispatch! {
    /// A plane's sum.
    fn plane_sum => sum_body(x: &[f32], sum: &mut [f64])
}

simd_dispatch! {
    /// A plane's sum of squares about `shift`.
    fn plane_squares => squares_body(x: &[f32], shift: f32, sum: &mut [f64])
}

simd_dispatch! {
    /// Plane sums of `dy` and of `dy · (x − mean[0])`.
    fn grad_sums => grad_sums_body(x: &[f32], dy: &[f32], mean: &[f32], sums: &mut [f64])
}

simd_dispatch! {
    /// One plane's affine map.
    fn affine => affine_body(x: &[f32], ab: &[f32], y: &mut [f32])
}

simd_dispatch! {
    /// One plane's input gradient.
    fn grad_plane => grad_body(x: &[f32], dy: &[f32], k: &[f32], dx: &mut [f32])
}

/// The output and batch statistics of a training BatchNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormOutput {
    /// Normalised, scaled and shifted input, `[N, C, H, W]`.
    pub y: Vec<f32>,
    /// Per-channel mean `[C]`.
    pub mean: Vec<f32>,
    /// Per-channel biased variance `[C]` (what normalises; the running variance takes the
    /// unbiased one).
    pub var: Vec<f32>,
}

/// Gradients of a training BatchNorm.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormGrads {
    /// With respect to the input, `[N, C, H, W]`.
    pub dx: Vec<f32>,
    /// With respect to the scale γ, `[C]`.
    pub dgamma: Vec<f32>,
    /// With respect to the shift β, `[C]`.
    pub dbeta: Vec<f32>,
}

/// The planes of channel `c` in an `[n, channels, plane]` slice.
fn channel_planes(
    x: &[f32],
    n: usize,
    channels: usize,
    plane: usize,
    c: usize,
) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |i| &x[(i * channels + c) * plane..][..plane])
}

/// `y = γ · (x − mean) / √(var + ε) + β` with the batch's mean and biased variance per channel,
/// for `x` `[n, channels, plane]` (plane = H · W) and `gamma`, `beta` `[channels]`.
///
/// # Panics
/// When the slices' lengths do not match the sizes (a caller's bug, not user input).
pub fn batch_norm_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    [n, channels, plane]: [usize; 3],
    epsilon: f64,
    level: SimdLevel,
) -> BatchNormOutput {
    assert_eq!(x.len(), n * channels * plane, "batch_norm_train: x");
    assert!(gamma.len() == channels && beta.len() == channels);
    let count = (n * plane).max(1) as f64;
    // Two passes per channel: the mean, then squares about it (no cancellation).
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mut sum = [0f64];
            for p in channel_planes(x, n, channels, plane, c) {
                plane_sum(level, p, &mut sum);
            }
            let mean = sum[0] / count;
            let rounded = mean as f32;
            let mut squares = [0f64];
            for p in channel_planes(x, n, channels, plane, c) {
                plane_squares(level, p, rounded, &mut squares);
            }
            // Σ(x − m̃)² about the rounded mean m̃, corrected to the exact mean.
            let d = mean - f64::from(rounded);
            let var = (squares[0] / count - d * d).max(0.0);
            (mean as f32, var as f32)
        })
        .unzip();
    let ab: Vec<[f32; 2]> = (0..channels)
        .map(|c| {
            let inv_std = 1.0 / (f64::from(var[c]) + epsilon).sqrt();
            let a = f64::from(gamma[c]) * inv_std;
            [
                a as f32,
                (f64::from(beta[c]) - f64::from(mean[c]) * a) as f32,
            ]
        })
        .collect();
    let y = buffers::filled_by_chunks(x.len(), plane, |i, y| {
        affine(level, &x[i * plane..][..plane], &ab[i % channels], y)
    });
    BatchNormOutput { y, mean, var }
}

/// The gradients of [`batch_norm_train`] given the output gradient `dy` (same layout as `x`),
/// from the forward pass's `mean` and biased `var`.
///
/// With x̂ = (x − mean) / √(var + ε), M = N·H·W: `dβ = Σ dy`, `dγ = Σ dy · x̂`,
/// `dx = γ / √(var + ε) · (dy − dβ / M − x̂ · dγ / M)`.
///
/// # Panics
/// When the slices' lengths do not match the sizes (a caller's bug, not user input).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_grad(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    dy: &[f32],
    [n, channels, plane]: [usize; 3],
    epsilon: f64,
    level: SimdLevel,
) -> BatchNormGrads {
    assert_eq!(x.len(), n * channels * plane, "batch_norm_train_grad: x");
    assert_eq!(dy.len(), x.len(), "batch_norm_train_grad: dy");
    assert!(gamma.len() == channels && mean.len() == channels && var.len() == channels);
    let count = (n * plane).max(1) as f64;
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let mut sums = [0f64; 2];
            for (x, dy) in channel_planes(x, n, channels, plane, c)
                .zip(channel_planes(dy, n, channels, plane, c))
            {
                grad_sums(level, x, dy, &mean[c..=c], &mut sums);
            }
            let inv_std = 1.0 / (f64::from(var[c]) + epsilon).sqrt();
            ((sums[1] * inv_std) as f32, sums[0] as f32)
        })
        .unzip();
    // dx = k0 · dy + k1 · x + k2 per channel.
    let k: Vec<[f32; 3]> = (0..channels)
        .map(|c| {
            let inv_std = 1.0 / (f64::from(var[c]) + epsilon).sqrt();
            let k0 = f64::from(gamma[c]) * inv_std;
            let k1 = -k0 * inv_std * f64::from(dgamma[c]) / count;
            let k2 = -k0 * f64::from(dbeta[c]) / count - k1 * f64::from(mean[c]);
            [k0 as f32, k1 as f32, k2 as f32]
        })
        .collect();
    let dx = buffers::filled_by_chunks(x.len(), plane, |i, dx| {
        let at = i * plane..(i + 1) * plane;
        grad_plane(level, &x[at.clone()], &dy[at], &k[i % channels], dx)
    });
    BatchNormGrads { dx, dgamma, dbeta }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with a channel-dependent offset and scale (a large mean tests the centring).
    fn input(n: usize, c: usize, plane: usize) -> Vec<f32> {
        (0..n * c * plane)
            .map(|i| {
                let ch = (i / plane) % c;
                let v = ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * (1.0 + ch as f32);
                v + 10.0 * ch as f32
            })
            .collect()
    }

    /// The forward pass and gradients in `f64`, straight from their definitions.
    fn reference(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        dy: &[f32],
        [n, c, plane]: [usize; 3],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let m = (n * plane) as f64;
        let at = |i: usize, ch: usize, p: usize| (i * c + ch) * plane + p;
        let (mut y, mut dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let idx: Vec<usize> = (0..n)
                .flat_map(|i| (0..plane).map(move |p| at(i, ch, p)))
                .collect();
            let mean = idx.iter().map(|&j| f64::from(x[j])).sum::<f64>() / m;
            let var = idx
                .iter()
                .map(|&j| (f64::from(x[j]) - mean).powi(2))
                .sum::<f64>()
                / m;
            let inv = 1.0 / (var + eps).sqrt();
            let xhat = |j: usize| (f64::from(x[j]) - mean) * inv;
            for &j in &idx {
                y[j] = f64::from(gamma[ch]) * xhat(j) + f64::from(beta[ch]);
                dbeta[ch] += f64::from(dy[j]);
                dgamma[ch] += f64::from(dy[j]) * xhat(j);
            }
            for &j in &idx {
                dx[j] = f64::from(gamma[ch]) * inv / m
                    * (m * f64::from(dy[j]) - dbeta[ch] - xhat(j) * dgamma[ch]);
            }
        }
        (y, dx, dgamma, dbeta)
    }

    fn close(ours: &[f32], reference: &[f64], tol: f64, what: &str) {
        let scale = reference
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()))
            .max(1e-30);
        for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
            assert!(
                (f64::from(a) - b).abs() <= tol * scale,
                "{what}[{i}]: {a} vs {b} (scale {scale})"
            );
        }
    }

    #[test]
    fn forward_and_gradients_match_the_definition_at_every_level() {
        // Odd planes (tails of the 16 lanes), one image, a 1 × 1 plane, MobileNetV2-like sizes.
        for dims in [[2, 3, 37], [1, 5, 16], [4, 2, 1], [3, 8, 49], [2, 4, 197]] {
            let [n, c, plane] = dims;
            let x = input(n, c, plane);
            let gamma: Vec<f32> = (0..c).map(|i| 0.5 + 0.25 * i as f32).collect();
            let beta: Vec<f32> = (0..c).map(|i| 0.1 * i as f32 - 0.2).collect();
            let dy: Vec<f32> = (0..x.len()).map(|i| ((i as f32) * 0.37).sin()).collect();
            let (y, dx, dgamma, dbeta) = reference(&x, &gamma, &beta, &dy, dims, 1e-5);
            for level in SimdLevel::supported() {
                let out = batch_norm_train(&x, &gamma, &beta, dims, 1e-5, level);
                close(&out.y, &y, 1e-5, &format!("{dims:?} {level:?} y"));
                let g =
                    batch_norm_train_grad(&x, &gamma, &out.mean, &out.var, &dy, dims, 1e-5, level);
                close(&g.dx, &dx, 1e-4, &format!("{dims:?} {level:?} dx"));
                close(&g.dgamma, &dgamma, 1e-5, &format!("{dims:?} {level:?} dγ"));
                close(&g.dbeta, &dbeta, 1e-5, &format!("{dims:?} {level:?} dβ"));
            }
        }
    }
}

//! A squeeze-and-excitation gate: every plane of `x` `[N·C, H·W]` times its own factor,
//! `y[p, :] = x[p, :] · s[p]`, and the gradient of the factors, `ds[p] = Σ x[p, :] · dy[p, :]`.
//!
//! burn-flex multiplies by the `[N, C, 1]` gate through its general broadcasting path (an index
//! iterator per element), and burn's backward of that product forms the full-size `x · dy`
//! before summing it; here each is one pass, planes split over the cores. (The input's gradient
//! is the same scale applied to the output gradient.)

use rayon::prelude::*;

use super::simd::{madd, simd_dispatch};
use super::{SimdLevel, buffers};

/// Elements per parallel task (whole planes, at least one).
const CHUNK: usize = 1 << 14;

/// Lanes of independent partial sums, so that the dot product vectorises (float addition is
/// not reassociated for it) and its order is fixed: the sums do not depend on the threads.
const LANES: usize = 16;

/// Planes per parallel task for planes of `plane` elements.
fn planes_per_task(plane: usize) -> usize {
    (CHUNK / plane.max(1)).max(1)
}

#[inline(always)]
fn scale_body<const FMA: bool>(x: &[f32], scale: &[f32], plane: usize, y: &mut [f32]) {
    for ((y, x), &s) in y
        .chunks_exact_mut(plane)
        .zip(x.chunks_exact(plane))
        .zip(scale)
    {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * s;
        }
    }
}

#[inline(always)]
fn scale_in_place_body<const FMA: bool>(x: &mut [f32], scale: &[f32], plane: usize) {
    for (x, &s) in x.chunks_exact_mut(plane).zip(scale) {
        for x in x.iter_mut() {
            *x *= s;
        }
    }
}

#[inline(always)]
fn scale_grad_body<const FMA: bool>(x: &[f32], dy: &[f32], plane: usize, ds: &mut [f32]) {
    for ((ds, x), dy) in ds
        .iter_mut()
        .zip(x.chunks_exact(plane))
        .zip(dy.chunks_exact(plane))
    {
        let mut lanes = [0.0f32; LANES];
        let (x_lanes, x_tail) = x.as_chunks::<LANES>();
        let (dy_lanes, dy_tail) = dy.as_chunks::<LANES>();
        for (x, dy) in x_lanes.iter().zip(dy_lanes) {
            for i in 0..LANES {
                lanes[i] = madd::<FMA>(x[i], dy[i], lanes[i]);
            }
        }
        for (i, (&x, &dy)) in x_tail.iter().zip(dy_tail).enumerate() {
            lanes[i] = madd::<FMA>(x, dy, lanes[i]);
        }
        *ds = lanes.iter().sum();
    }
}

simd_dispatch! {
    /// `y = x · s` plane by plane over a run of whole planes.
    fn scale_planes => scale_body(x: &[f32], scale: &[f32], plane: usize, y: &mut [f32])
}

simd_dispatch! {
    /// `x = x · s` plane by plane over a run of whole planes.
    fn scale_planes_in_place => scale_in_place_body(x: &mut [f32], scale: &[f32], plane: usize)
}

simd_dispatch! {
    /// `ds = Σ x · dy` plane by plane over a run of whole planes.
    fn scale_grad_planes => scale_grad_body(x: &[f32], dy: &[f32], plane: usize, ds: &mut [f32])
}

/// `x` (`scale.len()` planes of `plane` elements) with each plane times its factor in `scale`.
pub fn channel_scale(x: &[f32], scale: &[f32], plane: usize, level: SimdLevel) -> Vec<f32> {
    assert_eq!(x.len(), scale.len() * plane, "channel_scale: sizes");
    let mut y = buffers::to_overwrite(x.len());
    if plane == 0 {
        return y;
    }
    let per_task = planes_per_task(plane);
    y.par_chunks_mut(per_task * plane)
        .zip(x.par_chunks(per_task * plane))
        .zip(scale.par_chunks(per_task))
        .for_each(|((y, x), scale)| scale_planes(level, x, scale, plane, y));
    y
}

/// [`channel_scale`] written over `x` itself: for an activation nothing else holds (the gate's
/// input at inference, or an output gradient the backward pass owns).
pub fn channel_scale_in_place(x: &mut [f32], scale: &[f32], plane: usize, level: SimdLevel) {
    assert_eq!(
        x.len(),
        scale.len() * plane,
        "channel_scale_in_place: sizes"
    );
    if plane == 0 {
        return;
    }
    let per_task = planes_per_task(plane);
    x.par_chunks_mut(per_task * plane)
        .zip(scale.par_chunks(per_task))
        .for_each(|(x, scale)| scale_planes_in_place(level, x, scale, plane));
}

/// The gradient of the factors: `Σ x · dy` over each plane of `plane` elements (`x` and `dy`
/// of the same length), one value per plane. The summation order is fixed, so the result does
/// not depend on the thread count.
pub fn channel_scale_grad(x: &[f32], dy: &[f32], plane: usize, level: SimdLevel) -> Vec<f32> {
    assert_eq!(x.len(), dy.len(), "channel_scale_grad: sizes");
    if plane == 0 {
        return Vec::new();
    }
    let mut ds = vec![0.0; x.len() / plane];
    let per_task = planes_per_task(plane);
    ds.par_chunks_mut(per_task)
        .zip(x.par_chunks(per_task * plane))
        .zip(dy.par_chunks(per_task * plane))
        .for_each(|((ds, x), dy)| scale_grad_planes(level, x, dy, plane, ds));
    ds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Planes of 1, 7 × 7, 15 and 33 elements (tails after the lanes), enough of them to split
    /// over tasks, against plain loops in f64.
    #[test]
    fn scale_and_its_gradient_at_every_level() {
        for plane in [1usize, 15, 33, 49] {
            let planes = 2 * planes_per_task(plane) + 3;
            let x: Vec<f32> = (0..planes * plane)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03)
                .collect();
            let dy: Vec<f32> = (0..x.len()).map(|i| 0.5 + (i as f32 * 0.7).sin()).collect();
            let scale: Vec<f32> = (0..planes).map(|p| (p as f32 * 0.3).cos()).collect();
            for level in SimdLevel::supported() {
                let y = channel_scale(&x, &scale, plane, level);
                let mut in_place = x.clone();
                channel_scale_in_place(&mut in_place, &scale, plane, level);
                assert_eq!(in_place, y, "{level:?}, plane {plane}: in place");
                for (i, (&y, &x)) in y.iter().zip(&x).enumerate() {
                    assert_eq!(y, x * scale[i / plane], "{level:?}, plane {plane}: y[{i}]");
                }
                let ds = channel_scale_grad(&x, &dy, plane, level);
                assert_eq!(ds.len(), planes);
                for (p, &d) in ds.iter().enumerate() {
                    let exact: f64 = (p * plane..(p + 1) * plane)
                        .map(|i| f64::from(x[i]) * f64::from(dy[i]))
                        .sum();
                    let magnitude: f64 = (p * plane..(p + 1) * plane)
                        .map(|i| f64::from((x[i] * dy[i]).abs()))
                        .sum();
                    assert!(
                        (f64::from(d) - exact).abs() <= 1e-6 * magnitude.max(1.0),
                        "{level:?}, plane {plane}: ds[{p}] = {d}, expected {exact}"
                    );
                }
            }
        }
    }
}

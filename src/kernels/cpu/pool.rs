//! 2-D max pooling (ResNet's 3×3, stride-2 pool after the stem) and its input gradient.
//!
//! burn-flex 0.21 pools through its generic 3-D routine, which also records the index of every
//! maximum, one scalar comparison and four bounds checks per window element: 20 % of a ResNet18
//! forward pass at batch 16 (`perf`). Here a plane is pooled one output row at a time: the
//! element-wise maximum of the window's input rows (a vectorised pass over whole rows, the
//! padding skipped by clipping the row range), then the maximum over each window's columns of
//! that row. The gradient recomputes each window's maximum from the input instead of storing
//! indices, in torch's order, so the output gradient goes where torch sends it.
//!
//! As in torch, a NaN in a window is its maximum; padding is never a candidate (as if it were
//! −∞).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::simd::simd_dispatch;
use super::{SimdLevel, buffers};

/// Most elements of a plane these kernels pool: the gradient tracks each window's maximum by
/// its index in the plane, in 32 bits.
pub const MAX_PLANE: usize = u32::MAX as usize;

/// Sizes of one 2-D max pooling (dilation 1, outputs rounded down): input planes `[h, w]`,
/// window `[kh, kw]`, strides, padding, output planes `[oh, ow]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Number of planes (images × channels).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window `[height, width]`.
    pub kernel: [usize; 2],
    /// Strides `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Padding on each side `[vertical, horizontal]`.
    pub padding: [usize; 2],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolGeometry {
    /// The geometry of pooling `[n, c, h, w]`, or `None` where these kernels do not apply
    /// (an empty window or stride, padding over half the window, which torch refuses too, a
    /// window larger than the padded input, or a plane of more than [`MAX_PLANE`] elements).
    pub fn new(
        [n, c, h, w]: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let fits = |i: usize| {
            kernel[i] > 0
                && stride[i] > 0
                && padding[i] <= kernel[i] / 2
                && [h, w][i] + 2 * padding[i] >= kernel[i]
        };
        let plane = h.checked_mul(w).filter(|&p| p <= MAX_PLANE);
        if !(fits(0) && fits(1)) || plane.is_none() || n * c * h * w == 0 {
            return None;
        }
        Some(Self {
            planes: n * c,
            h,
            w,
            kernel,
            stride,
            padding,
            oh: (h + 2 * padding[0] - kernel[0]) / stride[0] + 1,
            ow: (w + 2 * padding[1] - kernel[1]) / stride[1] + 1,
        })
    }

    /// The input rows (or columns, `axis` 1) `[start, end)` of output row (column) `o`'s
    /// window, clipped to the image: never empty, since padding is at most half the window.
    #[inline]
    fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let size = [self.h, self.w][axis];
        let first = o * self.stride[axis];
        let start = first.saturating_sub(self.padding[axis]);
        let end = (first + self.kernel[axis])
            .saturating_sub(self.padding[axis])
            .min(size);
        (start, end)
    }
}

/// `b` if it replaces the running maximum `a` (greater, or NaN), else `a`: torch's test.
#[inline(always)]
fn take_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

#[inline(always)]
fn max_pool_plane_body<const FMA: bool>(
    g: &PoolGeometry,
    x: &[f32],
    rows_max: &mut [f32],
    y: &mut [f32],
) {
    for (oh, y_row) in y.chunks_exact_mut(g.ow).enumerate() {
        let (start, end) = g.window(0, oh);
        rows_max.copy_from_slice(&x[start * g.w..][..g.w]);
        for ih in start + 1..end {
            for (m, &v) in rows_max.iter_mut().zip(&x[ih * g.w..][..g.w]) {
                *m = take_max(*m, v);
            }
        }
        for (ow, out) in y_row.iter_mut().enumerate() {
            let (start, end) = g.window(1, ow);
            *out = rows_max[start + 1..end]
                .iter()
                .fold(rows_max[start], |m, &v| take_max(m, v));
        }
    }
}

simd_dispatch! {
    /// Pools one plane `x` `[h, w]` into `y` `[oh, ow]`, with `rows_max` (`w` long) as scratch.
    fn max_pool_plane => max_pool_plane_body(g: &PoolGeometry, x: &[f32], rows_max: &mut [f32], y: &mut [f32])
}

/// Max pooling of `x` (`g.planes` planes `[h, w]`, contiguous) into `[planes, oh, ow]`, the
/// planes split over the threads.
pub fn max_pool2d(g: &PoolGeometry, x: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    assert_eq!(x.len(), g.planes * plane_in, "max_pool2d: input length");
    let write = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(plane_out)
            .zip(x.par_chunks(plane_in))
            .for_each_init(
                || vec![0.0f32; g.w],
                |rows_max, (y, x)| max_pool_plane(level, g, x, rows_max, cleared(y)),
            )
    };
    // SAFETY: the planes cover the buffer, and `cleared` writes each whole.
    unsafe { buffers::written_by(g.planes * plane_out, write) }
}

/// `plane` filled with zeros, as initialised `f32`s: each plane cleared while in cache just
/// before its kernel writes it, rather than the whole output beforehand (`calloc` clears a
/// block it reuses in one pass of its own, 51 MB for the stem's pooling gradient at batch 16).
fn cleared(plane: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    plane.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written.
    unsafe { buffers::assume_written(plane) }
}

/// The gradient of [`max_pool2d`] with respect to `x`, given the output gradient `dy`
/// `[planes, oh, ow]`: each output's gradient is added at its window's maximum, the first
/// greater-or-NaN element in row-major order starting from −∞, the window's first element when
/// none is (torch's `max_pool2d` CPU kernel, so ties and NaNs route as there).
pub fn max_pool2d_grad(g: &PoolGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    assert!(
        x.len() == g.planes * plane_in && dy.len() == g.planes * plane_out,
        "max_pool2d_grad: operand lengths"
    );
    // Each plane zeroed just before its kernel adds the gradients into it (`cleared`), written
    // before anything reads it: fresh zeroed pages are mapped to the kernel's shared zero page on
    // a first read, so that the first `+=` would then fault again to copy it, flushing every
    // core's TLB (the kernel took twice as long on a 2-core VM).
    let write = |dx: &mut [MaybeUninit<f32>]| {
        dx.par_chunks_mut(plane_in)
            .zip(x.par_chunks(plane_in).zip(dy.par_chunks(plane_out)))
            .for_each_init(
                || {
                    let phases = g.h * g.w.div_ceil(g.stride[1]) * g.stride[1];
                    (vec![0.0f32; g.ow], vec![0u32; g.ow], vec![0.0f32; phases])
                },
                |(max, at, phases), (dx, (x, dy))| {
                    max_pool_grad_plane(level, g, x, dy, max, at, phases, cleared(dx))
                },
            )
    };
    // SAFETY: the planes cover the buffer, and `cleared` writes each whole.
    unsafe { buffers::written_by(g.planes * plane_in, write) }
}

/// Adds each output gradient of one plane at its window's maximum in `dx`, which the caller
/// has zeroed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn max_pool_grad_plane_body<const FMA: bool>(
    g: &PoolGeometry,
    x: &[f32],
    dy: &[f32],
    max: &mut [f32],
    at: &mut [u32],
    phases: &mut [f32],
    dx: &mut [f32],
) {
    let [sw, pw] = [g.stride[1], g.padding[1]];
    // With a stride, each input row is first split by column phase (`iw mod stride`): phase `r`
    // holds columns r, r + stride, …, so that the columns the outputs' windows read at one kernel
    // offset are one contiguous run (a strided gather per element took 4 % of a ResNet18 step).
    // The whole plane once, not each row for every window it lies in (1.5 times at stride 2).
    let per_phase = g.w.div_ceil(sw);
    let row_phases = per_phase * sw;
    if sw > 1 {
        for (row, phases) in x.chunks_exact(g.w).zip(phases.chunks_exact_mut(row_phases)) {
            split_phases(row, sw, per_phase, phases);
        }
    }
    for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        let (row_start, row_end) = g.window(0, oh);
        // Each window's running maximum and where it is, starting from −∞ at the window's first
        // element; the window's elements are then visited in torch's (row, column) order, one
        // pass over the whole output row per element, so that the loop runs across windows.
        max.fill(f32::NEG_INFINITY);
        for (ow, at) in at.iter_mut().enumerate() {
            *at = plane_index(row_start * g.w + g.window(1, ow).0);
        }
        for ih in row_start..row_end {
            let row = &x[ih * g.w..][..g.w];
            let row_phases = &phases[ih * row_phases..][..row_phases];
            for kj in 0..g.kernel[1] {
                // The outputs whose window holds column `ow · sw + kj − pw` inside the image.
                let first = pw.saturating_sub(kj).div_ceil(sw);
                let last = ((g.w + pw - kj).div_ceil(sw)).min(g.ow);
                if first >= last {
                    continue;
                }
                let first_column = first * sw + kj - pw;
                let values = if sw > 1 {
                    let (r, q) = (first_column % sw, first_column / sw);
                    &row_phases[r * per_phase + q..][..last - first]
                } else {
                    &row[first_column..][..last - first]
                };
                let first_index = plane_index(ih * g.w + first_column);
                let windows = max[first..last].iter_mut().zip(&mut at[first..last]);
                for (i, ((max, at), &v)) in windows.zip(values).enumerate() {
                    let wins = v > *max || v.is_nan();
                    *max = if wins { v } else { *max };
                    *at = if wins {
                        first_index + i as u32 * sw as u32
                    } else {
                        *at
                    };
                }
            }
        }
        for (&at, &grad) in at.iter().zip(dy_row) {
            dx[at as usize] += grad;
        }
    }
}

/// `index` in a plane as the 32 bits the gradient's window maxima are tracked in (16 to a
/// vector rather than 8): [`PoolGeometry::new`] takes no plane of more elements.
#[inline(always)]
fn plane_index(index: usize) -> u32 {
    debug_assert!(index <= MAX_PLANE);
    index as u32
}

/// Splits `row` by column phase: `phases[r · per_phase + q] = row[q · stride + r]` (the last
/// phases one shorter where the width is not a multiple of the stride).
#[inline(always)]
fn split_phases(row: &[f32], stride: usize, per_phase: usize, phases: &mut [f32]) {
    if stride == 2 {
        // Pairs, which the compiler turns into vector shuffles.
        let (even, odd) = phases.split_at_mut(per_phase);
        for ((pair, e), o) in row.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
            *e = pair[0];
            *o = pair[1];
        }
        if row.len() % 2 == 1 {
            even[row.len() / 2] = row[row.len() - 1];
        }
    } else {
        for (q, columns) in row.chunks(stride).enumerate() {
            for (r, &v) in columns.iter().enumerate() {
                phases[r * per_phase + q] = v;
            }
        }
    }
}

simd_dispatch! {
    /// The input gradient of one plane (`x`, `dx` `[h, w]`, `dy` `[oh, ow]`), with `max` and
    /// `at` (`ow` long) and `phases` (`h` rows of `w` rounded up to a multiple of the stride)
    /// as scratch.
    #[allow(clippy::too_many_arguments)]
    fn max_pool_grad_plane => max_pool_grad_plane_body(g: &PoolGeometry, x: &[f32], dy: &[f32], max: &mut [f32], at: &mut [u32], phases: &mut [f32], dx: &mut [f32])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max pooling by its definition, one window element at a time, with torch's argmax.
    fn reference(g: &PoolGeometry, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut y = vec![0.0; g.planes * g.oh * g.ow];
        let mut dx = vec![0.0; x.len()];
        for p in 0..g.planes {
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let (mut max, mut at) = (f32::NEG_INFINITY, None);
                    for ki in 0..g.kernel[0] {
                        for kj in 0..g.kernel[1] {
                            let ih = (oh * g.stride[0] + ki) as isize - g.padding[0] as isize;
                            let iw = (ow * g.stride[1] + kj) as isize - g.padding[1] as isize;
                            if ih < 0 || iw < 0 || ih >= g.h as isize || iw >= g.w as isize {
                                continue;
                            }
                            let i = p * g.h * g.w + ih as usize * g.w + iw as usize;
                            at.get_or_insert(i);
                            if x[i] > max || x[i].is_nan() {
                                (max, at) = (x[i], Some(i));
                            }
                        }
                    }
                    let o = (p * g.oh + oh) * g.ow + ow;
                    y[o] = max;
                    dx[at.expect("a window holds an element")] += dy[o];
                }
            }
        }
        (y, dx)
    }

    #[test]
    fn max_pooling_and_its_gradient_equal_the_definition_at_every_level() {
        let shapes = [
            // ResNet's pool, an odd-sized map, windows with and without padding.
            ([2, 3, 112, 112], [3, 3], [2, 2], [1, 1]),
            ([1, 2, 9, 7], [3, 3], [2, 2], [1, 1]),
            ([1, 1, 6, 5], [2, 2], [2, 2], [0, 0]),
            ([2, 2, 8, 8], [3, 2], [1, 2], [1, 0]),
            ([1, 1, 1, 1], [1, 1], [1, 1], [0, 0]),
            // A stride of 3 over a width that is not a multiple of it.
            ([1, 2, 10, 11], [3, 3], [3, 3], [1, 1]),
        ];
        for (dims, kernel, stride, padding) in shapes {
            let g = PoolGeometry::new(dims, kernel, stride, padding).expect("geometry");
            // Coarse values, so that windows tie (zeros after a ReLU, say).
            let x: Vec<f32> = (0..g.planes * g.h * g.w)
                .map(|i| ((i * 7919) % 13) as f32 - 6.0)
                .map(|v| v.max(0.0))
                .collect();
            let dy: Vec<f32> = (0..g.planes * g.oh * g.ow)
                .map(|i| (i % 5) as f32 + 0.5)
                .collect();
            let (y_ref, dx_ref) = reference(&g, &x, &dy);
            for level in SimdLevel::supported() {
                assert_eq!(max_pool2d(&g, &x, level), y_ref, "{dims:?} {level:?}");
            }
            for level in SimdLevel::supported() {
                assert_eq!(
                    max_pool2d_grad(&g, &x, &dy, level),
                    dx_ref,
                    "{dims:?} {level:?}"
                );
            }
        }
    }

    #[test]
    fn a_nan_is_the_maximum_of_its_windows_and_takes_their_gradient() {
        let g = PoolGeometry::new([1, 1, 4, 4], [3, 3], [2, 2], [1, 1]).expect("geometry");
        let mut x: Vec<f32> = (0..16).map(|i| i as f32).collect();
        x[5] = f32::NAN;
        x[0] = f32::NEG_INFINITY;
        let dy = [1.0, 2.0, 4.0, 8.0];
        let (y_ref, dx_ref) = reference(&g, &x, &dy);
        for level in SimdLevel::supported() {
            let y = max_pool2d(&g, &x, level);
            for (a, b) in y.iter().zip(&y_ref) {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{level:?}: {y:?} vs {y_ref:?}"
                );
            }
        }
        for level in SimdLevel::supported() {
            assert_eq!(max_pool2d_grad(&g, &x, &dy, level), dx_ref, "{level:?}");
        }
        assert_eq!(
            dx_ref[5],
            1.0 + 2.0 + 4.0 + 8.0,
            "every window holds the NaN"
        );
    }

    #[test]
    fn padding_beyond_half_the_window_is_left_to_burn() {
        assert!(PoolGeometry::new([1, 1, 8, 8], [3, 3], [2, 2], [2, 2]).is_none());
        assert!(PoolGeometry::new([1, 1, 8, 8], [3, 3], [0, 2], [1, 1]).is_none());
        assert!(PoolGeometry::new([1, 1, 2, 2], [5, 5], [1, 1], [2, 2]).is_some());
    }

    #[test]
    fn planes_past_32_bit_indices_are_left_to_burn() {
        let side = 1 << 16;
        assert!(PoolGeometry::new([1, 1, side, side], [3, 3], [2, 2], [1, 1]).is_none());
        assert!(PoolGeometry::new([1, 1, side, side - 1], [3, 3], [2, 2], [1, 1]).is_some());
    }
}

//! Dense and grouped convolutions as matrix products, one image and group at a time:
//!
//! - forward: `Y[co, p] = W[co, k] · col(X)[k, p]`,
//! - input gradient: `col(dX)[k, p] = Wᵀ[k, co] · dY[co, p]`, folded back by col2im,
//! - weight gradient: `dW[co, k] += dY[co, p] · col(X)ᵀ[p, k]`,
//!
//! where `k` runs over (input channel, kernel row, kernel column) and `p` over output pixels.
//! The im2col matrix lives in a per-thread scratch buffer that grows once and is reused (fresh
//! zero-filled pages were about 15 % of a training step); a 1×1, stride-1, unpadded convolution
//! uses the activation itself as that matrix.

use gemm::Parallelism;
use rayon::prelude::*;

use super::activation::epilogue;
use super::{ConvGeometry, SimdLevel, with_scratch};
use crate::kernels::ConvActivation;

/// A row-major or strided view of a matrix inside a slice: element `(i, j)` at
/// `i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `rows × cols` matrix stored in `data`.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// Whether an `rows × cols` matrix fits inside the slice.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst[m × n] (+)= lhs[m × k] · rhs[k × n]`, `dst` row-major, through the `gemm` crate.
fn matmul(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    lhs: MatRef,
    rhs: MatRef,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(
        dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n),
        "matmul: operands smaller than {m}x{k} · {k}x{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assertion above keeps every element gemm reads (lhs, rhs) or writes (dst, row
    // stride n, column stride 1) inside its slice; `dst` is borrowed mutably, so it aliases
    // neither operand. With `accumulate` false gemm does not read `dst` (its alpha is ignored).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

impl ConvGeometry {
    fn group_sizes(&self) -> (usize, usize, usize, usize) {
        let c_in_group = self.c_in / self.groups;
        let c_out_group = self.c_out / self.groups;
        (
            c_in_group,
            c_out_group,
            c_in_group * self.kh * self.kw,
            self.oh * self.ow,
        )
    }

    /// A 1×1, stride-1, unpadded convolution: the activation is its own im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Images processed in parallel, and the `gemm` parallelism inside each: with fewer images
    /// than threads, each product is split instead.
    fn split(&self) -> (bool, Parallelism) {
        let threads = rayon::current_num_threads();
        if self.n >= threads || threads == 1 {
            (true, Parallelism::None)
        } else {
            (false, Parallelism::Rayon(threads))
        }
    }
}

/// Writes the im2col matrix `[c · kh · kw, oh · ow]` of one group's input planes `x`
/// (`[c, h, w]`) into `col`; the zero border is written, not read.
fn im2col(g: &ConvGeometry, x: &[f32], channels: usize, col: &mut [f32]) {
    let p = g.oh * g.ow;
    let (sw, pw) = (g.stride[1], g.padding[1]);
    let mut rows = col.chunks_exact_mut(p);
    for c in 0..channels {
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let (lo, hi) = g.valid_cols(kj);
                for (oh, out) in row.chunks_exact_mut(g.ow).enumerate() {
                    let Some(ih) = g.input_row(oh, ki).filter(|_| lo < hi) else {
                        out.fill(0.0);
                        continue;
                    };
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let src = &plane[ih * g.w..][..g.w];
                    let first = lo * sw + kj - pw;
                    if sw == 1 {
                        out[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (i, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = src[first + i * sw];
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f` with the im2col matrix `[channels · kh · kw, oh · ow]` of one group's input planes:
/// the planes themselves for a pointwise convolution, else this thread's scratch buffer.
fn with_im2col<R>(g: &ConvGeometry, x: &[f32], channels: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    if g.is_pointwise() {
        return f(x);
    }
    with_scratch(channels * g.kh * g.kw * g.oh * g.ow, |col| {
        im2col(g, x, channels, col);
        f(col)
    })
}

/// Adds the im2col-shaped gradient `col` back onto one group's input planes `dx` (`[c, h, w]`).
fn col2im(g: &ConvGeometry, col: &[f32], channels: usize, dx: &mut [f32]) {
    let p = g.oh * g.ow;
    let (sw, pw) = (g.stride[1], g.padding[1]);
    let mut rows = col.chunks_exact(p);
    for c in 0..channels {
        let plane = &mut dx[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let Some(row) = rows.next() else { return };
                let (lo, hi) = g.valid_cols(kj);
                if lo >= hi {
                    continue;
                }
                let first = lo * sw + kj - pw;
                for (oh, grad) in row.chunks_exact(g.ow).enumerate() {
                    let Some(ih) = g.input_row(oh, ki) else {
                        continue;
                    };
                    let dst = &mut plane[ih * g.w..][..g.w];
                    if sw == 1 {
                        for (d, &v) in dst[first..first + (hi - lo)].iter_mut().zip(&grad[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (i, &v) in grad[lo..hi].iter().enumerate() {
                            dst[first + i * sw] += v;
                        }
                    }
                }
            }
        }
    }
}

/// `len` zeros, written rather than allocated zeroed. A zeroed allocation of this size comes from
/// fresh pages that the kernel maps to its shared zero page until written; a buffer that is
/// read before it is written (added into) then faults twice per page, the second time to copy
/// the zero page, which flushes every core's TLB (on the project's 2-core VM, 10 % of a ResNet18
/// training step went to those flushes). A buffer written first faults once.
fn written_zeros(len: usize) -> Vec<f32> {
    let mut zeros = Vec::with_capacity(len);
    zeros.resize(len, 0.0);
    zeros
}

/// Runs `one_image(i, out)` on each image's `per_image` outputs, in parallel or in turn.
fn for_each_image(
    out: &mut [f32],
    per_image: usize,
    parallel: bool,
    one_image: impl Fn(usize, &mut [f32]) + Sync,
) {
    if parallel {
        out.par_chunks_mut(per_image)
            .enumerate()
            .for_each(|(i, chunk)| one_image(i, chunk));
    } else {
        out.chunks_mut(per_image)
            .enumerate()
            .for_each(|(i, chunk)| one_image(i, chunk));
    }
}

/// Forward convolution `[n, c_out, oh, ow]`, with `activation` applied to each image's output
/// as the bias is added (while it is still in cache).
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let (c_in_group, c_out_group, k, p) = g.group_sizes();
    let mut y = vec![0.0f32; g.n * g.c_out * p];
    let (by_image, parallelism) = g.split();
    let one_image = |image: usize, out: &mut [f32]| {
        let x_image = &x[image * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
        for group in 0..g.groups {
            let x_group = &x_image[group * c_in_group * g.h * g.w..][..c_in_group * g.h * g.w];
            let w_group =
                MatRef::row_major(&weight[group * c_out_group * k..][..c_out_group * k], k);
            let out_group = &mut out[group * c_out_group * p..][..c_out_group * p];
            with_im2col(g, x_group, c_in_group, |col| {
                let rhs = MatRef::row_major(col, p);
                matmul(
                    [c_out_group, p, k],
                    out_group,
                    w_group,
                    rhs,
                    false,
                    parallelism,
                );
            });
        }
        if bias.is_some() || activation.is_some() {
            for (channel, row) in out.chunks_exact_mut(p).enumerate() {
                let b = bias.map(|bias| bias[channel]);
                epilogue(level, row, b, activation);
            }
        }
    };
    for_each_image(&mut y, g.c_out * p, by_image, one_image);
    y
}

/// Input gradient `[n, c_in, h, w]`.
pub fn input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (c_in_group, c_out_group, k, p) = g.group_sizes();
    let plane = g.h * g.w;
    let mut dx = vec![0.0f32; g.n * g.c_in * plane];
    let (by_image, parallelism) = g.split();
    let one_image = |image: usize, out: &mut [f32]| {
        let dy_image = &dy[image * g.c_out * p..][..g.c_out * p];
        for group in 0..g.groups {
            let w_t = MatRef::transposed(&weight[group * c_out_group * k..][..c_out_group * k], k);
            let dy_group =
                MatRef::row_major(&dy_image[group * c_out_group * p..][..c_out_group * p], p);
            let dx_group = &mut out[group * c_in_group * plane..][..c_in_group * plane];
            if g.is_pointwise() {
                matmul(
                    [k, p, c_out_group],
                    dx_group,
                    w_t,
                    dy_group,
                    false,
                    parallelism,
                );
            } else {
                with_scratch(k * p, |col| {
                    matmul([k, p, c_out_group], col, w_t, dy_group, false, parallelism);
                    // col2im adds: see `written_zeros`.
                    dx_group.fill(0.0);
                    col2im(g, col, c_in_group, dx_group);
                });
            }
        }
    };
    for_each_image(&mut dx, g.c_in * plane, by_image, one_image);
    dx
}

/// Weight gradient `[c_out, c_in / groups, kh, kw]`: each of a fixed number of chunks of the
/// batch sums its images into its own buffer, then the buffers are added in chunk order, so
/// the result does not depend on which thread ran what.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (c_in_group, c_out_group, k, p) = g.group_sizes();
    let len = g.c_out * k;
    let (by_image, parallelism) = g.split();
    let chunks = if by_image {
        rayon::current_num_threads().min(g.n).max(1)
    } else {
        1
    };
    let images_per_chunk = g.n.div_ceil(chunks);
    let accumulate_images = |images: std::ops::Range<usize>| {
        // gemm adds into it: see `written_zeros`.
        let mut dw = written_zeros(len);
        for image in images {
            let x_image = &x[image * g.c_in * g.h * g.w..][..g.c_in * g.h * g.w];
            let dy_image = &dy[image * g.c_out * p..][..g.c_out * p];
            for group in 0..g.groups {
                let x_group = &x_image[group * c_in_group * g.h * g.w..][..c_in_group * g.h * g.w];
                let dy_group =
                    MatRef::row_major(&dy_image[group * c_out_group * p..][..c_out_group * p], p);
                let dw_group = &mut dw[group * c_out_group * k..][..c_out_group * k];
                with_im2col(g, x_group, c_in_group, |col| {
                    let col_t = MatRef::transposed(col, p);
                    matmul(
                        [c_out_group, k, p],
                        dw_group,
                        dy_group,
                        col_t,
                        true,
                        parallelism,
                    );
                });
            }
        }
        dw
    };
    let partials: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let start = (chunk * images_per_chunk).min(g.n);
            accumulate_images(start..((chunk + 1) * images_per_chunk).min(g.n))
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut dw = partials.next().unwrap_or_else(|| vec![0.0; len]);
    for partial in partials {
        dw.iter_mut().zip(&partial).for_each(|(a, b)| *a += b);
    }
    dw
}

//! Dense and grouped convolutions as matrix products, one group at a time:
//!
//! - forward: `Y[co, p] = W[co, k] · col(X)[k, p]`,
//! - input gradient: `col(dX)[k, p] = Wᵀ[k, co] · dY[co, p]`, folded back by col2im,
//! - weight gradient: `dW[co, k] += dY[co, p] · col(X)ᵀ[p, k]`,
//!
//! where `k` runs over (input channel, kernel row, kernel column) and `p` over output pixels:
//! one image's, or, for small maps in a large enough batch, several images' side by side (see
//! `MIN_PRODUCT_COLUMNS`). The im2col matrix lives in a per-thread scratch buffer that grows
//! once and is reused (fresh zero-filled pages were about 15 % of a training step); a 1×1,
//! stride-1, unpadded convolution of one image uses the activation itself as that matrix. The
//! products write the output in place, into memory not cleared first (`buffers::written_by`). With
//! fewer images than threads, gemm splits each product and the im2col and epilogue passes are
//! split by channel, so that batch 1 keeps every core busy.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use super::activation::epilogue;
use super::{
    ConvGeometry, SimdLevel, batch_chunks, buffers, sum_in_order, with_scratch, with_second_scratch,
};
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
    dims: [usize; 3],
    dst: &mut [f32],
    lhs: MatRef,
    rhs: MatRef,
    accumulate: bool,
    parallelism: Parallelism,
) {
    let dst_len = dst.len();
    // SAFETY: `dst` is borrowed mutably, so it aliases neither operand; it is initialised, so
    // gemm may read it when accumulating.
    unsafe {
        gemm_raw(
            dims,
            (dst.as_mut_ptr(), dst_len),
            lhs,
            rhs,
            accumulate,
            parallelism,
        )
    }
}

/// `dst[m × n] = lhs[m × k] · rhs[k × n]` into memory not yet written: gemm without
/// `read_dst` stores every element of the `m × n` block and reads none before it stores it
/// (its first pass over the inner dimension ignores `dst`), so the block is initialised after.
fn matmul_into(
    dims: [usize; 3],
    dst: &mut [MaybeUninit<f32>],
    lhs: MatRef,
    rhs: MatRef,
    parallelism: Parallelism,
) {
    let dst_len = dst.len();
    // SAFETY: as in `matmul`; `accumulate` is false, so nothing is read before it is written.
    unsafe {
        gemm_raw(
            dims,
            (dst.as_mut_ptr().cast(), dst_len),
            lhs,
            rhs,
            false,
            parallelism,
        )
    }
}

/// The `gemm` call behind [`matmul`] and [`matmul_into`], into the `dst_len` elements at `dst`.
///
/// # Safety
///
/// `(dst, dst_len)` must be one exclusively borrowed allocation (valid for writes of `dst_len`
/// elements) that aliases neither operand, initialised if `accumulate`.
unsafe fn gemm_raw(
    [m, n, k]: [usize; 3],
    (dst, dst_len): (*mut f32, usize),
    lhs: MatRef,
    rhs: MatRef,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(
        dst_len >= m * n && lhs.fits(m, k) && rhs.fits(k, n),
        "matmul: operands smaller than {m}x{k} · {k}x{n} into {m}x{n}"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assertion above keeps every element gemm reads (lhs, rhs) or writes (dst, row
    // stride n, column stride 1) inside its allocation; the caller vouches that `dst` is
    // exclusive and, when read, initialised. With `accumulate` false gemm does not read `dst`
    // (its alpha is ignored).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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

/// Fewest output pixels a matrix product is given when the batch allows: below this, the
/// products of small late-stage maps (7×7, 14×14) spend more time re-packing the weight, once per
/// image, than multiplying, so several images share one product (their im2col matrices side by
/// side).
const MIN_PRODUCT_COLUMNS: usize = 1024;

/// [`MIN_PRODUCT_COLUMNS`] for the weight gradient, whose products sum over the pixels: one
/// 28×28 map (784) is deep enough for a product of its own, where two side by side first copied
/// both images' output gradients together. By measurement (ResNet18's `layer2.0.conv1`, batch
/// 16, 224, 2 cores): 7.3–7.6 → 6.6–6.7 ms; the 14×14 and 7×7 layers keep their products of 4
/// and 8 images (as fast as 3, slower with more).
const MIN_WEIGHT_GRAD_COLUMNS: usize = 784;

/// Most scratch elements (8 MiB) a product of several images may use per thread, about what one
/// image's im2col matrix of ResNet's first stage (3×3 over 64 channels, 56×56) takes: without it,
/// 16 images of 7×7 at batch 32 took 16 MiB per thread, which raised a training step's peak.
const MAX_PRODUCT_SCRATCH: usize = 1 << 21;

/// How a batch is cut into matrix products.
#[derive(Clone, Copy, Debug)]
struct BatchSplit {
    /// Images per product (the last product of the batch may have fewer).
    images: usize,
    /// Whether products run in parallel, one per thread; else one at a time, each split by gemm.
    parallel: bool,
    /// The parallelism inside each product.
    parallelism: Parallelism,
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

    /// With fewer images than threads, one product per image, each split over the threads.
    /// Otherwise products in parallel, each of one image or, for small output maps of convolutions
    /// other than pointwise ones, of several:
    /// as many as bring it to `min_columns` pixels ([`MIN_PRODUCT_COLUMNS`], or
    /// [`MIN_WEIGHT_GRAD_COLUMNS`]) while every thread still gets a product and the scratch stays
    /// within [`MAX_PRODUCT_SCRATCH`], and as many products as a multiple of the threads, so no
    /// thread waits at the end.
    fn split(&self, min_columns: usize) -> BatchSplit {
        let threads = rayon::current_num_threads().max(1);
        if self.n < threads {
            return BatchSplit {
                images: 1,
                parallel: false,
                parallelism: Parallelism::Rayon(threads),
            };
        }
        if self.is_pointwise() {
            // Its product reads the activation where it lies; side by side would copy it.
            return BatchSplit {
                images: 1,
                parallel: true,
                parallelism: Parallelism::None,
            };
        }
        let pixels = (self.oh * self.ow).max(1);
        let (_, c_out_group, k, _) = self.group_sizes();
        let scratch_per_image = (k + c_out_group) * pixels;
        let most = min_columns
            .div_ceil(pixels)
            .min(MAX_PRODUCT_SCRATCH / scratch_per_image.max(1))
            .min(self.n.div_ceil(threads))
            .max(1);
        let products = self.n.div_ceil(most).next_multiple_of(threads).min(self.n);
        BatchSplit {
            images: self.n.div_ceil(products),
            parallel: true,
            parallelism: Parallelism::None,
        }
    }
}

/// Writes the im2col rows of one input plane (`kh · kw` rows of `oh · ow` columns, row `r` at
/// `rows[r * row_stride..]`); the zero border is written, not read.
fn im2col_plane(g: &ConvGeometry, plane: &[f32], rows: &mut [f32], row_stride: usize) {
    let sw = g.stride[1];
    if sw > 1 && g.kh * g.kw > g.stride[0] * sw {
        // Each input element is read by several taps: split the rows by column phase once, so
        // that every tap copies contiguous runs instead of gathering every `sw`-th element (the
        // gather was a fifth of the 7×7 stride-2 stem's forward pass).
        let wq = g.w.div_ceil(sw);
        with_second_scratch(g.h * sw * wq, |phases| {
            split_column_phases(g, plane, phases, wq);
            im2col_rows(g, rows, row_stride, |ih, first, out| {
                let src = &phases[(ih * sw + first % sw) * wq..][..wq];
                out.copy_from_slice(&src[first / sw..][..out.len()]);
            });
        });
    } else {
        im2col_rows(g, rows, row_stride, |ih, first, out| {
            let src = &plane[ih * g.w..][..g.w];
            if sw == 1 {
                out.copy_from_slice(&src[first..][..out.len()]);
            } else {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = src[first + i * sw];
                }
            }
        });
    }
}

/// The loop of [`im2col_plane`] over taps and output rows: writes the zero border and has
/// `copy(ih, first, out)` fill each run `out` of valid output columns with input row `ih`'s
/// columns `first, first + sw, ...`.
fn im2col_rows(
    g: &ConvGeometry,
    rows: &mut [f32],
    row_stride: usize,
    mut copy: impl FnMut(usize, usize, &mut [f32]),
) {
    let p = g.oh * g.ow;
    let (sw, pw) = (g.stride[1], g.padding[1]);
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let row = &mut rows[(ki * g.kw + kj) * row_stride..][..p];
            let (lo, hi) = g.valid_cols(kj);
            for (oh, out) in row.chunks_exact_mut(g.ow).enumerate() {
                let Some(ih) = g.input_row(oh, ki).filter(|_| lo < hi) else {
                    out.fill(0.0);
                    continue;
                };
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                copy(ih, lo * sw + kj - pw, &mut out[lo..hi]);
            }
        }
    }
}

/// Copies each row `r` of `plane` (`[h, w]`) into `sw` runs of `wq = ⌈w / sw⌉`, run `b` (at
/// `(r · sw + b) · wq`) holding columns `b, b + sw, ...` (the last runs one short where `w` is
/// not a multiple of `sw`; that element is never read).
fn split_column_phases(g: &ConvGeometry, plane: &[f32], phases: &mut [f32], wq: usize) {
    let sw = g.stride[1];
    for (row, out) in plane
        .chunks_exact(g.w)
        .zip(phases.chunks_exact_mut(sw * wq))
    {
        for (b, run) in out.chunks_exact_mut(wq).enumerate() {
            for (o, &v) in run.iter_mut().zip(row.iter().skip(b).step_by(sw)) {
                *o = v;
            }
        }
    }
}

/// Writes the im2col matrix `[c · kh · kw, oh · ow]` of one group's input planes `x`
/// (`[c, h, w]`) into `col`, rows `row_stride` apart (wider than `oh · ow` when several images'
/// matrices lie side by side); the planes in parallel if `parallel`.
fn im2col(
    g: &ConvGeometry,
    x: &[f32],
    channels: usize,
    col: &mut [f32],
    row_stride: usize,
    parallel: bool,
) {
    // The last plane's block may end after its last row (`oh · ow` long, not `row_stride`).
    let (plane, block) = (g.h * g.w, g.kh * g.kw * row_stride);
    let x = &x[..channels * plane];
    if parallel {
        col.par_chunks_mut(block)
            .zip(x.par_chunks(plane))
            .for_each(|(rows, plane)| im2col_plane(g, plane, rows, row_stride));
    } else {
        col.chunks_mut(block)
            .zip(x.chunks(plane))
            .for_each(|(rows, plane)| im2col_plane(g, plane, rows, row_stride));
    }
}

/// Runs `f` with the im2col matrix `[channels · kh · kw, oh · ow]` of one group's input planes:
/// the planes themselves for a pointwise convolution, else this thread's scratch buffer.
fn with_im2col<R>(
    g: &ConvGeometry,
    x: &[f32],
    channels: usize,
    parallel: bool,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    if g.is_pointwise() {
        return f(x);
    }
    let p = g.oh * g.ow;
    with_scratch(channels * g.kh * g.kw * p, |col| {
        im2col(g, x, channels, col, p, parallel);
        f(col)
    })
}

/// Adds the im2col-shaped gradient `col` (rows `row_stride` apart) back onto one group's input
/// planes `dx` (`[c, h, w]`).
fn col2im(g: &ConvGeometry, col: &[f32], channels: usize, dx: &mut [f32], row_stride: usize) {
    let p = g.oh * g.ow;
    let (sw, pw) = (g.stride[1], g.padding[1]);
    for c in 0..channels {
        let plane = &mut dx[c * g.h * g.w..][..g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &col[((c * g.kh + ki) * g.kw + kj) * row_stride..][..p];
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

/// Copies channels `[first, first + rows)` of each image of `images` (`[i, channels, p]`) side by
/// side into `dst` (`[rows, i · p]`): the layout of a product over several images.
fn gather_rows(
    images: &[f32],
    channels: usize,
    p: usize,
    first: usize,
    rows: usize,
    dst: &mut [f32],
) {
    let count = images.len() / (channels * p);
    for (r, dst_row) in dst.chunks_exact_mut(count * p).take(rows).enumerate() {
        for (image, out) in dst_row.chunks_exact_mut(p).enumerate() {
            out.copy_from_slice(&images[(image * channels + first + r) * p..][..p]);
        }
    }
}

/// Runs `f(dy_side, col)` on this thread's scratch, split into the output gradients of one
/// group's channels for `images` images side by side (`[c_out / groups, images · oh · ow]`,
/// gathered from `dy_images`) and room for an im2col matrix of as many columns.
fn with_gathered_output_grad<R>(
    g: &ConvGeometry,
    dy_images: &[f32],
    group: usize,
    images: usize,
    f: impl FnOnce(&[f32], &mut [f32]) -> R,
) -> R {
    let (_, c_out_group, k, p) = g.group_sizes();
    let cols = images * p;
    with_scratch(c_out_group * cols + k * cols, |scratch| {
        let (dy_side, col) = scratch.split_at_mut(c_out_group * cols);
        gather_rows(
            dy_images,
            g.c_out,
            p,
            group * c_out_group,
            c_out_group,
            dy_side,
        );
        f(dy_side, col)
    })
}

/// One group's input planes (`[c_in / groups, h, w]`) of image `image` of `x_images`.
fn group_planes<'a>(
    g: &ConvGeometry,
    x_images: &'a [f32],
    image: usize,
    group: usize,
) -> &'a [f32] {
    let (c_in_group, plane) = (g.c_in / g.groups, g.h * g.w);
    &x_images[(image * g.c_in + group * c_in_group) * plane..][..c_in_group * plane]
}

/// Writes the im2col matrices of one group's planes of every image of `x_images` side by side
/// into `col` (`[k, images · oh · ow]`): the right-hand side of a product over several images.
fn im2col_side_by_side(g: &ConvGeometry, x_images: &[f32], group: usize, col: &mut [f32]) {
    let images = x_images.len() / (g.c_in * g.h * g.w);
    let p = g.oh * g.ow;
    for image in 0..images {
        let planes = group_planes(g, x_images, image, group);
        im2col(
            g,
            planes,
            g.c_in / g.groups,
            &mut col[image * p..],
            images * p,
            false,
        );
    }
}

/// Runs `one_product(first_image, out)` on the outputs of each product's images (`per_image`
/// values each), in parallel or in turn.
fn for_each_product<T: Send>(
    out: &mut [T],
    per_image: usize,
    split: BatchSplit,
    one_product: impl Fn(usize, &mut [T]) + Sync,
) {
    let len = split.images * per_image;
    if split.parallel {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, chunk)| one_product(i * split.images, chunk));
    } else {
        out.chunks_mut(len)
            .enumerate()
            .for_each(|(i, chunk)| one_product(i * split.images, chunk));
    }
}

/// `dst = lhs · rhs` (`[rows, p]`, `[rows, k]`, `[k, p]`) for one image of a batch smaller than
/// the thread count: the rows (output channels) split into one block per thread, each block's
/// product on its thread and then `finish(row, index)` on each of its rows while they are in
/// cache. One parallel loop, where gemm's own split over the threads forked and joined once per
/// pass over the inner dimension and the bias and activation once more, over the whole output:
/// MobileNetV2's batch-1 inference 1–13 % faster, ResNet18's 4–11 % (alternated in one
/// process). Splitting the columns (the pixels) instead, each thread reading half the
/// activation rather than half the weight, was slower even on the widest maps.
fn by_channel_blocks(
    dst: &mut [MaybeUninit<f32>],
    lhs: MatRef,
    rhs: MatRef,
    [p, k]: [usize; 2],
    finish: impl Fn(&mut [f32], usize) + Sync,
) {
    let rows = (dst.len() / p.max(1)).div_ceil(rayon::current_num_threads().max(1));
    dst.par_chunks_mut((rows * p).max(1))
        .enumerate()
        .for_each(|(block, out)| {
            let first = block * rows;
            let count = out.len() / p;
            let lhs = MatRef {
                data: &lhs.data[first * lhs.row_stride..],
                ..lhs
            };
            matmul_into([count, p, k], out, lhs, rhs, Parallelism::None);
            // SAFETY: the product wrote every element of `out` (`count` rows of `p`).
            let out = unsafe { buffers::assume_written(out) };
            for (r, row) in out.chunks_exact_mut(p).enumerate() {
                finish(row, first + r);
            }
        });
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
    let in_image = g.c_in * g.h * g.w;
    let split = g.split(MIN_PRODUCT_COLUMNS);
    // Adds the bias of `channel` and applies the activation to its output plane `row`.
    let finish = |row: &mut [f32], channel: usize| {
        if bias.is_some() || activation.is_some() {
            epilogue(level, row, bias.map(|bias| bias[channel]), activation);
        }
    };
    let one_product = |first: usize, out: &mut [MaybeUninit<f32>]| {
        let images = out.len() / (g.c_out * p);
        let x_images = &x[first * in_image..][..images * in_image];
        for group in 0..g.groups {
            let w_group =
                MatRef::row_major(&weight[group * c_out_group * k..][..c_out_group * k], k);
            if images == 1 {
                let out_group = &mut out[group * c_out_group * p..][..c_out_group * p];
                let planes = group_planes(g, x_images, 0, group);
                with_im2col(g, planes, c_in_group, !split.parallel, |col| {
                    let rhs = MatRef::row_major(col, p);
                    if split.parallel {
                        let dims = [c_out_group, p, k];
                        matmul_into(dims, out_group, w_group, rhs, split.parallelism);
                    } else {
                        let first = group * c_out_group;
                        by_channel_blocks(out_group, w_group, rhs, [p, k], |row, r| {
                            finish(row, first + r)
                        });
                    }
                });
                continue;
            }
            // Several images: their im2col matrices side by side, one product, then each
            // image's rows copied to its place.
            let cols = images * p;
            with_scratch(k * cols + c_out_group * cols, |scratch| {
                let (col, product) = scratch.split_at_mut(k * cols);
                im2col_side_by_side(g, x_images, group, col);
                let rhs = MatRef::row_major(col, cols);
                let dims = [c_out_group, cols, k];
                matmul(dims, product, w_group, rhs, false, split.parallelism);
                for (co, row) in product.chunks_exact(cols).enumerate() {
                    for (image, pixels) in row.chunks_exact(p).enumerate() {
                        let channel = group * c_out_group + co;
                        buffers::write_from(&mut out[(image * g.c_out + channel) * p..], pixels);
                    }
                }
            });
        }
        // SAFETY: each group's rows of each image of `out` were written above, by a product
        // or by the copy from one.
        let out = unsafe { buffers::assume_written(out) };
        if split.parallel {
            // (Otherwise the channel blocks finished their rows.)
            for (row, plane) in out.chunks_exact_mut(p).enumerate() {
                finish(plane, row % g.c_out);
            }
        }
    };
    // SAFETY: the products cover every image's output (`for_each_product` splits the whole
    // buffer), and `one_product` writes all of its part (see the comment there).
    unsafe {
        buffers::written_by(g.n * g.c_out * p, |y| {
            for_each_product(y, g.c_out * p, split, one_product)
        })
    }
}

/// Input gradient `[n, c_in, h, w]`.
pub fn input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    let (c_in_group, c_out_group, k, p) = g.group_sizes();
    let plane = g.h * g.w;
    let split = g.split(MIN_PRODUCT_COLUMNS);
    // Writes one group's input planes `[c_in / groups, h, w]` from its im2col-shaped gradient
    // (rows `row_stride` apart): zeros, then col2im's sums.
    let fold = |col: &[f32], dx_group: &mut [MaybeUninit<f32>], row_stride: usize| {
        dx_group.fill(MaybeUninit::new(0.0));
        // SAFETY: just filled.
        let dx_group = unsafe { buffers::assume_written(dx_group) };
        col2im(g, col, c_in_group, dx_group, row_stride);
    };
    let one_product = |first: usize, out: &mut [MaybeUninit<f32>]| {
        let images = out.len() / (g.c_in * plane);
        let dy_images = &dy[first * g.c_out * p..][..images * g.c_out * p];
        for group in 0..g.groups {
            let w_t = MatRef::transposed(&weight[group * c_out_group * k..][..c_out_group * k], k);
            if images == 1 {
                let dy_group =
                    MatRef::row_major(&dy_images[group * c_out_group * p..][..c_out_group * p], p);
                let dx_group = &mut out[group * c_in_group * plane..][..c_in_group * plane];
                if g.is_pointwise() {
                    let dims = [k, p, c_out_group];
                    matmul_into(dims, dx_group, w_t, dy_group, split.parallelism);
                } else {
                    with_scratch(k * p, |col| {
                        let dims = [k, p, c_out_group];
                        matmul(dims, col, w_t, dy_group, false, split.parallelism);
                        fold(col, dx_group, p);
                    });
                }
                continue;
            }
            // Several images: their output gradients side by side, one product, then each
            // image's im2col-shaped gradient folded back.
            let cols = images * p;
            with_gathered_output_grad(g, dy_images, group, images, |dy_side, col| {
                let rhs = MatRef::row_major(dy_side, cols);
                matmul(
                    [k, cols, c_out_group],
                    col,
                    w_t,
                    rhs,
                    false,
                    split.parallelism,
                );
                for image in 0..images {
                    let dx_group = &mut out[(image * g.c_in + group * c_in_group) * plane..]
                        [..c_in_group * plane];
                    fold(&col[image * p..], dx_group, cols);
                }
            });
        }
    };
    // SAFETY: every group's planes of every image are written above (a product's output, or
    // `fold`'s zeros and sums), and the products cover the whole buffer.
    unsafe {
        buffers::written_by(g.n * g.c_in * plane, |dx| {
            for_each_product(dx, g.c_in * plane, split, one_product)
        })
    }
}

/// Weight gradient `[c_out, c_in / groups, kh, kw]`: each of a fixed number of chunks of the
/// batch sums its images into its own buffer (its first product written in place, the rest
/// added), then the buffers are added in chunk order, slices of the weight in parallel, so
/// the result does not depend on which thread ran what.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (c_in_group, c_out_group, k, p) = g.group_sizes();
    let in_image = g.c_in * g.h * g.w;
    let len = g.c_out * k;
    let split = g.split(MIN_WEIGHT_GRAD_COLUMNS);
    let chunks = if split.parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    // The products of `images` (not empty), `split.images` at a time, into `dw`: the first
    // product of each group writes the group's rows, the later ones add into them.
    let accumulate_images = |images: std::ops::Range<usize>, dw: &mut [MaybeUninit<f32>]| {
        let mut first = images.start;
        while first < images.end {
            let add = first > images.start;
            // `split.images` at a time: one product sums them (along its inner dimension).
            let count = split.images.min(images.end - first);
            let cols = count * p;
            let x_images = &x[first * in_image..][..count * in_image];
            let dy_images = &dy[first * g.c_out * p..][..count * g.c_out * p];
            for group in 0..g.groups {
                let dw_group = &mut dw[group * c_out_group * k..][..c_out_group * k];
                if count == 1 {
                    let dy_group = MatRef::row_major(
                        &dy_images[group * c_out_group * p..][..c_out_group * p],
                        p,
                    );
                    let planes = group_planes(g, x_images, 0, group);
                    with_im2col(g, planes, c_in_group, !split.parallel, |col| {
                        let col_t = MatRef::transposed(col, p);
                        let dims = [c_out_group, k, p];
                        // SAFETY: with `add`, an earlier product of this call wrote the group.
                        unsafe { product(dims, dw_group, dy_group, col_t, add, split.parallelism) };
                    });
                    continue;
                }
                with_gathered_output_grad(g, dy_images, group, count, |dy_side, col| {
                    im2col_side_by_side(g, x_images, group, col);
                    let lhs = MatRef::row_major(dy_side, cols);
                    let col_t = MatRef::transposed(col, cols);
                    let dims = [c_out_group, k, cols];
                    // SAFETY: as above.
                    unsafe { product(dims, dw_group, lhs, col_t, add, split.parallelism) };
                });
            }
            first += count;
        }
    };
    let partials: Vec<Vec<f32>> = batch_chunks(g.n, chunks)
        .into_par_iter()
        // SAFETY: a chunk is not empty, so each group's first product writes its rows, and the
        // groups cover the buffer.
        .map(|images| unsafe { buffers::written_by(len, |dw| accumulate_images(images, dw)) })
        .collect();
    sum_in_order(partials, len)
}

/// `dst = lhs · rhs` in place, or `dst += lhs · rhs` when `add`.
///
/// # Safety
///
/// With `add`, every element of `dst` is initialised.
unsafe fn product(
    dims: [usize; 3],
    dst: &mut [MaybeUninit<f32>],
    lhs: MatRef,
    rhs: MatRef,
    add: bool,
    parallelism: Parallelism,
) {
    if add {
        // SAFETY: the caller's contract.
        let dst = unsafe { buffers::assume_written(dst) };
        matmul(dims, dst, lhs, rhs, true, parallelism);
    } else {
        matmul_into(dims, dst, lhs, rhs, parallelism);
    }
}

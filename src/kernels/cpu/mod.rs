//! The crate's own CPU kernels on contiguous `f32` NCHW slices: convolutions forward, input
//! gradient and weight gradient, and the other layers a training step spends its time in.
//!
//! - Dense and grouped convolutions (3×3 stride 1 and 2, the 7×7 stem, 1×1) lower each image to
//!   one matrix product per group through a reused im2col scratch buffer ([`dense`]); a 1×1,
//!   stride-1 convolution multiplies the activation in place. The products run on the `gemm`
//!   crate (the one burn-flex uses), whose micro-kernels pick AVX-512, AVX2+FMA or a portable
//!   path at run time. The weight gradient sums per-thread partial products over fixed chunks of
//!   the batch, so a run with a given thread count is repeatable bit for bit.
//! - Dense stride-1 convolutions on maps 7 wide and more (ResNet's 3×3 layers) skip im2col: they
//!   read a zero-padded copy of each image in place. Forward pass and input gradient: on maps 7
//!   to 55 wide a register tile of 32 output channels (in the lanes) × 2 rows × 7 pixels
//!   ([`row_tiles`]), on wider ones 8 output channels × 48 pixels in the lanes ([`direct`]);
//!   weight gradient on maps 28 wide and more: 32 output channels × 4 input channels × 3 taps
//!   summed over the pixels ([`direct`]). The row tiles also take the forward pass of stride-2
//!   convolutions with outputs 7 wide and more (ResNet's 28×28, 14×14 and 7×7 stage entries),
//!   their inputs read two apart.
//! - The weight gradient of dense convolutions over at most four input channels (the stems: 3×3
//!   or 7×7 over the colour channels) skips im2col, too costly for so shallow a product: it sums
//!   8 output channels × 3 taps over the pixels of stride-phase copies of the input, in
//!   registers ([`few_channels`]). Their forward pass, where each output sums at least 64
//!   products (ResNet's 7×7 stem, not MobileNetV2's 3×3), runs [`direct`]'s tiles on those
//!   stride-phase copies.
//! - Depthwise convolutions (`groups == C_in == C_out`, MobileNetV2's 3×3 stride 1 and 2) run
//!   plane by plane as row-wise multiply-adds ([`depthwise`]), compiled three times (AVX-512,
//!   AVX2+FMA, portable) and chosen at run time ([`SimdLevel`]).
//!
//! - Max pooling and its input gradient ([`pool`]), the training BatchNorm, SiLU, Hardtanh and
//!   Hardswish ([`batch_norm`], [`activation`]), and the squeeze-and-excitation gate's channel
//!   scale ([`channel_scale`]), compiled per [`SimdLevel`] the same way.
//!
//! - Output buffers ([`buffers`]): most kernels write into fresh memory not cleared first;
//!   buffers of 32 MiB and more are asked of Linux as huge pages; and, when asked for (off by
//!   default), large outputs are kept for reuse instead of fresh pages.
//!
//! Work is split over images (and over planes for depthwise layers); a batch smaller than the
//! thread count lets `gemm` split each product instead, so batch 1 uses every core: such batches
//! take the matrix product, except where [`row_tiles`] (on maps 14 to 55 wide) or [`direct`]
//! (and the stems' forward pass on its tiles) has at least two blocks of output channels per
//! thread to split each image over.

pub mod activation;
pub mod adam;
pub mod batch_norm;
pub mod buffers;
pub mod channel_scale;
pub mod dense;
pub mod depthwise;
pub mod direct;
pub mod few_channels;
pub mod pool;
pub mod row_tiles;
mod simd;

pub use simd::SimdLevel;

use std::cell::RefCell;
use std::ops::Range;

use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;

use crate::kernels::ConvActivation;

/// Sizes of one 2-D convolution: input `[n, c_in, h, w]`, weight `[c_out, c_in / groups, kh, kw]`,
/// output `[n, c_out, oh, ow]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Groups.
    pub groups: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Strides `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Zero padding on each side `[vertical, horizontal]`.
    pub padding: [usize; 2],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeometry {
    /// The geometry of `x ⋆ weight` under `options`, or `None` for what these kernels do not
    /// cover (dilation other than 1, channels not divisible by the groups, an empty output).
    pub fn new(x: [usize; 4], weight: [usize; 4], options: &ConvOptions<2>) -> Option<Self> {
        let [n, c_in, h, w] = x;
        let [c_out, c_in_group, kh, kw] = weight;
        let groups = options.groups;
        if options.dilation != [1, 1]
            || groups == 0
            || c_in != c_in_group * groups
            || c_out % groups != 0
            || options.stride.contains(&0)
        {
            return None;
        }
        let [sh, sw] = options.stride;
        let [ph, pw] = options.padding;
        if h + 2 * ph < kh || w + 2 * pw < kw {
            return None;
        }
        let geometry = Self {
            n,
            c_in,
            h,
            w,
            c_out,
            groups,
            kh,
            kw,
            stride: [sh, sw],
            padding: [ph, pw],
            oh: (h + 2 * ph - kh) / sh + 1,
            ow: (w + 2 * pw - kw) / sw + 1,
        };
        (geometry.n * geometry.c_in * geometry.c_out * kh * kw > 0).then_some(geometry)
    }

    /// Whether every output channel sees exactly one input channel (`groups == c_in == c_out`).
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.c_in && self.c_in == self.c_out && self.groups > 1
    }

    /// Input, weight and output element counts.
    pub fn lens(&self) -> (usize, usize, usize) {
        (
            self.n * self.c_in * self.h * self.w,
            self.c_out * (self.c_in / self.groups) * self.kh * self.kw,
            self.n * self.c_out * self.oh * self.ow,
        )
    }

    /// The valid output columns `[lo, hi)` of kernel column `kj`: those whose input column
    /// `ow * stride + kj - padding` lies inside the image (the rest read the zero border).
    #[inline]
    pub(crate) fn valid_cols(&self, kj: usize) -> (usize, usize) {
        valid_range(self.ow, self.stride[1], kj, self.padding[1], self.w)
    }

    /// The input row read by output row `oh` through kernel row `ki`, if inside the image.
    #[inline]
    pub(crate) fn input_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.stride[0] + ki)
            .checked_sub(self.padding[0])
            .filter(|&r| r < self.h)
    }
}

thread_local! {
    /// This thread's im2col scratch, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A second one, for a pass that needs its own while the first is in use (a strided
    /// im2col's column phases, written while the im2col matrix fills the first).
    static SECOND_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of `len` elements (contents unspecified), its
/// first element on a cache line's start ([`buffers::CacheAligned`] says why).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&SCRATCH, len, f)
}

/// [`with_scratch`] on a second buffer, usable inside the first's `f`.
pub(crate) fn with_second_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&SECOND_SCRATCH, len, f)
}

fn with_buffer<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => f(line_aligned(&mut buffer, len)),
        // Re-entered on the same thread (a nested parallel call stole work here): a fresh one.
        Err(_) => f(line_aligned(&mut Vec::new(), len)),
    })
}

/// `len` elements of `buffer` from its first cache line's start, the buffer grown to hold them.
fn line_aligned(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len + buffers::LINE - 1 {
        buffer.resize(len + buffers::LINE - 1, 0.0);
    }
    let start = buffers::to_line_start(buffer.as_ptr());
    &mut buffer[start..][..len]
}

/// The batch `0..n` cut into at most `chunks` consecutive, non-empty ranges of one length (the
/// last may be shorter): the fixed chunks whose partial weight gradients [`sum_in_order`] adds,
/// so that a result depends on the thread count only, not on which thread ran which chunk.
pub(crate) fn batch_chunks(n: usize, chunks: usize) -> Vec<Range<usize>> {
    let per_chunk = n.div_ceil(chunks.max(1)).max(1);
    (0..n)
        .step_by(per_chunk)
        .map(|start| start..(start + per_chunk).min(n))
        .collect()
}

/// Elements per parallel slice of [`sum_in_order`].
const SUM_SLICE: usize = 16 * 1024;

/// The element-wise sum of `partials` (each `len` elements), every element summed in the
/// partials' order, so the same bits as one pass; slices of the elements in parallel, since a
/// 512-channel 3×3 weight (9.4 MB) took 2 ms to add on one thread. `len` zeros when there are
/// no partials.
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut partials = partials.into_iter();
    let Some(mut sum) = partials.next() else {
        return buffers::zeroed(len);
    };
    let rest: Vec<Vec<f32>> = partials.collect();
    if !rest.is_empty() {
        sum.par_chunks_mut(SUM_SLICE)
            .enumerate()
            .for_each(|(i, out)| {
                for partial in &rest {
                    let partial = &partial[i * SUM_SLICE..][..out.len()];
                    out.iter_mut().zip(partial).for_each(|(a, b)| *a += b);
                }
            });
    }
    sum
}

/// Output positions `o` in `[0, out)` with `0 <= o * stride + k - pad < size`, as `[lo, hi)`.
#[inline]
fn valid_range(out: usize, stride: usize, k: usize, pad: usize, size: usize) -> (usize, usize) {
    // o * stride >= pad - k
    let lo = if pad > k {
        (pad - k).div_ceil(stride)
    } else {
        0
    };
    // o * stride + k - pad <= size - 1  <=>  o <= (size - 1 + pad - k) / stride
    let hi = if size + pad > k {
        ((size - 1 + pad - k) / stride + 1).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Whether `g`'s batch gives every thread an image. [`row_tiles`] splits the work over images
/// only; a smaller batch (batch-1 inference) goes to [`dense`], whose matrix products split each
/// image over the threads, or to [`direct`] where it has channels enough to split each image
/// ([`direct::splits_images`]).
fn fills_threads(g: &ConvGeometry) -> bool {
    g.n >= rayon::current_num_threads()
}

/// The convolution `x ⋆ weight + bias` as `[n, c_out, oh, ow]`, row-major.
pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    level: SimdLevel,
) -> Vec<f32> {
    conv2d_activated(g, x, weight, bias, None, level)
}

/// [`conv2d_forward`] with `activation` applied to the output as it is written (in the same
/// pass as the bias), equal bit for bit to the two separately.
pub fn conv2d_activated(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    if g.is_depthwise() {
        depthwise::forward(g, x, weight, bias, activation, level)
    } else if few_channels::covers_forward(g) {
        few_channels::forward(g, x, weight, bias, activation, level)
    } else if (fills_threads(g) || row_tiles::splits_images(g.n, g.c_out, g.ow))
        && row_tiles::covers_forward(g)
    {
        row_tiles::forward(g, x, weight, bias, activation, level)
    } else if (fills_threads(g) || direct::splits_images(g.n, g.c_out)) && direct::covers(g) {
        direct::forward(g, x, weight, bias, activation, level)
    } else {
        dense::forward(g, x, weight, bias, activation, level)
    }
}

/// The input gradient `[n, c_in, h, w]` of a convolution with output gradient `dy`.
pub fn conv2d_input_grad(
    g: &ConvGeometry,
    weight: &[f32],
    dy: &[f32],
    level: SimdLevel,
) -> Vec<f32> {
    if g.is_depthwise() {
        depthwise::input_grad(g, weight, dy, level)
    } else if (fills_threads(g) || row_tiles::splits_images(g.n, g.c_in, g.w))
        && row_tiles::covers(g)
    {
        row_tiles::input_grad(g, weight, dy, level)
    } else if (fills_threads(g) || direct::splits_images(g.n, g.c_in)) && direct::covers(g) {
        direct::input_grad(g, weight, dy, level)
    } else {
        dense::input_grad(g, weight, dy)
    }
}

/// The weight gradient `[c_out, c_in / groups, kh, kw]` of a convolution with output gradient
/// `dy`.
pub fn conv2d_weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    if g.is_depthwise() {
        depthwise::weight_grad(g, x, dy, level)
    } else if few_channels::covers(g) {
        few_channels::weight_grad(g, x, dy, level)
    } else if fills_threads(g) && direct::covers_weight_grad(g) {
        direct::weight_grad(g, x, dy, level)
    } else {
        dense::weight_grad(g, x, dy)
    }
}

#[cfg(test)]
mod tests {
    use super::{SUM_SLICE, batch_chunks, sum_in_order, valid_range};

    #[test]
    fn batch_chunks_are_consecutive_and_never_empty() {
        assert_eq!(batch_chunks(5, 4), vec![0..2, 2..4, 4..5]);
        assert_eq!(batch_chunks(3, 8), vec![0..1, 1..2, 2..3]);
        assert_eq!(batch_chunks(16, 2), vec![0..8, 8..16]);
        assert_eq!(batch_chunks(7, 1), vec![0..7]);
        assert!(batch_chunks(0, 2).is_empty());
    }

    #[test]
    fn partials_are_summed_in_order_across_slices() {
        // Three partials over more than two slices; 1e8 + 1 - 1e8 is 0 in f32 summed in this
        // order, and would be 1 in another, so the order shows.
        let len = 2 * SUM_SLICE + 5;
        let partials = vec![vec![1e8f32; len], vec![1.0; len], vec![-1e8; len]];
        assert_eq!(sum_in_order(partials, len), vec![0.0; len]);
        assert_eq!(sum_in_order(Vec::new(), 4), vec![0.0; 4]);
    }

    #[test]
    fn valid_range_matches_a_scan() {
        for out in 1..9 {
            for stride in 1..4 {
                for k in 0..5 {
                    for pad in 0..4 {
                        for size in 1..12 {
                            let inside: Vec<usize> = (0..out)
                                .filter(|o| {
                                    let i = (o * stride + k) as isize - pad as isize;
                                    i >= 0 && i < size as isize
                                })
                                .collect();
                            let (lo, hi) = valid_range(out, stride, k, pad, size);
                            let expected = (lo..hi).collect::<Vec<_>>();
                            assert_eq!(
                                inside, expected,
                                "out {out} s {stride} k {k} p {pad} n {size}"
                            );
                        }
                    }
                }
            }
        }
    }
}

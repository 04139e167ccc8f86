//! Dense stride-1 convolutions on maps of 28×28 and larger, computed directly from a zero-padded
//! copy of each image, without an im2col matrix: the weight gradient, and the forward pass and
//! input gradient of maps too wide for [`super::row_tiles`] (ResNet's 56×56 stage).
//!
//! Through im2col and gemm, about 30 % of such a layer was moving data: writing the im2col matrix
//! (9 copies of the input), gemm repacking it, and folding the input gradient back (col2im).
//! Here each image is copied once into planes with a zero border (`hp × wp` per channel). With
//! output pixels numbered at the padded width, `q = r · wp + c`, tap `(ki, kj)` reads input
//! `q + ki · wp + kj` of each padded plane: a run of outputs reads one contiguous run per tap.
//! The `wp − ow` columns past each row's end are computed and dropped, which is why narrow maps
//! (7×7: 7 of 9 columns) go to [`super::row_tiles`]. A register tile of `CHANNELS` output
//! channels × `TILE` pixels sums input channel after input channel, tap after tap: per tap,
//! one load of inputs per vector and one broadcast weight per channel.
//!
//! The input gradient of a stride-1 convolution is the same kind of convolution of the output
//! gradient: the kernel flipped, its input and output channels swapped, padding `k − 1 − p`.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::activation::epilogue;
use super::buffers::CacheAligned;
use super::depthwise::Phases;
use super::{
    ConvGeometry, SimdLevel, batch_chunks, buffers, sum_in_order, with_scratch, with_second_scratch,
};
use crate::kernels::ConvActivation;

/// Output channels per register tile.
pub(super) const CHANNELS: usize = 8;

/// Output pixels per register tile: three AVX-512 vectors (3 × 8 channels = 24 accumulators).
const TILE: usize = 48;

/// Narrowest output (and, for the input gradient, input) width this path takes. By measurement
/// (batch 16 and 1, 2 cores): 56×56 and 28×28 maps gain 15–30 %; on 14×14 ones, whose padded
/// rows drop 2 of 16 columns, it was no faster at batch 16 and a quarter slower on the input
/// gradient at batch 1.
pub const MIN_WIDTH: usize = 28;

/// Whether a convolution of `images` images into `channels` output channels, fewer images than
/// threads, still keeps every thread busy here: at least two blocks of `CHANNELS` (8) output
/// channels per thread, over which each image is then split (batch-1 inference). By
/// measurement (batch 1, 2 cores, against the split matrix product): ResNet's 56×56 layers
/// 45 % faster forward and 27 % for the input gradient, 28×28 ones 8 % and 17 %, the 7×7 stem
/// on phase planes 17 % (`super::few_channels`).
pub fn splits_images(images: usize, channels: usize) -> bool {
    let threads = rayon::current_num_threads();
    images < threads && channels.div_ceil(CHANNELS) >= 2 * threads
}

/// Whether this module computes `g`'s forward pass and input gradient: dense, stride 1, more than
/// one tap, padding inside the kernel, and maps at least [`MIN_WIDTH`] wide.
pub fn covers(g: &ConvGeometry) -> bool {
    g.groups == 1
        && g.stride == [1, 1]
        && g.kh * g.kw > 1
        && g.padding[0] < g.kh
        && g.padding[1] < g.kw
        && g.ow.min(g.w) >= MIN_WIDTH
}

/// Where one image's padded planes and wide output lie.
pub(super) struct Layout {
    /// Padded width.
    pub(super) wp: usize,
    /// Floats per padded plane.
    pub(super) plane: usize,
    /// Each tap's offset in a padded plane, in the weight's order.
    pub(super) offsets: Vec<usize>,
    /// Output pixels at the padded width, rounded up to whole tiles.
    wide: usize,
    /// Floats of one image's padded planes, with a tile of zeros after the last (the last
    /// tile's dropped pixels read up to that far).
    pub(super) image_len: usize,
}

impl Layout {
    pub(super) fn of(g: &ConvGeometry) -> Self {
        let wp = g.w + 2 * g.padding[1];
        let hp = g.h + 2 * g.padding[0];
        let plane = hp * wp;
        let offsets = (0..g.kh)
            .flat_map(|ki| (0..g.kw).map(move |kj| ki * wp + kj))
            .collect();
        // The last valid pixel reads at most `(oh - 1 + kh - 1) · wp + ow - 1 + kw - 1`, which
        // is `plane - 1` at stride 1; a whole tile past it stays inside the slack.
        Self {
            wp,
            plane,
            offsets,
            wide: (g.oh * wp).next_multiple_of(TILE),
            image_len: g.c_in * plane + TILE,
        }
    }

    /// The layout of an image copied into its zero-padded stride-phase planes (`ph`, as
    /// [`super::depthwise::scatter_phases`] writes them, `ph.planes_len(g)` floats per input
    /// channel): output pixels are numbered at the phase width, `q = r · wq + c`, and tap
    /// `(ki, kj)` reads its phase plane at `q + (ki / sh) · wq + kj / sw`, so that a strided
    /// convolution runs on the same tiles as a stride-1 one.
    pub(super) fn of_phases(g: &ConvGeometry, ph: &Phases) -> Self {
        let plane = ph.planes_len(g);
        let offsets: Vec<usize> = (0..g.kh)
            .flat_map(|ki| (0..g.kw).map(move |kj| ph.tap(g, ki, kj)))
            .map(|(base, offset)| base + offset)
            .collect();
        let wide = (g.oh * ph.wq).next_multiple_of(TILE);
        let last_offset = offsets.iter().copied().max().unwrap_or(0);
        // The last tile reads up to `last_offset + wide` past its channel's planes.
        let image_len = (g.c_in * plane).max(g.c_in.saturating_sub(1) * plane + last_offset + wide);
        Self {
            wp: ph.wq,
            plane,
            offsets,
            wide,
            image_len,
        }
    }
}

/// Copies one image `[c_in, h, w]` into its padded planes, writing each element once.
pub(super) fn pad_image(g: &ConvGeometry, l: &Layout, x: &[f32], padded: &mut [f32]) {
    let [ph, pw] = g.padding;
    let (planes, tail) = padded[..l.image_len].split_at_mut(g.c_in * l.plane);
    for (plane, src) in planes
        .chunks_exact_mut(l.plane)
        .zip(x.chunks_exact(g.h * g.w))
    {
        let (top, rest) = plane.split_at_mut(ph * l.wp);
        top.fill(0.0);
        let (middle, bottom) = rest.split_at_mut(g.h * l.wp);
        for (row, src_row) in middle.chunks_exact_mut(l.wp).zip(src.chunks_exact(g.w)) {
            row[..pw].fill(0.0);
            row[pw..pw + g.w].copy_from_slice(src_row);
            row[pw + g.w..].fill(0.0);
        }
        bottom.fill(0.0);
    }
    tail.fill(0.0);
}

/// Rows of a packed panel written at once by [`pack`].
const PACK_ROWS: usize = 16;

/// Where tap `t` of the kernel from input channel `ci` to output channel `co` of the convolution
/// being packed lies in the weight: at `co · channel + ci · input + t`, or `taps − 1 − t` in
/// place of `t` when `flipped`.
#[derive(Clone, Copy)]
struct WeightStrides {
    channel: usize,
    input: usize,
    flipped: bool,
}

/// The weight as blocks of `lanes` output channels, each `[c_in][tap][lanes]` (the channels a
/// tile holds side by side), zeros past the last output channel. Blocks in parallel: at batch 1
/// a serial packing of a 256-channel layer's weight took a third of the convolution.
fn pack(g: &ConvGeometry, lanes: usize, weight: &[f32], strides: WeightStrides) -> CacheAligned {
    let taps = g.kh * g.kw;
    let rows = g.c_in * taps;
    let block_len = rows * lanes;
    let len = g.c_out.div_ceil(lanes) * block_len;
    let pack_panels = |packed: &mut [MaybeUninit<f32>]| {
        packed
            .par_chunks_exact_mut(block_len)
            .enumerate()
            .for_each(|(block, panel)| {
                let first = block * lanes;
                let channels = lanes.min(g.c_out - first);
                // Square pieces of the panel, `PACK_ROWS` rows (input channels' taps) by every
                // channel, written channel by channel: a channel's weights of consecutive rows
                // lie together in the weight (forward) or within a kernel (input gradient), and
                // the piece stays in L1 while it is written across. Channel by channel over
                // whole panels wrote each cache line `lanes` times, 15 % of a 512-channel 7×7
                // layer's forward pass.
                for first_row in (0..rows).step_by(PACK_ROWS) {
                    let piece = PACK_ROWS.min(rows - first_row);
                    let at: [usize; PACK_ROWS] = std::array::from_fn(|r| {
                        let (ci, t) = ((first_row + r) / taps, (first_row + r) % taps);
                        let tap = if strides.flipped { taps - 1 - t } else { t };
                        ci * strides.input + tap
                    });
                    let out = &mut panel[first_row * lanes..][..piece * lanes];
                    for c in 0..channels {
                        let base = (first + c) * strides.channel;
                        for (r, &at) in at[..piece].iter().enumerate() {
                            out[r * lanes + c].write(weight[base + at]);
                        }
                    }
                    for r in 0..piece {
                        for o in &mut out[r * lanes + channels..][..lanes - channels] {
                            o.write(0.0);
                        }
                    }
                }
            })
    };
    // SAFETY: the panels cover `packed` (`len` is a whole number of them), and each piece of
    // each panel is written whole: its `channels` columns from the weight, the rest zeros.
    unsafe { CacheAligned::written_by(len, pack_panels) }
}

/// Forward convolution `[n, c_out, oh, ow]` of a geometry [`covers`] takes, with the bias and
/// `activation` applied to each output plane as it is written.
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    run(
        g,
        x,
        &pack_forward(g, weight, CHANNELS),
        bias,
        activation,
        level,
    )
}

/// Input gradient `[n, c_in, h, w]` of a geometry [`covers`] takes: the stride-1 convolution of
/// `dy` with the flipped, transposed kernel and padding `k − 1 − p`.
pub fn input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (transposed, packed) = pack_input_grad(g, weight, CHANNELS);
    run(&transposed, dy, &packed, None, None, level)
}

/// `weight` `[c_out, c_in, kh, kw]` packed for `g`'s forward pass in blocks of `lanes` output
/// channels (see [`pack`]).
pub(super) fn pack_forward(g: &ConvGeometry, weight: &[f32], lanes: usize) -> CacheAligned {
    let taps = g.kh * g.kw;
    let strides = WeightStrides {
        channel: g.c_in * taps,
        input: taps,
        flipped: false,
    };
    pack(g, lanes, weight, strides)
}

/// The convolution that computes `g`'s input gradient ([`transposed_geometry`]) and `weight`
/// flipped, transposed and packed for it in blocks of `lanes` channels.
pub(super) fn pack_input_grad(
    g: &ConvGeometry,
    weight: &[f32],
    lanes: usize,
) -> (ConvGeometry, CacheAligned) {
    let transposed = transposed_geometry(g);
    let taps = g.kh * g.kw;
    // Output channel `c` of the transposed convolution is input channel `c` of `g`, and its tap
    // `t` is tap `taps - 1 - t` of the original.
    let strides = WeightStrides {
        channel: taps,
        input: g.c_in * taps,
        flipped: true,
    };
    let packed = pack(&transposed, lanes, weight, strides);
    (transposed, packed)
}

/// The stride-1 convolution whose forward pass is `g`'s input gradient: from `g`'s output
/// channels to its input channels, padding `k − 1 − p`.
pub(super) fn transposed_geometry(g: &ConvGeometry) -> ConvGeometry {
    ConvGeometry {
        n: g.n,
        c_in: g.c_out,
        h: g.oh,
        w: g.ow,
        c_out: g.c_in,
        groups: 1,
        kh: g.kh,
        kw: g.kw,
        stride: [1, 1],
        padding: [g.kh - 1 - g.padding[0], g.kw - 1 - g.padding[1]],
        oh: g.h,
        ow: g.w,
    }
}

/// The convolution of `x` with the packed weight, images in parallel, or with fewer images than
/// threads each image's output-channel blocks in parallel (see `super::fills_threads` and
/// [`splits_images`] for when the convolutions come here).
fn run(
    g: &ConvGeometry,
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let l = Layout::of(g);
    let pad = |x_image: &[f32], padded: &mut [f32]| pad_image(g, &l, x_image, padded);
    run_on(g, &l, pad, x, packed, bias, activation, level)
}

/// [`run`] on images laid out as `l` says, each copied there by `copy(x_image, scratch)`
/// (`l.image_len` floats, all of which it writes).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_on(
    g: &ConvGeometry,
    l: &Layout,
    copy: impl Fn(&[f32], &mut [f32]) + Sync,
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let (in_image, out_plane) = (g.c_in * g.h * g.w, g.oh * g.ow);
    // Fewer images than threads (batch-1 inference, see `splits_images`): each image's blocks
    // of output channels split over the threads, its padded copy read by all of them.
    let split = g.n < rayon::current_num_threads();
    let one_image = |y_image: &mut [MaybeUninit<f32>], x_image: &[f32]| {
        with_scratch(l.image_len, |padded| {
            copy(x_image, padded);
            let args = (g, l, &*padded, packed, bias, activation, level);
            if split {
                y_image
                    .par_chunks_mut(CHANNELS * out_plane)
                    .enumerate()
                    .for_each(|(block, y_block)| channel_blocks(args, block, y_block));
            } else {
                channel_blocks(args, 0, y_image);
            }
        });
    };
    let (image_out, x) = (g.c_out * out_plane, &x[..g.n * in_image]);
    // Written in place, not cleared first: with freed memory kept for reuse, a cleared output
    // (calloc) was a pass of `memset` over it, 7 % of the stem's forward pass.
    let write = |y: &mut [MaybeUninit<f32>]| {
        if split {
            for (y_image, x_image) in y.chunks_mut(image_out).zip(x.chunks(in_image)) {
                one_image(y_image, x_image);
            }
        } else {
            y.par_chunks_mut(image_out)
                .zip(x.par_chunks(in_image))
                .for_each(|(y_image, x_image)| one_image(y_image, x_image));
        }
    };
    // SAFETY: every image's output is split into its channel blocks, and `channel_blocks` writes
    // every element of its blocks (see there).
    unsafe { buffers::written_by(g.n * image_out, write) }
}

/// What [`channel_blocks`] reads: the geometry, layout, one image's padded planes, the packed
/// weight, the bias, the activation and the level.
type BlockArgs<'a> = (
    &'a ConvGeometry,
    &'a Layout,
    &'a [f32],
    &'a [f32],
    Option<&'a [f32]>,
    Option<ConvActivation>,
    SimdLevel,
);

/// Output channels `first_block · CHANNELS ..` of one image (as many as `y_blocks` holds), tile
/// by tile over the pixels, every channel block per tile (its inputs stay in cache while the
/// weights stream), each tile's valid columns copied to their planes; then the bias and
/// activation over each plane.
fn channel_blocks(args: BlockArgs, first_block: usize, y_blocks: &mut [MaybeUninit<f32>]) {
    let (g, l, padded, packed, bias, activation, level) = args;
    let out_plane = g.oh * g.ow;
    let block_len = g.c_in * l.offsets.len() * CHANNELS;
    let mut acc = [0.0f32; CHANNELS * TILE];
    for q in (0..l.wide).step_by(TILE) {
        for (i, y_block) in y_blocks.chunks_mut(CHANNELS * out_plane).enumerate() {
            let block = first_block + i;
            let weights = &packed[block * block_len..][..block_len];
            tile(
                level, padded, &l.offsets, l.plane, g.c_in, weights, q, &mut acc,
            );
            for (y_plane, run) in y_block
                .chunks_exact_mut(out_plane)
                .zip(acc.chunks_exact(TILE))
            {
                scatter_tile(g, l, q, run, y_plane);
            }
        }
    }
    // SAFETY: the tiles' wide positions `q .. q + TILE` cover `0 .. l.wide`, at least every
    // row's `l.wp` positions, of which `scatter_tile` copies each row's first `ow` (every output
    // pixel) into every plane of the blocks.
    let y_blocks = unsafe { buffers::assume_written(y_blocks) };
    if bias.is_some() || activation.is_some() {
        for (c, y_plane) in y_blocks.chunks_exact_mut(out_plane).enumerate() {
            let b = bias.map(|bias| bias[first_block * CHANNELS + c]);
            epilogue(level, y_plane, b, activation);
        }
    }
}

/// Copies the valid pixels of one channel's tile (wide positions `q ..q + TILE`) to its plane.
fn scatter_tile(
    g: &ConvGeometry,
    l: &Layout,
    q: usize,
    run: &[f32],
    y_plane: &mut [MaybeUninit<f32>],
) {
    let end = (q + TILE).min(g.oh * l.wp);
    let mut at = q;
    while at < end {
        let (row, col) = (at / l.wp, at % l.wp);
        let row_end = (row + 1) * l.wp;
        if col < g.ow {
            let cols = (g.ow - col).min(end - at);
            buffers::write_from(
                &mut y_plane[row * g.ow + col..][..cols],
                &run[at - q..][..cols],
            );
        }
        at = row_end;
    }
}

/// Output channels per weight-gradient tile: the lanes of two AVX-512 vectors.
const GRAD_CHANNELS: usize = 32;

/// Input channels per weight-gradient tile, each with a kernel row of 3 taps: 12 broadcasts.
const GRAD_INPUTS: usize = 4;

/// Output pixels per pass of the weight gradient (whole rows, at least one): that many rows of
/// 32 output gradients (16 KiB) stay in L1 while every input channel's tile reads them.
const GRAD_PIXELS: usize = 128;

/// Whether this module computes `g`'s weight gradient: what [`covers`] takes, with kernel rows
/// of 3 taps (the tile's shape). By measurement (batch 16, 2 cores): 56×56 and 28×28 maps gain
/// 15–25 % over im2col; 14×14 ones none, and 7×7 ones (512 channels) took 1.8× as long, their
/// per-thread sums (`512 · 9 · 512` floats) no longer fitting in L2 while every image streams
/// through them.
pub fn covers_weight_grad(g: &ConvGeometry) -> bool {
    covers(g) && g.kw == 3
}

/// Weight gradient `[c_out, c_in, kh, kw]` of a geometry [`covers_weight_grad`] takes:
/// `dw[co, ci, t] = Σ_n Σ_(r, c) dy(n, co, r, c) · padded(n, ci, r · wp + c + offset(t))` over
/// the output pixels.
///
/// The output channels run in the vector lanes: each image's output gradient is transposed to
/// `[pixel][c_out]`, and a tile of 32 output channels × 4 input channels × 3 taps sums over the
/// pixels with one broadcast input per (input channel, tap) and pixel, so every sum is one
/// lane and none needs a horizontal add. Each of a fixed number of chunks of the batch sums its
/// images into its own buffer, added in chunk order (the result does not depend on which thread
/// ran what).
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let l = Layout::of(g);
    let taps = g.kh * g.kw;
    let inputs = g.c_in.next_multiple_of(GRAD_INPUTS);
    let lanes = g.c_out.next_multiple_of(GRAD_CHANNELS);
    let (in_image, out_image) = (g.c_in * g.h * g.w, g.c_out * g.oh * g.ow);
    // `[ci][t][co]`, the output channels padded to whole tiles.
    let len_t = inputs * taps * lanes;
    let partials: Vec<Vec<f32>> = batch_chunks(g.n, rayon::current_num_threads())
        .into_par_iter()
        .map(|images| {
            let mut dw_t = vec![0.0f32; len_t];
            // Input channels past the last are zero planes (their sums are dropped); at least
            // what `pad_image` writes.
            let padded_len = inputs * l.plane + TILE;
            with_scratch(padded_len, |padded| {
                padded[g.c_in * l.plane..].fill(0.0);
                with_second_scratch(g.oh * g.ow * lanes, |dy_t| {
                    for image in images {
                        pad_image(g, &l, &x[image * in_image..][..in_image], padded);
                        let dy_image = &dy[image * out_image..][..out_image];
                        transpose(g, dy_image, dy_t, lanes, level);
                        let args = (g, &l, &*padded, &*dy_t, lanes, level);
                        accumulate_image(args, &mut dw_t);
                    }
                });
            });
            dw_t
        })
        .collect();
    let dw_t = sum_in_order(partials, len_t);
    let mut dw = vec![0.0f32; g.c_out * g.c_in * taps];
    for (co, dw_co) in dw.chunks_exact_mut(g.c_in * taps).enumerate() {
        for (row, v) in dw_co.iter_mut().enumerate() {
            *v = dw_t[row * lanes + co];
        }
    }
    dw
}

/// One image's output gradient `[c_out][oh · ow]` as `[oh · ow][lanes]`, zeros in the lanes
/// past the last channel. On x86 processors with AVX, blocks of 8 channels × 8 pixels are
/// transposed in registers (element by element, this was a tenth of a 56×56 layer's weight
/// gradient); what they leave, and other processors, element by element.
fn transpose(g: &ConvGeometry, dy: &[f32], dy_t: &mut [f32], lanes: usize, level: SimdLevel) {
    let out_plane = g.oh * g.ow;
    let (dy, dy_t) = (&dy[..g.c_out * out_plane], &mut dy_t[..out_plane * lanes]);
    assert!(
        g.c_out <= lanes,
        "transpose: {} channels in {lanes} lanes",
        g.c_out
    );
    // Pixels and channels the blocks cover.
    let (pixels, channels) = match level.min(SimdLevel::detected()) {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 | SimdLevel::Avx2 if std::arch::is_x86_feature_detected!("avx") => {
            // SAFETY: AVX was detected just above; the slices hold what the blocks read and
            // write (`x86::transpose_blocks` asserts it).
            unsafe { x86::transpose_blocks(dy, out_plane, g.c_out, dy_t, lanes) };
            (out_plane / 8 * 8, g.c_out / 8 * 8)
        }
        _ => (0, 0),
    };
    for (at, pixel) in dy_t.chunks_exact_mut(lanes).enumerate() {
        let first = if at < pixels { channels } else { 0 };
        for (co, v) in pixel[..g.c_out].iter_mut().enumerate().skip(first) {
            *v = dy[co * out_plane + at];
        }
        pixel[g.c_out..].fill(0.0);
    }
}

/// What [`accumulate_image`] reads: the geometry, layout, one image's padded planes (input
/// channels rounded up to [`GRAD_INPUTS`]), its transposed output gradient, its lane count and
/// the level.
type GradArgs<'a> = (
    &'a ConvGeometry,
    &'a Layout,
    &'a [f32],
    &'a [f32],
    usize,
    SimdLevel,
);

/// Adds one image's sums to `dw_t` (`[ci][t][lanes]`): pass after pass of output rows (about
/// [`GRAD_PIXELS`] pixels), each through every tile of output channels × input channels ×
/// kernel row.
fn accumulate_image(args: GradArgs, dw_t: &mut [f32]) {
    let (g, l, padded, dy_t, lanes, level) = args;
    let taps = g.kh * g.kw;
    let rows_per_pass = (GRAD_PIXELS / g.ow).max(1);
    for start in (0..g.oh).step_by(rows_per_pass) {
        let run = start..(start + rows_per_pass).min(g.oh);
        for first_lane in (0..lanes).step_by(GRAD_CHANNELS) {
            for first_input in (0..dw_t.len() / (taps * lanes)).step_by(GRAD_INPUTS) {
                for ki in 0..g.kh {
                    let rows: [usize; GRAD_INPUTS] = std::array::from_fn(|i| {
                        ((first_input + i) * taps + ki * g.kw) * lanes + first_lane
                    });
                    let planes: [usize; GRAD_INPUTS] =
                        std::array::from_fn(|i| (first_input + i) * l.plane + ki * l.wp);
                    let tile = GradTile {
                        planes,
                        rows,
                        lanes,
                        first_lane,
                        wp: l.wp,
                        ow: g.ow,
                    };
                    grad_tile(level, padded, dy_t, run.clone(), &tile, dw_t);
                }
            }
        }
    }
}

/// Where one weight-gradient tile reads and adds: each input channel's start in the padded
/// planes (its kernel row's first tap), each input channel's first row of 3 in `dw_t` at the
/// tile's first lane, the lanes per row of `dw_t` and of the transposed output gradient, the
/// tile's first lane, the padded width and the output width.
struct GradTile {
    planes: [usize; GRAD_INPUTS],
    rows: [usize; GRAD_INPUTS],
    lanes: usize,
    first_lane: usize,
    wp: usize,
    ow: usize,
}

/// Whether everything a weight-gradient tile reads or adds to lies inside its slice.
fn grad_tile_fits(
    padded: &[f32],
    dy_t: &[f32],
    run: &std::ops::Range<usize>,
    tile: &GradTile,
    dw_t: &[f32],
) -> bool {
    !run.is_empty()
        && tile.ow > 0
        && tile.ow + 2 <= tile.wp
        // The last input read is `p + (run.end - 1) · wp + ow - 1 + 2`.
        && tile
            .planes
            .iter()
            .all(|&p| p + (run.end - 1) * tile.wp + tile.ow + 1 < padded.len())
        && (run.end * tile.ow - 1) * tile.lanes + tile.first_lane + GRAD_CHANNELS <= dy_t.len()
        && tile
            .rows
            .iter()
            .all(|&r| r + 2 * tile.lanes + GRAD_CHANNELS <= dw_t.len())
}

/// `dw_t[rows[i] + kj · lanes + c] += Σ_(r, o) dy_t[(r · ow + o) · lanes + first_lane + c] ·
/// padded[planes[i] + r · wp + o + kj]` for the tile's 4 input channels `i`, taps `kj < 3`, 32
/// lanes `c`, output rows `r` in `run` and columns `o < ow`.
fn grad_tile(
    level: SimdLevel,
    padded: &[f32],
    dy_t: &[f32],
    run: std::ops::Range<usize>,
    tile: &GradTile,
    dw_t: &mut [f32],
) {
    assert!(
        grad_tile_fits(padded, dy_t, &run, tile, dw_t),
        "direct conv weight-gradient tile over {run:?}: runs outside the slices"
    );
    match level.min(SimdLevel::detected()) {
        // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
        // processor has AVX-512F (respectively AVX2 and FMA), the features each is compiled for;
        // the runs they read and write were checked above.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::grad_tile_avx512(padded, dy_t, run, tile, dw_t) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::grad_tile_avx2(padded, dy_t, run, tile, dw_t) },
        _ => grad_tile_portable(padded, dy_t, run, tile, dw_t),
    }
}

fn grad_tile_portable(
    padded: &[f32],
    dy_t: &[f32],
    run: std::ops::Range<usize>,
    tile: &GradTile,
    dw_t: &mut [f32],
) {
    for (&plane, &row) in tile.planes.iter().zip(&tile.rows) {
        for kj in 0..3 {
            let sums = &mut dw_t[row + kj * tile.lanes..][..GRAD_CHANNELS];
            for (r, o) in run.clone().flat_map(|r| (0..tile.ow).map(move |o| (r, o))) {
                let x = padded[plane + r * tile.wp + o + kj];
                let at = (r * tile.ow + o) * tile.lanes + tile.first_lane;
                for (s, &d) in sums.iter_mut().zip(&dy_t[at..][..GRAD_CHANNELS]) {
                    *s += x * d;
                }
            }
        }
    }
}

/// Whether every run a tile reads lies inside its slice: tap runs of [`TILE`] inputs from `q`
/// in each of `c_in` planes, and `c_in · taps` groups of [`CHANNELS`] weights.
fn tile_fits(
    padded: &[f32],
    offsets: &[usize],
    plane: usize,
    c_in: usize,
    weights: &[f32],
    q: usize,
) -> bool {
    let last_offset = offsets.iter().copied().max().unwrap_or(0);
    c_in > 0
        && (c_in - 1) * plane + last_offset + q + TILE <= padded.len()
        && weights.len() >= c_in * offsets.len() * CHANNELS
}

/// `out[c · TILE + i] = Σ_ci Σ_t weights[(ci · taps + t) · CHANNELS + c] ·
/// padded[ci · plane + offsets[t] + q + i]` for the [`CHANNELS`] channels and `i < TILE`.
#[allow(clippy::too_many_arguments)]
fn tile(
    level: SimdLevel,
    padded: &[f32],
    offsets: &[usize],
    plane: usize,
    c_in: usize,
    weights: &[f32],
    q: usize,
    out: &mut [f32; CHANNELS * TILE],
) {
    assert!(
        tile_fits(padded, offsets, plane, c_in, weights, q),
        "direct conv tile at {q}: runs outside the slices"
    );
    match level.min(SimdLevel::detected()) {
        // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
        // processor has AVX-512F (respectively AVX2 and FMA), the features each is compiled for;
        // the runs they read and write were checked above.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe {
            x86::tile_avx512(padded, offsets, plane, c_in, weights, q, out)
        },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::tile_avx2(padded, offsets, plane, c_in, weights, q, out) },
        _ => tile_portable(padded, offsets, plane, c_in, weights, q, out),
    }
}

#[allow(clippy::too_many_arguments)]
fn tile_portable(
    padded: &[f32],
    offsets: &[usize],
    plane: usize,
    c_in: usize,
    weights: &[f32],
    q: usize,
    out: &mut [f32; CHANNELS * TILE],
) {
    let mut acc = [[0.0f32; TILE]; CHANNELS];
    let taps = offsets.len();
    for ci in 0..c_in {
        for (t, &offset) in offsets.iter().enumerate() {
            let inputs = &padded[ci * plane + offset + q..][..TILE];
            let lanes = &weights[(ci * taps + t) * CHANNELS..][..CHANNELS];
            for (channel_acc, &w) in acc.iter_mut().zip(lanes) {
                for (a, &x) in channel_acc.iter_mut().zip(inputs) {
                    *a += w * x;
                }
            }
        }
    }
    for (c, channel_acc) in acc.iter().enumerate() {
        out[c * TILE..][..TILE].copy_from_slice(channel_acc);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use std::ops::Range;

    use super::{CHANNELS, GRAD_CHANNELS, GRAD_INPUTS, GradTile, TILE, grad_tile_fits, tile_fits};

    /// [`super::tile`] on 16-lane registers: 8 channels × 3 vectors, 24 accumulators, three
    /// loads of inputs and 8 broadcasts per tap for 24 multiply-adds.
    ///
    /// # Safety
    /// The processor has AVX-512F; `tile_fits` holds for the arguments.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(
        padded: &[f32],
        offsets: &[usize],
        plane: usize,
        c_in: usize,
        weights: &[f32],
        q: usize,
        out: &mut [f32; CHANNELS * TILE],
    ) {
        const { assert!(TILE == 48 && CHANNELS == 8) };
        debug_assert!(tile_fits(padded, offsets, plane, c_in, weights, q));
        let taps = offsets.len();
        let mut acc = [[_mm512_setzero_ps(); 3]; CHANNELS];
        let x = padded.as_ptr();
        let w = weights.as_ptr();
        for ci in 0..c_in {
            for (t, &offset) in offsets.iter().enumerate() {
                // SAFETY: `tile_fits`: the 48 inputs from this channel's tap run and the 8
                // weights of this (channel, tap) lie inside their slices.
                unsafe {
                    let run = x.add(ci * plane + offset + q);
                    let v = [
                        _mm512_loadu_ps(run),
                        _mm512_loadu_ps(run.add(16)),
                        _mm512_loadu_ps(run.add(32)),
                    ];
                    let lanes = w.add((ci * taps + t) * CHANNELS);
                    for (c, channel_acc) in acc.iter_mut().enumerate() {
                        let b = _mm512_set1_ps(*lanes.add(c));
                        for (a, &v) in channel_acc.iter_mut().zip(&v) {
                            *a = _mm512_fmadd_ps(b, v, *a);
                        }
                    }
                }
            }
        }
        for (c, channel_acc) in acc.iter().enumerate() {
            let run = &mut out[c * TILE..][..TILE];
            for (j, &a) in channel_acc.iter().enumerate() {
                // SAFETY: `run` holds 48 floats, `j · 16 + 16 <= 48`.
                unsafe { _mm512_storeu_ps(run.as_mut_ptr().add(16 * j), a) };
            }
        }
    }

    /// [`super::transpose`]'s blocks: for pixels `[0, out_plane / 8 · 8)` and channels
    /// `[0, c_out / 8 · 8)`, `dy_t[p · lanes + c] = dy[c · out_plane + p]`, 8 channels × 8
    /// pixels at a time (eight loads along the pixels, three rounds of shuffles, eight stores
    /// along the channels). The pixel blocks run outermost, so the writes go in order and the
    /// lines read stay in L1 from one block to the next.
    #[target_feature(enable = "avx")]
    pub(super) fn transpose_blocks(
        dy: &[f32],
        out_plane: usize,
        c_out: usize,
        dy_t: &mut [f32],
        lanes: usize,
    ) {
        assert!(
            dy.len() >= c_out * out_plane && dy_t.len() >= out_plane * lanes && c_out <= lanes,
            "transpose_blocks: {c_out} × {out_plane} into {lanes} lanes outside the slices"
        );
        let (src, dst) = (dy.as_ptr(), dy_t.as_mut_ptr());
        for p in (0..out_plane / 8 * 8).step_by(8) {
            for co in (0..c_out / 8 * 8).step_by(8) {
                // SAFETY: channels `co + i < c_out` and pixels `p .. p + 8 <= out_plane` lie
                // inside `dy` (asserted above).
                let r: [__m256; 8] = std::array::from_fn(|i| unsafe {
                    _mm256_loadu_ps(src.add((co + i) * out_plane + p))
                });
                // Pairs of channels interleaved, then quads, then the 128-bit halves swapped.
                let t = [
                    _mm256_unpacklo_ps(r[0], r[1]),
                    _mm256_unpackhi_ps(r[0], r[1]),
                    _mm256_unpacklo_ps(r[2], r[3]),
                    _mm256_unpackhi_ps(r[2], r[3]),
                    _mm256_unpacklo_ps(r[4], r[5]),
                    _mm256_unpackhi_ps(r[4], r[5]),
                    _mm256_unpacklo_ps(r[6], r[7]),
                    _mm256_unpackhi_ps(r[6], r[7]),
                ];
                let s = [
                    _mm256_shuffle_ps(t[0], t[2], 0x44),
                    _mm256_shuffle_ps(t[0], t[2], 0xEE),
                    _mm256_shuffle_ps(t[1], t[3], 0x44),
                    _mm256_shuffle_ps(t[1], t[3], 0xEE),
                    _mm256_shuffle_ps(t[4], t[6], 0x44),
                    _mm256_shuffle_ps(t[4], t[6], 0xEE),
                    _mm256_shuffle_ps(t[5], t[7], 0x44),
                    _mm256_shuffle_ps(t[5], t[7], 0xEE),
                ];
                let pixels = [
                    _mm256_permute2f128_ps(s[0], s[4], 0x20),
                    _mm256_permute2f128_ps(s[1], s[5], 0x20),
                    _mm256_permute2f128_ps(s[2], s[6], 0x20),
                    _mm256_permute2f128_ps(s[3], s[7], 0x20),
                    _mm256_permute2f128_ps(s[0], s[4], 0x31),
                    _mm256_permute2f128_ps(s[1], s[5], 0x31),
                    _mm256_permute2f128_ps(s[2], s[6], 0x31),
                    _mm256_permute2f128_ps(s[3], s[7], 0x31),
                ];
                for (j, &pixel) in pixels.iter().enumerate() {
                    // SAFETY: `(p + j) · lanes + co + 8 <= out_plane · lanes`, as `p + j <
                    // out_plane` and `co + 8 <= c_out <= lanes` (asserted above).
                    unsafe { _mm256_storeu_ps(dst.add((p + j) * lanes + co), pixel) };
                }
            }
        }
    }

    /// [`super::grad_tile`] on 16-lane registers: 4 input channels × 3 taps × 2 vectors of
    /// output channels, 24 accumulators; per pixel two loads of output gradients and 12
    /// broadcast inputs for 24 multiply-adds.
    ///
    /// # Safety
    /// The processor has AVX-512F; `grad_tile_fits` holds for the arguments.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad_tile_avx512(
        padded: &[f32],
        dy_t: &[f32],
        run: Range<usize>,
        tile: &GradTile,
        dw_t: &mut [f32],
    ) {
        const { assert!(GRAD_CHANNELS == 32 && GRAD_INPUTS == 4) };
        debug_assert!(grad_tile_fits(padded, dy_t, &run, tile, dw_t));
        let lanes = tile.lanes;
        let sums = dw_t.as_mut_ptr();
        let mut acc = [[[_mm512_setzero_ps(); 2]; 3]; GRAD_INPUTS];
        for (channel_acc, &row) in acc.iter_mut().zip(&tile.rows) {
            for (kj, tap_acc) in channel_acc.iter_mut().enumerate() {
                for (v, a) in tap_acc.iter_mut().enumerate() {
                    // SAFETY: `grad_tile_fits`: the 32 sums of each row lie inside `dw_t`.
                    *a = unsafe { _mm512_loadu_ps(sums.add(row + kj * lanes + 16 * v)) };
                }
            }
        }
        let x = tile.planes.map(|p| padded[p..].as_ptr());
        let d = dy_t[tile.first_lane..].as_ptr();
        for r in run {
            for o in 0..tile.ow {
                // SAFETY: `grad_tile_fits`: the 32 output gradients of pixel (r, o), and the
                // inputs `r · wp + o .. + 3` of each channel's run, lie inside their slices.
                unsafe {
                    let dq = d.add((r * tile.ow + o) * lanes);
                    let dv = [_mm512_loadu_ps(dq), _mm512_loadu_ps(dq.add(16))];
                    let q = r * tile.wp + o;
                    for (channel_acc, &xs) in acc.iter_mut().zip(&x) {
                        for (kj, tap_acc) in channel_acc.iter_mut().enumerate() {
                            let b = _mm512_set1_ps(*xs.add(q + kj));
                            for (a, &dv) in tap_acc.iter_mut().zip(&dv) {
                                *a = _mm512_fmadd_ps(b, dv, *a);
                            }
                        }
                    }
                }
            }
        }
        for (channel_acc, &row) in acc.iter().zip(&tile.rows) {
            for (kj, tap_acc) in channel_acc.iter().enumerate() {
                for (v, &a) in tap_acc.iter().enumerate() {
                    // SAFETY: as for the loads above.
                    unsafe { _mm512_storeu_ps(sums.add(row + kj * lanes + 16 * v), a) };
                }
            }
        }
    }

    /// [`super::grad_tile`] on 8-lane registers: in four passes of 2 input channels × 3 taps ×
    /// 2 vectors (12 accumulators, of AVX2's 16 registers).
    ///
    /// # Safety
    /// The processor has AVX2 and FMA; `grad_tile_fits` holds for the arguments.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad_tile_avx2(
        padded: &[f32],
        dy_t: &[f32],
        run: Range<usize>,
        tile: &GradTile,
        dw_t: &mut [f32],
    ) {
        debug_assert!(grad_tile_fits(padded, dy_t, &run, tile, dw_t));
        let lanes = tile.lanes;
        let sums = dw_t.as_mut_ptr();
        for half in [0, GRAD_INPUTS / 2] {
            for part in [0, GRAD_CHANNELS / 2] {
                let rows = [tile.rows[half] + part, tile.rows[half + 1] + part];
                let mut acc = [[[_mm256_setzero_ps(); 2]; 3]; 2];
                for (channel_acc, &row) in acc.iter_mut().zip(&rows) {
                    for (kj, tap_acc) in channel_acc.iter_mut().enumerate() {
                        for (v, a) in tap_acc.iter_mut().enumerate() {
                            // SAFETY: `grad_tile_fits`: the 32 sums of each row lie inside
                            // `dw_t`, this pass's 16 among them.
                            *a = unsafe { _mm256_loadu_ps(sums.add(row + kj * lanes + 8 * v)) };
                        }
                    }
                }
                let x = [
                    padded[tile.planes[half]..].as_ptr(),
                    padded[tile.planes[half + 1]..].as_ptr(),
                ];
                let d = dy_t[tile.first_lane + part..].as_ptr();
                for (r, o) in run.clone().flat_map(|r| (0..tile.ow).map(move |o| (r, o))) {
                    // SAFETY: `grad_tile_fits`: these 16 of pixel (r, o)'s 32 output gradients,
                    // and the inputs `r · wp + o .. + 3` of each channel's run, lie inside their
                    // slices.
                    unsafe {
                        let dq = d.add((r * tile.ow + o) * lanes);
                        let dv = [_mm256_loadu_ps(dq), _mm256_loadu_ps(dq.add(8))];
                        let q = r * tile.wp + o;
                        for (channel_acc, &xs) in acc.iter_mut().zip(&x) {
                            for (kj, tap_acc) in channel_acc.iter_mut().enumerate() {
                                let b = _mm256_set1_ps(*xs.add(q + kj));
                                for (a, &dv) in tap_acc.iter_mut().zip(&dv) {
                                    *a = _mm256_fmadd_ps(b, dv, *a);
                                }
                            }
                        }
                    }
                }
                for (channel_acc, &row) in acc.iter().zip(&rows) {
                    for (kj, tap_acc) in channel_acc.iter().enumerate() {
                        for (v, &a) in tap_acc.iter().enumerate() {
                            // SAFETY: as for the loads above.
                            unsafe { _mm256_storeu_ps(sums.add(row + kj * lanes + 8 * v), a) };
                        }
                    }
                }
            }
        }
    }

    /// [`super::tile`] on 8-lane registers: in four passes of 4 channels × 3 vectors (12
    /// accumulators, of AVX2's 16 registers).
    ///
    /// # Safety
    /// The processor has AVX2 and FMA; `tile_fits` holds for the arguments.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(
        padded: &[f32],
        offsets: &[usize],
        plane: usize,
        c_in: usize,
        weights: &[f32],
        q: usize,
        out: &mut [f32; CHANNELS * TILE],
    ) {
        debug_assert!(tile_fits(padded, offsets, plane, c_in, weights, q));
        let taps = offsets.len();
        let x = padded.as_ptr();
        let w = weights.as_ptr();
        for half in [0, CHANNELS / 2] {
            for part in [0, TILE / 2] {
                let mut acc = [[_mm256_setzero_ps(); 3]; CHANNELS / 2];
                for ci in 0..c_in {
                    for (t, &offset) in offsets.iter().enumerate() {
                        // SAFETY: `tile_fits`: the 24 inputs from `part` of this channel's tap
                        // run and this half's 4 weights lie inside their slices.
                        unsafe {
                            let run = x.add(ci * plane + offset + q + part);
                            let v = [
                                _mm256_loadu_ps(run),
                                _mm256_loadu_ps(run.add(8)),
                                _mm256_loadu_ps(run.add(16)),
                            ];
                            let lanes = w.add((ci * taps + t) * CHANNELS + half);
                            for (c, channel_acc) in acc.iter_mut().enumerate() {
                                let b = _mm256_set1_ps(*lanes.add(c));
                                for (a, &v) in channel_acc.iter_mut().zip(&v) {
                                    *a = _mm256_fmadd_ps(b, v, *a);
                                }
                            }
                        }
                    }
                }
                for (c, channel_acc) in acc.iter().enumerate() {
                    let run = &mut out[(half + c) * TILE + part..][..TILE / 2];
                    for (j, &a) in channel_acc.iter().enumerate() {
                        // SAFETY: `run` holds 24 floats, `j · 8 + 8 <= 24`.
                        unsafe { _mm256_storeu_ps(run.as_mut_ptr().add(8 * j), a) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::ops::ConvOptions;

    use super::*;

    /// Every element of the transposed output gradient, at every level, for channel and pixel
    /// counts on and off the 8 × 8 blocks (and lanes past the last channel, which must be zero).
    #[test]
    fn transposed_output_gradients_hold_every_element_at_every_level() {
        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        for (c_out, pixels) in [(8, 8), (5, 3), (13, 30), (37, 64), (64, 17), (16, 1)] {
            let g = ConvGeometry::new([1, 1, 1, pixels], [c_out, 1, 1, 1], &options)
                .expect("a valid geometry");
            let lanes = c_out.next_multiple_of(GRAD_CHANNELS);
            let dy: Vec<f32> = (0..c_out * pixels).map(|i| i as f32 + 0.5).collect();
            for level in SimdLevel::supported() {
                let mut dy_t = vec![f32::NAN; pixels * lanes];
                transpose(&g, &dy, &mut dy_t, lanes, level);
                for (i, &v) in dy_t.iter().enumerate() {
                    let (p, c) = (i / lanes, i % lanes);
                    let expected = if c < c_out { dy[c * pixels + p] } else { 0.0 };
                    assert_eq!(
                        v.to_bits(),
                        expected.to_bits(),
                        "{level:?}, {c_out} channels × {pixels} pixels: pixel {p}, lane {c}"
                    );
                }
            }
        }
    }

    /// Every element of both packings, against the index arithmetic written out: blocks of 32
    /// channels with a partial last one (zeros past `c_out`), kernels flipped and transposed for
    /// the input gradient. Fresh memory is poisoned with NaN in tests, so an element left
    /// unwritten shows.
    #[test]
    fn packed_weights_hold_every_tap_and_zeros_past_the_last_channel() {
        let (c_in, c_out, lanes) = (5, 37, 32);
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
        let g = ConvGeometry::new([2, c_in, 9, 9], [c_out, c_in, 3, 3], &options)
            .expect("a valid geometry");
        let weight: Vec<f32> = (0..c_out * c_in * 9).map(|i| i as f32 + 1.0).collect();
        let w = |co: usize, ci: usize, t: usize| weight[(co * c_in + ci) * 9 + t];
        let forward = pack_forward(&g, &weight, lanes);
        assert_eq!(forward.len(), 2 * c_in * 9 * lanes);
        for (i, &v) in forward.iter().enumerate() {
            let (block, ci, t, c) = (
                i / (c_in * 9 * lanes),
                i / (9 * lanes) % c_in,
                i / lanes % 9,
                i % lanes,
            );
            let co = block * lanes + c;
            let expected = if co < c_out { w(co, ci, t) } else { 0.0 };
            assert_eq!(
                v, expected,
                "forward element {i} (output channel {co}, input {ci}, tap {t})"
            );
        }
        let (transposed, grad) = pack_input_grad(&g, &weight, lanes);
        assert_eq!((transposed.c_in, transposed.c_out), (c_out, c_in));
        assert_eq!(grad.len(), c_out * 9 * lanes);
        for (i, &v) in grad.iter().enumerate() {
            let (co, t, c) = (i / (9 * lanes), i / lanes % 9, i % lanes);
            let expected = if c < c_in { w(co, c, 8 - t) } else { 0.0 };
            assert_eq!(
                v, expected,
                "input-gradient element {i} (channel {c}, from {co}, tap {t})"
            );
        }
    }
}

//! Dense stride-1 convolutions on maps 7 to 55 wide (ResNet's 3×3 layers on 28×28, 14×14 and
//! 7×7), forward and input gradient, and the forward pass of stride-2 ones with outputs 7 wide
//! and more (the first 3×3 of those stages), computed directly with the output channels in the
//! vector lanes.
//!
//! [`super::direct`] puts output pixels in the lanes and numbers them at the padded width, which
//! drops 2 of every 16 columns on a 14×14 map (no faster than im2col there) and 2 of 30 on a
//! 28×28 one. Here a register tile is 32 output channels (two
//! AVX-512 vectors) × 2 rows × 7 pixels of one image: per (input channel, tap), two loads of
//! packed weights and one broadcast input per pixel, read where it lies in the zero-padded
//! image, feed 28 multiply-adds; at stride 2 a tile's inputs lie two apart, nothing else
//! changes. Rows are cut into runs of 7 (ResNet's maps are 7 · 2ᵏ wide; a narrower last run is
//! moved left to end at the row's end, recomputing a few pixels), so no lane or pixel is wasted,
//! and the products of taps that read only the zero border (above a map's first row, below its
//! last, left of a row's first pixel, right of its last) are left out: 18 % of all on a 7×7
//! map, where that made the layer 7–8 % faster. The weight, packed once per call as
//! `[ci][tap][32 channels]` per block of 32 output channels, stays in L2 while an image's tiles
//! stream through it. A batch smaller than the thread count (batch-1 inference) splits each
//! image's blocks over the threads instead of its images, on maps 14 wide and more
//! ([`splits_images`]); narrower ones take the split matrix product.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::activation::epilogue;
use super::direct::{Layout, pack_forward, pack_input_grad, pad_image};
use super::{ConvGeometry, SimdLevel, buffers, few_channels, with_scratch};
use crate::kernels::ConvActivation;

/// Output channels per tile: the lanes of two AVX-512 vectors.
const LANES: usize = 32;

/// Output pixels per row of a tile.
const RUN: usize = 7;

/// Rows per tile (a map's last tile may have one).
const ROWS: usize = 2;

/// Narrowest output (and, for the input gradient, input) map this path takes: one run. By
/// measurement (batch 16, 2 cores, calls of each path interleaved): on ResNet's 7×7 maps, 512
/// channels, 7 % faster than im2col forward and 16 % for the input gradient, 4 % for the
/// stride-2 forward pass from 14×14; a map's 7 rows take tiles of 2 across the images, so no
/// tile runs half empty. (Summing a slice of the input channels at a time over every tile, so
/// that the slice's weights stay in L2, made no difference there, nor on 14×14 and 28×28 maps.)
pub const MIN_WIDTH: usize = RUN;

/// Most floats of padded images one pass of a thread holds (8 MiB, about the largest im2col
/// matrix of the matrix-product path): a thread's share of a large batch runs in several passes.
const MAX_PASS_SCRATCH: usize = 1 << 21;

/// Widest map this path takes, exclusive. By measurement: on 28×28 maps 7 % faster than
/// [`super::direct`], on 56×56 ones 0–6 % slower; those go there.
pub const MAX_WIDTH: usize = 56;

/// Whether this module computes `g`'s forward pass and input gradient: dense, stride 1, more than
/// one tap, padding inside the kernel, maps from [`MIN_WIDTH`] to below [`MAX_WIDTH`] wide.
pub fn covers(g: &ConvGeometry) -> bool {
    g.stride == [1, 1]
        && dense_with_taps(g)
        && g.ow.min(g.w) >= MIN_WIDTH
        && g.ow.max(g.w) < MAX_WIDTH
}

/// Whether this module computes `g`'s forward pass: one [`covers`] takes, or a dense stride-2
/// one with more than one tap, more input channels than a stem and an output at least
/// [`MIN_WIDTH`] wide (ResNet's first 3×3 of the 28×28, 14×14 and 7×7 stages). A tile's inputs
/// are broadcasts, so a stride only spaces them out; [`super::direct`] is stride-1 only, so no
/// widest map applies. The stride-2 input gradient stays on the matrix product.
///
/// The stems (3 input channels) do not come here: on these tiles ResNet18's 7×7 stem was no
/// faster at batch 16 than im2col (26–29 ms either way, a third of it page faults on its
/// output); [`few_channels`] has their forward pass.
pub fn covers_forward(g: &ConvGeometry) -> bool {
    covers(g)
        || (g.stride == [2, 2]
            && dense_with_taps(g)
            && g.c_in > few_channels::MAX_INPUT_CHANNELS
            && g.ow >= MIN_WIDTH)
}

/// Dense, more than one tap, padding inside the kernel.
fn dense_with_taps(g: &ConvGeometry) -> bool {
    g.groups == 1 && g.kh * g.kw > 1 && g.padding[0] < g.kh && g.padding[1] < g.kw
}

/// Forward convolution `[n, c_out, oh, ow]` of a geometry [`covers_forward`] takes, with the
/// bias and `activation` applied to each output plane.
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
        &pack_forward(g, weight, LANES),
        bias,
        activation,
        level,
    )
}

/// Input gradient `[n, c_in, h, w]` of a geometry [`covers`] takes (see
/// [`super::direct::input_grad`]).
pub fn input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (transposed, packed) = pack_input_grad(g, weight, LANES);
    run(&transposed, dy, &packed, None, None, level)
}

/// The convolution of `x` with the packed weight, each thread's share of the images in turn, or,
/// with fewer images than threads (which reach these kernels only as [`splits_images`] allows),
/// each image's blocks of output channels in parallel ([`run_split`]).
fn run(
    g: &ConvGeometry,
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let l = Layout::of(g);
    let (in_image, out_plane) = (g.c_in * g.h * g.w, g.oh * g.ow);
    let block_out = LANES * out_plane;
    let threads = rayon::current_num_threads().max(1);
    let finish = |y_block: &mut [f32], first: usize| {
        if bias.is_some() || activation.is_some() {
            for (c, y_plane) in y_block.chunks_exact_mut(out_plane).enumerate() {
                epilogue(level, y_plane, bias.map(|b| b[first + c]), activation);
            }
        }
    };
    if g.n < threads {
        // SAFETY: `run_split` writes every element of the output (see there).
        return unsafe {
            buffers::written_by(g.n * g.c_out * out_plane, |y| {
                run_split(g, &l, x, packed, y, &finish, level)
            })
        };
    }
    // Each thread pads its share of the batch (or as much of it as `MAX_PASS_SCRATCH`
    // holds), then runs block by block over those images, so that a block's weight panel is
    // read from L2 for all of them rather than the whole weight once per image.
    let per_thread = g.n.div_ceil(threads);
    let per_pass = per_thread.min((MAX_PASS_SCRATCH / l.image_len).max(1));
    // Written in place, not cleared first: with freed memory kept for reuse, a cleared output
    // (calloc) was a pass of `memset` over it.
    let write = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(per_thread * g.c_out * out_plane)
            .zip(x[..g.n * in_image].par_chunks(per_thread * in_image))
            .for_each(|(y_images, x_images)| {
                let passes = y_images
                    .chunks_mut(per_pass * g.c_out * out_plane)
                    .zip(x_images.chunks(per_pass * in_image));
                for (y_images, x_images) in passes {
                    let images = x_images.len() / in_image;
                    with_scratch(images * l.image_len, |padded| {
                        for (x_image, padded) in x_images
                            .chunks_exact(in_image)
                            .zip(padded.chunks_exact_mut(l.image_len))
                        {
                            pad_image(g, &l, x_image, padded);
                        }
                        for block in 0..g.c_out.div_ceil(LANES) {
                            let channels = LANES.min(g.c_out - block * LANES);
                            let mut y_blocks: Vec<&mut [MaybeUninit<f32>]> = y_images
                                .chunks_exact_mut(g.c_out * out_plane)
                                .map(|y| &mut y[block * block_out..][..channels * out_plane])
                                .collect();
                            channel_block(g, &l, padded, packed, block, &mut y_blocks, level);
                            for y_block in y_blocks {
                                // SAFETY: `channel_block` wrote every element of every block.
                                finish(unsafe { buffers::assume_written(y_block) }, block * LANES);
                            }
                        }
                    });
                }
            });
    };
    // SAFETY: the threads' shares, their passes and the channel blocks cover every image's
    // output, and `channel_block` writes every element of its blocks (see there).
    unsafe { buffers::written_by(g.n * g.c_out * out_plane, write) }
}

/// Narrowest output map on which the row tiles split an image's channel blocks over the threads
/// ([`splits_images`]). By measurement (ResNet18's 3×3 layers at batch 1, 2 cores, against the
/// split matrix product, calls alternated): outputs 14 to 28 wide 20–28 % faster, stride 1 or 2;
/// 10 wide from -5 to +14 %, 7 wide 24 % slower (a map of 7 rows leaves half of its last tile
/// empty with one image, and each tile streams the block's whole weight panel).
pub const MIN_SPLIT_WIDTH: usize = 2 * RUN;

/// Whether a convolution of `images` images into `channels` output channels, `width` wide, fewer
/// images than threads, still keeps every thread busy here and gains from it: at least two blocks
/// of [`LANES`] output channels per thread, over which each image is then split ([`run_split`];
/// batch-1 inference), on maps at least [`MIN_SPLIT_WIDTH`] wide.
pub fn splits_images(images: usize, channels: usize, width: usize) -> bool {
    let threads = rayon::current_num_threads();
    images < threads && channels.div_ceil(LANES) >= 2 * threads && width >= MIN_SPLIT_WIDTH
}

/// [`run`] for fewer images than threads: each image padded once, then its blocks of output
/// channels in parallel, each writing its own planes of `y`, then `finish`ed. Every element of
/// `y` is written: the blocks cover every channel of every image (see [`channel_block`]).
fn run_split(
    g: &ConvGeometry,
    l: &Layout,
    x: &[f32],
    packed: &[f32],
    y: &mut [MaybeUninit<f32>],
    finish: &(dyn Fn(&mut [f32], usize) + Sync),
    level: SimdLevel,
) {
    let (in_image, out_plane) = (g.c_in * g.h * g.w, g.oh * g.ow);
    for (x_image, y_image) in x
        .chunks_exact(in_image)
        .zip(y.chunks_exact_mut(g.c_out * out_plane))
    {
        with_scratch(l.image_len, |padded| {
            pad_image(g, l, x_image, padded);
            let padded = &*padded;
            y_image
                .par_chunks_mut(LANES * out_plane)
                .enumerate()
                .for_each(|(block, y_block)| {
                    channel_block(g, l, padded, packed, block, &mut [&mut *y_block], level);
                    // SAFETY: `channel_block` wrote every element of the block.
                    finish(unsafe { buffers::assume_written(y_block) }, block * LANES);
                });
        });
    }
}

/// The first columns of a row's runs of [`RUN`] pixels: every [`RUN`]th, the last moved left to
/// end at the row's end.
fn run_starts(width: usize) -> impl Iterator<Item = usize> {
    (0..width.div_ceil(RUN)).map(move |i| (i * RUN).min(width - RUN))
}

/// Output channels `block · LANES ..` (as many as each of `y_blocks` holds) of the images whose
/// padded planes lie one after the other in `padded`, `y_blocks[i]` those of image `i`. Tiles
/// take 2 rows at a time down the images' rows in order, so that a map of an odd number of rows
/// (7×7) does not leave a last tile of one row per image. Every element of `y_blocks` is
/// written: the tiles take every row of every image, and their runs every column (the last run
/// moved left to end at the row's end; maps are at least [`RUN`] wide).
fn channel_block(
    g: &ConvGeometry,
    l: &Layout,
    padded: &[f32],
    packed: &[f32],
    block: usize,
    y_blocks: &mut [&mut [MaybeUninit<f32>]],
    level: SimdLevel,
) {
    let out_plane = g.oh * g.ow;
    let block_len = g.c_in * g.kh * g.kw * LANES;
    let weights = &packed[block * block_len..][..block_len];
    let total_rows = y_blocks.len() * g.oh;
    let mut out = [[0.0f32; LANES]; ROWS * RUN];
    for first in (0..total_rows).step_by(ROWS) {
        let rows = ROWS.min(total_rows - first);
        // (image, row) of each of the tile's rows; a short last tile repeats its last row.
        let placed: [(usize, usize); ROWS] = std::array::from_fn(|i| {
            let row = (first + i).min(total_rows - 1);
            (row / g.oh, row % g.oh)
        });
        let starts = placed.map(|(image, row)| image * l.image_len + row * g.stride[0] * l.wp);
        let tap_rows = placed.map(|(_, row)| TapRows::of(g, row));
        for col in run_starts(g.ow) {
            let at = TileAt {
                starts,
                col,
                stride: g.stride[1],
                rows,
                tap_rows,
                edges: RunEdges::of(g, col),
            };
            tile(level, padded, at, l, g, weights, &mut out);
            for (i, &(image, row)) in placed.iter().enumerate().take(rows) {
                let y_block = &mut *y_blocks[image];
                // Channel by channel, each channel's 7 pixels stored in a row of its plane.
                let pixels = &out[i * RUN..][..RUN];
                for (co, plane) in y_block.chunks_exact_mut(out_plane).enumerate() {
                    let run = &mut plane[row * g.ow + col..][..RUN];
                    for (v, pixel) in run.iter_mut().zip(pixels) {
                        v.write(pixel[co]);
                    }
                }
            }
        }
    }
}

/// The rows of taps `first..end` whose inputs for one output row lie inside the image, not in
/// the zero border: the others add nothing, and the kernels skip them (on a 7×7 map, 3×3 taps,
/// the first and last rows' outer taps are 2 of 21 per dimension, 18 % of the products).
#[derive(Clone, Copy)]
struct TapRows {
    first: usize,
    end: usize,
}

impl TapRows {
    fn of(g: &ConvGeometry, row: usize) -> Self {
        let top = row * g.stride[0];
        Self {
            first: g.padding[0].saturating_sub(top).min(g.kh),
            end: (g.padding[0] + g.h).saturating_sub(top).min(g.kh),
        }
    }

    /// Whether tap row `ki` reads inside the image.
    #[inline(always)]
    fn takes(&self, ki: usize) -> bool {
        (self.first..self.end).contains(&ki)
    }
}

/// Which columns of taps a run's first and last pixels skip: the first pixel reads the left
/// zero border for taps `kj < first_from`, the last reads the right one for `kj >= last_to`.
/// (Pixels inside a run read the border only with a padding wider than a stride, which these
/// networks do not have on the row tiles; they multiply its zeros.)
#[derive(Clone, Copy)]
struct RunEdges {
    first_from: usize,
    last_to: usize,
}

impl RunEdges {
    fn of(g: &ConvGeometry, col: usize) -> Self {
        let stride = g.stride[1];
        Self {
            first_from: g.padding[1].saturating_sub(col * stride),
            last_to: (g.padding[1] + g.w).saturating_sub((col + RUN - 1) * stride),
        }
    }
}

/// Where a tile reads its inputs: the start of each of its rows in the padded planes (the
/// row's first tap), its first output column, the column stride, how many rows it has, and
/// which taps of each row and of the run's ends read only the zero border.
#[derive(Clone, Copy)]
struct TileAt {
    starts: [usize; ROWS],
    col: usize,
    stride: usize,
    rows: usize,
    tap_rows: [TapRows; ROWS],
    edges: RunEdges,
}

/// Whether every input a tile reads and every weight lies inside its slice.
fn tile_fits(padded: &[f32], at: TileAt, l: &Layout, g: &ConvGeometry, weights: &[f32]) -> bool {
    if g.c_in == 0 || g.kh == 0 || g.kw == 0 {
        return false;
    }
    let last_offset = (g.kh - 1) * l.wp + g.kw - 1;
    let last_column = (at.col + RUN - 1) * at.stride;
    (1..=ROWS).contains(&at.rows)
        && at
            .starts
            .iter()
            .all(|&start| (g.c_in - 1) * l.plane + last_offset + start + last_column < padded.len())
        && at.tap_rows.iter().all(|rows| rows.end <= g.kh)
        && weights.len() >= g.c_in * g.kh * g.kw * LANES
}

/// `out[r · RUN + j][c] = Σ_ci Σ_(ki, kj) weights[(ci · kh · kw + ki · kw + kj) · LANES + c] ·
/// padded[ci · plane + ki · wp + kj + starts[r] + (col + j) · stride]` for `r < rows`,
/// `j < RUN`, `c < LANES`, leaving out the products whose input lies in the zero border (see
/// [`TapRows`], [`RunEdges`]).
fn tile(
    level: SimdLevel,
    padded: &[f32],
    at: TileAt,
    l: &Layout,
    g: &ConvGeometry,
    weights: &[f32],
    out: &mut [[f32; LANES]; ROWS * RUN],
) {
    assert!(
        tile_fits(padded, at, l, g, weights),
        "row tile at {:?} + {}: runs outside the slices",
        at.starts,
        at.col
    );
    let args = TileArgs {
        padded,
        starts: at.starts.map(|start| start + at.col * at.stride),
        plane: l.plane,
        wp: l.wp,
        kh: g.kh,
        kw: g.kw,
        c_in: g.c_in,
        weights,
        tap_rows: at.tap_rows,
        edges: at.edges,
    };
    let level = level.min(SimdLevel::detected());
    #[cfg(target_arch = "x86_64")]
    if level == SimdLevel::Avx512 && (g.kh, g.kw, at.stride) == (3, 3, 1) {
        // SAFETY: as below, at stride 1; `tile3` checks the kernel size and takes only the
        // edges it is compiled for.
        if unsafe { x86::tile3(&args, at.rows, out) } {
            return;
        }
    }
    match (level, at.rows, at.stride) {
        // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
        // processor has AVX-512F (respectively AVX2 and FMA), the features each is compiled for;
        // the runs they read (at the stride each is compiled for) were checked above.
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, 2, 1) => unsafe { x86::tile_avx512::<2, 1>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, _, 1) => unsafe { x86::tile_avx512::<1, 1>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, 2, 2) => unsafe { x86::tile_avx512::<2, 2>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx512, _, 2) => unsafe { x86::tile_avx512::<1, 2>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, 2, 1) => unsafe { x86::tile_avx2::<2, 1>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, _, 1) => unsafe { x86::tile_avx2::<1, 1>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, 2, 2) => unsafe { x86::tile_avx2::<2, 2>(&args, out) },
        #[cfg(target_arch = "x86_64")]
        (SimdLevel::Avx2, _, 2) => unsafe { x86::tile_avx2::<1, 2>(&args, out) },
        _ => tile_portable(&args, at.rows, at.stride, out),
    }
}

/// What a tile reads: the padded planes, where each of its rows starts in them (its first
/// column's first tap), the plane length and padded width, the kernel's size, the input
/// channels, the weight panel, and the taps that read only the zero border.
struct TileArgs<'a> {
    padded: &'a [f32],
    starts: [usize; ROWS],
    plane: usize,
    wp: usize,
    kh: usize,
    kw: usize,
    c_in: usize,
    weights: &'a [f32],
    tap_rows: [TapRows; ROWS],
    edges: RunEdges,
}

impl TileArgs<'_> {
    /// The tap rows that any of the tile's first `R` rows takes, and for tap row `ki`, which of
    /// those rows take it.
    #[inline(always)]
    fn tap_rows<const R: usize>(&self) -> (std::ops::Range<usize>, impl Fn(usize) -> [bool; R]) {
        let rows = &self.tap_rows[..R];
        let first = rows.iter().map(|t| t.first).min().unwrap_or(0);
        let end = rows.iter().map(|t| t.end).max().unwrap_or(0);
        (first..end, move |ki| {
            std::array::from_fn(|r| rows[r].takes(ki))
        })
    }

    /// Whether pixel `j` of a run takes tap column `kj` (the run's ends skip the border's).
    #[inline(always)]
    fn takes(&self, j: usize, kj: usize) -> bool {
        !((j == 0 && kj < self.edges.first_from) || (j == RUN - 1 && kj >= self.edges.last_to))
    }
}

fn tile_portable(
    args: &TileArgs,
    rows: usize,
    stride: usize,
    out: &mut [[f32; LANES]; ROWS * RUN],
) {
    let taps = args.kh * args.kw;
    *out = [[0.0; LANES]; ROWS * RUN];
    for ci in 0..args.c_in {
        for (r, (&start, tap_rows)) in args.starts.iter().zip(&args.tap_rows).enumerate() {
            if r >= rows {
                break;
            }
            for ki in tap_rows.first..tap_rows.end {
                for kj in 0..args.kw {
                    let t = ki * args.kw + kj;
                    let lanes = &args.weights[(ci * taps + t) * LANES..][..LANES];
                    let first = ci * args.plane + ki * args.wp + kj + start;
                    let inputs = args.padded[first..].iter().step_by(stride);
                    for (j, (pixel, &x)) in out[r * RUN..][..RUN].iter_mut().zip(inputs).enumerate()
                    {
                        if args.takes(j, kj) {
                            for (o, &w) in pixel.iter_mut().zip(lanes) {
                                *o += x * w;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LANES, ROWS, RUN, TileArgs};

    /// [`super::tile`] on 16-lane registers: `R` rows × 7 pixels × 2 vectors of channels (28
    /// accumulators for two rows), two weight loads and one broadcast per pixel per tap; inputs
    /// `S` apart along a row.
    ///
    /// # Safety
    /// The processor has AVX-512F; `tile_fits` holds for the arguments with `rows == R` and
    /// `stride == S`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512<const R: usize, const S: usize>(
        args: &TileArgs,
        out: &mut [[f32; LANES]; ROWS * RUN],
    ) {
        const { assert!(LANES == 32 && R <= ROWS) };
        let taps = args.kh * args.kw;
        let x = args.padded.as_ptr();
        let w = args.weights.as_ptr();
        let (tap_rows, rows_taking) = args.tap_rows::<R>();
        let mut acc = [[[_mm512_setzero_ps(); 2]; RUN]; R];
        for ci in 0..args.c_in {
            for ki in tap_rows.clone() {
                let on = rows_taking(ki);
                for kj in 0..args.kw {
                    // SAFETY: `tile_fits`: the weights of (ci, ki, kj) and the inputs of each
                    // row's run lie inside their slices.
                    unsafe {
                        let lanes = w.add((ci * taps + ki * args.kw + kj) * LANES);
                        let wv = [_mm512_loadu_ps(lanes), _mm512_loadu_ps(lanes.add(16))];
                        let base = x.add(ci * args.plane + ki * args.wp + kj);
                        for ((row_acc, &start), &on) in acc.iter_mut().zip(&args.starts).zip(&on) {
                            if !on {
                                continue;
                            }
                            let inputs = base.add(start);
                            for (j, pixel_acc) in row_acc.iter_mut().enumerate() {
                                if !args.takes(j, kj) {
                                    continue;
                                }
                                let b = _mm512_set1_ps(*inputs.add(j * S));
                                for (a, &wv) in pixel_acc.iter_mut().zip(&wv) {
                                    *a = _mm512_fmadd_ps(b, wv, *a);
                                }
                            }
                        }
                    }
                }
            }
        }
        store_avx512(&acc, out);
    }

    /// One tap column (`$kj`) of a 3×3 kernel for every pixel of a [`tile3_avx512`] tile: two
    /// weight loads, then a broadcast and two multiply-adds per pixel that takes it.
    macro_rules! tap_column {
        ($kj:literal, $acc:ident, $lanes:ident, $base:ident, $args:ident, $on:ident) => {{
            let lanes = $lanes.add($kj * LANES);
            let wv = [_mm512_loadu_ps(lanes), _mm512_loadu_ps(lanes.add(16))];
            for ((row_acc, &start), &on) in $acc.iter_mut().zip(&$args.starts).zip(&$on) {
                if !on {
                    continue;
                }
                let inputs = $base.add(start + $kj);
                for (j, pixel_acc) in row_acc.iter_mut().enumerate() {
                    // Known when compiled: `j` and the tap column are constants once unrolled.
                    if (j == 0 && $kj < FIRST) || (j == RUN - 1 && $kj >= LAST) {
                        continue;
                    }
                    let b = _mm512_set1_ps(*inputs.add(j));
                    for (a, &wv) in pixel_acc.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(b, wv, *a);
                    }
                }
            }
        }};
    }

    /// [`tile_avx512`] at stride 1 for a 3×3 kernel whose tile's edges skip at most the outer
    /// tap column (padding 0 or 1): returns false, computing nothing, for any other edges. (At
    /// stride 2 the same unrolling measured no faster: ResNet's stage entries -1.5 to +1.5 %.)
    ///
    /// # Safety
    /// As [`tile_avx512`]'s with `S == 1` and `R == rows`; `args.kh == args.kw == 3`.
    pub(super) unsafe fn tile3(
        args: &TileArgs,
        rows: usize,
        out: &mut [[f32; LANES]; ROWS * RUN],
    ) -> bool {
        assert!(args.kh == 3 && args.kw == 3);
        let first = args.edges.first_from;
        let last = args.edges.last_to.min(3);
        // SAFETY: the caller's contract, for the rows each is compiled for.
        unsafe {
            match (rows, first, last) {
                (2, 0, 3) => tile3_avx512::<2, 0, 3>(args, out),
                (2, 1, 3) => tile3_avx512::<2, 1, 3>(args, out),
                (2, 0, 2) => tile3_avx512::<2, 0, 2>(args, out),
                (2, 1, 2) => tile3_avx512::<2, 1, 2>(args, out),
                (1, 0, 3) => tile3_avx512::<1, 0, 3>(args, out),
                (1, 1, 3) => tile3_avx512::<1, 1, 3>(args, out),
                (1, 0, 2) => tile3_avx512::<1, 0, 2>(args, out),
                (1, 1, 2) => tile3_avx512::<1, 1, 2>(args, out),
                _ => return false,
            }
        }
        true
    }

    /// [`tile_avx512`] at stride 1 for a 3×3 kernel, its run's first pixel skipping tap columns below
    /// `FIRST` and its last those from `LAST` on: the tap columns unrolled and the edges known
    /// when compiled, so that no test or branch sits between the multiply-adds of a tap row (in
    /// the general kernel they took issue slots from the multiply-adds). The same products in the
    /// same order, so the same bits.
    ///
    /// # Safety
    /// As [`tile_avx512`]'s; `args.kw == 3`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile3_avx512<const R: usize, const FIRST: usize, const LAST: usize>(
        args: &TileArgs,
        out: &mut [[f32; LANES]; ROWS * RUN],
    ) {
        const { assert!(LANES == 32 && R <= ROWS) };
        let x = args.padded.as_ptr();
        let w = args.weights.as_ptr();
        let (tap_rows, rows_taking) = args.tap_rows::<R>();
        let mut acc = [[[_mm512_setzero_ps(); 2]; RUN]; R];
        for ci in 0..args.c_in {
            for ki in tap_rows.clone() {
                let on = rows_taking(ki);
                // SAFETY: `tile_fits`: the weights of (ci, ki, 0..3) and the inputs of each
                // row's run lie inside their slices.
                unsafe {
                    let lanes = w.add((ci * 9 + ki * 3) * LANES);
                    let base = x.add(ci * args.plane + ki * args.wp);
                    tap_column!(0, acc, lanes, base, args, on);
                    tap_column!(1, acc, lanes, base, args, on);
                    tap_column!(2, acc, lanes, base, args, on);
                }
            }
        }
        store_avx512(&acc, out);
    }

    /// Stores a tile's accumulators, pixel by pixel, into `out`.
    #[target_feature(enable = "avx512f")]
    fn store_avx512<const R: usize>(
        acc: &[[[__m512; 2]; RUN]; R],
        out: &mut [[f32; LANES]; ROWS * RUN],
    ) {
        for (r, row_acc) in acc.iter().enumerate() {
            for (j, pixel_acc) in row_acc.iter().enumerate() {
                let pixel = &mut out[r * RUN + j];
                for (v, &a) in pixel_acc.iter().enumerate() {
                    // SAFETY: `pixel` holds 32 floats, `16 · v + 16 <= 32`.
                    unsafe { _mm512_storeu_ps(pixel.as_mut_ptr().add(16 * v), a) };
                }
            }
        }
    }

    /// [`super::tile`] on 8-lane registers: four passes of 8 channels × `R` rows × 7 pixels (14
    /// accumulators for two rows, of AVX2's 16 registers); inputs `S` apart along a row.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA; `tile_fits` holds for the arguments with `rows == R` and
    /// `stride == S`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2<const R: usize, const S: usize>(
        args: &TileArgs,
        out: &mut [[f32; LANES]; ROWS * RUN],
    ) {
        const { assert!(R <= ROWS) };
        let taps = args.kh * args.kw;
        let x = args.padded.as_ptr();
        let (tap_rows, rows_taking) = args.tap_rows::<R>();
        for part in (0..LANES).step_by(8) {
            let w = args.weights[part..].as_ptr();
            let mut acc = [[_mm256_setzero_ps(); RUN]; R];
            for ci in 0..args.c_in {
                for ki in tap_rows.clone() {
                    let on = rows_taking(ki);
                    for kj in 0..args.kw {
                        // SAFETY: `tile_fits`: this part's 8 weights of (ci, ki, kj) and the
                        // inputs of each row's run lie inside their slices.
                        unsafe {
                            let wv =
                                _mm256_loadu_ps(w.add((ci * taps + ki * args.kw + kj) * LANES));
                            let base = x.add(ci * args.plane + ki * args.wp + kj);
                            for ((row_acc, &start), &on) in
                                acc.iter_mut().zip(&args.starts).zip(&on)
                            {
                                if !on {
                                    continue;
                                }
                                let inputs = base.add(start);
                                for (j, a) in row_acc.iter_mut().enumerate() {
                                    if !args.takes(j, kj) {
                                        continue;
                                    }
                                    let b = _mm256_set1_ps(*inputs.add(j * S));
                                    *a = _mm256_fmadd_ps(b, wv, *a);
                                }
                            }
                        }
                    }
                }
            }
            for (r, row_acc) in acc.iter().enumerate() {
                for (j, &a) in row_acc.iter().enumerate() {
                    let pixel = &mut out[r * RUN + j][part..part + 8];
                    // SAFETY: `pixel` holds the 8 floats the store writes.
                    unsafe { _mm256_storeu_ps(pixel.as_mut_ptr(), a) };
                }
            }
        }
    }
}

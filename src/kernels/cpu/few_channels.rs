//! Dense convolutions over a few input channels (the networks' stems: 3 colour channels into
//! 16–64, 3×3 or 7×7, stride 2), computed directly, without an im2col matrix.
//!
//! Through im2col and gemm, ResNet's 7×7 stem took 2.4× PyTorch's time (54 against 22 ms at
//! batch 16, 224, on the project's 2 cores): its product is long (12,544 pixels per image) and
//! shallow (147 = 3 · 7 · 7), so writing the im2col matrix and gemm's repacking of it cost as
//! much as the multiply-adds. Here each input channel is copied
//! once into its zero-padded stride-phase planes (as the depthwise kernels do), which makes
//! every tap's inputs for a run of output pixels one contiguous run; a tile of [`CHANNELS`]
//! output channels × [`PIXELS`] output pixels then sums, tap after tap, one load of inputs times
//! one weight per channel, in registers. Work is split over (image, block of output channels),
//! so batch 1 fills every core.

use rayon::prelude::*;

use super::activation::epilogue;
use super::depthwise::{Phases, scatter_phases};
use super::simd::madd;
use super::{ConvGeometry, SimdLevel, buffers, with_scratch};
use crate::kernels::ConvActivation;

/// Output channels per tile.
const CHANNELS: usize = 8;

/// Output pixels (of one row) per tile.
const PIXELS: usize = 16;

/// Most input channels (per group) this path takes; beyond, im2col's product is deep enough
/// for gemm to run at speed.
pub(super) const MAX_INPUT_CHANNELS: usize = 4;

/// Whether `g` is a convolution this module computes: dense (one group), a few input channels,
/// and more than one tap (a 1×1 convolution has no im2col to save).
pub(super) fn covers(g: &ConvGeometry) -> bool {
    g.groups == 1 && g.c_in <= MAX_INPUT_CHANNELS && g.kh * g.kw > 1
}

/// Forward convolution `[n, c_out, oh, ow]` (see the module doc), with `bias` and `activation`
/// applied to each output channel's plane as it is finished.
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let taps_per_channel = g.kh * g.kw;
    let depth = g.c_in * taps_per_channel;
    let ph = Phases::of(g);
    let planes_len = ph.planes_len(g);
    // Where each (input channel, tap) reads, relative to the output pixel's wide position.
    let offsets: Vec<usize> = (0..g.c_in)
        .flat_map(|c| (0..g.kh).flat_map(move |ki| (0..g.kw).map(move |kj| (c, ki, kj))))
        .map(|(c, ki, kj)| {
            let (base, offset) = ph.tap(g, ki, kj);
            c * planes_len + base + offset
        })
        .collect();
    // Every output channel's weights tap by tap, `CHANNELS` per tap and block of channels
    // (zeros past the last channel).
    let blocks = g.c_out.div_ceil(CHANNELS);
    let mut packed = vec![0.0f32; blocks * depth * CHANNELS];
    for (channel, w) in weight[..g.c_out * depth].chunks_exact(depth).enumerate() {
        let (block, c) = (channel / CHANNELS, channel % CHANNELS);
        for (t, &v) in w.iter().enumerate() {
            packed[(block * depth + t) * CHANNELS + c] = v;
        }
    }
    // One task per image, or, with fewer images than threads, per share of an image's blocks of
    // output channels (each task copies its image into phase planes once).
    let threads = rayon::current_num_threads().max(1);
    let shares = if g.n < threads {
        threads.div_ceil(g.n)
    } else {
        1
    };
    let blocks_per_task = blocks.div_ceil(shares);
    let mut y = buffers::to_overwrite(g.n * g.c_out * plane_out);
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(g.n * shares);
    for (image, out) in y.chunks_mut(g.c_out * plane_out).enumerate() {
        for (share, planes) in out
            .chunks_mut(blocks_per_task * CHANNELS * plane_out)
            .enumerate()
        {
            tasks.push((image, share * blocks_per_task, planes));
        }
    }
    tasks.into_par_iter().for_each(|(image, first_block, out)| {
        let channels = out.len() / plane_out;
        // A tile's last run may read up to `PIXELS` past the last plane: zeros, never kept.
        with_scratch(g.c_in * planes_len + PIXELS, |scratch| {
            let (planes, slack) = scratch.split_at_mut(g.c_in * planes_len);
            slack.fill(0.0);
            let x_image = &x[image * g.c_in * plane_in..][..g.c_in * plane_in];
            for (plane, phases) in x_image
                .chunks_exact(plane_in)
                .zip(planes.chunks_exact_mut(planes_len))
            {
                scatter_phases(g, &ph, plane, phases);
            }
            let mut tile = [[0.0f32; PIXELS]; CHANNELS];
            // Rows outside, blocks inside: a row's inputs stay in cache for every block.
            for oh in 0..g.oh {
                for ow in (0..g.ow).step_by(PIXELS) {
                    let run = PIXELS.min(g.ow - ow);
                    for first in (0..channels).step_by(CHANNELS) {
                        let block = first_block + first / CHANNELS;
                        let weights = &packed[block * depth * CHANNELS..][..depth * CHANNELS];
                        sum_tile(
                            level,
                            scratch,
                            &offsets,
                            weights,
                            oh * ph.wq + ow,
                            &mut tile,
                        );
                        for (c, sums) in tile.iter().take(channels - first).enumerate() {
                            out[(first + c) * plane_out + oh * g.ow + ow..][..run]
                                .copy_from_slice(&sums[..run]);
                        }
                    }
                }
            }
        });
        if bias.is_some() || activation.is_some() {
            let first = first_block * CHANNELS;
            for (c, plane) in out.chunks_exact_mut(plane_out).enumerate() {
                epilogue(level, plane, bias.map(|b| b[first + c]), activation);
            }
        }
    });
    y
}

/// One tile: `tile[c][p] = Σ_t weights[t · CHANNELS + c] · planes[offsets[t] + start + p]`,
/// summed over the taps `t` in order, at `level`. Written with intrinsics: left to itself, the
/// compiler vectorised this loop across the channels, with gathers, 15× slower.
fn sum_tile(
    level: SimdLevel,
    planes: &[f32],
    offsets: &[usize],
    weights: &[f32],
    start: usize,
    tile: &mut [[f32; PIXELS]; CHANNELS],
) {
    match level.min(SimdLevel::detected()) {
        // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
        // processor has AVX-512F (respectively AVX2 and FMA), the features each is compiled for.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::sum_tile_avx512(planes, offsets, weights, start, tile) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::sum_tile_avx2(planes, offsets, weights, start, tile) },
        _ => sum_tile_portable(planes, offsets, weights, start, tile),
    }
}

fn sum_tile_portable(
    planes: &[f32],
    offsets: &[usize],
    weights: &[f32],
    start: usize,
    tile: &mut [[f32; PIXELS]; CHANNELS],
) {
    let mut sums = [[0.0f32; PIXELS]; CHANNELS];
    for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CHANNELS)) {
        let inputs = &planes[offset + start..][..PIXELS];
        for (row, &weight) in sums.iter_mut().zip(w) {
            for (sum, &input) in row.iter_mut().zip(inputs) {
                *sum = madd::<false>(weight, input, *sum);
            }
        }
    }
    *tile = sums;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHANNELS, PIXELS};

    /// [`super::sum_tile`] with one 16-lane register per channel: 8 accumulators, one load of
    /// inputs and 8 broadcast weights per tap.
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_tile_avx512(
        planes: &[f32],
        offsets: &[usize],
        weights: &[f32],
        start: usize,
        tile: &mut [[f32; PIXELS]; CHANNELS],
    ) {
        const { assert!(PIXELS == 16) };
        let mut sums = [_mm512_setzero_ps(); CHANNELS];
        for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CHANNELS)) {
            let inputs = &planes[offset + start..][..PIXELS];
            // SAFETY: `inputs` holds the 16 floats the unaligned load reads.
            let x = unsafe { _mm512_loadu_ps(inputs.as_ptr()) };
            for (sum, &weight) in sums.iter_mut().zip(w) {
                *sum = _mm512_fmadd_ps(_mm512_set1_ps(weight), x, *sum);
            }
        }
        for (row, sum) in tile.iter_mut().zip(sums) {
            // SAFETY: `row` holds the 16 floats the unaligned store writes.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr(), sum) };
        }
    }

    /// [`super::sum_tile`] in two halves of 8 pixels, one 8-lane register per channel each
    /// (16 accumulators at once would not fit AVX2's 16 registers).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sum_tile_avx2(
        planes: &[f32],
        offsets: &[usize],
        weights: &[f32],
        start: usize,
        tile: &mut [[f32; PIXELS]; CHANNELS],
    ) {
        const { assert!(PIXELS == 16) };
        for half in [0, 8] {
            let mut sums = [_mm256_setzero_ps(); CHANNELS];
            for (&offset, w) in offsets.iter().zip(weights.chunks_exact(CHANNELS)) {
                let inputs = &planes[offset + start + half..][..8];
                // SAFETY: `inputs` holds the 8 floats the unaligned load reads.
                let x = unsafe { _mm256_loadu_ps(inputs.as_ptr()) };
                for (sum, &weight) in sums.iter_mut().zip(w) {
                    *sum = _mm256_fmadd_ps(_mm256_set1_ps(weight), x, *sum);
                }
            }
            for (row, sum) in tile.iter_mut().zip(sums) {
                let out = &mut row[half..][..8];
                // SAFETY: `out` holds the 8 floats the unaligned store writes.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
            }
        }
    }
}

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

/// Taps whose weight-gradient sums run together, sharing each load of output gradients.
const TAPS: usize = 3;

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
    let offsets = tap_offsets(g, &ph);
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

/// Weight gradient `[c_out, c_in, kh, kw]`: `dw[c, t] = Σ_n Σ_p dy[n, c, p] · x(n, t, p)`, where
/// `x(n, t, p)` is the input tap `t` reads for output pixel `p`. Every image's input is copied
/// into phase planes once; then each block of [`CHANNELS`] output channels runs over the batch
/// in order, its output gradients laid out at the phase width (zeros in the extra columns, so
/// that the inputs they meet add nothing), and sums [`TAPS`] taps at a time over the pixels in
/// registers. Blocks are independent, so the result does not depend on the thread count.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let depth = g.c_in * g.kh * g.kw;
    let ph = Phases::of(g);
    let planes_len = ph.planes_len(g);
    let offsets = tap_offsets(g, &ph);
    // The wide output gradient, rounded up to whole runs of `PIXELS` (zeros past the end).
    let wide = (g.oh * ph.wq).next_multiple_of(PIXELS);
    let image_len = g.c_in * planes_len;
    // Every image's phase planes, and `PIXELS` of slack for the last run's reads.
    let mut phases = vec![0.0f32; g.n * image_len + wide];
    phases[..g.n * image_len]
        .par_chunks_mut(planes_len)
        .zip(x[..g.n * g.c_in * plane_in].par_chunks(plane_in))
        .for_each(|(planes, plane)| scatter_phases(g, &ph, plane, planes));
    let mut dw = vec![0.0f32; g.c_out * depth];
    dw.par_chunks_mut(CHANNELS * depth)
        .enumerate()
        .for_each(|(block, dw_block)| {
            let channels = dw_block.len() / depth;
            let first = block * CHANNELS;
            with_scratch(CHANNELS * wide, |dy_wide| {
                // Channels past the last stay zero: their sums are dropped.
                dy_wide.fill(0.0);
                for image in 0..g.n {
                    for c in 0..channels {
                        let plane = &dy[(image * g.c_out + first + c) * plane_out..][..plane_out];
                        let rows = &mut dy_wide[c * wide..][..wide];
                        for (oh, row) in plane.chunks_exact(g.ow).enumerate() {
                            rows[oh * ph.wq..][..g.ow].copy_from_slice(row);
                        }
                    }
                    let image_phases = &phases[image * image_len..][..image_len + wide];
                    for (group, taps) in offsets.chunks(TAPS).enumerate() {
                        let mut sums = [[0.0f32; TAPS]; CHANNELS];
                        sum_taps(level, image_phases, taps, dy_wide, wide, &mut sums);
                        for (c, group_sums) in sums.iter().take(channels).enumerate() {
                            for (i, &v) in group_sums.iter().take(taps.len()).enumerate() {
                                dw_block[c * depth + TAPS * group + i] += v;
                            }
                        }
                    }
                }
            });
        });
    dw
}

/// Where each (input channel, tap) reads in an image's phase planes, relative to the output
/// pixel's wide position, in the weight's order.
fn tap_offsets(g: &ConvGeometry, ph: &Phases) -> Vec<usize> {
    let planes_len = ph.planes_len(g);
    (0..g.c_in)
        .flat_map(|c| (0..g.kh).flat_map(move |ki| (0..g.kw).map(move |kj| (c, ki, kj))))
        .map(|(c, ki, kj)| {
            let (base, offset) = ph.tap(g, ki, kj);
            c * planes_len + base + offset
        })
        .collect()
}

/// `sums[c][i] = Σ_p dy_wide[c · wide + p] · planes[taps[i] + p]` for the (up to [`TAPS`])
/// taps of `taps`, `p` over `[0, wide)`, at `level`: the pixels summed in 16 (or 8)
/// interleaved partial sums, then those in order.
fn sum_taps(
    level: SimdLevel,
    planes: &[f32],
    taps: &[usize],
    dy_wide: &[f32],
    wide: usize,
    sums: &mut [[f32; TAPS]; CHANNELS],
) {
    // A short last group repeats its last tap; the repeated sums are dropped.
    let pair: [usize; TAPS] = std::array::from_fn(|i| taps[i.min(taps.len() - 1)]);
    match level.min(SimdLevel::detected()) {
        // SAFETY: as in `sum_tile`.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::sum_taps_avx512(planes, pair, dy_wide, wide, sums) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::sum_taps_avx2(planes, pair, dy_wide, wide, sums) },
        _ => sum_taps_portable(planes, pair, dy_wide, wide, sums),
    }
}

fn sum_taps_portable(
    planes: &[f32],
    pair: [usize; TAPS],
    dy_wide: &[f32],
    wide: usize,
    sums: &mut [[f32; TAPS]; CHANNELS],
) {
    for (c, channel_sums) in sums.iter_mut().enumerate() {
        let dy = &dy_wide[c * wide..][..wide];
        for (sum, &offset) in channel_sums.iter_mut().zip(&pair) {
            let inputs = &planes[offset..][..wide];
            let mut lanes = [0.0f32; PIXELS];
            for (d, x) in dy.chunks_exact(PIXELS).zip(inputs.chunks_exact(PIXELS)) {
                for l in 0..PIXELS {
                    lanes[l] = madd::<false>(d[l], x[l], lanes[l]);
                }
            }
            *sum = lanes.iter().sum();
        }
    }
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

    use super::{CHANNELS, PIXELS, TAPS};

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

    /// [`super::sum_taps`]: 8 channels × 3 taps of 16-lane sums, one load of 16 output
    /// gradients per channel and of 16 inputs per tap for 24 multiply-adds (fewer taps left the
    /// loop waiting on the output gradients' reloads from L2).
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_taps_avx512(
        planes: &[f32],
        pair: [usize; TAPS],
        dy_wide: &[f32],
        wide: usize,
        sums: &mut [[f32; TAPS]; CHANNELS],
    ) {
        const { assert!(PIXELS == 16) };
        assert!(
            wide.is_multiple_of(16)
                && dy_wide.len() >= CHANNELS * wide
                && pair.iter().all(|&offset| offset + wide <= planes.len()),
            "sum_taps: runs of {wide} outside the slices"
        );
        // Raw pointers: with ten slices' bounds in play the loop ran out of general registers
        // and reloaded them from the stack on every step.
        let x_runs = pair.map(|offset| planes[offset..].as_ptr());
        let dy_runs: [*const f32; CHANNELS] = std::array::from_fn(|c| dy_wide[c * wide..].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); TAPS]; CHANNELS];
        for p in (0..wide).step_by(16) {
            // SAFETY: each pointer starts a run of at least `wide` floats (asserted above) and
            // `p + 16 <= wide`, `wide` being a multiple of 16.
            let x = x_runs.map(|run| unsafe { _mm512_loadu_ps(run.add(p)) });
            for (channel_acc, run) in acc.iter_mut().zip(dy_runs) {
                // SAFETY: as above.
                let d = unsafe { _mm512_loadu_ps(run.add(p)) };
                for (a, &x) in channel_acc.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(d, x, *a);
                }
            }
        }
        for (channel_sums, channel_acc) in sums.iter_mut().zip(acc) {
            for (sum, a) in channel_sums.iter_mut().zip(channel_acc) {
                let mut lanes = [0.0f32; 16];
                // SAFETY: `lanes` holds the 16 floats the store writes.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), a) };
                *sum = lanes.iter().sum();
            }
        }
    }

    /// [`super::sum_taps`] on 8-lane registers, 4 channels at a time (8 channels × 3 taps of
    /// accumulators would not fit AVX2's 16 registers).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sum_taps_avx2(
        planes: &[f32],
        pair: [usize; TAPS],
        dy_wide: &[f32],
        wide: usize,
        sums: &mut [[f32; TAPS]; CHANNELS],
    ) {
        assert!(
            wide.is_multiple_of(8)
                && dy_wide.len() >= CHANNELS * wide
                && pair.iter().all(|&offset| offset + wide <= planes.len()),
            "sum_taps: runs of {wide} outside the slices"
        );
        let x_runs = pair.map(|offset| planes[offset..].as_ptr());
        for half in [0, CHANNELS / 2] {
            let dy_runs: [*const f32; CHANNELS / 2] =
                std::array::from_fn(|c| dy_wide[(half + c) * wide..].as_ptr());
            let mut acc = [[_mm256_setzero_ps(); TAPS]; CHANNELS / 2];
            for p in (0..wide).step_by(8) {
                // SAFETY: each pointer starts a run of at least `wide` floats (asserted above)
                // and `p + 8 <= wide`, `wide` being a multiple of 8.
                let x = x_runs.map(|run| unsafe { _mm256_loadu_ps(run.add(p)) });
                for (channel_acc, run) in acc.iter_mut().zip(dy_runs) {
                    // SAFETY: as above.
                    let d = unsafe { _mm256_loadu_ps(run.add(p)) };
                    for (a, &x) in channel_acc.iter_mut().zip(&x) {
                        *a = _mm256_fmadd_ps(d, x, *a);
                    }
                }
            }
            for (channel_sums, channel_acc) in sums[half..].iter_mut().zip(acc) {
                for (sum, a) in channel_sums.iter_mut().zip(channel_acc) {
                    let mut lanes = [0.0f32; 8];
                    // SAFETY: `lanes` holds the 8 floats the store writes.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
                    *sum = lanes.iter().sum();
                }
            }
        }
    }
}

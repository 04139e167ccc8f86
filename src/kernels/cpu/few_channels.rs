//! The weight gradient of dense convolutions over a few input channels (the networks' stems: 3
//! colour channels into 16–64, 3×3 or 7×7, stride 2), and the forward pass of the deeper ones,
//! computed directly, without an im2col matrix.
//!
//! Through im2col and gemm, ResNet's 7×7 stem's weight gradient took 34–39 ms at batch 16, 224
//! on the project's 2 cores (PyTorch 24): its product is shallow in the output channels (64)
//! and long over the pixels (12,544 per image), so writing the im2col matrix (147 rows) and
//! gemm's repacking of it cost as much as the multiply-adds. Here each input channel is copied
//! once into its zero-padded stride-phase planes (as the depthwise kernels do), which makes
//! every tap's inputs for a run of output pixels one contiguous run, and a block of
//! `CHANNELS` output channels × `TAPS` taps sums over the pixels in registers, chunk by chunk
//! of pixels so that what the taps read stays in L1, the output gradients' runs on cache lines:
//! 22 → 14 ms on that stem (PyTorch 11.8 ms in the same side-by-side run's phase).
//!
//! The forward pass of the deeper stems (at least `MIN_FORWARD_DEPTH` (64) products per output:
//! ResNet's 7×7, 147) runs on the same phase planes with [`direct`]'s register tiles, 8 output
//! channels × 48 pixels: 23 % faster than im2col on ResNet18's stem at batch 16, 224, and a
//! training step's peak (`train_memory`, batch 32) the same, 770–773 MiB against 765–772
//! alternated with the matrix product. (An earlier kernel of this kind, 8 channels × 16 pixels,
//! commit bf925cb, had measured a peak of 813–836 MiB, not seen here.)

use rayon::prelude::*;

use super::depthwise::{Phases, scatter_phases, widen};
use super::direct::{self, Layout};
use super::simd::madd;
use super::{ConvGeometry, SimdLevel, with_scratch};
use crate::kernels::ConvActivation;

/// Output channels per block.
const CHANNELS: usize = 8;

/// Lanes of the pixel sums (one AVX-512 register); the wide output gradient is rounded up to
/// a multiple of it.
const PIXELS: usize = 16;

/// Taps whose weight-gradient sums run together, sharing each load of output gradients.
const TAPS: usize = 3;

/// Most input channels (per group) this path takes; beyond, im2col's product is deep enough
/// for gemm to run at speed.
pub(super) const MAX_INPUT_CHANNELS: usize = 4;

/// Whether `g` is a convolution whose weight gradient this module computes: dense (one group), a
/// few input channels, and more than one tap (a 1×1 convolution has no im2col to save).
pub(super) fn covers(g: &ConvGeometry) -> bool {
    g.groups == 1 && g.c_in <= MAX_INPUT_CHANNELS && g.kh * g.kw > 1
}

/// Whether this module computes `g`'s forward pass: what `covers` takes, with at least
/// `MIN_FORWARD_DEPTH` (64) products per output, outputs at least `MIN_FORWARD_WIDTH` (16)
/// wide, and a batch that gives every thread an image, or else output channels enough to split
/// each image over the threads ([`direct::splits_images`]; fewer go to the split matrix product).
pub fn covers_forward(g: &ConvGeometry) -> bool {
    covers(g)
        && g.c_in * g.kh * g.kw >= MIN_FORWARD_DEPTH
        && g.ow >= MIN_FORWARD_WIDTH
        && (super::fills_threads(g) || direct::splits_images(g.n, g.c_out))
}

/// Narrowest output this module's forward pass takes: its tiles run along the rows.
const MIN_FORWARD_WIDTH: usize = 16;

/// Fewest multiply-adds per output (input channels × taps) this module's forward pass takes.
/// By measurement (batch 16, 224, 2 cores, interleaved with the matrix product): ResNet's 7×7
/// stem (147) 23 % faster, 5×5 stems over 3 channels (75) 11–17 %, a 3×3 one over 4 channels
/// (36) the same, and MobileNetV2's 3×3 stem (27) 45 % slower: each tile's stores outweigh its
/// few sums.
const MIN_FORWARD_DEPTH: usize = 64;

/// Forward convolution `[n, c_out, oh, ow]` of a geometry [`covers_forward`] takes, with the
/// bias and `activation` applied to each output plane: each image's channels are copied into
/// their zero-padded stride-phase planes, on which [`direct`]'s tiles (8 output channels × 48
/// pixels, tap after tap) read every tap's inputs for a run of output pixels as one contiguous
/// run, the output pixels in the vector lanes.
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let ph = Phases::of(g);
    let l = Layout::of_phases(g, &ph);
    let (plane_in, planes_len) = (g.h * g.w, ph.planes_len(g));
    let copy = |x_image: &[f32], scratch: &mut [f32]| {
        let (planes, tail) = scratch.split_at_mut(g.c_in * planes_len);
        for (planes, plane) in planes
            .chunks_exact_mut(planes_len)
            .zip(x_image.chunks_exact(plane_in))
        {
            scatter_phases(g, &ph, plane, planes);
        }
        tail.fill(0.0);
    };
    let packed = direct::pack_forward(g, weight, direct::CHANNELS);
    direct::run_on(g, &l, copy, x, &packed, bias, activation, level)
}

/// Weight gradient `[c_out, c_in, kh, kw]`: `dw[c, t] = Σ_n Σ_p dy[n, c, p] · x(n, t, p)`, where
/// `x(n, t, p)` is the input tap `t` reads for output pixel `p`. Every image's input is copied
/// into phase planes once; then each block of `CHANNELS` output channels runs over the batch
/// in order, its output gradients laid out at the phase width (zeros in the extra columns, so
/// that the inputs they meet add nothing), and sums `TAPS` taps at a time in registers. The
/// pixels run in chunks of `CHUNK`, every tap group over one chunk before the next, so that the
/// chunk's output gradients and the inputs its taps read stay in L1; each group's lane sums
/// wait in memory between chunks. Blocks are independent, so the result does not depend on the
/// thread count.
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out) = (g.h * g.w, g.oh * g.ow);
    let depth = g.c_in * g.kh * g.kw;
    let ph = Phases::of(g);
    let planes_len = ph.planes_len(g);
    let offsets = tap_offsets(g, &ph);
    // The wide output gradient, rounded up to whole runs of `PIXELS` (zeros past the end).
    let wide = (g.oh * ph.wq).next_multiple_of(PIXELS);
    let image_len = g.c_in * planes_len;
    // Every image's phase planes, then `wide` zeros: a tap's run of `wide` inputs may start
    // anywhere in the last image's planes.
    let mut phases = vec![0.0f32; g.n * image_len + wide];
    phases[..g.n * image_len]
        .par_chunks_mut(planes_len)
        .zip(x[..g.n * g.c_in * plane_in].par_chunks(plane_in))
        .for_each(|(planes, plane)| scatter_phases(g, &ph, plane, planes));
    let mut dw = vec![0.0f32; g.c_out * depth];
    let groups = depth.div_ceil(TAPS);
    dw.par_chunks_mut(CHANNELS * depth)
        .enumerate()
        .for_each(|(block, dw_block)| {
            let channels = dw_block.len() / depth;
            let first = block * CHANNELS;
            let mut lanes = vec![LaneSums::default(); groups];
            // Every channel's run starts on a cache line (the scratch's start does, and `wide`
            // is a multiple of 16 floats), so that no load of output gradients spans two.
            with_scratch(CHANNELS * wide, |dy_wide| {
                // Channels past the last stay zero: their sums are dropped.
                dy_wide[channels * wide..].fill(0.0);
                for image in 0..g.n {
                    for c in 0..channels {
                        let plane = &dy[(image * g.c_out + first + c) * plane_out..][..plane_out];
                        widen(g, &ph, plane, &mut dy_wide[c * wide..][..wide]);
                    }
                    let image_phases = &phases[image * image_len..][..image_len + wide];
                    let dy_wide = &*dy_wide;
                    let runs: Vec<Runs> = offsets
                        .chunks(TAPS)
                        .map(|taps| Runs::of(image_phases, taps, dy_wide, wide))
                        .collect();
                    lanes.fill(LaneSums::default());
                    for start in (0..wide).step_by(CHUNK) {
                        let pixels = start..wide.min(start + CHUNK);
                        for (&runs, group_lanes) in runs.iter().zip(&mut lanes) {
                            sum_taps(level, runs, pixels.clone(), group_lanes);
                        }
                    }
                    for (group, group_lanes) in lanes.iter().enumerate() {
                        let taps = TAPS.min(depth - TAPS * group);
                        for (c, channel_lanes) in group_lanes.0.iter().take(channels).enumerate() {
                            for (i, tap_lanes) in channel_lanes.iter().take(taps).enumerate() {
                                dw_block[c * depth + TAPS * group + i] +=
                                    tap_lanes.iter().sum::<f32>();
                            }
                        }
                    }
                }
            });
        });
    dw
}

/// Output pixels of one chunk of [`weight_grad`]'s sums: 16 KB of output gradients (8
/// channels) and about 33 KB of the inputs the taps read (12 phase planes of a 7×7 stem over 3
/// channels). By measurement (ResNet18's stem, batch 16, 224, 2 cores, alternated with the
/// unchunked sums): 256 pixels 15.7 ms, 512 13.8, 768 13.3, 1024 14.7; the whole run (no
/// chunks) 22 ms.
const CHUNK: usize = 512;

/// The running lane sums of one group of taps: `[channel][tap][lane]`. The AVX2 kernel sums in
/// the first 8 lanes and leaves the others zero.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct LaneSums([[[f32; PIXELS]; TAPS]; CHANNELS]);

impl Default for LaneSums {
    fn default() -> Self {
        Self([[[0.0; PIXELS]; TAPS]; CHANNELS])
    }
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

/// The runs one group's sums read: each tap's `wide` inputs from its offset in the image's
/// phase planes, each channel's `wide` output gradients. Built only where they fit their slices.
#[derive(Clone, Copy)]
struct Runs<'a> {
    inputs: [&'a [f32]; TAPS],
    dy: [&'a [f32]; CHANNELS],
}

impl<'a> Runs<'a> {
    /// The runs of `taps` (a short last group repeats its last tap; the repeated sums are
    /// dropped). Panics where one would end past its slice, which `weight_grad`'s layout rules
    /// out, or where `wide` is not a whole number of [`PIXELS`] runs.
    fn of(planes: &'a [f32], taps: &[usize], dy_wide: &'a [f32], wide: usize) -> Self {
        assert!(
            wide.is_multiple_of(PIXELS),
            "sum_taps: runs of {wide} are not whole vectors"
        );
        Self {
            inputs: std::array::from_fn(|i| &planes[taps[i.min(taps.len() - 1)]..][..wide]),
            dy: std::array::from_fn(|c| &dy_wide[c * wide..][..wide]),
        }
    }
}

/// `lanes[c][i][l] += Σ_p dy[c][p] · inputs[i][p]` over the `p ≡ l (mod lanes)` of `pixels` (a
/// range of whole [`PIXELS`] runs inside the runs), at `level`: 16 (or, on AVX2, 8) interleaved
/// partial sums per (channel, tap).
fn sum_taps(level: SimdLevel, runs: Runs, pixels: std::ops::Range<usize>, lanes: &mut LaneSums) {
    assert!(
        pixels.start.is_multiple_of(PIXELS)
            && pixels.end.is_multiple_of(PIXELS)
            && pixels.end <= runs.dy[0].len(),
        "sum_taps: pixels {pixels:?} are not whole vectors inside the runs"
    );
    match level.min(SimdLevel::detected()) {
        // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
        // processor has AVX-512F (respectively AVX2 and FMA), the features each is compiled for.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::sum_taps_avx512(runs, pixels, lanes) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { x86::sum_taps_avx2(runs, pixels, lanes) },
        _ => sum_taps_portable(runs, pixels, lanes),
    }
}

fn sum_taps_portable(runs: Runs, pixels: std::ops::Range<usize>, lanes: &mut LaneSums) {
    for (channel_lanes, dy) in lanes.0.iter_mut().zip(runs.dy) {
        for (tap_lanes, inputs) in channel_lanes.iter_mut().zip(runs.inputs) {
            let (dy, inputs) = (&dy[pixels.clone()], &inputs[pixels.clone()]);
            for (d, x) in dy.chunks_exact(PIXELS).zip(inputs.chunks_exact(PIXELS)) {
                for l in 0..PIXELS {
                    tap_lanes[l] = madd::<false>(d[l], x[l], tap_lanes[l]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{CHANNELS, LaneSums, PIXELS, Runs, TAPS};

    /// [`super::sum_taps`]: 8 channels × 3 taps of 16-lane sums, one load of 16 output
    /// gradients per channel and of 16 inputs per tap for 24 multiply-adds (fewer taps left the
    /// loop waiting on the output gradients' reloads).
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum_taps_avx512(runs: Runs, pixels: Range<usize>, lanes: &mut LaneSums) {
        const { assert!(PIXELS == 16) };
        // Raw pointers: with eleven slices' bounds in play the loop ran out of general
        // registers and reloaded them from the stack on every step.
        let x_runs = runs.inputs.map(<[f32]>::as_ptr);
        let dy_runs = runs.dy.map(<[f32]>::as_ptr);
        let mut acc = [[_mm512_setzero_ps(); TAPS]; CHANNELS];
        // Loaded into a zeroed array in place, not built with `map`: the copies that made left
        // the loop storing accumulators to the stack on every step (twice as slow).
        for (channel_acc, channel_lanes) in acc.iter_mut().zip(&lanes.0) {
            for (a, tap_lanes) in channel_acc.iter_mut().zip(channel_lanes) {
                // SAFETY: `tap_lanes` holds the 16 floats the load reads.
                *a = unsafe { _mm512_loadu_ps(tap_lanes.as_ptr()) };
            }
        }
        for p in pixels.step_by(16) {
            // SAFETY: `Runs::of` made every run `wide` floats long, and `p + 16 <=
            // pixels.end <= wide` (`sum_taps` asserts the second).
            let x = x_runs.map(|run| unsafe { _mm512_loadu_ps(run.add(p)) });
            for (channel_acc, run) in acc.iter_mut().zip(dy_runs) {
                // SAFETY: as above.
                let d = unsafe { _mm512_loadu_ps(run.add(p)) };
                for (a, &x) in channel_acc.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(d, x, *a);
                }
            }
        }
        for (channel_acc, channel_lanes) in acc.iter().zip(&mut lanes.0) {
            for (a, tap_lanes) in channel_acc.iter().zip(channel_lanes) {
                // SAFETY: `tap_lanes` holds the 16 floats the store writes.
                unsafe { _mm512_storeu_ps(tap_lanes.as_mut_ptr(), *a) };
            }
        }
    }

    /// [`super::sum_taps`] on 8-lane registers (the first 8 of each lane sum), 4 channels at a
    /// time: 8 channels × 3 taps of accumulators would not fit AVX2's 16 registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn sum_taps_avx2(runs: Runs, pixels: Range<usize>, lanes: &mut LaneSums) {
        let x_runs = runs.inputs.map(<[f32]>::as_ptr);
        for half in [0, CHANNELS / 2] {
            let dy_runs: [*const f32; CHANNELS / 2] =
                std::array::from_fn(|c| runs.dy[half + c].as_ptr());
            let half_lanes = &mut lanes.0[half..half + CHANNELS / 2];
            let mut acc = [[_mm256_setzero_ps(); TAPS]; CHANNELS / 2];
            // In place, as in the AVX-512 kernel.
            for (channel_acc, channel_lanes) in acc.iter_mut().zip(&*half_lanes) {
                for (a, tap_lanes) in channel_acc.iter_mut().zip(channel_lanes) {
                    // SAFETY: `tap_lanes` holds the 8 floats the load reads (and 8 more).
                    *a = unsafe { _mm256_loadu_ps(tap_lanes.as_ptr()) };
                }
            }
            for p in pixels.clone().step_by(8) {
                // SAFETY: `Runs::of` made every run `wide` floats long, and `p + 8 <=
                // pixels.end <= wide` (`sum_taps` asserts the second).
                let x = x_runs.map(|run| unsafe { _mm256_loadu_ps(run.add(p)) });
                for (channel_acc, run) in acc.iter_mut().zip(dy_runs) {
                    // SAFETY: as above.
                    let d = unsafe { _mm256_loadu_ps(run.add(p)) };
                    for (a, &x) in channel_acc.iter_mut().zip(&x) {
                        *a = _mm256_fmadd_ps(d, x, *a);
                    }
                }
            }
            for (channel_acc, channel_lanes) in acc.iter().zip(half_lanes) {
                for (a, tap_lanes) in channel_acc.iter().zip(channel_lanes) {
                    // SAFETY: `tap_lanes` holds the 8 floats the store writes (and 8 more).
                    unsafe { _mm256_storeu_ps(tap_lanes.as_mut_ptr(), *a) };
                }
            }
        }
    }
}

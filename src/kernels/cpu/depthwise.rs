//! Depthwise convolutions (`groups == C_in == C_out`): each channel convolved with its own
//! `kh × kw` kernel, plane by plane.
//!
//! Each input plane is first copied into its zero-padded form, split by stride phase: for
//! strides `(sh, sw)` the padded plane becomes `sh · sw` phase planes of width `wq = ⌈wp / sw⌉`,
//! phase `(a, b)` holding padded rows `a, a + sh, ...` and columns `b, b + sw, ...`. Output pixel
//! `(oh, ow)` then reads, for kernel tap `(ki, kj)`, phase `(ki % sh, kj % sw)` at
//! `(oh + ki / sh, ow + kj / sw)`: with output pixels numbered at the phase width `wq` ("wide",
//! the columns past `ow` are never kept), every tap reads one contiguous run at a constant
//! offset. No border test and no strided access: the forward pass sums a block of output rows
//! in registers tap after tap and stores it once; the gradients run each tap as one
//! multiply-add over the whole plane (blocked to stay in L1), where row-by-row loops over 7- or
//! 14-pixel rows spent most of their time in scalar tails.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::activation::epilogue;
use super::simd::{madd, simd_dispatch};
use super::{ConvGeometry, SimdLevel, buffers, with_scratch};
use crate::kernels::ConvActivation;

/// Elements of the wide output processed per pass over the taps: keeps the run of outputs and
/// the inputs it reads in L1.
const BLOCK: usize = 1024;

/// Lanes of independent partial sums: the compiler vectorises a dot product only when the
/// additions are spread over lanes this way (float addition is not reassociated for it).
const LANES: usize = 16;

/// The stride-phase layout of one padded plane.
#[derive(Debug, Clone, Copy)]
pub(super) struct Phases {
    /// Rows of each phase plane.
    hq: usize,
    /// Columns of each phase plane (also the width of the wide output).
    pub(super) wq: usize,
    /// Elements of the wide output: `(oh − 1) · wq + ow`.
    wide: usize,
}

impl Phases {
    pub(super) fn of(g: &ConvGeometry) -> Self {
        let [sh, sw] = g.stride;
        let hq = (g.h + 2 * g.padding[0]).div_ceil(sh);
        let wq = (g.w + 2 * g.padding[1]).div_ceil(sw);
        Self {
            hq,
            wq,
            wide: (g.oh - 1) * wq + g.ow,
        }
    }

    fn plane(&self) -> usize {
        self.hq * self.wq
    }

    pub(super) fn planes_len(&self, g: &ConvGeometry) -> usize {
        self.plane() * g.stride[0] * g.stride[1]
    }

    /// The phase plane and offset into it that tap `(ki, kj)` reads.
    pub(super) fn tap(&self, g: &ConvGeometry, ki: usize, kj: usize) -> (usize, usize) {
        let [sh, sw] = g.stride;
        let phase = (ki % sh) * sw + kj % sw;
        (phase * self.plane(), (ki / sh) * self.wq + kj / sw)
    }

    /// Calls `f(weight, wide_range, planes_range)` for each block of the wide output and each
    /// kernel tap, with the tap's weight and the run of phase-plane elements it pairs with that
    /// block: the forward pass reads that run, the input gradient adds into it.
    fn for_each_tap_block(
        &self,
        g: &ConvGeometry,
        weight: &[f32],
        mut f: impl FnMut(f32, Range<usize>, Range<usize>),
    ) {
        for start in (0..self.wide).step_by(BLOCK) {
            let end = (start + BLOCK).min(self.wide);
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let (base, offset) = self.tap(g, ki, kj);
                    let from = base + offset + start;
                    f(
                        weight[ki * g.kw + kj],
                        start..end,
                        from..from + (end - start),
                    );
                }
            }
        }
    }

    /// Writes zeros to every element of the phase planes that no image element is copied to
    /// (the padding, and the columns or rows a phase plane has past the image), leaving the
    /// rest for the copy: clearing whole planes first wrote each element twice.
    fn zero_border(&self, g: &ConvGeometry, planes: &mut [f32]) {
        let [sh, sw] = g.stride;
        // The phase rows (columns) that hold image rows (columns) in phase `a` of a stride `s`
        // over `size` elements after `pad` of padding: `(i + pad) / s` for the image indices
        // `i` with `(i + pad) % s == a`, a contiguous range.
        let covered = |a: usize, s: usize, pad: usize, size: usize| {
            let first = (a + s - pad % s) % s;
            if first >= size {
                return 0..0;
            }
            let start = (first + pad) / s;
            start..start + (size - first).div_ceil(s)
        };
        let plane_len = self.plane();
        for (phase, plane) in planes[..plane_len * sh * sw]
            .chunks_exact_mut(plane_len)
            .enumerate()
        {
            let rows = covered(phase / sw, sh, g.padding[0], g.h);
            let cols = covered(phase % sw, sw, g.padding[1], g.w);
            if rows.is_empty() || cols.is_empty() {
                plane.fill(0.0);
                continue;
            }
            plane[..rows.start * self.wq].fill(0.0);
            plane[rows.end * self.wq..].fill(0.0);
            for row in plane[rows.start * self.wq..rows.end * self.wq].chunks_exact_mut(self.wq) {
                row[..cols.start].fill(0.0);
                row[cols.end..].fill(0.0);
            }
        }
    }

    /// For padded row `r` of the image: per column phase, where its run starts in the phase
    /// planes, the first image column in it, and the step between image columns (`sw`).
    fn column_runs(
        &self,
        g: &ConvGeometry,
        r: usize,
    ) -> impl Iterator<Item = (usize, usize, usize)> {
        let [sh, sw] = g.stride;
        let pad_w = g.padding[1];
        let (plane, wq) = (self.plane(), self.wq);
        (0..sw).filter_map(move |b| {
            // The first image column c with (c + pad_w) % sw == b.
            let first = (b + sw - pad_w % sw) % sw;
            (first < g.w).then(|| {
                let start = ((r % sh) * sw + b) * plane + (r / sh) * wq + (first + pad_w) / sw;
                (start, first, sw)
            })
        })
    }
}

/// Copies one input plane `[h, w]` into its padded phase planes (zeros everywhere else).
pub(super) fn scatter_phases(g: &ConvGeometry, ph: &Phases, x: &[f32], planes: &mut [f32]) {
    ph.zero_border(g, planes);
    let [pad_h, pad_w] = g.padding;
    if g.stride == [1, 1] {
        for (r, row) in x.chunks_exact(g.w).enumerate() {
            let start = (r + pad_h) * ph.wq + pad_w;
            planes[start..start + g.w].copy_from_slice(row);
        }
        return;
    }
    if g.stride[1] == 2 {
        for (r, row) in x.chunks_exact(g.w).enumerate() {
            scatter_row_in_pairs(ph, g, r + pad_h, row, planes);
        }
        return;
    }
    for (r, row) in x.chunks_exact(g.w).enumerate() {
        for (start, first, step) in ph.column_runs(g, r + pad_h) {
            for (i, &v) in row[first..].iter().step_by(step).enumerate() {
                planes[start + i] = v;
            }
        }
    }
}

/// For a column stride of 2: where padded row `r`'s even and odd image columns start in the
/// phase planes (no odd run for a one-column image).
fn column_pair_starts(ph: &Phases, g: &ConvGeometry, r: usize) -> (usize, Option<usize>) {
    let (mut even, mut odd) = (0, None);
    for (start, first, _) in ph.column_runs(g, r) {
        match first {
            0 => even = start,
            _ => odd = Some(start),
        }
    }
    (even, odd)
}

/// [`scatter_phases`]' row `r` (padded) for a column stride of 2: the row's column pairs split
/// into the two column phases' runs in one pass, a loop the compiler vectorises (stepping
/// through each phase's columns in turn ran one element at a time: 12 % of MobileNetV2's
/// inference).
fn scatter_row_in_pairs(ph: &Phases, g: &ConvGeometry, r: usize, row: &[f32], planes: &mut [f32]) {
    let (even_at, odd_at) = column_pair_starts(ph, g, r);
    let Some(odd_at) = odd_at else {
        planes[even_at] = row[0]; // a one-column image
        return;
    };
    let pairs = g.w / 2;
    let (even, odd) = disjoint_runs(planes, even_at, odd_at, g.w.div_ceil(2), pairs);
    for ((pair, e), o) in row.chunks_exact(2).zip(&mut *even).zip(odd) {
        *e = pair[0];
        *o = pair[1];
    }
    if g.w % 2 == 1 {
        even[pairs] = row[g.w - 1];
    }
}

/// [`gather_phases`]' row `r` (padded) for a column stride of 2: the two column phases' runs
/// interleaved back into the row in one pass (the transpose of [`scatter_row_in_pairs`]).
fn gather_row_in_pairs(ph: &Phases, g: &ConvGeometry, r: usize, planes: &[f32], row: &mut [f32]) {
    let (even_at, odd_at) = column_pair_starts(ph, g, r);
    let Some(odd_at) = odd_at else {
        row[0] = planes[even_at];
        return;
    };
    let pairs = g.w / 2;
    let (even, odd) = (
        &planes[even_at..][..g.w.div_ceil(2)],
        &planes[odd_at..][..pairs],
    );
    for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
        pair[0] = e;
        pair[1] = o;
    }
    if g.w % 2 == 1 {
        row[g.w - 1] = even[pairs];
    }
}

/// The runs `[a, a + a_len)` and `[b, b + b_len)` of `planes`, which do not overlap.
fn disjoint_runs(
    planes: &mut [f32],
    a: usize,
    b: usize,
    a_len: usize,
    b_len: usize,
) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (head, tail) = planes.split_at_mut(b);
        (&mut head[a..a + a_len], &mut tail[..b_len])
    } else {
        let (head, tail) = planes.split_at_mut(a);
        (&mut tail[..a_len], &mut head[b..b + b_len])
    }
}

/// Adds the padded phase planes' interior back onto one plane `[h, w]` (the transpose of
/// [`scatter_phases`]; the border, which only padding read, is dropped).
fn gather_phases(g: &ConvGeometry, ph: &Phases, planes: &[f32], dx: &mut [f32]) {
    let [pad_h, pad_w] = g.padding;
    for (r, row) in dx.chunks_exact_mut(g.w).enumerate() {
        if g.stride == [1, 1] {
            let start = (r + pad_h) * ph.wq + pad_w;
            row.copy_from_slice(&planes[start..start + g.w]);
        } else if g.stride[1] == 2 {
            gather_row_in_pairs(ph, g, r + pad_h, planes, row);
        } else {
            for (start, first, step) in ph.column_runs(g, r + pad_h) {
                for (i, v) in row[first..].iter_mut().step_by(step).enumerate() {
                    *v = planes[start + i];
                }
            }
        }
    }
}

/// Forward: `y[n, c] = bias[c] + Σ w[c, ki, kj] · x[n, c, oh·s + ki − p, ow·s + kj − p]`, then
/// `activation` over each plane as it is written.
///
/// The sums are computed in registers, a block of rows and columns at a time (see
/// `depthwise_plane`): the bias, then every tap's multiply-add, the clamp of ReLU or ReLU6,
/// and one store into the output. Spreading each tap over the whole plane in turn (one
/// multiply-add pass per tap, reading and writing the plane's running sums), then copying the
/// sums to their rows and clamping them in passes of their own, was a quarter of MobileNetV2's
/// inference. Each sum is the same `f32` operations in the same order either way (the bias,
/// then the taps row by row), so the bits are the same.
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    activation: Option<ConvActivation>,
    level: SimdLevel,
) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let ph = Phases::of(g);
    let planes_len = ph.planes_len(g);
    // Where each tap's run starts in the phase planes (the same for every plane).
    let starts: Vec<usize> = (0..g.kh)
        .flat_map(|ki| (0..g.kw).map(move |kj| (ki, kj)))
        .map(|(ki, kj)| {
            let (base, offset) = ph.tap(g, ki, kj);
            base + offset
        })
        .collect();
    let clamp = activation.and_then(ConvActivation::bounds);
    let in_place = reads_in_place(g, level);
    let write = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(plane_out)
            .enumerate()
            .for_each(|(plane, out)| {
                let c = plane % g.c_in;
                let taps = Taps {
                    starts: &starts,
                    weights: &weight[c * taps..][..taps],
                    bias: bias.map_or(0.0, |b| b[c]),
                    clamp,
                };
                let x_plane = &x[plane * plane_in..][..plane_in];
                if in_place {
                    in_place_plane(g, x_plane, &taps, out);
                } else {
                    // The slack past the planes lets a row's last vector be read whole.
                    with_scratch(planes_len + SLACK, |scratch| {
                        let (planes, slack) = scratch.split_at_mut(planes_len);
                        scatter_phases(g, &ph, x_plane, planes);
                        slack.fill(0.0);
                        depthwise_plane(level, scratch, &taps, ph.wq, [g.oh, g.ow], out);
                    });
                }
                // SAFETY: `in_place_plane` or `depthwise_plane` wrote every element of the plane.
                let out = unsafe { buffers::assume_written(out) };
                if clamp.is_none() && activation.is_some() {
                    epilogue(level, out, None, activation);
                }
            });
    };
    // SAFETY: the planes cover the buffer, and each is written whole above.
    unsafe { buffers::written_by(g.n * g.c_out * plane_out, write) }
}

/// Widest kernel whose column masks [`in_place_plane`] keeps per block.
const MAX_IN_PLACE_TAPS: usize = 8;

/// Whether the forward pass reads each input plane where it lies instead of its padded copy:
/// stride 1 or 2 on AVX-512, whose masked loads read only the lanes inside the image and give
/// zeros for the padding. The copy was 10 % of MobileNetV2's inference at stride 1, its reads
/// included; at stride 2, the copy split into column phases, its four stride-2 layers took
/// 1.3–2× as long as in place at batch 16, 224, the same bits (0.94–1.07× for the widest).
fn reads_in_place(g: &ConvGeometry, level: SimdLevel) -> bool {
    (g.stride == [1, 1] || g.stride == [2, 2])
        && g.kw <= MAX_IN_PLACE_TAPS
        && cfg!(target_arch = "x86_64")
        && level.min(SimdLevel::detected()) == SimdLevel::Avx512
}

/// [`depthwise_plane`] on one unpadded input plane `[h, w]` (stride 1 or 2, see
/// [`reads_in_place`]): the same sums, the padding's taps multiplying zeros as they do on the
/// padded copy.
fn in_place_plane(g: &ConvGeometry, x: &[f32], taps: &Taps, out: &mut [MaybeUninit<f32>]) {
    assert!(
        (g.stride == [1, 1] || g.stride == [2, 2])
            && g.kw <= MAX_IN_PLACE_TAPS
            && x.len() == g.h * g.w
            && out.len() == g.oh * g.ow
            && taps.weights.len() == g.kh * g.kw,
        "depthwise plane in place: a {}x{} plane for a {}x{} output",
        g.h,
        g.w,
        g.oh,
        g.ow
    );
    #[cfg(target_arch = "x86_64")]
    if SimdLevel::detected() == SimdLevel::Avx512 {
        // SAFETY: AVX-512F was detected; the shapes were checked above.
        unsafe { x86::in_place_avx512(g, x, taps, out) };
        return;
    }
    unreachable!("reads_in_place chose the in-place kernel without AVX-512");
}

/// Floats the kernels may read past the phase planes: a row's last vector is read whole by the
/// AVX2 and portable kernels (AVX-512 masks it).
const SLACK: usize = 16;

/// One channel's kernel as [`depthwise_plane`] applies it.
struct Taps<'a> {
    /// Where each tap's run starts in the phase planes.
    starts: &'a [usize],
    /// Each tap's weight, in the same order.
    weights: &'a [f32],
    bias: f32,
    /// `(min, max)` the sums are clamped to (ReLU, ReLU6), if any.
    clamp: Option<(f32, f32)>,
}

/// Whether an output plane of `[oh, ow]` pixels, row `r` at `r · wq` in the wide layout, reads
/// inside `planes` at every tap's run, with [`SLACK`] elements to spare.
fn plane_fits(planes: &[f32], taps: &Taps, wq: usize, [oh, ow]: [usize; 2]) -> bool {
    let last = taps.starts.iter().max().copied().unwrap_or(0);
    taps.starts.len() == taps.weights.len()
        && ow <= wq
        && (oh == 0 || last + (oh - 1) * wq + ow + SLACK <= planes.len())
}

/// One output plane: `out[r · ow + c] = bias + Σ_t w_t · planes[start_t + r · wq + c]`, the
/// taps in order, then clamped where `taps.clamp` says. `out` holds `oh · ow` elements.
fn depthwise_plane(
    level: SimdLevel,
    planes: &[f32],
    taps: &Taps,
    wq: usize,
    [oh, ow]: [usize; 2],
    out: &mut [MaybeUninit<f32>],
) {
    assert!(
        plane_fits(planes, taps, wq, [oh, ow]) && out.len() == oh * ow,
        "depthwise plane of {oh}x{ow}: runs outside the planes"
    );
    match level.min(SimdLevel::detected()) {
        // SAFETY: the level is capped by `SimdLevel::detected`, which checked that this
        // processor has AVX-512F (respectively AVX2 and FMA); the runs were checked above.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { x86::plane_avx512(planes, taps, wq, [oh, ow], out) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => {
            for (r, row) in out.chunks_exact_mut(ow).enumerate() {
                // SAFETY: as above; each row lies inside the plane `plane_fits` checked.
                unsafe { x86::row_avx2(planes, taps, r * wq, row) }
            }
        }
        _ => {
            for (r, row) in out.chunks_exact_mut(ow).enumerate() {
                row_portable(planes, taps, r * wq, row);
            }
        }
    }
}

/// Pixels per vector of the portable kernel (the compiler's to vectorise).
const PORTABLE_LANES: usize = 16;

fn row_portable(planes: &[f32], taps: &Taps, first: usize, row: &mut [MaybeUninit<f32>]) {
    for (c, out) in row.chunks_mut(PORTABLE_LANES).enumerate() {
        let mut acc = [taps.bias; PORTABLE_LANES];
        for (&start, &w) in taps.starts.iter().zip(taps.weights) {
            let x = &planes[start + first + c * PORTABLE_LANES..][..PORTABLE_LANES];
            for (a, &v) in acc.iter_mut().zip(x) {
                *a = madd::<false>(w, v, *a);
            }
        }
        if let Some((min, max)) = taps.clamp {
            for a in &mut acc {
                *a = a.max(min).min(max);
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            o.write(a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{ConvGeometry, MAX_IN_PLACE_TAPS, Taps, plane_fits};

    /// The mask of the first `lanes` (at most 16) lanes.
    fn first_lanes(lanes: usize) -> __mmask16 {
        ((1u32 << lanes.min(16)) - 1) as __mmask16
    }

    /// `max(v, min)` then `min(·, max)` where the taps clamp (a NaN sum becomes `min`, as
    /// `f32::max` makes it in the portable kernel).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn clamped(taps: &Taps, v: __m512) -> __m512 {
        match taps.clamp {
            Some((min, max)) => {
                _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(min)), _mm512_set1_ps(max))
            }
            None => v,
        }
    }

    /// Stores a block's sums, clamped where `taps` say: row `rows[i]`'s vector `j` at
    /// `rows[i] · ow + col + 16 j` of `out`, its lanes masked by `masks[j]`.
    ///
    /// # Safety
    /// The processor has AVX-512F; every unmasked lane lies inside `out`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize, const V: usize>(
        acc: &[[__m512; V]; R],
        taps: &Taps,
        out: *mut f32,
        ow: usize,
        rows: [usize; R],
        col: usize,
        masks: [__mmask16; V],
    ) {
        for (row_acc, &r) in acc.iter().zip(&rows) {
            for (j, &a) in row_acc.iter().enumerate() {
                let a = clamped(taps, a);
                // SAFETY: the caller's contract.
                unsafe { _mm512_mask_storeu_ps(out.add(r * ow + col + 16 * j), masks[j], a) };
            }
        }
    }

    /// One of the two ways a plane's sums are read: a block of `R` output rows × `V` vectors
    /// of 16 pixels from column `col`, vector `j`'s lanes masked to the row by `masks[j]`.
    trait Blocks {
        /// # Safety
        /// The processor has AVX-512F; the rows lie below the plane's `oh` and the unmasked
        /// lanes below its `ow`, and the implementation's own contract holds.
        unsafe fn block<const R: usize, const V: usize>(
            &self,
            rows: [usize; R],
            col: usize,
            masks: [__mmask16; V],
        );
    }

    /// Runs `blocks` over an `[oh, ow]` plane in blocks of four vectors of sums per pass over
    /// the taps (one broadcast weight for four multiply-adds): four rows of one vector where
    /// rows are 16 pixels or fewer (7×7 and 14×14 maps), two rows of two vectors up to 32,
    /// else runs of up to four vectors along one row. A map's last block takes only the rows
    /// left (a 5×5 map is 4 + 1 rows of sums); a row's last vector is masked to its pixels.
    ///
    /// # Safety
    /// The processor has AVX-512F, and `blocks`' contract holds for the plane.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<B: Blocks>(blocks: &B, [oh, ow]: [usize; 2]) {
        // SAFETY (each call): rows below `oh`, masks to columns below `ow`.
        if ow <= 16 {
            let mask = [first_lanes(ow)];
            for r in (0..oh).step_by(4) {
                match oh - r {
                    1 => unsafe { blocks.block::<1, 1>([r], 0, mask) },
                    2 => unsafe { blocks.block::<2, 1>([r, r + 1], 0, mask) },
                    3 => unsafe { blocks.block::<3, 1>([r, r + 1, r + 2], 0, mask) },
                    _ => unsafe { blocks.block::<4, 1>(std::array::from_fn(|i| r + i), 0, mask) },
                }
            }
        } else if ow <= 32 {
            let masks = [first_lanes(16), first_lanes(ow - 16)];
            for r in (0..oh).step_by(2) {
                match oh - r {
                    1 => unsafe { blocks.block::<1, 2>([r], 0, masks) },
                    _ => unsafe { blocks.block::<2, 2>([r, r + 1], 0, masks) },
                }
            }
        } else {
            for r in 0..oh {
                for c in (0..ow).step_by(64) {
                    let m: [__mmask16; 4] =
                        std::array::from_fn(|j| first_lanes((ow - c).saturating_sub(16 * j)));
                    match (ow - c).div_ceil(16) {
                        1 => unsafe { blocks.block::<1, 1>([r], c, [m[0]]) },
                        2 => unsafe { blocks.block::<1, 2>([r], c, [m[0], m[1]]) },
                        3 => unsafe { blocks.block::<1, 3>([r], c, [m[0], m[1], m[2]]) },
                        _ => unsafe { blocks.block::<1, 4>([r], c, m) },
                    }
                }
            }
        }
    }

    /// Sums read from the padded phase planes: output pixel `(r, c)` reads tap `t` at
    /// `starts[t] + r · wq + c`.
    struct FromPlanes<'a> {
        x: *const f32,
        taps: &'a Taps<'a>,
        wq: usize,
        out: *mut f32,
        ow: usize,
    }

    impl Blocks for FromPlanes<'_> {
        /// # Safety
        /// Also: `plane_fits` holds for `x`'s planes, `out` holds the plane's `oh · ow` floats.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn block<const R: usize, const V: usize>(
            &self,
            rows: [usize; R],
            col: usize,
            masks: [__mmask16; V],
        ) {
            let taps = self.taps;
            let mut acc = [[_mm512_set1_ps(taps.bias); V]; R];
            for (&start, &w) in taps.starts.iter().zip(taps.weights) {
                let w = _mm512_set1_ps(w);
                for (row_acc, &r) in acc.iter_mut().zip(&rows) {
                    let at = start + r * self.wq + col;
                    for (j, a) in row_acc.iter_mut().enumerate() {
                        // SAFETY: the masked lanes are columns below `ow` of a row below `oh`,
                        // inside the planes by `plane_fits`.
                        let v = unsafe { _mm512_maskz_loadu_ps(masks[j], self.x.add(at + 16 * j)) };
                        *a = _mm512_fmadd_ps(w, v, *a);
                    }
                }
            }
            // SAFETY: the masked lanes are pixels of the plane, inside `out`.
            unsafe { store(&acc, taps, self.out, self.ow, rows, col, masks) }
        }
    }

    /// [`super::depthwise_plane`] on 16-lane registers (see [`run`]).
    ///
    /// # Safety
    /// The processor has AVX-512F; `plane_fits` holds for the arguments and `out` holds
    /// `oh · ow` elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane_avx512(
        planes: &[f32],
        taps: &Taps,
        wq: usize,
        [oh, ow]: [usize; 2],
        out: &mut [MaybeUninit<f32>],
    ) {
        debug_assert!(plane_fits(planes, taps, wq, [oh, ow]) && out.len() == oh * ow);
        let blocks = FromPlanes {
            x: planes.as_ptr(),
            taps,
            wq,
            out: out.as_mut_ptr().cast(),
            ow,
        };
        // SAFETY: the caller's contract is `FromPlanes`'.
        unsafe { run(&blocks, [oh, ow]) }
    }

    /// Sums read from one unpadded input plane at stride `S` (1 or 2): per tap, masked loads of
    /// the lanes inside the image (zeros for the padding; a tap row outside the image multiplies
    /// zeros), in the order of the padded kernel. At stride 2 a vector of 16 outputs reads 32
    /// consecutive inputs in two loads and keeps their even lanes (one permute), where the
    /// padded kernel read them from a copy split into column phases.
    struct InPlace<'a, const S: usize> {
        g: &'a ConvGeometry,
        x: *const f32,
        taps: &'a Taps<'a>,
        out: *mut f32,
    }

    impl<const S: usize> InPlace<'_, S> {
        /// The 16 inputs of row `i` that output lanes `l` read at columns `first + S · l`
        /// (`first` may lie left of the image), lanes outside `[0, w)` zero; `masks[q]` are the
        /// lanes of the `q`-th run of 16 columns from `first` that lie inside the row.
        ///
        /// # Safety
        /// The processor has AVX-512F; row `i` lies in the plane, and the masks keep only
        /// columns in `[0, w)`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(&self, i: usize, first: isize, masks: [__mmask16; S]) -> __m512 {
            let at = (i * self.g.w) as isize + first;
            // SAFETY (each load): the masked lanes are columns in `[0, w)` of row `i`, inside
            // `x`. Masked-off lanes are not read, so the address may point before or past the
            // plane (formed without `add`'s in-bounds requirement).
            let run = |q: usize| unsafe {
                _mm512_maskz_loadu_ps(masks[q], self.x.wrapping_offset(at + 16 * q as isize))
            };
            if S == 1 {
                run(0)
            } else {
                let even =
                    _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
                _mm512_permutex2var_ps(run(0), even, run(1))
            }
        }
    }

    impl<const S: usize> Blocks for InPlace<'_, S> {
        /// # Safety
        /// Also: `x` holds `g.h · g.w` floats, `out` `g.oh · g.ow`, `g.kw <= MAX_IN_PLACE_TAPS`,
        /// and the geometry's stride is `S` (1 or 2).
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn block<const R: usize, const V: usize>(
            &self,
            rows: [usize; R],
            col: usize,
            out_masks: [__mmask16; V],
        ) {
            let (g, taps) = (self.g, self.taps);
            // Where vector `j`'s reads for tap column `kj` start (input column of its lane 0),
            // and the lanes of each of its `S` runs of 16 columns that lie inside the image
            // (at stride 1 only those of the row's pixels).
            let first =
                |j: usize, kj: usize| (S * (col + 16 * j) + kj) as isize - g.padding[1] as isize;
            let mut masks = [[[0 as __mmask16; S]; MAX_IN_PLACE_TAPS]; V];
            for (j, masks) in masks.iter_mut().enumerate() {
                for (kj, runs) in masks[..g.kw].iter_mut().enumerate() {
                    for (q, mask) in runs.iter_mut().enumerate() {
                        let start = first(j, kj) + 16 * q as isize;
                        let lo = (-start).clamp(0, 16) as usize;
                        let hi = (g.w as isize - start).clamp(0, 16) as usize;
                        *mask = first_lanes(hi) & !first_lanes(lo);
                        if S == 1 {
                            *mask &= out_masks[j];
                        }
                    }
                }
            }
            let mut acc = [[_mm512_set1_ps(taps.bias); V]; R];
            for ki in 0..g.kh {
                for (kj, &w) in taps.weights[ki * g.kw..][..g.kw].iter().enumerate() {
                    let w = _mm512_set1_ps(w);
                    for (row_acc, &r) in acc.iter_mut().zip(&rows) {
                        let input_row = (S * r + ki).checked_sub(g.padding[0]).filter(|&i| i < g.h);
                        for (j, a) in row_acc.iter_mut().enumerate() {
                            let v = match input_row {
                                // SAFETY: row `i < h`; the masks keep columns in `[0, w)`.
                                Some(i) => unsafe { self.load(i, first(j, kj), masks[j][kj]) },
                                None => _mm512_setzero_ps(),
                            };
                            *a = _mm512_fmadd_ps(w, v, *a);
                        }
                    }
                }
            }
            // SAFETY: the masks keep the lanes of columns below `ow` of rows below `oh`.
            unsafe { store(&acc, taps, self.out, g.ow, rows, col, out_masks) }
        }
    }

    /// [`super::in_place_plane`] on 16-lane registers (see [`run`]).
    ///
    /// # Safety
    /// The processor has AVX-512F; `x` holds `g.h · g.w` floats, `out` `g.oh · g.ow`,
    /// `g.kw <= MAX_IN_PLACE_TAPS`, and the stride is 1 or 2 in both directions.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn in_place_avx512(
        g: &ConvGeometry,
        x: &[f32],
        taps: &Taps,
        out: &mut [MaybeUninit<f32>],
    ) {
        let (x, out) = (x.as_ptr(), out.as_mut_ptr().cast());
        // SAFETY: the caller's contract is `InPlace`'s, for the stride chosen.
        unsafe {
            if g.stride == [1, 1] {
                run(&InPlace::<1> { g, x, taps, out }, [g.oh, g.ow])
            } else {
                run(&InPlace::<2> { g, x, taps, out }, [g.oh, g.ow])
            }
        }
    }

    /// [`super::depthwise_plane`]'s row `first / wq` on 8-lane registers: four vectors of sums
    /// per pass over the taps, then one at a time; the last partial vector's sums computed in
    /// full (the slack past the planes) and only its pixels stored.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA; the row lies inside a plane for which `plane_fits`
    /// holds.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_avx2(
        planes: &[f32],
        taps: &Taps,
        first: usize,
        row: &mut [MaybeUninit<f32>],
    ) {
        let (x, out, len) = (planes.as_ptr(), row.as_mut_ptr().cast::<f32>(), row.len());
        let runs = taps.starts.iter().zip(taps.weights);
        // `max(v, min)` then `min(·, max)`: a NaN sum becomes `min`, as `f32::max` makes it.
        let clamped = |v: __m256| match taps.clamp {
            Some((min, max)) => {
                _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(min)), _mm256_set1_ps(max))
            }
            None => v,
        };
        let mut c = 0;
        while c + 32 <= len {
            let mut acc = [_mm256_set1_ps(taps.bias); 4];
            for (&start, &w) in runs.clone() {
                let w = _mm256_set1_ps(w);
                // SAFETY: 32 inputs from `start + first + c` lie in the row's runs.
                let at = unsafe { x.add(start + first + c) };
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(at.add(8 * j)) }, *a);
                }
            }
            for (j, &a) in acc.iter().enumerate() {
                // SAFETY: `c + 32 <= len`: the 8 floats at `c + 8 j` lie in the row.
                unsafe { _mm256_storeu_ps(out.add(c + 8 * j), clamped(a)) };
            }
            c += 32;
        }
        while c < len {
            let mut acc = _mm256_set1_ps(taps.bias);
            for (&start, &w) in runs.clone() {
                // SAFETY: 8 inputs from `start + first + c` lie in the planes, the slack
                // covering those past the row's end.
                let v = unsafe { _mm256_loadu_ps(x.add(start + first + c)) };
                acc = _mm256_fmadd_ps(_mm256_set1_ps(w), v, acc);
            }
            let acc = clamped(acc);
            let lanes = (len - c).min(8);
            if lanes == 8 {
                // SAFETY: the 8 floats from `c` lie in the row.
                unsafe { _mm256_storeu_ps(out.add(c), acc) };
            } else {
                let mut sums = [0.0f32; 8];
                // SAFETY: `sums` holds 8 floats.
                unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), acc) };
                for (i, &v) in sums[..lanes].iter().enumerate() {
                    // SAFETY: `c + i < len`.
                    unsafe { out.add(c + i).write(v) };
                }
            }
            c += lanes;
        }
    }
}

/// Input gradient: each output gradient spread back over the inputs it read,
/// `dx[n, c, oh·s + ki − p, ow·s + kj − p] += w[c, ki, kj] · dy[n, c, oh, ow]`.
pub fn input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let ph = Phases::of(g);
    let mut dx = buffers::zeroed(g.n * g.c_in * plane_in);
    dx.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(plane, out)| {
            let c = plane % g.c_in;
            with_scratch(ph.planes_len(g) + ph.wide, |scratch| {
                let (planes, wide) = scratch.split_at_mut(ph.planes_len(g));
                widen(g, &ph, &dy[plane * plane_out..][..plane_out], wide);
                planes.fill(0.0);
                ph.for_each_tap_block(g, &weight[c * taps..][..taps], |w, out, input| {
                    axpy(level, w, &wide[out], &mut planes[input]);
                });
                gather_phases(g, &ph, planes, out);
            });
        });
    dx
}

/// Weight gradient: `dw[c, ki, kj] = Σ_n Σ_oh,ow dy[n, c, oh, ow] · x[n, c, oh·s + ki − p, ow·s + kj − p]`,
/// channel by channel (each channel's sum runs over the batch in order: repeatable).
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let ph = Phases::of(g);
    let mut dw = vec![0.0f32; g.c_out * taps];
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, out)| {
        with_scratch(ph.planes_len(g) + ph.wide, |scratch| {
            let (planes, wide) = scratch.split_at_mut(ph.planes_len(g));
            for image in 0..g.n {
                let plane = image * g.c_in + c;
                scatter_phases(g, &ph, &x[plane * plane_in..][..plane_in], planes);
                widen(g, &ph, &dy[plane * plane_out..][..plane_out], wide);
                for ki in 0..g.kh {
                    for kj in 0..g.kw {
                        let (base, offset) = ph.tap(g, ki, kj);
                        let src = &planes[base + offset..base + offset + ph.wide];
                        out[ki * g.kw + kj] += dot(level, wide, src);
                    }
                }
            }
        });
    });
    dw
}

/// Lays an output-gradient plane `[oh, ow]` out at the phase width, zeros in the extra columns
/// and past the last row (so that they add nothing where they are multiplied). Each element of
/// `wide` is written once: callers widen plane after plane into the same buffer.
pub(super) fn widen(g: &ConvGeometry, ph: &Phases, dy: &[f32], wide: &mut [f32]) {
    for (oh, row) in dy.chunks_exact(g.ow).enumerate() {
        let run = &mut wide[oh * ph.wq..];
        run[..g.ow].copy_from_slice(row);
        let gap_end = ph.wq.min(run.len());
        run[g.ow..gap_end].fill(0.0);
    }
    let rows_end = (g.oh * ph.wq).min(wide.len());
    wide[rows_end..].fill(0.0);
}

simd_dispatch! {
    /// `y += a · x` over two runs of equal length.
    fn axpy => axpy_body(a: f32, x: &[f32], y: &mut [f32])
}

#[inline(always)]
fn axpy_body<const FMA: bool>(a: f32, x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = madd::<FMA>(a, v, *o);
    }
}

/// `Σ a[i] · b[i]`, summed in [`LANES`] interleaved partial sums, then in order.
fn dot(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    dot_lanes(level, a, b, &mut acc);
    acc.iter().sum()
}

simd_dispatch! {
    /// Adds `a[i] · b[i]` into `acc[i % LANES]`.
    fn dot_lanes => dot_lanes_body(a: &[f32], b: &[f32], acc: &mut [f32; LANES])
}

#[inline(always)]
fn dot_lanes_body<const FMA: bool>(a: &[f32], b: &[f32], acc: &mut [f32; LANES]) {
    let mut xs = a.chunks_exact(LANES);
    let mut ys = b.chunks_exact(LANES);
    for (x, y) in (&mut xs).zip(&mut ys) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(x[l], y[l], acc[l]);
        }
    }
    for (l, (&x, &y)) in xs.remainder().iter().zip(ys.remainder()).enumerate() {
        acc[l] = madd::<FMA>(x, y, acc[l]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(h: usize, w: usize, k: usize, stride: usize, padding: usize) -> ConvGeometry {
        let out = |size: usize| (size + 2 * padding - k) / stride + 1;
        ConvGeometry {
            n: 1,
            c_in: 1,
            h,
            w,
            c_out: 1,
            groups: 1,
            kh: k,
            kw: k,
            stride: [stride, stride],
            padding: [padding, padding],
            oh: out(h),
            ow: out(w),
        }
    }

    /// The phase planes as clearing them whole and then copying the image made them.
    fn cleared_then_copied(g: &ConvGeometry, ph: &Phases, x: &[f32]) -> Vec<f32> {
        let mut planes = vec![0.0; ph.planes_len(g)];
        for (r, row) in x.chunks_exact(g.w).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let (pr, pc) = (r + g.padding[0], c + g.padding[1]);
                let phase = (pr % g.stride[0]) * g.stride[1] + pc % g.stride[1];
                let at = phase * ph.plane() + (pr / g.stride[0]) * ph.wq + pc / g.stride[1];
                planes[at] = v;
            }
        }
        planes
    }

    #[test]
    fn scattered_phases_write_every_element_once_as_clearing_first_did() {
        for (h, w) in [(1, 1), (1, 5), (4, 1), (7, 7), (8, 9), (13, 6)] {
            for k in [1, 3, 5] {
                for stride in [1, 2, 3] {
                    for padding in 0..k {
                        if h + 2 * padding < k || w + 2 * padding < k {
                            continue;
                        }
                        let g = geometry(h, w, k, stride, padding);
                        let ph = Phases::of(&g);
                        let x: Vec<f32> = (1..=h * w).map(|v| v as f32).collect();
                        // Whatever the buffer held before (here NaN) must not survive.
                        let mut planes = vec![f32::NAN; ph.planes_len(&g)];
                        scatter_phases(&g, &ph, &x, &mut planes);
                        let expected = cleared_then_copied(&g, &ph, &x);
                        assert!(
                            planes
                                .iter()
                                .zip(&expected)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{h}x{w} k {k} stride {stride} padding {padding}"
                        );
                    }
                }
            }
        }
    }
}

//! Depthwise convolutions (`groups == C_in == C_out`): each channel convolved with its own
//! `kh × kw` kernel, plane by plane.
//!
//! Each input plane is first copied into its zero-padded form, split by stride phase: for
//! strides `(sh, sw)` the padded plane becomes `sh · sw` phase planes of width `wq = ⌈wp / sw⌉`,
//! phase `(a, b)` holding padded rows `a, a + sh, ...` and columns `b, b + sw, ...`. Output pixel
//! `(oh, ow)` then reads, for kernel tap `(ki, kj)`, phase `(ki % sh, kj % sw)` at
//! `(oh + ki / sh, ow + kj / sw)`: with the output laid out at the phase width `wq` ("wide", the
//! columns past `ow` are never kept), every tap is one multiply-add between two long contiguous
//! runs at a constant offset. No border test, no strided access, and the loops are as long as
//! the plane (blocked to stay in L1), where row-by-row loops over 7- or 14-pixel rows spent most
//! of their time in scalar tails.

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
    planes.fill(0.0);
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
    buffers::filled_by_chunks(g.n * g.c_out * plane_out, plane_out, |plane, out| {
        let c = plane % g.c_in;
        with_scratch(ph.planes_len(g) + ph.wide, |scratch| {
            let (planes, wide) = scratch.split_at_mut(ph.planes_len(g));
            scatter_phases(g, &ph, &x[plane * plane_in..][..plane_in], planes);
            wide.fill(bias.map_or(0.0, |b| b[c]));
            ph.for_each_tap_block(g, &weight[c * taps..][..taps], |w, out, input| {
                axpy(level, w, &planes[input], &mut wide[out]);
            });
            for (oh, row) in out.chunks_exact_mut(g.ow).enumerate() {
                row.copy_from_slice(&wide[oh * ph.wq..][..g.ow]);
            }
            if activation.is_some() {
                epilogue(level, out, None, activation);
            }
        });
    })
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

//! Depthwise convolutions (`groups == C_in == C_out`): each channel convolved with its own
//! `kh × kw` kernel, plane by plane, as multiply-adds over output rows.
//!
//! Every loop runs over a range of output columns whose input columns are inside the image
//! ([`ConvGeometry::valid_cols`]), so the zero border costs nothing and no element is tested.

use rayon::prelude::*;

use super::simd::{madd, simd_dispatch};
use super::{ConvGeometry, SimdLevel};

/// Forward: `y[n, c] = bias[c] + Σ w[c, ki, kj] · x[n, c, oh·s + ki − p, ow·s + kj − p]`.
pub fn forward(
    g: &ConvGeometry,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    level: SimdLevel,
) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut y = vec![0.0f32; g.n * g.c_out * plane_out];
    y.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(plane, out)| {
            let c = plane % g.c_in;
            let start = bias.map_or(0.0, |b| b[c]);
            out.fill(start);
            forward_plane(
                level,
                g,
                &x[plane * plane_in..][..plane_in],
                &weight[c * taps..][..taps],
                out,
            );
        });
    y
}

simd_dispatch! {
    /// One output plane of a depthwise convolution, accumulated into `out`.
    fn forward_plane => forward_plane_body(g: &ConvGeometry, x: &[f32], w: &[f32], out: &mut [f32])
}

#[inline(always)]
fn forward_plane_body<const FMA: bool>(g: &ConvGeometry, x: &[f32], w: &[f32], out: &mut [f32]) {
    let sw = g.stride[1];
    let pw = g.padding[1];
    for (oh, row) in out.chunks_exact_mut(g.ow).enumerate() {
        for ki in 0..g.kh {
            let Some(ih) = g.input_row(oh, ki) else {
                continue;
            };
            let x_row = &x[ih * g.w..][..g.w];
            for kj in 0..g.kw {
                let (lo, hi) = g.valid_cols(kj);
                if lo >= hi {
                    continue;
                }
                let wv = w[ki * g.kw + kj];
                let first = lo * sw + kj - pw;
                if sw == 1 {
                    let src = &x_row[first..first + (hi - lo)];
                    for (o, &v) in row[lo..hi].iter_mut().zip(src) {
                        *o = madd::<FMA>(wv, v, *o);
                    }
                } else {
                    for (i, o) in row[lo..hi].iter_mut().enumerate() {
                        *o = madd::<FMA>(wv, x_row[first + i * sw], *o);
                    }
                }
            }
        }
    }
}

/// Input gradient: each output gradient spread back over the inputs it read,
/// `dx[n, c, oh·s + ki − p, ow·s + kj − p] += w[c, ki, kj] · dy[n, c, oh, ow]`.
pub fn input_grad(g: &ConvGeometry, weight: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut dx = vec![0.0f32; g.n * g.c_in * plane_in];
    dx.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(plane, out)| {
            let c = plane % g.c_in;
            input_grad_plane(
                level,
                g,
                &dy[plane * plane_out..][..plane_out],
                &weight[c * taps..][..taps],
                out,
            );
        });
    dx
}

simd_dispatch! {
    /// One input-gradient plane of a depthwise convolution, accumulated into `dx`.
    fn input_grad_plane => input_grad_plane_body(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32])
}

#[inline(always)]
fn input_grad_plane_body<const FMA: bool>(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let sw = g.stride[1];
    let pw = g.padding[1];
    for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
        for ki in 0..g.kh {
            let Some(ih) = g.input_row(oh, ki) else {
                continue;
            };
            let dx_row = &mut dx[ih * g.w..][..g.w];
            for kj in 0..g.kw {
                let (lo, hi) = g.valid_cols(kj);
                if lo >= hi {
                    continue;
                }
                let wv = w[ki * g.kw + kj];
                let first = lo * sw + kj - pw;
                if sw == 1 {
                    let dst = &mut dx_row[first..first + (hi - lo)];
                    for (d, &v) in dst.iter_mut().zip(&dy_row[lo..hi]) {
                        *d = madd::<FMA>(wv, v, *d);
                    }
                } else {
                    for (i, &v) in dy_row[lo..hi].iter().enumerate() {
                        let d = &mut dx_row[first + i * sw];
                        *d = madd::<FMA>(wv, v, *d);
                    }
                }
            }
        }
    }
}

/// Weight gradient: `dw[c, ki, kj] = Σ_n Σ_oh,ow dy[n, c, oh, ow] · x[n, c, oh·s + ki − p, ow·s + kj − p]`,
/// channel by channel (each channel's sum runs over the batch in order: repeatable).
pub fn weight_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], level: SimdLevel) -> Vec<f32> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut dw = vec![0.0f32; g.c_out * taps];
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, out)| {
        for image in 0..g.n {
            let plane = image * g.c_in + c;
            weight_grad_plane(
                level,
                g,
                &x[plane * plane_in..][..plane_in],
                &dy[plane * plane_out..][..plane_out],
                out,
            );
        }
    });
    dw
}

simd_dispatch! {
    /// One plane's contribution to a depthwise kernel's gradient, added to `dw`.
    fn weight_grad_plane => weight_grad_plane_body(g: &ConvGeometry, x: &[f32], dy: &[f32], dw: &mut [f32])
}

/// Lanes of independent partial sums: the compiler vectorises a dot product only when the
/// additions are spread over lanes this way (float addition is not reassociated for it).
const LANES: usize = 16;

#[inline(always)]
fn weight_grad_plane_body<const FMA: bool>(
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let sw = g.stride[1];
    let pw = g.padding[1];
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let (lo, hi) = g.valid_cols(kj);
            let first = (lo * sw + kj).wrapping_sub(pw);
            let mut acc = [0.0f32; LANES];
            let mut tail = 0.0f32;
            for oh in 0..g.oh {
                let Some(ih) = g.input_row(oh, ki) else {
                    continue;
                };
                if lo >= hi {
                    continue;
                }
                let x_row = &x[ih * g.w..][..g.w];
                let dy_row = &dy[oh * g.ow + lo..oh * g.ow + hi];
                if sw == 1 {
                    let src = &x_row[first..first + (hi - lo)];
                    let mut a = dy_row.chunks_exact(LANES);
                    let mut b = src.chunks_exact(LANES);
                    for (ca, cb) in (&mut a).zip(&mut b) {
                        for l in 0..LANES {
                            acc[l] = madd::<FMA>(ca[l], cb[l], acc[l]);
                        }
                    }
                    for (&u, &v) in a.remainder().iter().zip(b.remainder()) {
                        tail = madd::<FMA>(u, v, tail);
                    }
                } else {
                    for (i, &u) in dy_row.iter().enumerate() {
                        tail = madd::<FMA>(u, x_row[first + i * sw], tail);
                    }
                }
            }
            dw[ki * g.kw + kj] += acc.iter().sum::<f32>() + tail;
        }
    }
}

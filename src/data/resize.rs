//! Pillow's bilinear resampling (`Image.resize(size, BILINEAR, box)`), reimplemented.
//!
//! torchvision's `Resize` on PIL images calls Pillow, whose `ImagingResample` is a separable
//! convolution: the triangle filter's support is widened by the downscale factor (that is the
//! antialiasing), weights are normalised and quantised to 22-bit fixed point, the horizontal pass
//! runs first over just the rows the vertical pass needs, and its output is rounded to 8 bits
//! before the vertical pass. This module follows that code step by step so that results agree
//! with torchvision to the last bit or so.

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampler (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Filter coefficients of one pass: for each output pixel, the first input index, the number of
/// taps and `ksize` fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
fn precompute(in_size: usize, in0: f64, in1: f64, out_size: usize) -> Coeffs {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 times the scale
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        // C casts truncate toward zero; `center - support + 0.5` can be negative.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64)
            .min(in_size as i64)
            .max(xmin as i64) as usize;
        let n = (xmax - xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bilinear(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..xx * ksize + n];
        for (dst, &w) in row.iter_mut().zip(&k[..n]) {
            let w = if ww != 0.0 { w / ww } else { w };
            let f = w * f64::from(1u32 << PRECISION_BITS);
            *dst = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes the region `bx = (left, top, right, bottom)` of `src` to `out_w x out_h` exactly as
/// Pillow's `Image.resize((out_w, out_h), Image.BILINEAR, box=bx)` does (no `reducing_gap`):
/// the filter may read pixels just outside the box. A zero output size gives an empty image; a
/// box that is empty or not inside the image gives a black one.
pub fn resize_bilinear_box(
    src: &RgbImage,
    out_w: u32,
    out_h: u32,
    bx: (f64, f64, f64, f64),
) -> RgbImage {
    let region = (0, 0, src.width() as usize, src.height() as usize);
    resample(src, region, bx, out_w, out_h)
}

/// Crops the `width x height` window at `(left, top)` and resizes it to `out_w x out_h` like
/// torchvision's `resized_crop` on a PIL image (`img.crop(...).resize(..., BILINEAR)`): the
/// filter only reads pixels inside the window. No intermediate copy is made. A window not
/// inside the image, or a zero size, gives a black (or empty) image.
pub fn resize_crop_bilinear(
    src: &RgbImage,
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    out_w: u32,
    out_h: u32,
) -> RgbImage {
    let inside = u64::from(left) + u64::from(width) <= u64::from(src.width())
        && u64::from(top) + u64::from(height) <= u64::from(src.height());
    if !inside {
        return RgbImage::new(out_w, out_h);
    }
    let region = (left as usize, top as usize, width as usize, height as usize);
    resample(
        src,
        region,
        (0.0, 0.0, f64::from(width), f64::from(height)),
        out_w,
        out_h,
    )
}

/// Pillow's `ImagingResampleInner` on the sub-image `region = (x0, y0, w, h)` of `src`, with
/// `bx` in the sub-image's coordinates.
fn resample(
    src: &RgbImage,
    region: (usize, usize, usize, usize),
    bx: (f64, f64, f64, f64),
    out_w: u32,
    out_h: u32,
) -> RgbImage {
    let (x0, y0, in_w, in_h) = region;
    let (ow, oh) = (out_w as usize, out_h as usize);
    let box_ok = 0.0 <= bx.0
        && bx.0 < bx.2
        && bx.2 <= in_w as f64
        && 0.0 <= bx.1
        && bx.1 < bx.3
        && bx.3 <= in_h as f64;
    if ow == 0 || oh == 0 || in_w == 0 || in_h == 0 || !box_ok {
        return RgbImage::new(out_w, out_h);
    }
    let need_h = ow != in_w || bx.0 != 0.0 || bx.2 != ow as f64;
    let need_v = oh != in_h || bx.1 != 0.0 || bx.3 != oh as f64;
    let src_raw: &[u8] = src.as_raw();
    let src_stride = src.width() as usize * 3;
    let row = |y: usize| {
        &src_raw[(y0 + y) * src_stride + x0 * 3..(y0 + y) * src_stride + (x0 + in_w) * 3]
    };
    if !need_h && !need_v {
        let mut out = Vec::with_capacity(in_w * in_h * 3);
        for y in 0..in_h {
            out.extend_from_slice(row(y));
        }
        return RgbImage::from_raw(out_w, out_h, out)
            .unwrap_or_else(|| RgbImage::new(out_w, out_h));
    }
    let cv = precompute(in_h, bx.1, bx.3, oh);
    // Rows of the source the vertical pass reads.
    let y_first = cv.bounds[0].0;
    let y_last = cv.bounds[oh - 1].0 + cv.bounds[oh - 1].1;
    let half = 1i32 << (PRECISION_BITS - 1);

    // Horizontal pass over rows y_first..y_last; without it, the vertical pass reads the source.
    let tmp: Option<Vec<u8>> = need_h.then(|| {
        let ch = precompute(in_w, bx.0, bx.2, ow);
        let rows = y_last.saturating_sub(y_first);
        let mut tmp = vec![0u8; rows * ow * 3];
        for (r, out_row) in tmp.chunks_exact_mut(ow * 3).enumerate() {
            let in_row = row(y_first + r);
            for (xx, px) in out_row.chunks_exact_mut(3).enumerate() {
                let (xmin, n) = ch.bounds[xx];
                let k = &ch.weights[xx * ch.ksize..xx * ch.ksize + n];
                let (mut s0, mut s1, mut s2) = (half, half, half);
                let seg = &in_row[xmin * 3..(xmin + n) * 3];
                for (p, &w) in seg.chunks_exact(3).zip(k) {
                    s0 += i32::from(p[0]) * w;
                    s1 += i32::from(p[1]) * w;
                    s2 += i32::from(p[2]) * w;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
        tmp
    });
    let width = if need_h { ow } else { in_w };
    let stride = width * 3;
    let tmp_row = |y: usize| -> &[u8] {
        match &tmp {
            Some(t) => &t[(y - y_first) * stride..(y - y_first + 1) * stride],
            None => row(y),
        }
    };
    if !need_v {
        // Only the horizontal pass ran, over all rows.
        let mut out = Vec::with_capacity(oh * stride);
        for y in 0..oh {
            out.extend_from_slice(tmp_row(y));
        }
        return RgbImage::from_raw(out_w, out_h, out)
            .unwrap_or_else(|| RgbImage::new(out_w, out_h));
    }
    // Vertical pass.
    let mut out = vec![0u8; oh * stride];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (ymin, n) = cv.bounds[yy];
        let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + n];
        acc.fill(half);
        for (j, &w) in k.iter().enumerate() {
            for (a, &p) in acc.iter_mut().zip(tmp_row(ymin + j)) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    RgbImage::from_raw(out_w, out_h, out).unwrap_or_else(|| RgbImage::new(out_w, out_h))
}

/// Resizes the whole image to `out_w x out_h` like Pillow's `Image.resize(size, BILINEAR)`
/// (antialiased when shrinking; a same-size resize is a copy).
pub fn resize_bilinear(src: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = (f64::from(src.width()), f64::from(src.height()));
    resize_bilinear_box(src, out_w, out_h, (0.0, 0.0, w, h))
}

//! Colour maps (value in [0, 1] → colour) and heatmap overlays.

use image::{Rgb, RgbImage};

use crate::train::Heatmap;

/// Opacity of the heatmap laid over a photo in [`grad_cam_grid`](super::grad_cam_grid).
pub const CAM_ALPHA: f32 = 0.45;

/// A colour map: a value in [0, 1] to a colour, as matplotlib names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colormap {
    /// MATLAB's and OpenCV's Jet (dark blue → cyan → yellow → red → dark red), the colours of
    /// most Grad-CAM pictures (pytorch-grad-cam's default). The default.
    #[default]
    Jet,
    /// Google's Turbo (dark violet → blue → cyan → green → yellow → red → dark red): a rainbow
    /// with smoother lightness steps than Jet; its cold end is dark rather than blue.
    Turbo,
    /// matplotlib's `Blues` (white → dark blue), for counts and fractions.
    Blues,
}

impl Colormap {
    /// The colour of `t`, clamped to [0, 1] (NaN reads as 0).
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let c = match self {
            Colormap::Turbo => turbo(t),
            Colormap::Jet => jet(t),
            Colormap::Blues => blues(t),
        };
        c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
    }
}

/// Turbo, by its polynomial approximation (Mikhail, Google AI blog 2019; max error < 1/255).
fn turbo(t: f32) -> [f32; 3] {
    let poly = |c: [f32; 6]| c[0] + t * (c[1] + t * (c[2] + t * (c[3] + t * (c[4] + t * c[5]))));
    [
        poly([
            0.135_721_38,
            4.615_392_6,
            -42.660_324,
            132.131_08,
            -152.942_4,
            59.286_38,
        ]),
        poly([
            0.091_402_61,
            2.194_188_4,
            4.842_966_6,
            -14.185_033,
            4.277_298_6,
            2.829_566,
        ]),
        poly([
            0.106_673_3,
            12.641_946,
            -60.582_05,
            110.362_77,
            -89.903_11,
            27.348_25,
        ]),
    ]
}

/// Jet: piecewise linear ramps, as matplotlib's `jet`.
fn jet(t: f32) -> [f32; 3] {
    let ramp = |center: f32| (1.5 - (4.0 * t - center).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// matplotlib's `Blues`, interpolated between its nine ColorBrewer anchors.
fn blues(t: f32) -> [f32; 3] {
    const ANCHORS: [[u8; 3]; 9] = [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ];
    let s = t * (ANCHORS.len() - 1) as f32;
    let i = (s.floor() as usize).min(ANCHORS.len() - 2);
    let f = s - i as f32;
    std::array::from_fn(|k| {
        (f32::from(ANCHORS[i][k]) * (1.0 - f) + f32::from(ANCHORS[i + 1][k]) * f) / 255.0
    })
}

/// `photo` with `heatmap` laid over it: the map is stretched over the whole photo by bilinear
/// interpolation, coloured with `colormap` (its values read in [0, 1]) and blended with opacity
/// `alpha` (clamped to [0, 1]; [`CAM_ALPHA`] in the pictures): `(1 - alpha) · photo + alpha ·
/// colour`. An empty heatmap colours the photo as zeros.
pub fn heatmap_overlay(
    photo: &RgbImage,
    heatmap: &Heatmap,
    colormap: Colormap,
    alpha: f32,
) -> RgbImage {
    let (w, h) = photo.dimensions();
    let alpha = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let map = heatmap.resized(w as usize, h as usize);
    let values = map.values();
    let mut out = photo.clone();
    for (k, pixel) in out.pixels_mut().enumerate() {
        let colour = colormap.rgb(values.get(k).copied().unwrap_or(0.0));
        let Rgb(p) = *pixel;
        *pixel = Rgb(std::array::from_fn(|c| {
            (f32::from(p[c]) * (1.0 - alpha) + f32::from(colour[c]) * alpha).round() as u8
        }));
    }
    out
}

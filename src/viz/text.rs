//! Text drawn straight onto an RGB image with the embedded font.
//!
//! plotters' own `ab_glyph` text drops each glyph's left side bearing, which leaves visible gaps
//! inside words ("T raining"); every visible text of the pictures is set here instead.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};

use super::FONT;

/// Pixels around the text box where glyphs may still reach.
const MASK_MARGIN: i32 = 3;

/// Opacity of a label's background.
const BACKGROUND_OPACITY: f32 = 0.85;

/// Horizontal anchor of a [`Label`]: which side of the text box its position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HAlign {
    Left,
    Center,
    Right,
}

/// Vertical anchor of a [`Label`]: which side of the text box its position is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VAlign {
    Top,
    Center,
}

/// A text to draw, anchored at a pixel.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Label {
    pub text: String,
    /// Anchor pixel.
    pub x: i32,
    pub y: i32,
    /// Line height in pixels (ascent to descent).
    pub size: f32,
    pub color: [u8; 3],
    pub h: HAlign,
    pub v: VAlign,
    /// Turned a quarter counter-clockwise (reading upwards), as a y axis title. The anchors
    /// then apply to the turned box.
    pub vertical: bool,
    /// Colour laid behind the text box first (with a 2-pixel margin, mostly opaque), if any.
    pub background: Option<[u8; 3]>,
}

impl Label {
    /// A horizontal label.
    pub fn new(text: impl Into<String>, (x, y): (i32, i32), size: f32, color: [u8; 3]) -> Self {
        Self {
            text: text.into(),
            x,
            y,
            size,
            color,
            h: HAlign::Left,
            v: VAlign::Top,
            vertical: false,
            background: None,
        }
    }

    /// The same label with other anchors.
    pub fn anchor(mut self, h: HAlign, v: VAlign) -> Self {
        self.h = h;
        self.v = v;
        self
    }

    /// The same label turned to read upwards.
    pub fn vertical(mut self) -> Self {
        self.vertical = true;
        self
    }

    /// The same label on a background of `color`.
    pub fn background(mut self, color: [u8; 3]) -> Self {
        self.background = Some(color);
        self
    }

    /// The box the label covers: left, top, width, height in pixels.
    pub fn bounds(&self, font: &FontRef<'static>) -> (i32, i32, i32, i32) {
        let (w, h) = text_size(font, self.size, &self.text);
        let (w, h) = if self.vertical { (h, w) } else { (w, h) };
        let left = match self.h {
            HAlign::Left => self.x,
            HAlign::Center => self.x - w / 2,
            HAlign::Right => self.x - w,
        };
        let top = match self.v {
            VAlign::Top => self.y,
            VAlign::Center => self.y - h / 2,
        };
        (left, top, w, h)
    }
}

/// The embedded font, parsed once; `None` if it cannot be parsed.
pub(super) fn font() -> Option<&'static FontRef<'static>> {
    static PARSED: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    PARSED
        .get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .as_ref()
}

/// Width and height in pixels of `text` set at `size`.
pub(super) fn text_size(font: &FontRef<'static>, size: f32, text: &str) -> (i32, i32) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut caret = 0.0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        caret += scaled.h_advance(id);
        prev = Some(id);
    }
    (
        caret.ceil() as i32,
        (scaled.ascent() - scaled.descent()).ceil() as i32,
    )
}

/// Draws `label` onto `image`, blending its coverage; what falls outside is clipped.
pub(super) fn draw(image: &mut RgbImage, font: &FontRef<'static>, label: &Label) {
    let (tw, th) = text_size(font, label.size, &label.text);
    if tw <= 0 || th <= 0 {
        return;
    }
    // Coverage mask of the horizontal text, with a margin for glyphs that reach out of the box
    // (accents, side bearings).
    let (w, h) = (tw + 2 * MASK_MARGIN, th + 2 * MASK_MARGIN);
    let mut mask = vec![0f32; w as usize * h as usize];
    let scaled = font.as_scaled(PxScale::from(label.size));
    let mut caret = 0.0f32;
    let mut prev = None;
    for c in label.text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(label.size, point(caret, scaled.ascent()));
        caret += scaled.h_advance(id);
        prev = Some(id);
        let Some(outlined) = scaled.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let mx = bounds.min.x as i32 + gx as i32 + MASK_MARGIN;
            let my = bounds.min.y as i32 + gy as i32 + MASK_MARGIN;
            if (0..w).contains(&mx) && (0..h).contains(&my) {
                let cell = &mut mask[(my * w + mx) as usize];
                *cell = (*cell + coverage).min(1.0);
            }
        });
    }
    let (left, top, bw, bh) = label.bounds(font);
    if let Some(fill) = label.background {
        let m = 2;
        for py in (top - m).max(0)..(top + bh + m).min(image.height() as i32) {
            for px in (left - m).max(0)..(left + bw + m).min(image.width() as i32) {
                // Mostly opaque: what lies behind still shows faintly.
                let pixel = image.get_pixel_mut(px as u32, py as u32);
                *pixel = blend(*pixel, fill.map(f32::from), BACKGROUND_OPACITY);
            }
        }
    }
    let (left, top) = (left - MASK_MARGIN, top - MASK_MARGIN);
    let color = label.color.map(f32::from);
    for my in 0..h {
        for mx in 0..w {
            let a = mask[(my * w + mx) as usize];
            if a <= 0.0 {
                continue;
            }
            // Turned a quarter counter-clockwise: the start of the text goes to the bottom.
            let (ox, oy) = if label.vertical {
                (my, w - 1 - mx)
            } else {
                (mx, my)
            };
            let (px, py) = (left + ox, top + oy);
            if px < 0 || py < 0 || px >= image.width() as i32 || py >= image.height() as i32 {
                continue;
            }
            let pixel = image.get_pixel_mut(px as u32, py as u32);
            *pixel = blend(*pixel, color, a);
        }
    }
}

/// `old` covered by `color` with opacity `a` in [0, 1].
fn blend(old: Rgb<u8>, color: [f32; 3], a: f32) -> Rgb<u8> {
    let Rgb(old) = old;
    Rgb(std::array::from_fn(|k| {
        (f32::from(old[k]) * (1.0 - a) + color[k] * a).round() as u8
    }))
}

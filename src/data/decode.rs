//! Decoding image files to 8-bit RGB, by content, with a pixel limit.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

use super::error::DataError;

/// Default pixel limit of [`DecodeOptions::max_pixels`]: 64 megapixels (8192 x 8192).
///
/// Like Pillow's `MAX_IMAGE_PIXELS` decompression-bomb guard (89 megapixels there), a file whose
/// header announces more pixels than this is refused before its pixels are decoded, so a tiny
/// crafted file cannot make the loader allocate gigabytes.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// How files are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest accepted `width * height`, checked on the header before decoding
    /// (default [`DEFAULT_MAX_PIXELS`]). The decoder's allocation limit is derived from it too.
    pub max_pixels: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// Reads and decodes one image file to 8-bit RGB.
///
/// The format is recognised from the file's content, not its extension (a `.jpg` that holds a
/// PNG decodes). Greyscale, palette, RGBA (alpha dropped, like Pillow's `convert("RGB")`) and
/// 16-bit images are converted to 8-bit RGB. Animated GIFs give their first frame. EXIF
/// orientation is not applied (neither does torchvision).
///
/// # Errors
/// [`DataError::Io`] if the file cannot be read, [`DataError::TooLarge`] if its header announces
/// more than `options.max_pixels` pixels, [`DataError::Decode`] for an empty, unrecognised,
/// corrupt or truncated file. All name `path`.
pub fn decode_rgb(path: &Path, options: &DecodeOptions) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb_bytes(&bytes, path, options)
}

/// Decodes an image held in memory; `path` is only used in error messages.
///
/// # Errors
/// As [`decode_rgb`], without the I/O case.
pub fn decode_rgb_bytes(
    bytes: &[u8],
    path: &Path,
    options: &DecodeOptions,
) -> Result<RgbImage, DataError> {
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(decode_err("file is empty".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    let format = reader.format().ok_or_else(|| {
        decode_err("unrecognised image format (content does not match any supported format)".into())
    })?;
    // The allocation limit is a second line of defence behind the header check below:
    // 8 bytes per pixel covers RGBA16 output plus decoder scratch.
    let mut limits = Limits::default();
    limits.max_alloc = Some(options.max_pixels.saturating_mul(8).max(64 * 1024 * 1024));
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| decode_err(format!("{format:?}: {e}")))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > options.max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            pixels,
            limit: options.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(decode_err(format!(
            "{format:?}: image has zero size ({width}x{height})"
        )));
    }
    let image =
        DynamicImage::from_decoder(decoder).map_err(|e| decode_err(format!("{format:?}: {e}")))?;
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

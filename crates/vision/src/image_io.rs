//! Reading an image file into the 8-bit RGB array the processors work on, converting other colour
//! modes the way transformers 5.23 + Pillow do.
//!
//! * Grayscale is replicated into R, G and B.
//! * CMYK JPEGs are converted to RGB by the JPEG decoder (`zune-jpeg`); Pillow's conversion of the
//!   same file differs by a few levels (JPEG decoders are not bit-identical either; see the crate README).
//! * Alpha (RGBA, grayscale+alpha, palettes with a transparent entry): by default the image is
//!   composited onto a **white** background with Pillow's integer `alpha_composite` arithmetic, which is
//!   what transformers 5.23's `convert_to_rgb` does. [`AlphaMode::Drop`] instead discards the alpha
//!   channel as Pillow's `Image.convert("RGB")` does — what transformers ≤ 4.x (the paper's 4.38.2) did.
//! * 16-bit channels are scaled to 8 bits with rounding.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, RgbImage};

use crate::error::{Result, VisionError};

/// Images with more pixels than this are refused rather than decoded (a 16k x 16k image).
pub const MAX_PIXELS: u64 = 1 << 28;

/// What to do with an alpha channel when converting to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    /// Composite onto white, as transformers 5.23's `convert_to_rgb` does (the default).
    #[default]
    CompositeOnWhite,
    /// Drop the alpha channel, as Pillow's `convert("RGB")` (and transformers ≤ 4.x) does.
    Drop,
}

/// Reads and decodes an image file into RGB.
pub fn load_image(path: &Path, alpha: AlphaMode) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| VisionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, &path.display().to_string(), alpha)
}

/// Decodes an in-memory image (PNG, JPEG or WebP, recognised by content) into RGB. `what` names the
/// image in error messages.
pub fn decode_image(bytes: &[u8], what: &str, alpha: AlphaMode) -> Result<RgbImage> {
    let decode_err = |reason: String| VisionError::ImageDecode {
        what: what.to_string(),
        reason,
    };
    if bytes.is_empty() {
        return Err(decode_err("the file is empty".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_err("unrecognised file format".into()));
    }
    let (width, height) = reader.into_dimensions().map_err(|e| classify(what, e))?;
    check_size(what, width, height)?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    let image = reader.decode().map_err(|e| classify(what, e))?;
    to_rgb(image, what, alpha)
}

fn classify(what: &str, e: image::ImageError) -> VisionError {
    VisionError::ImageDecode {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn check_size(what: &str, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(VisionError::EmptyImage {
            what: what.to_string(),
            width,
            height,
        });
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(VisionError::ImageTooLarge {
            what: what.to_string(),
            width,
            height,
            limit: MAX_PIXELS,
        });
    }
    Ok(())
}

/// Converts a decoded image of any colour type to 8-bit RGB (see the module docs for the rules).
pub fn to_rgb(image: DynamicImage, what: &str, alpha: AlphaMode) -> Result<RgbImage> {
    check_size(what, image.width(), image.height())?;
    if !image.color().has_alpha() {
        return Ok(image.into_rgb8());
    }
    let rgba = image.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (src, dst) in rgba.pixels().zip(out.pixels_mut()) {
        let [r, g, b, a] = src.0;
        dst.0 = match alpha {
            AlphaMode::Drop => [r, g, b],
            AlphaMode::CompositeOnWhite => [
                composite_on_white(r, a),
                composite_on_white(g, a),
                composite_on_white(b, a),
            ],
        };
    }
    Ok(out)
}

/// One channel of Pillow's `Image.alpha_composite(white, rgba)`, in its integer arithmetic (7 extra bits
/// of precision and a shift-based division by 255), so that results are bit-identical to Pillow's.
pub fn composite_on_white(color: u8, alpha: u8) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let (src_c, src_a) = (u32::from(color), u32::from(alpha));
    if src_a == 0 {
        return 255;
    }
    let (dst_c, dst_a) = (255u32, 255u32);
    let blend = dst_a * (255 - src_a);
    let outa255 = src_a * 255 + blend;
    let coef1 = src_a * 255 * 255 * (1 << PRECISION_BITS) / outa255;
    let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
    let tmp = src_c * coef1 + dst_c * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_limits() {
        assert_eq!(composite_on_white(0, 255), 0);
        assert_eq!(composite_on_white(200, 255), 200);
        assert_eq!(composite_on_white(0, 0), 255);
        assert_eq!(composite_on_white(0, 128), 127);
    }

    #[test]
    fn empty_bytes_are_a_clear_error() {
        let err = decode_image(&[], "x.png", AlphaMode::default()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}

//! Image preprocessing, matching transformers 5.23's PIL-backend processors step for step:
//!
//! * CLIP / LLaVA-1.5 ([`ImageMode::Single`]): optional pad-to-square with the mean colour (LLaVA's
//!   `do_pad`), resize so the shortest edge is `size` (bicubic, Pillow-exact), center crop, rescale by
//!   1/255, normalize with the CLIP mean and std.
//! * LLaVA-NeXT "anyres" ([`ImageMode::AnyRes`]): choose the best resolution among the grid pinpoints,
//!   resize keeping the aspect ratio, pad with black to that resolution, cut into `crop`-sized tiles,
//!   and put the whole image squashed to one tile first; every tile then goes through the CLIP steps.

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

use crate::config::{ImageMode, ProcessorConfig, ResizeTarget};
use crate::error::Result;

/// The processed pixels of one image.
#[derive(Debug, Clone)]
pub struct PixelValues {
    /// `tiles x 3 x height x width`, channel-first, normalised.
    pub data: Vec<f32>,
    pub tiles: usize,
    pub height: usize,
    pub width: usize,
    /// The image's size before processing, `(height, width)`; LLaVA-NeXT needs it to unpad features.
    pub original_size: (usize, usize),
}

impl PixelValues {
    /// The pixels as a `tiles x 3 x height x width` f32 tensor.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.tiles, 3, self.height, self.width),
            device,
        )?)
    }
}

/// Runs the processor on an RGB image.
pub fn preprocess(image: &RgbImage, cfg: &ProcessorConfig, mode: &ImageMode) -> PixelValues {
    let tiles = tiles_u8(image, cfg, mode);
    let (height, width) = tiles
        .first()
        .map(|t| (t.height() as usize, t.width() as usize))
        .unwrap_or((0, 0));
    let mut data = Vec::with_capacity(tiles.len() * 3 * height * width);
    for tile in &tiles {
        normalize_into(tile, cfg, &mut data);
    }
    PixelValues {
        data,
        tiles: tiles.len(),
        height,
        width,
        original_size: (image.height() as usize, image.width() as usize),
    }
}

/// The 8-bit tiles the processor normalises (the global image first in anyres mode).
pub fn tiles_u8(image: &RgbImage, cfg: &ProcessorConfig, mode: &ImageMode) -> Vec<RgbImage> {
    match mode {
        ImageMode::Single => {
            let padded;
            let source = if cfg.pad_to_square {
                padded = pad_to_square(image, mean_background(cfg));
                &padded
            } else {
                image
            };
            vec![clip_tile(source, cfg)]
        }
        ImageMode::AnyRes { grid_pinpoints } => {
            let (h, w) = (image.height(), image.width());
            let best = select_best_resolution((h, w), grid_pinpoints);
            let (new_h, new_w) = patch_output_size((h, w), best);
            let resized = crate::resample::resize_bicubic(image, new_w, new_h);
            let padded = pad_centered(&resized, best);
            let (tile_h, tile_w) = anyres_tile_size(cfg);
            let mut tiles = Vec::new();
            let (global_h, global_w) = match cfg.size {
                ResizeTarget::Exact { height, width } => (height, width),
                ResizeTarget::ShortestEdge(s) => (s, s),
            };
            tiles.push(crate::resample::resize_bicubic(image, global_w, global_h));
            let mut y = 0;
            while y < padded.height() {
                let mut x = 0;
                while x < padded.width() {
                    tiles.push(crop(
                        &padded,
                        y,
                        x,
                        tile_h.min(padded.height() - y),
                        tile_w.min(padded.width() - x),
                    ));
                    x += tile_w;
                }
                y += tile_h;
            }
            tiles.iter().map(|t| clip_tile(t, cfg)).collect()
        }
    }
}

/// The tile size of anyres patching: transformers uses `crop_size.height` for both sides (or the
/// resize size when there is no crop).
fn anyres_tile_size(cfg: &ProcessorConfig) -> (u32, u32) {
    let side = if cfg.do_center_crop {
        cfg.crop_size.0
    } else {
        match cfg.size {
            ResizeTarget::Exact { height, .. } => height,
            ResizeTarget::ShortestEdge(s) => s,
        }
    };
    (side, side)
}

fn mean_background(cfg: &ProcessorConfig) -> Rgb<u8> {
    // transformers: tuple(int(x * 255) for x in image_mean), computed in f64 and truncated
    let c = |i: usize| (f64::from(cfg.image_mean[i]) * 255.0).clamp(0.0, 255.0) as u8;
    Rgb([c(0), c(1), c(2)])
}

/// Resize (shortest edge or exact) and center crop, in 8 bits.
fn clip_tile(image: &RgbImage, cfg: &ProcessorConfig) -> RgbImage {
    let resized = if cfg.do_resize {
        let (h, w) = resize_output_size((image.height(), image.width()), cfg.size);
        crate::resample::resize_bicubic(image, w, h)
    } else {
        image.clone()
    };
    if cfg.do_center_crop {
        center_crop(&resized, cfg.crop_size)
    } else {
        resized
    }
}

/// transformers' `get_resize_output_image_size(..., default_to_square=False)`: `(height, width)`.
pub fn resize_output_size((h, w): (u32, u32), target: ResizeTarget) -> (u32, u32) {
    match target {
        ResizeTarget::Exact { height, width } => (height, width),
        ResizeTarget::ShortestEdge(size) => {
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            // Python: int(size * long / short) — an exact integer product, one correctly rounded division.
            let new_long = ((u64::from(size) * u64::from(long)) as f64 / f64::from(short)) as u32;
            if w <= h {
                (new_long, size)
            } else {
                (size, new_long)
            }
        }
    }
}

/// transformers' numpy `center_crop`: crops to `(height, width)`, padding with zeros where the image is
/// smaller.
pub fn center_crop(image: &RgbImage, (crop_h, crop_w): (u32, u32)) -> RgbImage {
    let (h, w) = (i64::from(image.height()), i64::from(image.width()));
    let (ch, cw) = (i64::from(crop_h), i64::from(crop_w));
    let top = (h - ch).div_euclid(2);
    let left = (w - cw).div_euclid(2);
    if top >= 0 && left >= 0 && top + ch <= h && left + cw <= w {
        return crop(image, top as u32, left as u32, crop_h, crop_w);
    }
    // Pad to at least the crop size (centred, rounding the top/left padding up), then crop.
    let (nh, nw) = (ch.max(h), cw.max(w));
    let top_pad = (nh - h + 1) / 2;
    let left_pad = (nw - w + 1) / 2;
    let mut canvas = RgbImage::new(nw as u32, nh as u32);
    image::imageops::replace(&mut canvas, image, left_pad, top_pad);
    let (top, left) = (top + top_pad, left + left_pad);
    let (y0, x0) = (top.max(0), left.max(0));
    let (y1, x1) = ((top + ch).min(nh), (left + cw).min(nw));
    crop(
        &canvas,
        y0 as u32,
        x0 as u32,
        (y1 - y0) as u32,
        (x1 - x0) as u32,
    )
}

fn crop(image: &RgbImage, top: u32, left: u32, height: u32, width: u32) -> RgbImage {
    image::imageops::crop_imm(image, left, top, width, height).to_image()
}

/// LLaVA's `pad_to_square`: the image centred on a square of its longest side filled with `background`.
pub fn pad_to_square(image: &RgbImage, background: Rgb<u8>) -> RgbImage {
    let (w, h) = image.dimensions();
    if w == h {
        return image.clone();
    }
    let side = w.max(h);
    let mut canvas = RgbImage::from_pixel(side, side, background);
    let (x, y) = if w > h {
        (0, (side - h) / 2)
    } else {
        ((side - w) / 2, 0)
    };
    image::imageops::replace(&mut canvas, image, i64::from(x), i64::from(y));
    canvas
}

/// transformers' `select_best_resolution`: the pinpoint `(height, width)` that keeps the most of the
/// image's resolution, wasting the least on ties.
pub fn select_best_resolution(
    (orig_h, orig_w): (u32, u32),
    pinpoints: &[(u32, u32)],
) -> (u32, u32) {
    let mut best = pinpoints.first().copied().unwrap_or((orig_h, orig_w));
    let mut max_effective = 0u64;
    let mut min_wasted = u64::MAX;
    for &(h, w) in pinpoints {
        let scale = (f64::from(w) / f64::from(orig_w)).min(f64::from(h) / f64::from(orig_h));
        let down_w = (f64::from(orig_w) * scale) as u64;
        let down_h = (f64::from(orig_h) * scale) as u64;
        let effective = (down_w * down_h).min(u64::from(orig_w) * u64::from(orig_h));
        let wasted = u64::from(w) * u64::from(h) - effective;
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = (h, w);
        }
    }
    best
}

/// transformers' `get_patch_output_size`: the size `(height, width)` the image is resized to inside the
/// chosen resolution, keeping its aspect ratio.
pub fn patch_output_size(
    (orig_h, orig_w): (u32, u32),
    (target_h, target_w): (u32, u32),
) -> (u32, u32) {
    let scale_w = f64::from(target_w) / f64::from(orig_w);
    let scale_h = f64::from(target_h) / f64::from(orig_h);
    if scale_w < scale_h {
        let new_h = ((f64::from(orig_h) * scale_w).ceil() as u32).min(target_h);
        (new_h, target_w)
    } else {
        let new_w = ((f64::from(orig_w) * scale_h).ceil() as u32).min(target_w);
        (target_h, new_w)
    }
}

/// Pads with black to `(height, width)`, centred (the odd pixel goes to the bottom / right).
fn pad_centered(image: &RgbImage, (target_h, target_w): (u32, u32)) -> RgbImage {
    let (w, h) = image.dimensions();
    if (h, w) == (target_h, target_w) {
        return image.clone();
    }
    let mut canvas = RgbImage::new(target_w, target_h);
    let x = (target_w - w) / 2;
    let y = (target_h - h) / 2;
    image::imageops::replace(&mut canvas, image, i64::from(x), i64::from(y));
    canvas
}

/// Rescale and normalize one tile into `out` (channel-first), with transformers' arithmetic: the rescale
/// in f64 rounded to f32, then `(x - mean) / std` in f32.
fn normalize_into(tile: &RgbImage, cfg: &ProcessorConfig, out: &mut Vec<f32>) {
    let raw = tile.as_raw();
    for c in 0..3 {
        let (mean, std) = (cfg.image_mean[c], cfg.image_std[c]);
        out.extend(raw.chunks_exact(3).map(|p| {
            let v = if cfg.do_rescale {
                (f64::from(p[c]) * cfg.rescale_factor) as f32
            } else {
                f32::from(p[c])
            };
            if cfg.do_normalize {
                (v - mean) / std
            } else {
                v
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_edge_sizes() {
        assert_eq!(
            resize_output_size((45, 73), ResizeTarget::ShortestEdge(56)),
            (56, 90)
        );
        assert_eq!(
            resize_output_size((97, 30), ResizeTarget::ShortestEdge(56)),
            (181, 56)
        );
        assert_eq!(
            resize_output_size((56, 56), ResizeTarget::ShortestEdge(56)),
            (56, 56)
        );
    }

    #[test]
    fn best_resolution_prefers_matching_aspect() {
        let pins = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];
        assert_eq!(select_best_resolution((400, 800), &pins), (336, 672));
        assert_eq!(select_best_resolution((1000, 300), &pins), (1008, 336));
    }

    #[test]
    fn center_crop_pads_small_images() {
        let img = RgbImage::from_pixel(2, 3, Rgb([9, 9, 9]));
        let out = center_crop(&img, (5, 4));
        assert_eq!(out.dimensions(), (4, 5));
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [9, 9, 9]);
    }
}

//! The main object's pixels: its box widened by a margin, clamped to the image and cut from the
//! original-resolution image, so the embedder sees the object at the best detail the photo has rather
//! than upscaled from the detector's 300x300 input.

use image::RgbImage;
use serde::Serialize;

use crate::detect::BoundingBox;

/// A pixel rectangle of the decoded image, right and bottom exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PixelRect {
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
}

impl PixelRect {
    pub fn whole(width: u32, height: u32) -> PixelRect {
        PixelRect { left: 0, top: 0, right: width, bottom: height }
    }
    pub fn width(&self) -> u32 {
        self.right - self.left
    }
    pub fn height(&self) -> u32 {
        self.bottom - self.top
    }
}

/// Fractions of a pixel below this are float noise (0.6 × 100 is 60.000004 in f32), not a reason to
/// round outwards by a whole pixel.
const PIXEL_NOISE: f32 = 1e-3;

/// The box widened by `margin` × its width (height) on each side, clamped to the image and rounded
/// outwards to whole pixels; never empty.
pub fn crop_rect(bbox: &BoundingBox, width: u32, height: u32, margin: f32) -> PixelRect {
    let (w, h) = (width as f32, height as f32);
    let (x0, x1) = (bbox.xmin * w, bbox.xmax * w);
    let (y0, y1) = (bbox.ymin * h, bbox.ymax * h);
    let (dx, dy) = ((x1 - x0) * margin, (y1 - y0) * margin);
    let left = (((x0 - dx).clamp(0.0, w) + PIXEL_NOISE).floor() as u32).min(width - 1);
    let top = (((y0 - dy).clamp(0.0, h) + PIXEL_NOISE).floor() as u32).min(height - 1);
    let right = (((x1 + dx).clamp(0.0, w) - PIXEL_NOISE).ceil() as u32).clamp(left + 1, width);
    let bottom = (((y1 + dy).clamp(0.0, h) - PIXEL_NOISE).ceil() as u32).clamp(top + 1, height);
    PixelRect { left, top, right, bottom }
}

/// Copies the rectangle's pixels out of the image.
pub fn crop(image: &RgbImage, rect: PixelRect) -> RgbImage {
    image::imageops::crop_imm(image, rect.left, rect.top, rect.width(), rect.height()).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(xmin: f32, ymin: f32, xmax: f32, ymax: f32) -> BoundingBox {
        BoundingBox { xmin, ymin, xmax, ymax }
    }

    #[test]
    fn margin_widens_each_side_and_rounds_outwards() {
        // 100x50 image, box x 0.2..0.6 (20..60 px), y 0.2..0.6 (10..30 px); 10 % margin adds 4 px and 2 px.
        let rect = crop_rect(&bbox(0.2, 0.2, 0.6, 0.6), 100, 50, 0.1);
        assert_eq!(rect, PixelRect { left: 16, top: 8, right: 64, bottom: 32 });
        let rect = crop_rect(&bbox(0.205, 0.2, 0.6, 0.6), 100, 50, 0.0);
        assert_eq!((rect.left, rect.right), (20, 60));
    }

    #[test]
    fn clamped_to_the_image_and_never_empty() {
        assert_eq!(crop_rect(&bbox(0.0, 0.0, 1.0, 1.0), 640, 480, 0.1), PixelRect::whole(640, 480));
        let sliver = crop_rect(&bbox(1.0, 1.0, 1.0, 1.0), 640, 480, 0.1);
        assert_eq!(sliver, PixelRect { left: 639, top: 479, right: 640, bottom: 480 });
    }

    #[test]
    fn crop_copies_the_pixels() {
        let image = RgbImage::from_fn(10, 10, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let cut = crop(&image, PixelRect { left: 2, top: 3, right: 5, bottom: 7 });
        assert_eq!(cut.dimensions(), (3, 4));
        assert_eq!(cut.get_pixel(0, 0).0, [2, 3, 0]);
        assert_eq!(cut.get_pixel(2, 3).0, [4, 6, 0]);
    }
}

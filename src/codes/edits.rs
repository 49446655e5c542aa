//! The edited copies `fit-codes` learns invariance from: what shops and re-posters do to a photo (crop,
//! re-compression, blur, grayscale, colour, mirror, a quarter turn, a sticker, pasting it small onto
//! another photo), each at a random strength drawn from a seeded generator, encoded to the bytes the
//! pipeline reads. These are the fit's own edits, written apart from the evaluation's
//! (`scripts/eval_edits.py`), so that the evaluation does not measure a fit on its own edits.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

/// The kinds of edit, in the order [`edited_copies`] cycles through them.
const KINDS: [Edit; 9] =
    [Edit::Crop, Edit::Jpeg, Edit::Blur, Edit::Grayscale, Edit::Colour, Edit::Mirror, Edit::QuarterTurn, Edit::Sticker, Edit::PastedSmall];

#[derive(Debug, Clone, Copy)]
enum Edit {
    Crop,
    Jpeg,
    Blur,
    Grayscale,
    Colour,
    Mirror,
    QuarterTurn,
    Sticker,
    PastedSmall,
}

/// `count` edited copies of `photo`, encoded (PNG, or JPEG for re-compression), the kinds taken in turn
/// from a seeded starting point so that small counts still mix them. `backdrop` is another photo, which
/// a pasted copy sits on.
pub fn edited_copies(photo: &RgbImage, backdrop: &RgbImage, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut random = SplitMix64::new(seed);
    let first = (random.next_u64() % KINDS.len() as u64) as usize;
    (0..count).map(|i| apply(KINDS[(first + i) % KINDS.len()], photo, backdrop, &mut random)).collect()
}

fn apply(edit: Edit, photo: &RgbImage, backdrop: &RgbImage, random: &mut SplitMix64) -> Vec<u8> {
    let (w, h) = photo.dimensions();
    let edited = match edit {
        Edit::Crop => {
            let f = random.uniform(0.55, 0.9);
            let (cw, ch) = (((w as f64 * f) as u32).max(1), ((h as f64 * f) as u32).max(1));
            let x = (random.uniform(0.0, 1.0) * (w - cw) as f64) as u32;
            let y = (random.uniform(0.0, 1.0) * (h - ch) as f64) as u32;
            imageops::crop_imm(photo, x, y, cw, ch).to_image()
        }
        Edit::Jpeg => return jpeg(photo, random.uniform(15.0, 50.0) as u8),
        Edit::Blur => imageops::blur(photo, random.uniform(1.5, 4.0) as f32),
        Edit::Grayscale => DynamicImage::ImageLuma8(imageops::grayscale(photo)).to_rgb8(),
        Edit::Colour => {
            let turned = imageops::huerotate(photo, random.uniform(-60.0, 60.0) as i32);
            let brighter = imageops::brighten(&turned, random.uniform(-40.0, 40.0) as i32);
            imageops::contrast(&brighter, random.uniform(-30.0, 30.0) as f32)
        }
        Edit::Mirror => imageops::flip_horizontal(photo),
        Edit::QuarterTurn => {
            if random.next_u64().is_multiple_of(2) {
                imageops::rotate90(photo)
            } else {
                imageops::rotate270(photo)
            }
        }
        Edit::Sticker => {
            // A flat rectangle over about a quarter to a third of the photo, somewhere inside it.
            let mut out = photo.clone();
            let area = random.uniform(0.25, 0.35);
            let aspect = random.uniform(0.6, 1.6);
            let sw = ((w as f64 * (area * aspect).sqrt()).min(w as f64)) as u32;
            let sh = ((h as f64 * (area / aspect).sqrt()).min(h as f64)) as u32;
            let x = (random.uniform(0.0, 1.0) * (w - sw) as f64) as u32;
            let y = (random.uniform(0.0, 1.0) * (h - sh) as f64) as u32;
            let colour = Rgb([random.next_u64() as u8, random.next_u64() as u8, random.next_u64() as u8]);
            imageops::replace(&mut out, &RgbImage::from_pixel(sw.max(1), sh.max(1), colour), x as i64, y as i64);
            out
        }
        Edit::PastedSmall => {
            // The photo at 30–50 % of the backdrop's side, somewhere on it.
            let (bw, bh) = backdrop.dimensions();
            let scale = random.uniform(0.3, 0.5) * (bw as f64 / w as f64).min(bh as f64 / h as f64);
            let (pw, ph) = (((w as f64 * scale) as u32).max(1), ((h as f64 * scale) as u32).max(1));
            let small = imageops::resize(photo, pw, ph, FilterType::Triangle);
            let mut out = backdrop.clone();
            let x = (random.uniform(0.0, 1.0) * bw.saturating_sub(pw) as f64) as i64;
            let y = (random.uniform(0.0, 1.0) * bh.saturating_sub(ph) as f64) as i64;
            imageops::replace(&mut out, &small, x, y);
            out
        }
    };
    png(&edited)
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).expect("an RGB image encodes to PNG in memory");
    bytes.into_inner()
}

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(image)
        .expect("an RGB image encodes to JPEG in memory");
    bytes
}

/// splitmix64: a small, seeded, reproducible generator (the fit must give the same file twice).
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [low, high).
    pub(crate) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90]))
    }

    #[test]
    fn every_kind_gives_a_decodable_different_image_and_the_seed_repeats_them() {
        let (photo, backdrop) = (gradient(120, 80), gradient(200, 150));
        let copies = edited_copies(&photo, &backdrop, KINDS.len(), 5);
        assert_eq!(copies.len(), KINDS.len());
        let original = png(&photo);
        for bytes in &copies {
            let decoded = image::load_from_memory(bytes).unwrap().to_rgb8();
            assert!(decoded.width() > 0 && decoded.height() > 0);
            assert_ne!(bytes, &original);
        }
        assert_eq!(copies, edited_copies(&photo, &backdrop, KINDS.len(), 5));
        assert_ne!(copies, edited_copies(&photo, &backdrop, KINDS.len(), 6));
    }
}

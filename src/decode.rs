//! Encoded bytes → upright 8-bit RGB. Photo collections lie about their formats (file names say PNG,
//! bytes say JPEG) and carry hostile files, so the format comes from the content and the size limits
//! are checked from the header before any pixel buffer exists.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::config::Limits;
use crate::error::{panic_message, ImageError};

/// Decodes one image at full size, applying its EXIF orientation and converting any colour type to RGB8.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<RgbImage, ImageError> {
    decode_scaled(bytes, limits, 0).map(|decoded| decoded.image)
}

/// Width × height as the header declares it, without decoding; `None` when the header cannot be read
/// (decoding will then fail with the reason). What the pipeline reserves memory by.
pub fn declared_pixels(bytes: &[u8]) -> Option<u64> {
    let (width, height) = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()?;
    Some(width as u64 * height as u64)
}

/// A decoded image and the size of the photo it came from (larger when the JPEG was decoded at a
/// reduced scale), both upright.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub image: RgbImage,
    pub full_width: u32,
    pub full_height: u32,
}

/// Like [`decode`], but a JPEG whose shorter side is at least twice `min_side` is decoded at 1/2, 1/4
/// or 1/8 of its size — the largest reduction that keeps the shorter side ≥ `min_side` — by libjpeg's
/// DCT scaling, which skips most of the inverse transform's work. The models see 300×300 and 224×224
/// pixels; decoding a 12-megapixel photo in full to shrink it afterwards wastes most of the decode.
/// `min_side` 0 always decodes in full.
pub fn decode_scaled(bytes: &[u8], limits: &Limits, min_side: u32) -> Result<Decoded, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() as u64 > limits.max_encoded_bytes {
        return Err(ImageError::TooManyBytes { bytes: bytes.len() as u64, limit: limits.max_encoded_bytes });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("reading from memory cannot fail");
    let Some(format) = reader.format() else {
        return Err(ImageError::UnknownFormat { magic: magic_bytes(bytes) });
    };
    let format_name = format!("{format:?}").to_uppercase();
    let decode_error = |e: image::ImageError| ImageError::Decode { format: format_name.clone(), message: e.to_string() };

    if format == image::ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        return Err(ImageError::Decode {
            format: format_name,
            message: "truncated: no end-of-image marker after the last scan".into(),
        });
    }
    let mut reader = reader;
    reader.limits(decoder_limits(limits));
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, limit: limits.max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSized { width, height });
    }
    // A broken EXIF block should not cost the photo: fall back to "no rotation".
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let eighths = jpeg_scale_eighths(width.min(height), min_side);
    let mut image = match format {
        image::ImageFormat::Jpeg => match decode_jpeg_with_libjpeg_turbo(bytes, eighths) {
            JpegOutcome::Decoded(rgb) => DynamicImage::ImageRgb8(rgb),
            JpegOutcome::Failed(message) => return Err(ImageError::Decode { format: format_name, message }),
            JpegOutcome::NotRgb => DynamicImage::from_decoder(decoder).map_err(decode_error)?,
        },
        _ => DynamicImage::from_decoder(decoder).map_err(decode_error)?,
    };
    image.apply_orientation(orientation);
    let (full_width, full_height) = match orientation {
        image::metadata::Orientation::Rotate90
        | image::metadata::Orientation::Rotate270
        | image::metadata::Orientation::Rotate90FlipH
        | image::metadata::Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    let image = match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    Ok(Decoded { image, full_width, full_height })
}

/// libjpeg's output scale, in eighths: 8 (full size), 4, 2 or 1 — the smallest whose shorter side is
/// still ≥ `min_side`. Powers of two have libjpeg-turbo's fast reduced inverse transforms.
fn jpeg_scale_eighths(shorter_side: u32, min_side: u32) -> u8 {
    if min_side == 0 {
        return 8;
    }
    [1u8, 2, 4].into_iter().find(|&eighths| shorter_side as u64 * eighths as u64 >= 8 * min_side as u64).unwrap_or(8)
}

enum JpegOutcome {
    Decoded(RgbImage),
    Failed(String),
    /// CMYK and YCCK: libjpeg cannot convert them to RGB; the `image` crate can.
    NotRgb,
}

/// JPEGs go through libjpeg-turbo (as mozjpeg's decoder), the decoder Pillow, OpenCV and most of the JVM
/// world use: its default integer IDCT and fancy upsampling give the same pixels as the Python tools
/// our features are compared with. (The `image` crate's decoder differed by up to 6 levels, enough to
/// move detection scores by 1e-3.) libjpeg reports fatal errors by unwinding, caught here. `eighths`
/// below 8 decodes at that fraction of the size.
fn decode_jpeg_with_libjpeg_turbo(bytes: &[u8], eighths: u8) -> JpegOutcome {
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Option<RgbImage>> {
        let mut decompress = mozjpeg::Decompress::new_mem(bytes)?;
        if eighths < 8 {
            decompress.scale(eighths);
        }
        if matches!(decompress.color_space(), mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK) {
            return Ok(None);
        }
        let mut started = decompress.rgb()?;
        let (width, height) = (started.width() as u32, started.height() as u32);
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        let image = RgbImage::from_raw(width, height, pixels)
            .ok_or_else(|| std::io::Error::other("fewer scanlines than the header declares"))?;
        Ok(Some(image))
    });
    match decoded {
        Ok(Ok(Some(rgb))) => JpegOutcome::Decoded(rgb),
        Ok(Ok(None)) => JpegOutcome::NotRgb,
        Ok(Err(e)) => JpegOutcome::Failed(e.to_string()),
        Err(panic) => JpegOutcome::Failed(panic_message(&*panic)),
    }
}

/// The JPEG decoder behind `image` (zune-jpeg, lenient mode) fills a cut-off JPEG with gray and reports
/// success, which would put features of half a photo in the output. A complete JPEG has an EOI marker
/// (FF D9) after its last scan header (FF DA); entropy-coded data cannot contain FF D9 (FF is stuffed),
/// and an EXIF thumbnail's markers come before the main image's scans. Trailing bytes after EOI are fine.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    match bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) {
        Some(last_scan) => !bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => true,
    }
}

/// The decoder's own allocation cap: the largest legitimate frame is `max_pixels` of 16-bit RGBA
/// (8 bytes a pixel), plus room for the decoder's working buffers.
fn decoder_limits(limits: &Limits) -> image::Limits {
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    decoder_limits
}

/// The first bytes of an unrecognised input, in hex, so the error row hints at what the file really is.
fn magic_bytes(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgba};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn gray_alpha_rgba_and_16_bit_become_rgb8() {
        let gray = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(4, 3, Luma([200u8])));
        let gray_alpha = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(4, 3, LumaA([50u8, 10])));
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(4, 3, Rgba([1u8, 2, 3, 0])));
        let gray16 = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(4, 3, Luma([65535u16])));
        for (image, expected) in [(gray, [200, 200, 200]), (gray_alpha, [50, 50, 50]), (rgba, [1, 2, 3]), (gray16, [255, 255, 255])] {
            let decoded = decode(&encode(image, ImageFormat::Png), &limits()).unwrap();
            assert_eq!(decoded.dimensions(), (4, 3));
            assert_eq!(decoded.get_pixel(2, 1).0, expected);
        }
    }

    #[test]
    fn format_comes_from_content_not_name() {
        let bytes = encode(DynamicImage::ImageRgb8(RgbImage::from_pixel(5, 5, image::Rgb([9, 8, 7]))), ImageFormat::Bmp);
        assert_eq!(decode(&bytes, &limits()).unwrap().get_pixel(0, 0).0, [9, 8, 7]);
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        // A PNG header declaring 100000 x 100000 pixels, with no image data behind it: rejected from the
        // header alone (decoding would have needed 30 GB).
        let mut png = Vec::from(&b"\x89PNG\r\n\x1a\n"[..]);
        let mut ihdr = Vec::from(&b"IHDR"[..]);
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // The decoder reads the header chunks up to the first IDAT; give it one (of garbage).
        let idat = b"IDAT\x78\x9c\x00\x00";
        png.extend_from_slice(&4u32.to_be_bytes());
        png.extend_from_slice(idat);
        png.extend_from_slice(&crc32(idat).to_be_bytes());
        let err = decode(&png, &limits()).unwrap_err();
        assert!(matches!(err, ImageError::TooManyPixels { width: 100_000, height: 100_000, .. }), "{err}");
        assert!(err.to_string().contains("max_pixels"));
    }

    #[test]
    fn encoded_size_limit() {
        let small = Limits { max_encoded_bytes: 10, ..Limits::default() };
        let err = decode(&[0u8; 11], &small).unwrap_err();
        assert_eq!(err, ImageError::TooManyBytes { bytes: 11, limit: 10 });
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert_eq!(decode(&[], &limits()).unwrap_err(), ImageError::Empty);
        let err = decode(b"hello, world", &limits()).unwrap_err();
        assert!(err.to_string().contains("68 65 6c 6c"), "{err}");
        let jpeg = encode(DynamicImage::ImageRgb8(RgbImage::from_pixel(64, 64, image::Rgb([9, 8, 7]))), ImageFormat::Jpeg);
        for cut in [jpeg.len() / 2, jpeg.len() - 2] {
            let err = decode(&jpeg[..cut], &limits()).unwrap_err();
            assert!(matches!(err, ImageError::Decode { ref format, .. } if format == "JPEG"), "{err}");
            assert!(err.to_string().contains("truncated"), "{err}");
        }
        // Trailing garbage after a complete JPEG is tolerated.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(b"trailing garbage");
        assert_eq!(decode(&padded, &limits()).unwrap().dimensions(), (64, 64));
    }

    #[test]
    fn exif_orientation_is_applied() {
        // A 2x1 JPEG (wide) with EXIF orientation 6 (rotate 90° clockwise) must come out 1x2 (tall).
        let jpeg = encode(DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 16, image::Rgb([200, 10, 10]))), ImageFormat::Jpeg);
        let tiff: Vec<u8> = [
            &b"Exif\0\0II*\0"[..],
            &8u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &0x0112u16.to_le_bytes(), // Orientation
            &3u16.to_le_bytes(),      // SHORT
            &1u32.to_le_bytes(),
            &6u16.to_le_bytes(),
            &[0, 0],
            &0u32.to_le_bytes(),
        ]
        .concat();
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&[0xFF, 0xE1]);
        with_exif.extend_from_slice(&((tiff.len() + 2) as u16).to_be_bytes());
        with_exif.extend_from_slice(&tiff);
        with_exif.extend_from_slice(&jpeg[2..]);
        let decoded = decode(&with_exif, &limits()).unwrap();
        assert_eq!(decoded.dimensions(), (16, 32));
    }

    #[test]
    fn large_jpegs_decode_at_a_reduced_scale() {
        let photo = RgbImage::from_fn(1000, 700, |x, y| image::Rgb([(x / 4) as u8, (y / 3) as u8, ((x + y) / 7) as u8]));
        let jpeg = encode(DynamicImage::ImageRgb8(photo), ImageFormat::Jpeg);
        let full = decode(&jpeg, &limits()).unwrap();
        for (min_side, expected) in [(0, (1000, 700)), (100, (250, 175)), (300, (500, 350)), (350, (500, 350)), (351, (1000, 700)), (80, (125, 88))] {
            let decoded = decode_scaled(&jpeg, &limits(), min_side).unwrap();
            assert_eq!(decoded.image.dimensions(), expected, "min_side {min_side}");
            assert_eq!((decoded.full_width, decoded.full_height), (1000, 700));
        }
        // The reduced image is the full one, smaller: compare with a box-filtered full decode.
        let half = decode_scaled(&jpeg, &limits(), 300).unwrap().image;
        let (x, y) = (123, 77);
        let mean = |c: usize| (0..2).flat_map(|dy| (0..2).map(move |dx| (dx, dy))).map(|(dx, dy)| full.get_pixel(2 * x + dx, 2 * y + dy).0[c] as f32).sum::<f32>() / 4.0;
        for c in 0..3 {
            assert!((half.get_pixel(x, y).0[c] as f32 - mean(c)).abs() <= 3.0, "channel {c}");
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= byte as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}

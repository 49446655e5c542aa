//! RGB image → model input tensor. The resize is Pillow's bilinear resampling, reproduced exactly (same
//! coefficients, same 22-bit fixed point, same rounding): the models' reference pipelines and our
//! users' Python tools resize with Pillow, and a resize that is off by one level in a sixth of the
//! pixels moved detection scores by up to 4e-3.

use std::borrow::Cow;

use image::RgbImage;
use tract_onnx::prelude::Tensor;

use crate::config::{InputDtype, InputSpec, Layout};

/// Fixed-point precision of the filter weights, as in Pillow's `Resample.c` (32 - 8 - 2 bits).
const PRECISION_BITS: u32 = 22;

/// Stretches `image` to `width`×`height` (no aspect-preserving padding: the SSD models were trained on
/// stretched inputs) with a triangle filter whose support widens with the downscaling factor, so small
/// outputs are antialiased rather than aliased.
pub fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_width, in_height) = image.dimensions();
    let (w, h, in_w, in_h) = (width as usize, height as usize, in_width as usize, in_height as usize);
    let horizontal = (width != in_width).then(|| Filter::new(in_w, w));
    let vertical = (height != in_height).then(|| Filter::new(in_h, h));
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels
    // as the width; the order changes rounding, so we follow it.
    let shrink = |from: u32, to: u32| from as i64 - to as i64;
    let vertical_first = shrink(in_height, height) > 0 && shrink(in_height, height) > 2 * shrink(in_width, width);
    // The first pass reads the decoded image in place; only the passes' outputs are allocated.
    let mut pixels: Cow<[u8]> = Cow::Borrowed(image.as_raw());
    if vertical_first {
        if let Some(filter) = &vertical {
            pixels = Cow::Owned(filter.vertical(&pixels, in_w, h));
        }
        if let Some(filter) = &horizontal {
            pixels = Cow::Owned(filter.horizontal(&pixels, in_w, h));
        }
    } else {
        if let Some(filter) = &horizontal {
            pixels = Cow::Owned(filter.horizontal(&pixels, in_w, in_h));
        }
        if let Some(filter) = &vertical {
            pixels = Cow::Owned(filter.vertical(&pixels, w, h));
        }
    }
    RgbImage::from_raw(width, height, pixels.into_owned()).expect("buffer of width*height*3 bytes")
}

/// Per output position, the first input position and fixed-point weights of the inputs it blends.
struct Filter {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
}

impl Filter {
    /// Pillow's `precompute_coeffs` for the bilinear filter (support 1), then `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize) -> Filter {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // bilinear support (1.0) × filter scale
        let inverse_scale = 1.0 / filter_scale; // multiplied, not divided: Pillow's exact arithmetic
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size);
        for out in 0..out_size {
            let center = (out as f64 + 0.5) * scale;
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let last = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (first..last)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * inverse_scale).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            bounds.push((first, last - first));
            weights.push(fixed);
        }
        Filter { bounds, weights }
    }

    fn blend(&self, out: usize, sample: impl Fn(usize) -> u8) -> u8 {
        let (first, count) = self.bounds[out];
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (k, &w) in self.weights[out][..count].iter().enumerate() {
            acc += sample(first + k) as i64 * w as i64;
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    /// Resamples every row of an interleaved RGB buffer `width` pixels wide.
    fn horizontal(&self, pixels: &[u8], width: usize, height: usize) -> Vec<u8> {
        let out_width = self.bounds.len();
        let mut out = vec![0u8; out_width * height * 3];
        for (row_in, row_out) in pixels.chunks_exact(width * 3).zip(out.chunks_exact_mut(out_width * 3)) {
            for x in 0..out_width {
                for c in 0..3 {
                    row_out[x * 3 + c] = self.blend(x, |i| row_in[i * 3 + c]);
                }
            }
        }
        out
    }

    /// Resamples every column of an interleaved RGB buffer with rows of `width` pixels.
    fn vertical(&self, pixels: &[u8], width: usize, out_height: usize) -> Vec<u8> {
        let stride = width * 3;
        let mut out = vec![0u8; stride * out_height];
        for (y, row_out) in out.chunks_exact_mut(stride).enumerate() {
            for (i, value) in row_out.iter_mut().enumerate() {
                *value = self.blend(y, |row| pixels[row * stride + i]);
            }
        }
        out
    }
}

/// The model input for `image` as a tract tensor (batch of one), for models running on tract.
pub fn to_input_tensor(image: &RgbImage, input: &InputSpec) -> Tensor {
    let (w, h) = (input.width as usize, input.height as usize);
    let shape = match input.layout {
        Layout::Nhwc => [1, h, w, 3],
        Layout::Nchw => [1, 3, h, w],
    };
    let mut values = vec![0f32; w * h * 3];
    write_input(image, input, &mut values);
    let tensor = Tensor::from_shape(&shape, &values).expect("shape matches");
    match input.dtype {
        InputDtype::F32 => tensor,
        InputDtype::U8 => tensor.cast_to::<u8>().expect("levels 0..=255 fit u8").into_owned(),
    }
}

/// Writes the model input for `image` into `out` (one image, the input's layout) as f32: the resize,
/// then one pass that scales and lays out the values (u8 models get the raw levels, which f32 holds
/// exactly). The native executor passes its input buffer here, so nothing else is allocated.
pub fn write_input(image: &RgbImage, input: &InputSpec, out: &mut [f32]) {
    let resized = resize(image, input.width, input.height);
    let (scale, offset) = match input.dtype {
        InputDtype::U8 => (1.0, 0.0),
        InputDtype::F32 => (input.scale, input.offset),
    };
    lay_out(resized.as_raw(), input.layout, out, |x| x as f32 * scale + offset);
}

/// Interleaved RGB → `layout` (planes R, G, B for NCHW), mapping each value on the way.
fn lay_out<T>(pixels: &[u8], layout: Layout, out: &mut [T], map: impl Fn(u8) -> T) {
    match layout {
        Layout::Nhwc => out.iter_mut().zip(pixels).for_each(|(o, &x)| *o = map(x)),
        Layout::Nchw => {
            let plane = pixels.len() / 3;
            for (i, rgb) in pixels.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = map(rgb[c]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dtype: InputDtype, layout: Layout) -> InputSpec {
        InputSpec { name: "x".into(), dtype, layout, width: 2, height: 2, scale: 0.5, offset: -1.0 }
    }

    fn image() -> RgbImage {
        RgbImage::from_fn(2, 2, |x, y| image::Rgb([(10 * x + 20 * y) as u8, 100, 200]))
    }

    #[test]
    fn layouts_and_scaling() {
        let nhwc = to_input_tensor(&image(), &spec(InputDtype::F32, Layout::Nhwc));
        assert_eq!(nhwc.shape(), &[1, 2, 2, 3]);
        let values = nhwc.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap();
        // pixel (x=1, y=0): R = 10 → 10 * 0.5 - 1 = 4
        assert_eq!(&values[3..6], &[4.0, 49.0, 99.0]);

        let nchw = to_input_tensor(&image(), &spec(InputDtype::F32, Layout::Nchw));
        assert_eq!(nchw.shape(), &[1, 3, 2, 2]);
        let values = nchw.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap();
        assert_eq!(&values[0..4], &[-1.0, 4.0, 9.0, 14.0]); // the R plane, row by row
        assert_eq!(values[4], 49.0);

        let raw = to_input_tensor(&image(), &spec(InputDtype::U8, Layout::Nhwc));
        assert_eq!(raw.try_as_plain_ram().unwrap().as_slice::<u8>().unwrap(), image().as_raw().as_slice());
    }

    #[test]
    fn resize_of_a_flat_image_stays_flat() {
        let flat = RgbImage::from_pixel(97, 31, image::Rgb([7, 77, 177]));
        let resized = resize(&flat, 300, 300);
        assert_eq!(resized.dimensions(), (300, 300));
        assert!(resized.pixels().all(|p| p.0 == [7, 77, 177]));
    }

    #[test]
    fn downscaling_averages_like_pillow() {
        // Pillow 13: a 4x1 row 0, 100, 200, 100 resized to 2x1 BILINEAR gives 71, 143. The triangle spans
        // two source pixels each side, weights 1/8, 3/8, 3/8, 1/8, renormalised inside the image.
        let row = RgbImage::from_fn(4, 1, |x, _| {
            let v = [0u8, 100, 200, 100][x as usize];
            image::Rgb([v, v, v])
        });
        let resized = resize(&row, 2, 1);
        assert_eq!(resized.get_pixel(0, 0).0[0], 71);
        assert_eq!(resized.get_pixel(1, 0).0[0], 143);
    }
}

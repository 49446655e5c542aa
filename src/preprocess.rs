//! RGB image → model input tensor. The resize is Pillow's bilinear resampling, reproduced exactly (same
//! coefficients, same 22-bit fixed point, same rounding): the models' reference pipelines and our
//! users' Python tools resize with Pillow, and a resize that is off by one level in a sixth of the
//! pixels moved detection scores by up to 4e-3.

use image::RgbImage;

use crate::config::{InputDtype, InputSpec, Layout};

/// Fixed-point precision of the filter weights, as in Pillow's `Resample.c` (32 - 8 - 2 bits).
const PRECISION_BITS: u32 = 22;

/// Stretches `image` to `width`×`height` (no aspect-preserving padding: the SSD models were trained on
/// stretched inputs) with a triangle filter whose support widens with the downscaling factor, so small
/// outputs are antialiased rather than aliased.
pub fn resize(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut out = vec![0u8; width as usize * height as usize * 3];
    resize_into(image, width, height, rows_into(&mut out));
    RgbImage::from_raw(width, height, out).expect("buffer of width*height*3 bytes")
}

/// [`resize`], handing each output row (its index, its interleaved RGB levels) to `emit` as the last
/// pass computes it, so the model input is written in one pass with no resized copy between.
/// Compiled for AVX-512 and AVX2 as well as the x86-64 baseline, picked at run time like the
/// executor's kernels: the vertical pass vectorises across a row, 16 or 8 sums at a time.
fn resize_into(image: &RgbImage, width: u32, height: u32, emit: impl FnMut(usize, &[u8])) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::cpu::{isa, Isa};
        /// # Safety
        /// The CPU has AVX-512 F and VL, AVX2 and FMA (`Isa::Avx512`).
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        unsafe fn avx512(image: &RgbImage, width: u32, height: u32, emit: impl FnMut(usize, &[u8])) {
            resize_body(image, width, height, emit)
        }
        /// # Safety
        /// The CPU has AVX2 and FMA (`Isa::Avx2Fma` or wider).
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(image: &RgbImage, width: u32, height: u32, emit: impl FnMut(usize, &[u8])) {
            resize_body(image, width, height, emit)
        }
        match isa() {
            // SAFETY: the CPU has these features (checked by `isa`).
            Isa::Avx512 => return unsafe { avx512(image, width, height, emit) },
            // SAFETY: as above.
            Isa::Avx2Fma => return unsafe { avx2(image, width, height, emit) },
            Isa::Baseline => {}
        }
    }
    resize_body(image, width, height, emit)
}

#[inline(always)]
fn resize_body(image: &RgbImage, width: u32, height: u32, mut emit: impl FnMut(usize, &[u8])) {
    let (in_width, in_height) = image.dimensions();
    let (w, h, in_w, in_h) = (width as usize, height as usize, in_width as usize, in_height as usize);
    let horizontal = (width != in_width).then(|| Filter::new(in_w, w));
    let vertical = (height != in_height).then(|| Filter::new(in_h, h));
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels
    // as the width; the order changes rounding, so we follow it.
    let shrink = |from: u32, to: u32| from as i64 - to as i64;
    let vertical_first = shrink(in_height, height) > 0 && shrink(in_height, height) > 2 * shrink(in_width, width);
    let pixels = image.as_raw();
    match (&horizontal, &vertical, vertical_first) {
        (None, None, _) => pixels.chunks_exact(in_w * 3).enumerate().for_each(|(y, row)| emit(y, row)),
        (Some(hf), None, _) => hf.horizontal(pixels, in_w, in_h, &mut emit),
        (None, Some(vf), _) => vf.vertical(pixels, in_w, h, &mut emit),
        (Some(hf), Some(vf), true) => {
            let mut tall = vec![0u8; in_w * h * 3];
            vf.vertical(pixels, in_w, h, &mut rows_into(&mut tall));
            hf.horizontal(&tall, in_w, h, &mut emit)
        }
        (Some(hf), Some(vf), false) => {
            let mut wide = vec![0u8; w * in_h * 3];
            hf.horizontal(pixels, in_w, in_h, &mut rows_into(&mut wide));
            vf.vertical(&wide, w, h, &mut emit)
        }
    }
}

/// An `emit` for [`resize_into`] and the passes that stores each row at its place in `buffer`.
fn rows_into(buffer: &mut [u8]) -> impl FnMut(usize, &[u8]) + '_ {
    |y, row| buffer[y * row.len()..][..row.len()].copy_from_slice(row)
}

/// Per output position, the first input position and the fixed-point weights of the `taps` inputs
/// from there. Every position reads the same number of inputs (those outside its own triangle
/// weighted 0), so the loops over them have one trip count and the weights one flat table.
struct Filter {
    first: Vec<usize>,
    taps: usize,
    /// out_size × taps.
    weights: Vec<i32>,
}

impl Filter {
    /// Pillow's `precompute_coeffs` for the bilinear filter (support 1), then `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize) -> Filter {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // bilinear support (1.0) × filter scale
        let inverse_scale = 1.0 / filter_scale; // multiplied, not divided: Pillow's exact arithmetic
        let mut windows = Vec::with_capacity(out_size);
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
            let fixed: Vec<i32> = raw
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            windows.push((first, fixed));
        }
        let taps = windows.iter().map(|(_, fixed)| fixed.len()).max().unwrap_or(0);
        let mut starts = Vec::with_capacity(out_size);
        let mut weights = vec![0; out_size * taps];
        for ((first, fixed), row) in windows.iter().zip(weights.chunks_exact_mut(taps.max(1))) {
            // A window cut short by the input's end starts earlier, its leading taps weighted 0.
            let start = (*first).min(in_size - taps);
            row[first - start..][..fixed.len()].copy_from_slice(fixed);
            starts.push(start);
        }
        Filter { first: starts, taps, weights }
    }

    /// Resamples every row of an interleaved RGB buffer `width` pixels wide.
    #[inline(always)]
    fn horizontal(&self, pixels: &[u8], width: usize, height: usize, emit: &mut impl FnMut(usize, &[u8])) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::isa() == crate::cpu::Isa::Avx512 {
            let gathered = GatheredFilter::new(self);
            // A row with room for the four-byte load at its last pixel.
            let (mut row, mut levels) = (vec![0u8; width * 3 + 4], vec![0u8; self.first.len() * 3]);
            for (y, row_in) in pixels.chunks_exact(width * 3).take(height).enumerate() {
                row[..width * 3].copy_from_slice(row_in);
                // SAFETY: the CPU has AVX-512 (checked just above).
                unsafe { gathered.resample(&row, &mut levels) };
                emit(y, &levels);
            }
            return;
        }
        // A fixed number of taps unrolls the window's loop (downscales of up to 3.5×).
        match self.taps {
            2 => self.horizontal_taps::<2>(pixels, width, height, emit),
            3 => self.horizontal_taps::<3>(pixels, width, height, emit),
            4 => self.horizontal_taps::<4>(pixels, width, height, emit),
            5 => self.horizontal_taps::<5>(pixels, width, height, emit),
            6 => self.horizontal_taps::<6>(pixels, width, height, emit),
            7 => self.horizontal_taps::<7>(pixels, width, height, emit),
            8 => self.horizontal_taps::<8>(pixels, width, height, emit),
            _ => self.horizontal_taps::<0>(pixels, width, height, emit),
        }
    }

    /// [`Filter::horizontal`] with `T` taps (0: any number).
    #[inline(always)]
    fn horizontal_taps<const T: usize>(&self, pixels: &[u8], width: usize, height: usize, emit: &mut impl FnMut(usize, &[u8])) {
        let taps = if T == 0 { self.taps } else { T };
        let mut levels = vec![0u8; self.first.len() * 3];
        for (y, row_in) in pixels.chunks_exact(width * 3).take(height).enumerate() {
            for ((&first, weights), out) in self.first.iter().zip(self.weights.chunks_exact(taps)).zip(levels.chunks_exact_mut(3)) {
                let window = &row_in[first * 3..(first + taps) * 3];
                // Pillow's arithmetic: i32 sums from one half, 22 fractional bits.
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                for (rgb, &w) in window.chunks_exact(3).zip(weights) {
                    for c in 0..3 {
                        acc[c] += rgb[c] as i32 * w;
                    }
                }
                for (level, sum) in out.iter_mut().zip(acc) {
                    *level = (sum >> PRECISION_BITS).clamp(0, 255) as u8;
                }
            }
            emit(y, &levels);
        }
    }

    /// Resamples every column of an interleaved RGB buffer with rows of `width` pixels, a whole output
    /// row at a time (the inner loop runs along the row, so it vectorises).
    #[inline(always)]
    fn vertical(&self, pixels: &[u8], width: usize, out_height: usize, emit: &mut impl FnMut(usize, &[u8])) {
        let stride = width * 3;
        let (mut acc, mut levels) = (vec![0i32; stride], vec![0u8; stride]);
        for (y, (&first, weights)) in self.first.iter().zip(self.weights.chunks_exact(self.taps)).enumerate().take(out_height) {
            acc.fill(1 << (PRECISION_BITS - 1));
            for (k, &w) in weights.iter().enumerate() {
                if w == 0 {
                    continue;
                }
                let row = &pixels[(first + k) * stride..(first + k + 1) * stride];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v as i32 * w;
                }
            }
            for (level, &sum) in levels.iter_mut().zip(&acc) {
                *level = (sum >> PRECISION_BITS).clamp(0, 255) as u8;
            }
            emit(y, &levels);
        }
    }
}

/// A horizontal [`Filter`] laid out for [`GatheredFilter::resample`]: each output's byte offset and
/// the weights tap-major ([tap][output]), both padded to whole blocks of 16 outputs (padding lanes
/// read pixel 0 with weight 0 and are not kept).
#[cfg(target_arch = "x86_64")]
struct GatheredFilter {
    offsets: Vec<i32>,
    weights: Vec<i32>,
    taps: usize,
    outputs: usize,
}

#[cfg(target_arch = "x86_64")]
impl GatheredFilter {
    const LANES: usize = 16;

    fn new(filter: &Filter) -> GatheredFilter {
        let (outputs, taps) = (filter.first.len(), filter.taps);
        let padded = outputs.div_ceil(Self::LANES) * Self::LANES;
        let mut offsets = vec![0i32; padded];
        let mut weights = vec![0i32; taps * padded];
        for (x, (&first, row)) in filter.first.iter().zip(filter.weights.chunks_exact(taps)).enumerate() {
            offsets[x] = i32::try_from(first * 3).expect("a row of under 2^31 bytes");
            for (k, &w) in row.iter().enumerate() {
                weights[k * padded + x] = w;
            }
        }
        GatheredFilter { offsets, weights, taps, outputs }
    }

    /// One row of [`Filter::horizontal`] sixteen output pixels at a time: for each tap, one gather
    /// loads the input pixel of all sixteen (four bytes from its first: R, G, B and the next
    /// pixel's R), and the three channels are shifted out of it. The same i32 sums as the scalar
    /// loop, in lanes; the horizontal pass was 85 % of a resize, and this is ~2× faster.
    ///
    /// # Safety
    /// AVX-512.
    #[target_feature(enable = "avx512f")]
    unsafe fn resample(&self, row: &[u8], levels: &mut [u8]) {
        use std::arch::x86_64::*;
        let padded = self.offsets.len();
        // Every load stays inside the row: a window's last pixel starts at most 3 bytes before its
        // end, where 4 spare bytes follow the pixels.
        let furthest = self.offsets[..self.outputs].iter().max().map_or(0, |&o| o as usize + 3 * self.taps);
        assert!(furthest < row.len() && levels.len() >= self.outputs * 3);
        let half = _mm512_set1_epi32(1 << (PRECISION_BITS - 1));
        let (zero, most, byte) = (_mm512_setzero_si512(), _mm512_set1_epi32(255), _mm512_set1_epi32(0xff));
        let mut sums = [[0i32; Self::LANES]; 3];
        for block in (0..padded).step_by(Self::LANES) {
            // SAFETY: offsets and weights hold whole blocks; the gathers stay within `furthest`.
            unsafe {
                let first = _mm512_loadu_si512(self.offsets.as_ptr().add(block).cast());
                let mut acc = [half; 3];
                for k in 0..self.taps {
                    let at = _mm512_add_epi32(first, _mm512_set1_epi32(3 * k as i32));
                    let pixel = _mm512_i32gather_epi32::<1>(at, row.as_ptr().cast());
                    let w = _mm512_loadu_si512(self.weights.as_ptr().add(k * padded + block).cast());
                    for (c, sum) in acc.iter_mut().enumerate() {
                        let value = _mm512_and_si512(_mm512_srlv_epi32(pixel, _mm512_set1_epi32(8 * c as i32)), byte);
                        *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(value, w));
                    }
                }
                for (c, sum) in acc.iter().enumerate() {
                    let level = _mm512_min_epi32(_mm512_max_epi32(_mm512_srai_epi32::<{ PRECISION_BITS }>(*sum), zero), most);
                    _mm512_storeu_si512(sums[c].as_mut_ptr().cast(), level);
                }
            }
            for lane in 0..Self::LANES.min(self.outputs - block) {
                for (c, channel) in sums.iter().enumerate() {
                    levels[(block + lane) * 3 + c] = channel[lane] as u8;
                }
            }
        }
    }
}

/// Writes the model input for `image` into `out` (one image, the input's layout) as f32: the resize's
/// last pass scales each value and stores it straight into its place in the layout (u8 models get the
/// raw levels, which f32 holds exactly). The native executor passes its input buffer here.
pub fn write_input(image: &RgbImage, input: &InputSpec, out: &mut [f32]) {
    let (scale, offset) = match input.dtype {
        InputDtype::U8 => (1.0, 0.0),
        InputDtype::F32 => (input.scale, input.offset),
    };
    let (width, height) = (input.width as usize, input.height as usize);
    let out = &mut out[..width * height * 3];
    match input.layout {
        Layout::Nhwc => resize_into(image, input.width, input.height, |y, row| {
            for (o, &level) in out[y * row.len()..][..row.len()].iter_mut().zip(row) {
                *o = level as f32 * scale + offset;
            }
        }),
        Layout::Nchw => {
            // Planes R, G, B.
            let (red, rest) = out.split_at_mut(width * height);
            let (green, blue) = rest.split_at_mut(width * height);
            resize_into(image, input.width, input.height, |y, row| {
                let mut planes = [&mut red[y * width..][..width], &mut green[y * width..][..width], &mut blue[y * width..][..width]];
                for (x, rgb) in row.chunks_exact(3).enumerate() {
                    for (plane, &level) in planes.iter_mut().zip(rgb) {
                        plane[x] = level as f32 * scale + offset;
                    }
                }
            })
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
        let mut nhwc = [0f32; 12];
        write_input(&image(), &spec(InputDtype::F32, Layout::Nhwc), &mut nhwc);
        // pixel (x=1, y=0): R = 10 → 10 * 0.5 - 1 = 4
        assert_eq!(&nhwc[3..6], &[4.0, 49.0, 99.0]);

        let mut nchw = [0f32; 12];
        write_input(&image(), &spec(InputDtype::F32, Layout::Nchw), &mut nchw);
        assert_eq!(&nchw[0..4], &[-1.0, 4.0, 9.0, 14.0]); // the R plane, row by row
        assert_eq!(nchw[4], 49.0);

        let mut raw = [0f32; 12];
        write_input(&image(), &spec(InputDtype::U8, Layout::Nhwc), &mut raw);
        let levels: Vec<f32> = image().as_raw().iter().map(|&v| v as f32).collect();
        assert_eq!(raw.as_slice(), levels.as_slice());
    }

    #[test]
    fn gathered_horizontal_pass_equals_the_scalar_one() {
        if crate::cpu::isa() != crate::cpu::Isa::Avx512 {
            eprintln!("skipped: the gathered pass needs AVX-512, which this CPU lacks");
            return;
        }
        // Downscales with 2 to 17 taps, upscales, and sizes that leave a partial block of 16.
        for (in_width, out_width) in [(600, 300), (600, 224), (2400, 300), (37, 300), (5, 3), (300, 299), (17, 1)] {
            let pixels: Vec<u8> = (0..in_width * 3 * 2).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
            let filter = Filter::new(in_width, out_width);
            let mut scalar = vec![0u8; out_width * 3 * 2];
            filter.horizontal_taps::<0>(&pixels, in_width, 2, &mut rows_into(&mut scalar));
            let gathered_filter = GatheredFilter::new(&filter);
            let mut row = vec![0u8; in_width * 3 + 4];
            let mut levels = vec![0u8; out_width * 3];
            for (y, row_in) in pixels.chunks_exact(in_width * 3).enumerate() {
                row[..in_width * 3].copy_from_slice(row_in);
                // SAFETY: the CPU has AVX-512 (checked above).
                unsafe { gathered_filter.resample(&row, &mut levels) };
                assert_eq!(levels, scalar[y * out_width * 3..(y + 1) * out_width * 3], "{in_width} -> {out_width}, row {y}");
            }
        }
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

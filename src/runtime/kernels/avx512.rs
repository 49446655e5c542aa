//! The kernels written with AVX-512 intrinsics, where the compiler's vectorisation of the portable
//! code fell short (measured with `cargo bench --bench executor`): the planar and interleaved
//! depthwise convolutions and the direct stem convolution.

use std::arch::x86_64::*;

use super::epilogue::{DepthwiseOutput, Epilogue};
use super::window::{ImageStrides, Window, LANES};
use crate::runtime::scale_zero_point::ScaleZeroPoint;

/// Lanes `0..count` of a 16-lane vector.
fn mask(count: usize) -> __mmask16 {
    if count >= LANES {
        0xffff
    } else {
        ((1u32 << count) - 1) as __mmask16
    }
}

/// [`super::depthwise_planar`] for `T` taps and stride 1 or 2: phase planes built with vector
/// moves (stride 2 deinterleaves with one permute per 16 outputs), every output row computed
/// in place with masked stores, the taps' weights held in registers for a whole channel.
///
/// # Safety
/// The CPU has AVX-512 F. (Every slice is bounds-checked by the asserts below.)
#[target_feature(enable = "avx512f")]
pub unsafe fn depthwise_planar<const T: usize>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    out_channel_stride: usize,
    window: &Window,
    scratch: &mut [f32],
) {
    let w = window;
    let s = w.stride;
    assert!(matches!(s, 1 | 2) && w.kernel_height * w.kernel_width == T);
    let (in_plane, out_plane) = (w.in_height * w.in_width, w.out_height * w.out_width);
    let p = w.phase_planes();
    let planes = &mut scratch[..s * s * p.plane_len];
    let channels = weights.len() / T;
    assert!(input.len() >= channels * in_plane && (channels == 0 || output.len() >= (channels - 1) * out_channel_stride + out_plane));
    let mut offsets = [0usize; T];
    for ky in 0..w.kernel_height {
        for kx in 0..w.kernel_width {
            offsets[ky * w.kernel_width + kx] = ((ky % s) * s + kx % s) * p.plane_len + (ky / s) * p.pitch + kx / s;
        }
    }
    // Every read below stays inside `planes`: the furthest is a tap's offset plus the last
    // output row's last block (`phase_planes` sized the planes for it).
    let furthest = (w.out_height - 1) * p.pitch + w.out_width.div_ceil(LANES) * LANES;
    assert!(offsets.iter().all(|&o| o + furthest <= planes.len()));
    let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
    // Even and odd lanes of a 32-value pair of vectors.
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    planes.fill(0.0); // the padding, the same for every channel
    let base = planes.as_mut_ptr();
    for (channel, kernel) in weights.chunks_exact(T).enumerate() {
        let source = &input[channel * in_plane..(channel + 1) * in_plane];
        for (y, row) in source.chunks_exact(w.in_width).enumerate() {
            let padded_row = y + w.pad_top;
            let plane_row = padded_row / s;
            if plane_row >= p.rows {
                continue;
            }
            let row_planes = (padded_row % s) * s;
            if s == 1 {
                // Input column x goes to plane column x + pad_left, while that is < pitch.
                let count = w.in_width.min(p.pitch - w.pad_left.min(p.pitch));
                let dest = plane_row * p.pitch + w.pad_left;
                for x in (0..count).step_by(LANES) {
                    let m = mask(count - x);
                    // SAFETY: x < count ≤ row.len(), and dest + count ≤ rows·pitch ≤ plane_len.
                    unsafe {
                        let v = _mm512_maskz_loadu_ps(m, row.as_ptr().add(x));
                        _mm512_mask_storeu_ps(base.add(dest + x), m, v);
                    }
                }
            } else {
                // Input column x is padded column c = x + pad_left: phase c % 2, plane column c / 2.
                for x in (0..w.in_width).step_by(2 * LANES) {
                    let n = (w.in_width - x).min(2 * LANES);
                    // SAFETY: the loads read lanes < n of the row (masked).
                    let (low_half, high_half) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(mask(n), row.as_ptr().add(x)),
                            _mm512_maskz_loadu_ps(mask(n.saturating_sub(LANES)), row.as_ptr().wrapping_add(x + LANES)),
                        )
                    };
                    for (parity, lanes) in [(0, evens), (1, odds)] {
                        let c = x + parity + w.pad_left;
                        let (phase, column) = (c % 2, c / 2);
                        // Values of this parity in the chunk, and those that land inside the pitch.
                        let count = ((n + 1 - parity) / 2).min(p.pitch.saturating_sub(column));
                        if count > 0 {
                            let v = _mm512_permutex2var_ps(low_half, lanes, high_half);
                            let dest = (row_planes + phase) * p.plane_len + plane_row * p.pitch + column;
                            // SAFETY: `count` values at column < pitch of row plane_row < rows.
                            unsafe { _mm512_mask_storeu_ps(base.add(dest), mask(count), v) };
                        }
                    }
                }
            }
        }
        let taps: [__m512; T] = std::array::from_fn(|t| _mm512_set1_ps(kernel[t]));
        let bias = _mm512_set1_ps(epilogue.bias[channel]);
        let out = &mut output[channel * out_channel_stride..][..out_plane];
        // Four rows at a time: four independent chains of multiply-adds keep the FMA units busy;
        // the last one to three rows together, not one by one (a 7-row map would otherwise
        // spend most of its time in three single chains).
        let rows = Rows { base, offsets: &offsets, taps: &taps, bias, low, high, pitch: p.pitch, width: w.out_width };
        let full = w.out_height / 4 * 4;
        for oy in (0..full).step_by(4) {
            // SAFETY: rows oy..oy + 4 < out_height; reads bounded by `furthest` as asserted.
            unsafe { rows.compute::<4>(oy, out) };
        }
        // SAFETY (each arm): rows full..out_height; as above.
        match w.out_height - full {
            3 => unsafe { rows.compute::<3>(full, out) },
            2 => unsafe { rows.compute::<2>(full, out) },
            1 => unsafe { rows.compute::<1>(full, out) },
            _ => {}
        }
    }
}

/// [`super::depthwise_interleaved`] for `channels` a multiple of `V`·16, `V`·16 channels at a
/// time: a pixel's accumulators for them live in registers. (An expanded MobileNet block has 96
/// to 1152 channels: one group of 16 at a time fills every lane whatever the map's size, where
/// a channels-first kernel fills 7 lanes of 16 on a 7x7 map.)
///
/// # Safety
/// The CPU has AVX-512 F. (Every slice is bounds-checked by the asserts below.)
#[target_feature(enable = "avx512f")]
pub unsafe fn depthwise_interleaved<const V: usize>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut DepthwiseOutput,
    window: &Window,
    channels: usize,
) {
    let w = window;
    let group = V * LANES;
    let (kernel_height, kernel_width) = (w.kernel_height, w.kernel_width);
    let output_len = match &*output {
        DepthwiseOutput::Floats(out) => out.len(),
        DepthwiseOutput::Bytes(out, _) => out.len(),
        DepthwiseOutput::Halves(out) => out.len(),
    };
    assert!(
        channels.is_multiple_of(group)
            && input.len() >= w.in_height * w.in_width * channels
            && weights.len() >= kernel_height * kernel_width * channels
            && output_len >= w.out_height * w.out_width * channels
            && epilogue.bias.len() >= channels
    );
    let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
    for first in (0..channels).step_by(group) {
        // SAFETY: bias holds `channels` values (asserted).
        let bias: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(epilogue.bias.as_ptr().add(first + v * LANES)) });
        let (source, taps) = (input[first..].as_ptr(), weights[first..].as_ptr());
        // SAFETY: the sweep passes pixels inside the image and taps < KH·KW (sizes asserted above).
        let visit = |acc: &mut [__m512; V], tap: usize, pixel: usize| unsafe {
            accumulate(acc, source.add(pixel * channels), taps.add(tap * channels))
        };
        // SAFETY (each arm): AVX-512, as this function (the stores' slices hold every output
        // pixel, asserted above).
        match &mut *output {
            DepthwiseOutput::Floats(out) => unsafe { sweep::<V, 8>(w, bias, clamped::<V>(&mut out[first..], channels, low, high), visit) },
            DepthwiseOutput::Bytes(out, levels) => unsafe {
                sweep::<V, 8>(w, bias, quantized::<V>(&mut out[first..], channels, low, high, *levels), visit)
            },
            DepthwiseOutput::Halves(out) => unsafe { sweep::<V, 8>(w, bias, halves::<V>(&mut out[first..], channels, low, high), visit) },
        }
    }
}

/// A dense convolution of channel-interleaved data with few input channels (a stem's RGB) into
/// `V`·16 output channels: each input value of a pixel's window is broadcast against its row of
/// the tap-major weights ([KH·KW][in channels][out channels]). im2col would lay out a column
/// matrix nine times the input's size for a product with a depth of 27.
///
/// # Safety
/// AVX-512; `in_channels` ≤ [`MAX_DIRECT_IN_CHANNELS`](super::MAX_DIRECT_IN_CHANNELS).
#[target_feature(enable = "avx512f")]
pub unsafe fn conv_interleaved<const V: usize>(
    input: &[f32],
    in_channels: usize,
    strides: ImageStrides,
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
) {
    // A fixed channel count unrolls each pixel's loop over its channels, so the run's pixels
    // share each weight row's loads (a loop of unknown length loaded them once per pixel: 12
    // loads for 8 multiply-adds, 0.54 ms for the SSD's 150x150 stem).
    // SAFETY (each arm): the caller's contract.
    unsafe {
        match in_channels {
            1 => conv_interleaved_fixed::<V, 1>(input, strides, weights, epilogue, output, window),
            2 => conv_interleaved_fixed::<V, 2>(input, strides, weights, epilogue, output, window),
            3 => conv_interleaved_fixed::<V, 3>(input, strides, weights, epilogue, output, window),
            _ => conv_interleaved_fixed::<V, 4>(input, strides, weights, epilogue, output, window),
        }
    }
}

/// [`conv_interleaved`] with `IC` input channels.
///
/// # Safety
/// AVX-512.
#[target_feature(enable = "avx512f")]
unsafe fn conv_interleaved_fixed<const V: usize, const IC: usize>(
    input: &[f32],
    strides: ImageStrides,
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
) {
    let w = window;
    let channels = V * LANES;
    // A pixel index (row · width + column) and a channel address a value: the input is one
    // image, channels-last or channels-first.
    let (pixel_stride, channel_stride) = (strides.column, strides.channel);
    assert!(
        strides.row == w.in_width * pixel_stride
            && (w.in_height * w.in_width - 1) * pixel_stride + (IC - 1) * channel_stride < input.len()
            && weights.len() >= w.kernel_height * w.kernel_width * IC * channels
            && output.len() >= w.out_height * w.out_width * channels
            && epilogue.bias.len() >= channels
    );
    let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
    // SAFETY: bias holds `channels` values (asserted).
    let bias: [__m512; V] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(epilogue.bias.as_ptr().add(v * LANES)) });
    let (source, taps) = (input.as_ptr(), weights.as_ptr());
    let accumulate_pixel = |acc: &mut [__m512; V], tap: usize, pixel: usize| {
        for c in 0..IC {
            // SAFETY: the sweep passes pixels inside the image and taps < KH·KW; c < IC
            // (sizes asserted above).
            unsafe {
                let value = _mm512_set1_ps(*source.add(pixel * pixel_stride + c * channel_stride));
                let row = taps.add((tap * IC + c) * channels);
                for (v, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(value, _mm512_loadu_ps(row.add(v * LANES)), *a);
                }
            }
        }
    };
    // SAFETY: as above. (Four pixels at once: eight spill the registers.)
    unsafe { sweep::<V, 4>(w, bias, clamped::<V>(output, channels, low, high), accumulate_pixel) }
}

/// Computes every output pixel of `w` from `bias` and the taps `visit(acc, tap, input pixel)`
/// adds, and hands each to `store(output pixel, acc)` (V·16 channels). Runs of `P` interior pixels
/// are computed at once, with fixed tap offsets: each pixel has its own chains of multiply-adds,
/// and one pixel's few chains leave the FMA units idle (a step of a chain waits four cycles for
/// the one before). The border pixels take [`Window::visit_taps`].
///
/// # Safety
/// AVX-512.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn sweep<const V: usize, const P: usize>(
    w: &Window,
    bias: [__m512; V],
    mut store: impl FnMut(usize, &[__m512; V]),
    mut visit: impl FnMut(&mut [__m512; V], usize, usize),
) {
    // Output rows and columns whose windows lie inside the image.
    let interior_rows = w.interior_along(w.pad_top, w.in_height, w.kernel_height, w.out_height);
    let interior_columns = w.interior_along(w.pad_left, w.in_width, w.kernel_width, w.out_width);
    for oy in 0..w.out_height {
        // The first input row of an interior output row.
        let top = interior_rows.contains(&oy).then(|| oy * w.stride - w.pad_top);
        let mut ox = 0;
        while ox < w.out_width {
            // Interior pixels from ox on in this row: runs of P, then of 4, 2 and 1 at the row's
            // end (a 7-pixel row of a padded map is 4 + 2 + 1, not 7 single pixels).
            let interior = match top {
                Some(_) if ox >= interior_columns.start => interior_columns.end.saturating_sub(ox),
                _ => 0,
            };
            let run = [P, 4, 2, 1].into_iter().find(|&run| run <= interior && run <= P).unwrap_or(0);
            let pixels = Pixels { w, top: top.unwrap_or(0), oy, ox };
            match run {
                0 => {
                    let mut acc = bias;
                    w.visit_taps(oy, ox, |tap, pixel| visit(&mut acc, tap, pixel));
                    store(oy * w.out_width + ox, &acc);
                    ox += 1;
                    continue;
                }
                // SAFETY (this arm and the next three): the run's pixels are interior (their
                // windows lie inside the input: `run` ≤ `interior`), and this function's caller
                // has AVX-512.
                r if r == P => unsafe { pixels.run::<V, P>(bias, &mut store, &mut visit) },
                // SAFETY: as above.
                4 => unsafe { pixels.run::<V, 4>(bias, &mut store, &mut visit) },
                // SAFETY: as above.
                2 => unsafe { pixels.run::<V, 2>(bias, &mut store, &mut visit) },
                // SAFETY: as above.
                _ => unsafe { pixels.run::<V, 1>(bias, &mut store, &mut visit) },
            }
            ox += run;
        }
    }
}

/// Output pixels from (`oy`, `ox`) on, of a [`sweep`].
struct Pixels<'a> {
    w: &'a Window,
    /// The first input row of output row `oy` (for interior pixels).
    top: usize,
    oy: usize,
    ox: usize,
}

impl Pixels<'_> {
    /// Computes `Q` interior pixels, each with its own chains of multiply-adds, at fixed tap
    /// offsets.
    ///
    /// # Safety
    /// AVX-512; the pixels are interior.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const V: usize, const Q: usize>(
        &self,
        bias: [__m512; V],
        store: &mut impl FnMut(usize, &[__m512; V]),
        visit: &mut impl FnMut(&mut [__m512; V], usize, usize),
    ) {
        let w = self.w;
        let left = self.ox * w.stride - w.pad_left;
        let mut acc = [bias; Q];
        for ky in 0..w.kernel_height {
            let row = (self.top + ky) * w.in_width + left;
            for kx in 0..w.kernel_width {
                for (p, a) in acc.iter_mut().enumerate() {
                    visit(a, ky * w.kernel_width + kx, row + kx + p * w.stride);
                }
            }
        }
        for (p, a) in acc.iter().enumerate() {
            store(self.oy * w.out_width + self.ox + p, a);
        }
    }
}

/// A store for [`sweep`]: each pixel's V·16 values clamped to `low..high`, `pixel_stride` values
/// apart in `output` (a pixel outside it panics).
///
/// # Safety
/// AVX-512.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn clamped<const V: usize>(
    output: &mut [f32],
    pixel_stride: usize,
    low: __m512,
    high: __m512,
) -> impl FnMut(usize, &[__m512; V]) + '_ {
    move |pixel, acc| {
        let out = &mut output[pixel * pixel_stride..][..V * LANES];
        for (v, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds V·16 values.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(v * LANES), _mm512_min_ps(_mm512_max_ps(*a, low), high)) };
        }
    }
}

/// A store for [`sweep`]: each pixel's V·16 values clamped to `low..high` and rounded to bf16 (to
/// nearest, ties to even, as `vcvtneps2bf16` and [`crate::runtime::bf16::to_bf16`] round, here in
/// integer arithmetic, which AVX-512 F has), `pixel_stride` halves apart in `output` (a pixel outside
/// it panics).
///
/// # Safety
/// AVX-512.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn halves<const V: usize>(output: &mut [u16], pixel_stride: usize, low: __m512, high: __m512) -> impl FnMut(usize, &[__m512; V]) + '_ {
    let (rounding, one) = (_mm512_set1_epi32(0x7fff), _mm512_set1_epi32(1));
    move |pixel, acc| {
        let out = &mut output[pixel * pixel_stride..][..V * LANES];
        for (v, a) in acc.iter().enumerate() {
            let bits = _mm512_castps_si512(_mm512_min_ps(_mm512_max_ps(*a, low), high));
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), one);
            let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(rounding, odd)));
            // SAFETY: `out` holds V·16 halves.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(v * LANES) as *mut __m256i, _mm512_cvtepi32_epi16(rounded)) };
        }
    }
}

/// A store for [`sweep`]: each pixel's V·16 values clamped to `low..high` and quantised to u8 with
/// `levels` (as [`crate::runtime::quantized::quantize`] rounds), `pixel_stride` bytes apart in
/// `output` (a pixel outside it panics).
///
/// # Safety
/// AVX-512.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn quantized<const V: usize>(
    output: &mut [u8],
    pixel_stride: usize,
    low: __m512,
    high: __m512,
    levels: ScaleZeroPoint,
) -> impl FnMut(usize, &[__m512; V]) + '_ {
    let (inverse, zero) = (_mm512_set1_ps(1.0 / levels.scale), _mm512_set1_ps(levels.zero_point as f32));
    move |pixel, acc| {
        let out = &mut output[pixel * pixel_stride..][..V * LANES];
        for (v, a) in acc.iter().enumerate() {
            let clamped = _mm512_min_ps(_mm512_max_ps(*a, low), high);
            let q = _mm512_cvtps_epi32(_mm512_fmadd_ps(clamped, inverse, zero));
            // Saturated to 0..=255 as `quantize` saturates (`vpmovusdb` alone would take a -1 for 255).
            let q = _mm512_max_epi32(q, _mm512_setzero_si512());
            // SAFETY: `out` holds V·16 bytes.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().add(v * LANES) as *mut __m128i, _mm512_cvtusepi32_epi8(q)) };
        }
    }
}

/// `acc += source · taps` over V blocks of 16 channels.
///
/// # Safety
/// AVX-512; `source` and `taps` each point at V·16 readable values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn accumulate<const V: usize>(acc: &mut [__m512; V], source: *const f32, taps: *const f32) {
    for (v, a) in acc.iter_mut().enumerate() {
        // SAFETY: the caller's contract.
        *a = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(source.add(v * LANES)) }, unsafe { _mm512_loadu_ps(taps.add(v * LANES)) }, *a);
    }
}

/// One channel's output rows, computed from its phase planes.
struct Rows<'a, const T: usize> {
    base: *const f32,
    offsets: &'a [usize; T],
    taps: &'a [__m512; T],
    bias: __m512,
    low: __m512,
    high: __m512,
    pitch: usize,
    width: usize,
}

impl<const T: usize> Rows<'_, T> {
    /// Output rows `oy..oy + R` into `out` (the channel's output plane).
    ///
    /// # Safety
    /// AVX-512; `oy + R` ≤ the output height; every tap offset plus (oy + R - 1)·pitch plus the
    /// row's whole blocks lies inside the planes.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn compute<const R: usize>(&self, oy: usize, out: &mut [f32]) {
        for ox in (0..self.width).step_by(LANES) {
            let mut acc = [self.bias; R];
            for t in 0..T {
                for (r, a) in acc.iter_mut().enumerate() {
                    let at = self.offsets[t] + (oy + r) * self.pitch + ox;
                    // SAFETY: the caller's contract.
                    *a = _mm512_fmadd_ps(unsafe { _mm512_loadu_ps(self.base.add(at)) }, self.taps[t], *a);
                }
            }
            let m = mask(self.width - ox);
            for (r, a) in acc.iter().enumerate() {
                let clamped = _mm512_min_ps(_mm512_max_ps(*a, self.low), self.high);
                let row = &mut out[(oy + r) * self.width..(oy + r + 1) * self.width];
                // SAFETY: the masked lanes stay inside `row`.
                unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr().add(ox), m, clamped) };
            }
        }
    }
}

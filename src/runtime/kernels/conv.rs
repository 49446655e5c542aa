//! Dense convolutions: the direct channels-last stem kernel (AVX-512, or portable with the same sums) and im2col for the rest (whose product
//! then runs on the GEMM).

use super::elementwise::copy_every;
use super::window::{ImageStrides, Window};
use super::epilogue::Epilogue;
use super::simd::{clamp, multiversion, BaselineMultiplyAdd, MulAdd};
#[cfg(target_arch = "x86_64")]
use super::avx512;
use crate::cpu::{isa, Isa};

/// The stems [`conv_interleaved`] takes: at most this many input channels, output channels a multiple
/// of 16 up to 64.
pub const MAX_DIRECT_IN_CHANNELS: usize = 4;

/// Whether [`conv_interleaved`] runs a channels-last convolution of `in_channels` → `out_channels`
/// (on every CPU alike, so that a model is lowered the same way everywhere).
pub fn conv_interleaved_takes(in_channels: usize, out_channels: usize) -> bool {
    in_channels <= MAX_DIRECT_IN_CHANNELS && matches!(out_channels, 16 | 32 | 48 | 64)
}

/// A dense convolution into channel-interleaved output (OH×OW×OC) straight from the input (H×W×IC
/// or IC×H×W, as `strides` say), for the shapes [`conv_interleaved_takes`] accepts; `weights` are
/// tap-major: [KH·KW][IC][OC]. The AVX-512 kernel where it runs, else the portable one, which adds
/// the same products in the same order: the bias, then tap by tap and channel by channel, fused.
#[allow(clippy::too_many_arguments)]
pub fn conv_interleaved(
    multiply_add: BaselineMultiplyAdd,
    input: &[f32],
    in_channels: usize,
    strides: ImageStrides,
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
) {
    let out_channels = epilogue.bias.len();
    assert!(conv_interleaved_takes(in_channels, out_channels), "conv_interleaved on a shape it does not take");
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY (each arm): the CPU has AVX-512 (checked just above); `conv_interleaved_takes`
        // bounds the input channels.
        unsafe {
            match out_channels {
                16 => avx512::conv_interleaved::<1>(input, in_channels, strides, weights, epilogue, output, window),
                32 => avx512::conv_interleaved::<2>(input, in_channels, strides, weights, epilogue, output, window),
                48 => avx512::conv_interleaved::<3>(input, in_channels, strides, weights, epilogue, output, window),
                _ => avx512::conv_interleaved::<4>(input, in_channels, strides, weights, epilogue, output, window),
            }
        }
        return;
    }
    conv_interleaved_portable(multiply_add, input, in_channels, strides, weights, epilogue, output, window)
}

multiversion! {
    /// The portable [`conv_interleaved`].
    pub(super) fn conv_interleaved_portable(
        multiply_add, input: &[f32], in_channels: usize, strides: ImageStrides, weights: &[f32], epilogue: &Epilogue,
        output: &mut [f32], window: &Window,
    ) => conv_interleaved_body
}

#[inline(always)]
fn conv_interleaved_body<M: MulAdd>(
    input: &[f32],
    in_channels: usize,
    strides: ImageStrides,
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
) {
    let w = window;
    let channels = epilogue.bias.len();
    let (pixel_stride, channel_stride) = (strides.column, strides.channel);
    let pixels = w.out_height * w.out_width;
    assert!(output.len() >= pixels * channels && weights.len() >= w.kernel_height * w.kernel_width * in_channels * channels);
    for (pixel, out) in output[..pixels * channels].chunks_exact_mut(channels).enumerate() {
        out.copy_from_slice(&epilogue.bias);
        w.visit_taps(pixel / w.out_width, pixel % w.out_width, |tap, pixel_in| {
            for c in 0..in_channels {
                let value = input[pixel_in * pixel_stride + c * channel_stride];
                let row = &weights[(tap * in_channels + c) * channels..][..channels];
                for (o, &weight) in out.iter_mut().zip(row) {
                    *o = M::mul_add(value, weight, *o);
                }
            }
        });
        for o in out.iter_mut() {
            *o = clamp(*o, epilogue.low, epilogue.high);
        }
    }
}

/// Lays out the receptive fields of a dense convolution as `columns`, a (channel, kernel row, kernel
/// column) × output pixel matrix, zero where the window hangs over the border, so the convolution
/// becomes one matrix product with the OIHW kernel. K-major, so each output row of it is a strided copy
/// of an input row and both product layouts read it with a unit stride.
pub fn im2col(input: &[f32], channels: usize, strides: ImageStrides, window: &Window, columns: &mut [f32]) {
    let w = window;
    let pixels = w.out_height * w.out_width;
    // Zero once, then write only what lies inside the image: zeroing the border pieces one by one
    // would be a call to memset per few values.
    columns.fill(0.0);
    let mut rows = columns.chunks_exact_mut(pixels);
    for channel in 0..channels {
        for ky in 0..w.kernel_height {
            for kx in 0..w.kernel_width {
                let row = rows.next().expect("K rows");
                // Output columns whose input column is inside the image; the rest stay zero.
                let first = w.pad_left.saturating_sub(kx).div_ceil(w.stride).min(w.out_width);
                let end = (w.in_width + w.pad_left).saturating_sub(kx).div_ceil(w.stride).clamp(first, w.out_width);
                if first == end {
                    continue;
                }
                let step = w.stride * strides.column;
                for (oy, out) in row.chunks_exact_mut(w.out_width).enumerate() {
                    let Some(iy) = (oy * w.stride + ky).checked_sub(w.pad_top).filter(|&y| y < w.in_height) else { continue };
                    let start = channel * strides.channel + iy * strides.row + (first * w.stride + kx - w.pad_left) * strides.column;
                    copy_every(&input[start..], step, &mut out[first..end]);
                }
            }
        }
    }
}

/// Gathers each output pixel's window of a channels-last image (H×W×C) into one row of `rows`: its
/// taps in order, each tap's C channels, `pad` (the encoded zero) where the window hangs over the
/// border. A dense convolution's im2col, pixel-major, for the int8 and bf16 products, which take
/// their rows encoded (u8 or bf16) and so gather after encoding, a quarter or half the bytes.
pub fn window_rows<T: Copy>(image: &[T], channels: usize, w: &Window, pad: T, rows: &mut [T]) {
    let field = w.kernel_height * w.kernel_width * channels;
    for (pixel, row) in rows[..w.out_height * w.out_width * field].chunks_exact_mut(field).enumerate() {
        let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
        for (tap, values) in row.chunks_exact_mut(channels).enumerate() {
            let iy = (oy * w.stride + tap / w.kernel_width).checked_sub(w.pad_top).filter(|&y| y < w.in_height);
            let ix = (ox * w.stride + tap % w.kernel_width).checked_sub(w.pad_left).filter(|&x| x < w.in_width);
            match (iy, ix) {
                (Some(y), Some(x)) => values.copy_from_slice(&image[(y * w.in_width + x) * channels..][..channels]),
                _ => values.fill(pad),
            }
        }
    }
}

/// A dense convolution's kernel (OIHW: each output channel's `channels` × `taps` weights after the
/// last) as the columns of a product over [`window_rows`]: column j holds output channel j's
/// weights tap by tap, each tap's channels in order.
pub fn columns_for_windows(kernel: &[f32], channels: usize, taps: usize) -> Vec<f32> {
    let field = channels * taps;
    kernel.chunks_exact(field).flat_map(|column| (0..field).map(move |k| column[(k % channels) * taps + k / channels])).collect()
}

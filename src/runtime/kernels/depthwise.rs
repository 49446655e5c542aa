//! Depthwise convolutions: channel-planar (one channel at a time over phase planes) and
//! channel-interleaved (vectorised across channels), portable with AVX-512 kernels where they exist.

use super::epilogue::{DepthwiseOutput, Epilogue, OutputEncoding};
use super::simd::{clamp, multiversion, BaselineMultiplyAdd, MulAdd};
use super::elementwise::copy_every;
use super::window::{Window, LANES, MAX_KERNEL_HEIGHT};
use crate::runtime::buffer::{as_bytes, as_halves};
#[cfg(target_arch = "x86_64")]
use super::avx512;
use crate::cpu::{isa, Isa};

multiversion! {
    /// Depthwise convolution of channel-planar data (C×H×W in, C×OH×OW out), one channel at a time.
    /// The zero-padded input plane is split into stride×stride phase planes of one row pitch, so that
    /// every kernel tap reads one contiguous run: output (oy, ox), computed at flat position
    /// oy·pitch + ox, reads tap (ky, kx) at that position plus a fixed offset, and each block of 16
    /// outputs accumulates all its taps in registers. The columns past OW are computed and dropped,
    /// which costs less than short rows would. Output channel c starts at c·`out_channel_stride`,
    /// so that a band of rows can be written into a whole tensor.
    pub fn depthwise_planar(
        multiply_add, input: &[f32], weights: &[f32], epilogue: &Epilogue, output: &mut [f32], out_channel_stride: usize,
        window: &Window, scratch: &mut [f32],
    ) => depthwise_planar_body
}

#[inline(always)]
fn depthwise_planar_body<M: MulAdd>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    out_channel_stride: usize,
    window: &Window,
    scratch: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && matches!(window.stride, 1 | 2) {
        let taps = window.kernel_height * window.kernel_width;
        // SAFETY (each arm): the CPU has AVX-512 (checked just above).
        match taps {
            9 => return unsafe { avx512::depthwise_planar::<9>(input, weights, epilogue, output, out_channel_stride, window, scratch) },
            25 => return unsafe { avx512::depthwise_planar::<25>(input, weights, epilogue, output, out_channel_stride, window, scratch) },
            _ => {}
        }
    }
    let w = window;
    let s = w.stride;
    let (in_plane, out_plane, taps) = (w.in_height * w.in_width, w.out_height * w.out_width, w.kernel_height * w.kernel_width);
    let p = w.phase_planes();
    let (planes, rest) = scratch.split_at_mut(s * s * p.plane_len);
    let pitched = &mut rest[..p.out_len];
    // Where each tap's run starts in `planes`.
    let mut tap_offsets = [0usize; MAX_KERNEL_HEIGHT * MAX_KERNEL_HEIGHT];
    for ky in 0..w.kernel_height {
        for kx in 0..w.kernel_width {
            let plane = (ky % s) * s + kx % s;
            tap_offsets[ky * w.kernel_width + kx] = plane * p.plane_len + (ky / s) * p.pitch + kx / s;
        }
    }
    let tap_offsets = &tap_offsets[..taps];
    assert!(tap_offsets.iter().all(|&offset| offset + pitched.len() <= planes.len()), "phase planes too short");
    // The padding is in the same places for every channel: zero it once, then each channel
    // overwrites only the data.
    planes.fill(0.0);
    let channels = weights.len() / taps;
    assert!(channels == 0 || output.len() >= (channels - 1) * out_channel_stride + out_plane, "output too short");
    for channel in 0..channels {
        let out_channel = &mut output[channel * out_channel_stride..][..out_plane];
        let in_channel = &input[channel * in_plane..(channel + 1) * in_plane];
        for (y, row) in in_channel.chunks_exact(w.in_width).enumerate() {
            let padded_row = y + w.pad_top;
            let (phase_row, plane_row) = (padded_row % s, padded_row / s);
            if plane_row >= p.rows {
                continue;
            }
            for phase_col in 0..s {
                let plane = &mut planes[(phase_row * s + phase_col) * p.plane_len..][..p.rows * p.pitch];
                let out = &mut plane[plane_row * p.pitch..(plane_row + 1) * p.pitch];
                // Plane column i holds padded column i·s + phase_col, i.e. input column
                // i·s + phase_col - pad_left.
                let first = w.pad_left.saturating_sub(phase_col).div_ceil(s).min(p.pitch);
                let end = (row.len() + w.pad_left).saturating_sub(phase_col).div_ceil(s).clamp(first, p.pitch);
                if first == end {
                    continue;
                }
                let start = first * s + phase_col - w.pad_left;
                copy_every(&row[start..], s, &mut out[first..end]);
            }
        }
        let kernel = &weights[channel * taps..(channel + 1) * taps];
        let bias = epilogue.bias[channel];
        accumulate_taps::<M>(planes, pitched, kernel, tap_offsets, bias, epilogue);
        for (out_row, pitched_row) in out_channel.chunks_exact_mut(w.out_width).zip(pitched.chunks(p.pitch)) {
            out_row.copy_from_slice(&pitched_row[..w.out_width]);
        }
    }
}

/// Each block of 16 pitched outputs accumulates its taps in registers, then is clamped.
#[inline(always)]
fn accumulate_taps<M: MulAdd>(
    planes: &[f32],
    pitched: &mut [f32],
    kernel: &[f32],
    tap_offsets: &[usize],
    bias: f32,
    epilogue: &Epilogue,
) {
    for (block, out) in pitched.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [bias; LANES];
        for (&tap, &offset) in kernel.iter().zip(tap_offsets) {
            let source: &[f32; LANES] = planes[offset + block * LANES..][..LANES].try_into().expect("16");
            for i in 0..LANES {
                acc[i] = M::mul_add(source[i], tap, acc[i]);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = clamp(a, epilogue.low, epilogue.high);
        }
    }
}

/// [`depthwise_interleaved`] with its values clamped to the epilogue's range, then encoded: quantised
/// to u8 with fixed levels (rounded as [`crate::runtime::quantized::quantize`] rounds) or rounded to
/// bf16 (as [`crate::runtime::bf16::convert`] rounds), from value `first` of `output`, the f32
/// buffer the values would have gone to: as every encoded buffer, value i's encoding lies at its
/// byte or half i ([`as_bytes`], [`as_halves`]). The AVX-512 kernel and the portable one store the
/// same bytes.
///
/// # Panics
/// Unless `channels` is a multiple of 16 (what [`encoded_depthwise_takes`] checks).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_interleaved_encoded(
    multiply_add: BaselineMultiplyAdd,
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    encoding: OutputEncoding,
    output: &mut [f32],
    first: usize,
    window: &Window,
    channels: usize,
) {
    assert!(encoded_depthwise_takes(channels), "an encoded depthwise output needs channels in groups of 16, not {channels}");
    // The view ends where this output does, as the f32 slice it stands for would.
    let len = window.out_height * window.out_width * channels;
    let output = match encoding {
        OutputEncoding::U8(levels) => DepthwiseOutput::Bytes(&mut as_bytes(output)[first..first + len], levels),
        OutputEncoding::Bf16 => DepthwiseOutput::Halves(&mut as_halves(output)[first..first + len]),
    };
    depthwise_interleaved_stored(multiply_add, input, weights, epilogue, output, window, channels);
}

/// Whether [`depthwise_interleaved_encoded`] takes `channels` (on every CPU alike, so that a model
/// is lowered the same way everywhere).
pub fn encoded_depthwise_takes(channels: usize) -> bool {
    channels.is_multiple_of(LANES)
}

/// The AVX-512 interleaved depthwise kernel, in the widest groups of 16 channels that divide
/// `channels`; `false`, with nothing written, on a CPU without AVX-512 or for other channel counts.
fn depthwise_interleaved_avx512(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut DepthwiseOutput,
    window: &Window,
    channels: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY (each arm): the CPU has AVX-512 (checked just above).
        unsafe {
            match channels {
                64 => avx512::depthwise_interleaved::<4>(input, weights, epilogue, output, window, channels),
                // Wider groups first: three vectors a pixel beat one or two by 10 % on the expanded
                // blocks (96 to 1152 channels, every one a multiple of 48).
                c if c % 48 == 0 => avx512::depthwise_interleaved::<3>(input, weights, epilogue, output, window, channels),
                c if c % 32 == 0 => avx512::depthwise_interleaved::<2>(input, weights, epilogue, output, window, channels),
                c if c % 16 == 0 => avx512::depthwise_interleaved::<1>(input, weights, epilogue, output, window, channels),
                _ => return false,
            }
        }
        return true;
    }
    let _ = (input, weights, epilogue, output, window, channels);
    false
}

/// Depthwise convolution of channel-interleaved data (H×W×C in, OH×OW×C out), vectorised across
/// channels. `weights` are laid out tap-major: [KH·KW][C].
pub fn depthwise_interleaved(
    multiply_add: BaselineMultiplyAdd,
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    output: &mut [f32],
    window: &Window,
    channels: usize,
) {
    depthwise_interleaved_stored(multiply_add, input, weights, epilogue, DepthwiseOutput::Floats(output), window, channels)
}

/// [`depthwise_interleaved`] into any [`DepthwiseOutput`]: the AVX-512 kernel where it runs, else the
/// portable one, which adds the same products in the same order (the bias, then tap by tap, fused)
/// and stores as the AVX-512 stores do.
fn depthwise_interleaved_stored(
    multiply_add: BaselineMultiplyAdd,
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    mut output: DepthwiseOutput,
    window: &Window,
    channels: usize,
) {
    if !depthwise_interleaved_avx512(input, weights, epilogue, &mut output, window, channels) {
        depthwise_interleaved_portable(multiply_add, input, weights, epilogue, output, window, channels);
    }
}

multiversion! {
    /// The portable [`depthwise_interleaved_stored`].
    pub(super) fn depthwise_interleaved_portable(
        multiply_add, input: &[f32], weights: &[f32], epilogue: &Epilogue, output: DepthwiseOutput<'_>, window: &Window,
        channels: usize,
    ) => depthwise_interleaved_body
}

#[inline(always)]
fn depthwise_interleaved_body<M: MulAdd>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    mut output: DepthwiseOutput,
    window: &Window,
    channels: usize,
) {
    match channels {
        16 => depthwise_interleaved_blocks::<M, 1>(input, weights, epilogue, window, &mut output),
        32 => depthwise_interleaved_blocks::<M, 2>(input, weights, epilogue, window, &mut output),
        48 => depthwise_interleaved_blocks::<M, 3>(input, weights, epilogue, window, &mut output),
        64 => depthwise_interleaved_blocks::<M, 4>(input, weights, epilogue, window, &mut output),
        _ => depthwise_interleaved_any::<M>(input, weights, epilogue, window, channels, &mut output),
    }
}

/// Stores one pixel's sums (from value `at` of the output) clamped to the epilogue's range and
/// encoded as the AVX-512 kernel's stores encode them: u8 levels by a fused multiply-add rounded to
/// even, bf16 rounded to nearest even.
#[inline(always)]
fn store_pixel<M: MulAdd>(output: &mut DepthwiseOutput, at: usize, sums: &[f32], epilogue: &Epilogue) {
    let (low, high) = (epilogue.low, epilogue.high);
    match output {
        DepthwiseOutput::Floats(out) => {
            for (o, &x) in out[at..][..sums.len()].iter_mut().zip(sums) {
                *o = clamp(x, low, high);
            }
        }
        DepthwiseOutput::Bytes(out, levels) => {
            let (inverse, zero) = (1.0 / levels.scale, levels.zero_point as f32);
            for (o, &x) in out[at..][..sums.len()].iter_mut().zip(sums) {
                *o = M::mul_add(clamp(x, low, high), inverse, zero).round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
        DepthwiseOutput::Halves(out) => {
            for (o, &x) in out[at..][..sums.len()].iter_mut().zip(sums) {
                let bits = clamp(x, low, high).to_bits();
                *o = ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
            }
        }
    }
}

/// The portable kernel for `V`·16 channels: a pixel's accumulators live in registers.
#[inline(always)]
fn depthwise_interleaved_blocks<M: MulAdd, const V: usize>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    window: &Window,
    output: &mut DepthwiseOutput,
) {
    let w = window;
    let channels = V * LANES;
    let bias: &[f32] = &epilogue.bias;
    for pixel in 0..w.out_height * w.out_width {
        let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
        let mut acc = [[0f32; LANES]; V];
        for (v, a) in acc.iter_mut().enumerate() {
            a.copy_from_slice(&bias[v * LANES..(v + 1) * LANES]);
        }
        for (tap, pixel_in) in w.taps(oy, ox) {
            let source = &input[pixel_in * channels..][..channels];
            let taps = &weights[tap * channels..][..channels];
            for (v, a) in acc.iter_mut().enumerate() {
                let s: &[f32; LANES] = source[v * LANES..(v + 1) * LANES].try_into().expect("16");
                let t: &[f32; LANES] = taps[v * LANES..(v + 1) * LANES].try_into().expect("16");
                for i in 0..LANES {
                    a[i] = M::mul_add(s[i], t[i], a[i]);
                }
            }
        }
        store_pixel::<M>(output, pixel * channels, acc.as_flattened(), epilogue);
    }
}

/// The portable kernel for any number of channels.
#[inline(always)]
fn depthwise_interleaved_any<M: MulAdd>(
    input: &[f32],
    weights: &[f32],
    epilogue: &Epilogue,
    window: &Window,
    channels: usize,
    output: &mut DepthwiseOutput,
) {
    let w = window;
    // A pixel's channels in groups on the stack (each channel's sum is its own chain).
    const GROUP: usize = 64;
    let mut sums = [0f32; GROUP];
    for pixel in 0..w.out_height * w.out_width {
        let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
        for first in (0..channels).step_by(GROUP) {
            let sums = &mut sums[..GROUP.min(channels - first)];
            sums.copy_from_slice(&epilogue.bias[first..first + sums.len()]);
            for (tap, pixel_in) in w.taps(oy, ox) {
                let source = &input[pixel_in * channels + first..][..sums.len()];
                let taps = &weights[tap * channels + first..][..sums.len()];
                for ((o, &s), &t) in sums.iter_mut().zip(source).zip(taps) {
                    *o = M::mul_add(s, t, *o);
                }
            }
            store_pixel::<M>(output, pixel * channels + first, sums, epilogue);
        }
    }
}

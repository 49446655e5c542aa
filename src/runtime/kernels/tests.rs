//! Tests of the kernels against plain references, and the references and fixtures other runtime
//! tests share.

use super::*;
use super::epilogue::DepthwiseOutput;
use crate::runtime::scale_zero_point::ScaleZeroPoint;


/// A square kernel's sweep over an `in_height`×`in_width` image.
pub(crate) fn test_window(kernel: usize, stride: usize, pad: usize, in_height: usize, in_width: usize) -> Window {
    Window {
        in_height,
        in_width,
        out_height: (in_height + 2 * pad - kernel) / stride + 1,
        out_width: (in_width + 2 * pad - kernel) / stride + 1,
        kernel_height: kernel,
        kernel_width: kernel,
        stride,
        pad_top: pad,
        pad_left: pad,
    }
}

/// Straightforward dense convolution of a channels-last image (OIHW weights, no bias), its output
/// channels-last, for comparison.
pub(crate) fn dense_reference(input: &[f32], in_channels: usize, weights: &[f32], out_channels: usize, w: &Window) -> Vec<f32> {
    let mut out = vec![0.0; w.out_height * w.out_width * out_channels];
    for (pixel, values) in out.chunks_exact_mut(out_channels).enumerate() {
        let (oy, ox) = (pixel / w.out_width, pixel % w.out_width);
        for (o, value) in values.iter_mut().enumerate() {
            for ky in 0..w.kernel_height {
                for kx in 0..w.kernel_width {
                    let iy = (oy * w.stride + ky).checked_sub(w.pad_top).filter(|&y| y < w.in_height);
                    let ix = (ox * w.stride + kx).checked_sub(w.pad_left).filter(|&x| x < w.in_width);
                    let (Some(iy), Some(ix)) = (iy, ix) else { continue };
                    for i in 0..in_channels {
                        *value += input[(iy * w.in_width + ix) * in_channels + i]
                            * weights[((o * in_channels + i) * w.kernel_height + ky) * w.kernel_width + kx];
                    }
                }
            }
        }
    }
    out
}

/// Straightforward depthwise convolution, channel-planar, for comparison.
fn depthwise_reference(input: &[f32], weights: &[f32], bias: &[f32], w: &Window, channels: usize) -> Vec<f32> {
    let mut out = vec![0.0; channels * w.out_height * w.out_width];
    for c in 0..channels {
        for oy in 0..w.out_height {
            for ox in 0..w.out_width {
                let mut acc = bias[c];
                for ky in 0..w.kernel_height {
                    for kx in 0..w.kernel_width {
                        let iy = (oy * w.stride + ky) as isize - w.pad_top as isize;
                        let ix = (ox * w.stride + kx) as isize - w.pad_left as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < w.in_height && (ix as usize) < w.in_width {
                            acc += input[(c * w.in_height + iy as usize) * w.in_width + ix as usize]
                                * weights[(c * w.kernel_height + ky) * w.kernel_width + kx];
                        }
                    }
                }
                out[(c * w.out_height + oy) * w.out_width + ox] = acc.clamp(0.0, 6.0);
            }
        }
    }
    out
}

pub(crate) fn pseudo_random(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0).collect()
}

#[test]
fn depthwise_kernels_match_the_definition() {
    for channels in [5, 32, 64, 80, 144] {
    // Sizes from 7 to 21: outputs narrower and wider than the interleaved kernel's runs of 8 pixels.
    for (kernel, stride, pad, in_size) in [(3, 1, 1, 9), (3, 2, 0, 10), (5, 2, 2, 11), (5, 1, 2, 7), (3, 2, 1, 8), (3, 2, 1, 21), (5, 1, 2, 21)] {
        let w = test_window(kernel, stride, pad, in_size, in_size + 1);
        let input = pseudo_random(channels * w.in_height * w.in_width, 1);
        let weights = pseudo_random(channels * kernel * kernel, 2);
        let mut epilogue = Epilogue::new(channels);
        epilogue.bias = pseudo_random(channels, 3);
        (epilogue.low, epilogue.high) = (0.0, 6.0);
        let expected = depthwise_reference(&input, &weights, &epilogue.bias, &w, channels);

        let mut planar = vec![0.0; expected.len()];
        let mut scratch = vec![0.0; w.planar_scratch_len()];
        let out_plane = w.out_height * w.out_width;
        depthwise_planar(BaselineMultiplyAdd::Separate, &input, &weights, &epilogue, &mut planar, out_plane, &w, &mut scratch);
        for (a, b) in planar.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "planar {kernel}x{kernel}/{stride}: {a} vs {b}");
        }
        // Band by band (as the executor runs an expansion and its depthwise), from the input
        // rows each band reads.
        for band_rows in [1, 2, 3] {
            let mut banded = vec![f32::NAN; expected.len()];
            for start in (0..w.out_height).step_by(band_rows) {
                let (band, input_rows) = w.band(start..(start + band_rows).min(w.out_height));
                let mut rows = Vec::new();
                for c in 0..channels {
                    let plane = &input[c * w.in_height * w.in_width..][..w.in_height * w.in_width];
                    rows.extend_from_slice(&plane[input_rows.start * w.in_width..input_rows.end * w.in_width]);
                }
                let mut scratch = vec![0.0; band.planar_scratch_len()];
                depthwise_planar(BaselineMultiplyAdd::Separate, &rows, &weights, &epilogue, &mut banded[start * w.out_width..], out_plane, &band, &mut scratch);
            }
            for (a, b) in banded.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "bands of {band_rows} rows, {kernel}x{kernel}/{stride}: {a} vs {b}");
            }
        }

        // The same data interleaved (HWC), with tap-major weights.
        let (ih, iw, oh, ow) = (w.in_height, w.in_width, w.out_height, w.out_width);
        let mut hwc = vec![0.0; input.len()];
        for c in 0..channels {
            for p in 0..ih * iw {
                hwc[p * channels + c] = input[c * ih * iw + p];
            }
        }
        let mut tap_major = vec![0.0; weights.len()];
        for c in 0..channels {
            for t in 0..kernel * kernel {
                tap_major[t * channels + c] = weights[c * kernel * kernel + t];
            }
        }
        let mut interleaved = vec![0.0; expected.len()];
        depthwise_interleaved(BaselineMultiplyAdd::Fused, &hwc, &tap_major, &epilogue, &mut interleaved, &w, channels);
        // The portable kernel gives the bits of the one that ran (the AVX-512 kernel where the CPU
        // has it), as f32 and as u8 levels over a range below 0 (int8 rows are the same everywhere).
        let mut portable = vec![0.0; expected.len()];
        let floats = DepthwiseOutput::Floats(&mut portable);
        super::depthwise::depthwise_interleaved_portable(BaselineMultiplyAdd::Fused, &hwc, &tap_major, &epilogue, floats, &w, channels);
        assert!(portable.iter().zip(&interleaved).all(|(a, b)| a.to_bits() == b.to_bits()), "portable depthwise {kernel}x{kernel}/{stride}, {channels} channels");
        if encoded_depthwise_takes(channels) {
            let mut wide = epilogue.clone();
            (wide.low, wide.high) = (-0.7, 6.0);
            let levels = ScaleZeroPoint::spanning(-0.7, 6.0);
            let mut dispatched = vec![0.0f32; expected.len()];
            depthwise_interleaved_encoded(BaselineMultiplyAdd::Fused, &hwc, &tap_major, &wide, OutputEncoding::U8(levels), &mut dispatched, 0, &w, channels);
            let mut bytes = vec![0u8; expected.len()];
            let encoded = DepthwiseOutput::Bytes(&mut bytes, levels);
            super::depthwise::depthwise_interleaved_portable(BaselineMultiplyAdd::Fused, &hwc, &tap_major, &wide, encoded, &w, channels);
            assert_eq!(&crate::runtime::buffer::bytes_of(&dispatched)[..bytes.len()], &bytes[..], "portable u8 store {kernel}x{kernel}/{stride}");
        }
        // And over a zero-padded copy, where every pixel is interior.
        let padded_window = w.padded();
        let mut padded = vec![f32::NAN; padded_window.in_height * padded_window.in_width * channels];
        pad_interleaved(&hwc, channels, &w, &mut padded);
        let mut from_padded = vec![0.0; expected.len()];
        depthwise_interleaved(BaselineMultiplyAdd::Separate, &padded, &tap_major, &epilogue, &mut from_padded, &padded_window, channels);
        assert_eq!(padded_window.interior_share(), 1.0);
        for c in 0..channels {
            for p in 0..oh * ow {
                let (a, b) = (interleaved[p * channels + c], expected[c * oh * ow + p]);
                assert!((a - b).abs() < 1e-5, "interleaved {kernel}x{kernel}/{stride}: {a} vs {b}");
                let a = from_padded[p * channels + c];
                assert!((a - b).abs() < 1e-5, "interleaved, padded {kernel}x{kernel}/{stride}: {a} vs {b}");
            }
        }
        // Encoded as it is stored, from an offset into the buffer: the bytes an int8 product would
        // get from quantising the f32 output with the same levels (rounded to nearest even, as
        // `cvtps2dq` rounds), and the halves a bf16 product would get from rounding it.
        if encoded_depthwise_takes(channels) {
            let levels = ScaleZeroPoint::spanning(0.0, 6.0);
            let first = 3;
            let mut buffer = vec![0.0f32; first + expected.len()];
            depthwise_interleaved_encoded(BaselineMultiplyAdd::Fused, &hwc, &tap_major, &epilogue, OutputEncoding::U8(levels), &mut buffer, first, &w, channels);
            for (&q, &x) in crate::runtime::buffer::bytes_of(&buffer)[first..].iter().zip(&interleaved) {
                let level = x.mul_add(1.0 / levels.scale, levels.zero_point as f32).round_ties_even();
                assert_eq!(q as f32, level, "quantised {kernel}x{kernel}/{stride}, {channels} channels: {x}");
            }
            depthwise_interleaved_encoded(BaselineMultiplyAdd::Fused, &hwc, &tap_major, &epilogue, OutputEncoding::Bf16, &mut buffer, first, &w, channels);
            for (&half, &x) in crate::runtime::buffer::halves_of(&buffer)[first..].iter().zip(&interleaved) {
                assert_eq!(half, crate::runtime::bf16::to_bf16(x), "bf16 {kernel}x{kernel}/{stride}, {channels} channels: {x}");
            }
        }
    }
    }
}

#[test]
fn direct_interleaved_convolution_matches_the_definition() {
    for (in_channels, out_channels) in [(3, 32), (1, 16), (2, 48), (4, 64)] {
        for (kernel, stride, pad, in_size) in [(3, 2, 1, 21), (3, 1, 1, 9), (5, 2, 2, 30), (3, 2, 0, 16)] {
            let w = test_window(kernel, stride, pad, in_size, in_size + 3);
            let taps = kernel * kernel;
            let input = pseudo_random(in_channels * w.in_height * w.in_width, 4); // HWC
            let weights = pseudo_random(out_channels * in_channels * taps, 5); // OIHW
            let mut epilogue = Epilogue::new(out_channels);
            epilogue.bias = pseudo_random(out_channels, 6);
            (epilogue.low, epilogue.high) = (-1.5, 6.0);
            let mut tap_major = vec![0.0; weights.len()];
            for o in 0..out_channels {
                for i in 0..in_channels {
                    for t in 0..taps {
                        tap_major[(t * in_channels + i) * out_channels + o] = weights[(o * in_channels + i) * taps + t];
                    }
                }
            }
            // The same image channels-first: channel planes one after another.
            let plane = w.in_height * w.in_width;
            let planar: Vec<f32> = (0..in_channels * plane).map(|j| input[(j % plane) * in_channels + j / plane]).collect();
            let layouts = [
                (&input, ImageStrides::channels_last(&w, in_channels)),
                (&planar, ImageStrides::planar(&w)),
            ];
            let sums = dense_reference(&input, in_channels, &weights, out_channels, &w);
            for (source, strides) in layouts {
                let mut output = vec![f32::NAN; w.out_height * w.out_width * out_channels];
                conv_interleaved(BaselineMultiplyAdd::Fused, source, in_channels, strides, &tap_major, &epilogue, &mut output, &w);
                // The portable kernel gives the bits of the one that ran (AVX-512's where the CPU has it).
                let mut portable = vec![f32::NAN; output.len()];
                super::conv::conv_interleaved_portable(BaselineMultiplyAdd::Fused, source, in_channels, strides, &tap_major, &epilogue, &mut portable, &w);
                assert!(portable.iter().zip(&output).all(|(a, b)| a.to_bits() == b.to_bits()), "portable stem {in_channels}->{out_channels} {strides:?}");
                for (j, (got, sum)) in output.iter().zip(&sums).enumerate() {
                    let expected = (sum + epilogue.bias[j % out_channels]).clamp(-1.5, 6.0);
                    assert!((got - expected).abs() < 1e-4, "{in_channels}->{out_channels} {kernel}x{kernel}/{stride} {strides:?} at {j}: {got} vs {expected}");
                }
            }
        }
    }
}

#[test]
fn u8_values_clamp_and_truncate() {
    let values = [-3.0, 0.0, 0.4, 1.0, 1.99, 254.5, 255.0, 300.0, f32::MAX, f32::MIN];
    let mut out = [f32::NAN; 10];
    u8_values(&values, &mut out);
    assert_eq!(out, [0.0, 0.0, 0.0, 1.0, 1.0, 254.0, 255.0, 255.0, 255.0, 0.0]);
}

#[test]
fn sigmoid_is_accurate() {
    let mut values: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.01).collect();
    let expected: Vec<f32> = values.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
    sigmoid(BaselineMultiplyAdd::Separate, &mut values);
    for (a, b) in values.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let mut extremes = [-1000.0, 1000.0, f32::MIN, f32::MAX];
    sigmoid(BaselineMultiplyAdd::Separate, &mut extremes);
    assert!(extremes[0] < 1e-30 && extremes[2] < 1e-30, "{extremes:?}");
    assert!(extremes[1] == 1.0 && extremes[3] == 1.0, "{extremes:?}");
}

#[test]
fn a_pool_sums_the_same_in_either_layout() {
    let (images, channels, pixels) = (3, 40, 49);
    let planar = pseudo_random(images * channels * pixels, 3);
    let mut channels_last = vec![0.0; planar.len()];
    strided_copy(&planar, &[channels * pixels, 1, pixels], &mut channels_last, &[images, pixels, channels]);
    let mut expected = vec![f32::NAN; images * channels];
    reduce_sum(&planar, &[images * channels, pixels], &mut expected, &[1, 0]);
    let mut sums = vec![f32::NAN; images * channels];
    reduce_sum(&channels_last, &[images, pixels, channels], &mut sums, &[channels, 0, 1]);
    assert_eq!(sums, expected);
    let last_channel: f32 = planar[(images * channels - 1) * pixels..].iter().sum();
    assert_eq!(sums[images * channels - 1], last_channel);
}

#[test]
fn broadcasting_binary_ops() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2x3
    let b = [10.0, 20.0]; // 2x1
    let mut out = [0.0; 6];
    binary(BinaryOp::Sub, &a, &[3, 1], &b, &[1, 0], &mut out, &[2, 3]);
    assert_eq!(out, [-9.0, -8.0, -7.0, -16.0, -15.0, -14.0]);
    binary(BinaryOp::Max, &b, &[0, 1], &a, &[0, 1], &mut out[..2], &[1, 2]);
    assert_eq!(&out[..2], &[10.0, 20.0]);
}

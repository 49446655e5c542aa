//! Runs one step of the lowered program: each step kind calls its kernels or matrix product over
//! the workspace's buffers.

use super::super::buffer::{bytes_of, halves_of, whole_lines, AlignedBuffer};
use super::super::gemm::{GemmBackend, MatMut, MatRef};
use super::super::kernels::{self, BaselineMultiplyAdd, ChannelsAlong, Epilogue, OutputEncoding};
use super::super::packed::{self, ConstSide};
use super::super::low_precision::{Encoded, LowPrecisionConst};
use super::ir::*;

/// Output columns per product call when an epilogue follows, so each block is still in L2 when the
/// epilogue runs over it.
pub(super) const EPILOGUE_BLOCK_FLOATS: usize = 64 * 1024;

impl Step {
    /// Runs the step; `multiply_add` is how the kernels' baseline variants multiply and add (the
    /// program's choice: fused in int8, whose rows must be the same bits on every CPU).
    pub(super) fn run(&self, buffers: &[AlignedBuffer], output: &mut [f32], scratch: &mut [f32], gemm: &dyn GemmBackend, multiply_add: BaselineMultiplyAdd) {
        match &self.kind {
            StepKind::Gemm { product, shape, loops, epilogue } => {
                let epilogue = epilogue.as_ref().map(|(e, along)| (e, *along));
                let mut index = vec![0usize; loops.len()];
                let count: usize = loops.iter().map(|l| l.extent).product();
                for _ in 0..count {
                    let (mut oa, mut ob, mut oc) = (0, 0, 0);
                    for (i, l) in index.iter().zip(loops) {
                        (oa, ob, oc) = (oa + i * l.a, ob + i * l.b, oc + i * l.c);
                    }
                    let s = shape;
                    match product {
                        Product::Packed { constant, activations, k_stride, index_stride } => {
                            let offset = if constant.side == ConstSide::Left { ob } else { oa };
                            let activations = &activations.slice(buffers)[offset..];
                            packed::gemm(s.m, s.k, s.n, constant, activations, *k_stride, *index_stride, &mut output[oc..], s.c_row, epilogue, scratch);
                        }
                        Product::Backend { a, b } => {
                            let (a, b) = (&a.slice(buffers)[oa..], &b.slice(buffers)[ob..]);
                            gemm_with_epilogue(gemm, s, a, b, &mut output[oc..], epilogue);
                        }
                        Product::LowPrecision { constant, activations, arrives } => {
                            let (factors, rest) = scratch.split_at_mut(constant.factor_floats());
                            let encoded = match arrives {
                                Some(OutputEncoding::U8(levels)) => Encoded::Int8(&bytes_of(activations.slice(buffers))[oa..], *levels),
                                Some(OutputEncoding::Bf16) => Encoded::Bf16(&halves_of(activations.slice(buffers))[oa..]),
                                None => constant.encode(&activations.slice(buffers)[oa..][..s.m * s.k], rest),
                            };
                            let epilogue = epilogue.map(|(e, _)| e);
                            constant.gemm(s.m, encoded, &mut output[oc..], s.c_row, epilogue, factors);
                        }
                    }
                    for axis in (0..loops.len()).rev() {
                        index[axis] += 1;
                        if index[axis] < loops[axis].extent {
                            break;
                        }
                        index[axis] = 0;
                    }
                }
            }
            StepKind::Conv { input, weights: ConvWeights::Direct(weights), images, geometry: g, epilogue } => {
                let input = input.slice(buffers);
                for image in 0..*images {
                    let out = &mut output[image * g.image_out_len..(image + 1) * g.image_out_len];
                    kernels::conv_interleaved(multiply_add, &input[image * g.image_in_len..], g.in_channels, g.strides, weights, epilogue, out, &g.window);
                }
            }
            StepKind::Conv { input, weights: ConvWeights::LowPrecision(constant), images, geometry: g, epilogue } => {
                let input = input.slice(buffers);
                let w = &g.window;
                let (factors, rest) = scratch.split_at_mut(constant.factor_floats());
                let (encoded_input, rows) = rest.split_at_mut(constant.encoded_floats(g.image_in_len));
                for image in 0..*images {
                    let encoded = constant.encode(&input[image * g.image_in_len..][..g.image_in_len], encoded_input);
                    let rows = constant.window_rows(encoded, g.in_channels, w, rows);
                    let out = &mut output[image * g.image_out_len..(image + 1) * g.image_out_len];
                    constant.gemm(w.out_height * w.out_width, rows, out, g.out_channels, Some(epilogue), factors);
                }
            }
            StepKind::Conv { input, weights, images, geometry: g, epilogue } => {
                let input = input.slice(buffers);
                let w = &g.window;
                let (pixels, field) = (w.out_height * w.out_width, g.in_channels * w.kernel_height * w.kernel_width);
                let (columns, panel) = scratch.split_at_mut(whole_lines(pixels * field));
                for image in 0..*images {
                    kernels::im2col(&input[image * g.image_in_len..], g.in_channels, g.strides, w, columns);
                    let out = &mut output[image * g.image_out_len..(image + 1) * g.image_out_len];
                    let columns = &columns[..];
                    // columns is K×P (k-major); channels first: C[O, P] = W[O, K]·cols,
                    // channels last: C[P, O] = colsᵀ·Wᵀ.
                    let (m, n, along) = match g.channels_first {
                        true => (g.out_channels, pixels, ChannelsAlong::Rows),
                        false => (pixels, g.out_channels, ChannelsAlong::Columns),
                    };
                    match weights {
                        ConvWeights::Direct(_) | ConvWeights::LowPrecision(_) => unreachable!("run above"),
                        ConvWeights::Packed(constant) => {
                            packed::gemm(m, field, n, constant, columns, pixels, 1, out, n, Some((epilogue, along)), panel)
                        }
                        ConvWeights::Plain(weights) => {
                            let (k, p) = (field as isize, pixels as isize);
                            let (shape, a, b) = match g.channels_first {
                                true => (GemmShape { m, k: field, n, a_row: k, a_col: 1, b_row: p, b_col: 1, c_row: n }, &weights[..], columns),
                                false => (GemmShape { m, k: field, n, a_row: 1, a_col: p, b_row: 1, b_col: k, c_row: n }, columns, &weights[..]),
                            };
                            gemm_with_epilogue(gemm, &shape, a, b, out, Some((epilogue, along)));
                        }
                    }
                }
            }
            StepKind::Depthwise { input, weights, images, geometry: g, epilogue, encoded_output } => {
                let input = input.slice(buffers);
                for image in 0..*images {
                    let source = &input[image * g.image_in_len..(image + 1) * g.image_in_len];
                    let out = image * g.image_out_len..(image + 1) * g.image_out_len;
                    match (encoded_output, g.channels_first) {
                        (Some(encoding), _) => {
                            kernels::depthwise_interleaved_encoded(multiply_add, source, weights, epilogue, *encoding, output, out.start, &g.window, g.in_channels)
                        }
                        (None, true) => {
                            let plane = g.image_out_len / g.out_channels;
                            kernels::depthwise_planar(multiply_add, source, weights, epilogue, &mut output[out], plane, &g.window, scratch)
                        }
                        (None, false) => kernels::depthwise_interleaved(multiply_add, source, weights, epilogue, &mut output[out], &g.window, g.in_channels),
                    }
                }
            }
            StepKind::ExpandDepthwise { expansion: e, weights, geometry: g, epilogue, band_rows, interleaved, encoded_output } => {
                let w = &g.window;
                let (channels, out_plane) = (g.in_channels, w.out_height * w.out_width);
                // The int8 or bf16 product's scratch at the end, the rest from the start.
                let low_precision_len = e.low_precision_scratch(g);
                let (scratch, low_precision_scratch) = scratch.split_at_mut(scratch.len() - low_precision_len);
                let (factors, encoded_scratch) = low_precision_scratch.split_at_mut(e.low_precision.as_ref().map_or(0, LowPrecisionConst::factor_floats));
                let (expanded, rest) = scratch.split_at_mut(whole_lines(expanded_band_len(g, *band_rows)));
                // The product's panel, then the phase planes or (interleaved) the padded band.
                let (panel, rest) = rest.split_at_mut(packed::PANEL_FLOATS);
                for image in 0..e.images {
                    let activations = &e.activations.slice(buffers)[image * e.image_stride..];
                    // Where the image's output starts, in values (an encoded output's offsets are in values too).
                    let image_out = image * g.image_out_len;
                    let encoded = e.low_precision.as_ref().map(|constant| constant.encode(&activations[..w.in_height * w.in_width * e.k], encoded_scratch));
                    for start in (0..w.out_height).step_by(*band_rows) {
                        let (band, input_rows) = w.band(start..(start + band_rows).min(w.out_height));
                        let pixels = input_rows.len() * w.in_width;
                        let band_activations = &activations[input_rows.start * w.in_width * e.index_stride..];
                        if *interleaved {
                            if let (Some(constant), Some(encoded)) = (&e.low_precision, encoded) {
                                let band_input = encoded.skip(input_rows.start * w.in_width * e.k);
                                constant.gemm(pixels, band_input, expanded, channels, e.epilogue.as_ref(), factors);
                            } else {
                                let expansion_epilogue = e.epilogue.as_ref().map(|epilogue| (epilogue, ChannelsAlong::Columns));
                                packed::gemm(pixels, e.k, channels, &e.constant, band_activations, e.k_stride, e.index_stride, expanded, channels, expansion_epilogue, panel);
                            }
                            let expanded = &expanded[..pixels * channels];
                            let (input, window) = if pads_each_band(w) {
                                let padded_window = band.padded();
                                let padded = &mut rest[..padded_window.in_height * padded_window.in_width * channels];
                                kernels::pad_interleaved(expanded, channels, &band, padded);
                                (&*padded, padded_window)
                            } else {
                                (expanded, band)
                            };
                            let first = image_out + start * w.out_width * channels;
                            match encoded_output {
                                Some(encoding) => {
                                    kernels::depthwise_interleaved_encoded(multiply_add, input, weights, epilogue, *encoding, output, first, &window, channels)
                                }
                                None => kernels::depthwise_interleaved(multiply_add, input, weights, epilogue, &mut output[first..], &window, channels),
                            }
                        } else {
                            let expansion_epilogue = e.epilogue.as_ref().map(|epilogue| (epilogue, ChannelsAlong::Rows));
                            packed::gemm(channels, e.k, pixels, &e.constant, band_activations, e.k_stride, e.index_stride, expanded, pixels, expansion_epilogue, panel);
                            let out = &mut output[image_out + start * w.out_width..];
                            kernels::depthwise_planar(multiply_add, &expanded[..channels * pixels], weights, epilogue, out, out_plane, &band, rest);
                        }
                    }
                }
            }
            StepKind::Binary { op, a, a_strides, b, b_strides, shape } => {
                kernels::binary(*op, a.slice(buffers), a_strides, b.slice(buffers), b_strides, output, shape)
            }
            StepKind::Sigmoid { input } => {
                output.copy_from_slice(input.slice(buffers));
                kernels::sigmoid(multiply_add, output);
            }
            StepKind::Concat { inputs, outer } => {
                let mut offset = 0;
                for o in 0..*outer {
                    for (input, inner) in inputs {
                        output[offset..offset + inner].copy_from_slice(&input.slice(buffers)[o * inner..(o + 1) * inner]);
                        offset += inner;
                    }
                }
            }
            StepKind::Transpose { input, strides, shape } => kernels::strided_copy(input.slice(buffers), strides, output, shape),
            StepKind::ReduceSum { input, shape, output_strides } => {
                kernels::reduce_sum(input.slice(buffers), shape, output, output_strides)
            }
        }
    }
}

/// C = A·B, in blocks of columns when an epilogue follows so that it runs on cache-resident data.
pub(super) fn gemm_with_epilogue(
    gemm: &dyn GemmBackend,
    s: &GemmShape,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    epilogue: Option<(&Epilogue, ChannelsAlong)>,
) {
    let block = match epilogue {
        Some(_) => (EPILOGUE_BLOCK_FLOATS / s.m.max(1)).max(64) / 16 * 16,
        None => s.n,
    };
    let mut start = 0;
    while start < s.n {
        let columns = block.min(s.n - start);
        let a_ref = MatRef::new(a, s.a_row, s.a_col);
        // Column `start` of B (`start` < n; the strides are never negative, so a bad one panics here).
        let b_ref = MatRef::new(&b[start * s.b_col as usize..], s.b_row, s.b_col);
        let c_mut = MatMut::new(&mut c[start..], s.c_row as isize, 1);
        // SAFETY: the lowering refused any product whose strides, over every loop iteration, reach
        // past A's or B's data (`gemm_extent` in lower.rs), and `a`, `b` start at this iteration's
        // offsets; C is this step's own output buffer, sized for the output's shape that `c_row` and
        // the columns walk, and distinct from A and B (a step never writes a buffer it reads).
        unsafe { gemm.gemm(s.m, s.k, columns, a_ref, b_ref, c_mut) };
        if let Some((epilogue, along)) = epilogue {
            kernels::apply_epilogue(c, s.m, s.c_row, start..start + columns, epilogue, along);
        }
        start += columns;
    }
}

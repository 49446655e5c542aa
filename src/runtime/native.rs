//! The native executor: tract loads, types and declutters an ONNX graph (folding batch norms and
//! constants, turning 1x1 convolutions into matrix products), and this module lowers the result into
//! a flat list of steps over our own kernels — GEMM with fused bias+clamp epilogues, depthwise,
//! direct and im2col convolutions, element-wise ops — with every intermediate tensor assigned ahead
//! of time to a reusable buffer. A 1x1 expansion and the depthwise convolution it alone feeds become
//! one step, run band by band so the expanded channels stay in cache, channels-last where the
//! channels come in groups of 16; the tensors between blocks are channels-last wherever every
//! reader takes them so. A graph with anything outside that subset is refused with the reason, and
//! the caller runs it on tract instead.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, Reducer};
use tract_onnx::tract_core::ops::source::TypedSource;

use super::buffer::{whole_lines, AlignedBuffer};
use super::gemm::{GemmBackend, MatMut, MatRef};
use super::kernels::{self, BinaryOp, ChannelsAlong, Epilogue, ImageStrides, Window};
use super::packed::{self, ConstSide, PackedConst};
use super::quantized::{self, Levels, QuantizedConst};
use crate::config::Precision;

/// Why a graph cannot run natively (it then runs on tract).
pub type Unsupported = String;

/// A lowered model, ready to run from any number of threads at once.
#[derive(Debug)]
pub struct NativeModel {
    input_len: usize,
    input_buffer: usize,
    steps: Vec<Step>,
    outputs: Vec<Operand>,
    buffer_sizes: Vec<usize>,
    scratch_len: usize,
    gemm: Box<dyn GemmBackend>,
    /// Buffers of finished runs, kept for the next: a run allocates nothing once warm.
    workspaces: Mutex<Vec<Workspace>>,
}

#[derive(Debug)]
struct Workspace {
    buffers: Vec<AlignedBuffer>,
    /// im2col columns and depthwise phase planes.
    scratch: AlignedBuffer,
}

/// A tensor a step reads: an intermediate buffer (by id, with its length) or a constant.
#[derive(Debug, Clone)]
enum Operand {
    Buffer { id: usize, len: usize },
    Const(Arc<Vec<f32>>),
}

impl Operand {
    fn slice<'a>(&'a self, buffers: &'a [AlignedBuffer]) -> &'a [f32] {
        match self {
            Operand::Buffer { id, len } => &buffers[*id][..*len],
            Operand::Const(values) => values,
        }
    }
}

#[derive(Debug)]
struct Step {
    kind: StepKind,
    output: usize,
    output_len: usize,
}

#[derive(Debug)]
enum StepKind {
    /// C = A·B for every index of `loops`, then the epilogue.
    Gemm { product: Product, shape: GemmShape, loops: Vec<Loop>, epilogue: Option<(Epilogue, ChannelsAlong)> },
    /// A dense convolution: im2col per image, then one product with the kernel.
    Conv { input: Operand, weights: ConvWeights, images: usize, geometry: ConvGeometry, epilogue: Epilogue },
    /// `quantized_output`: see [`quantize_depthwise_outputs`] (also for the next variant).
    Depthwise { input: Operand, weights: Vec<f32>, images: usize, geometry: ConvGeometry, epilogue: Epilogue, quantized_output: Option<Levels> },
    /// A 1x1 expansion and the channels-first depthwise convolution it alone feeds (MobileNet's
    /// inverted residual), image by image, `band_rows` output rows at a time: the expanded
    /// channels of a band stay in L2, where the whole expanded tensor (up to 8.6 MB in the SSD)
    /// would be written to memory and read back. `interleaved`: the band is expanded channels-last
    /// and the depthwise output stays so (see [`interleave_expansions`]); else both are channels
    /// first, with the depthwise weights [C][KH·KW] rather than tap-major.
    ExpandDepthwise {
        expansion: Expansion,
        weights: Vec<f32>,
        geometry: ConvGeometry,
        epilogue: Epilogue,
        band_rows: usize,
        interleaved: bool,
        quantized_output: Option<Levels>,
    },
    Binary { op: BinaryOp, a: Operand, a_strides: Vec<usize>, b: Operand, b_strides: Vec<usize>, shape: Vec<usize> },
    Sigmoid { input: Operand },
    Concat { inputs: Vec<(Operand, usize)>, outer: usize },
    Transpose { input: Operand, strides: Vec<usize>, shape: Vec<usize> },
    ReduceSum { input: Operand, shape: Vec<usize>, output_strides: Vec<usize> },
}

/// How a matrix product runs: the packed AVX-512 product when one operand is constant weights and the
/// CPU has AVX-512, else the configured GEMM backend.
#[derive(Debug)]
enum Product {
    Packed { constant: PackedConst, activations: Operand, k_stride: usize, index_stride: usize },
    /// C[pixels, channels] = X·W in int8 (see [`quantize_products`]): X, channels-last, is
    /// quantised into the scratch first, or arrives quantised with `levels` (see
    /// [`quantize_depthwise_outputs`]).
    Quantized { constant: QuantizedConst, activations: Operand, levels: Option<Levels> },
    Backend { a: Operand, b: Operand },
}

/// The packed product C[m, pixels] = W[m, k]·X[k, pixels] (+ epilogue along C's rows) of an
/// [`StepKind::ExpandDepthwise`], or its transpose C[pixels, m] with W packed on the right when the
/// step is interleaved.
#[derive(Debug)]
struct Expansion {
    constant: PackedConst,
    activations: Operand,
    k_stride: usize,
    index_stride: usize,
    k: usize,
    epilogue: Option<Epilogue>,
    /// Images in the batch, and the distance between two images' activations.
    images: usize,
    image_stride: usize,
    /// The weights in int8 when the product runs so ([`quantize_products`]).
    quantized: Option<QuantizedConst>,
}

impl Expansion {
    /// Scratch floats the int8 product needs: its column factors and one image's quantised input.
    fn quantized_scratch(&self, geometry: &ConvGeometry) -> usize {
        let pixels = geometry.window.in_height * geometry.window.in_width;
        self.quantized.as_ref().map_or(0, |q| q.scratch_floats() + (pixels * self.k).div_ceil(4))
    }
}

/// A dense convolution's kernel as the product wants it.
#[derive(Debug)]
enum ConvWeights {
    Packed(PackedConst),
    /// OIHW, i.e. row-major O×K.
    Plain(Arc<Vec<f32>>),
    /// Tap-major ([KH·KW][I][O]) for [`kernels::conv_interleaved`]: stems (RGB in, channels-last out).
    Direct(Vec<f32>),
    /// int8, channels-last in and out ([`quantize_products`]): each output pixel's window gathered as
    /// one row of (tap, channel) u8 values, times the weights with their depth in that order.
    Quantized(QuantizedConst),
}

/// One matrix product's sizes and strides (C's column stride is always 1).
#[derive(Debug, Clone, Copy)]
struct GemmShape {
    m: usize,
    k: usize,
    n: usize,
    a_row: isize,
    a_col: isize,
    b_row: isize,
    b_col: isize,
    c_row: usize,
}

/// An axis the product is repeated along, with its stride in A, B and C.
#[derive(Debug, Clone, Copy)]
struct Loop {
    extent: usize,
    a: usize,
    b: usize,
    c: usize,
}

#[derive(Debug, Clone, Copy)]
struct ConvGeometry {
    window: Window,
    in_channels: usize,
    out_channels: usize,
    image_in_len: usize,
    image_out_len: usize,
    strides: ImageStrides,
    channels_first: bool,
}

/// Expanded values per band of an [`StepKind::ExpandDepthwise`]: most of a 1 MiB L2, beside the
/// depthwise kernel's phase planes and the product's activation panel.
const BAND_FLOATS: usize = 160 * 1024;

/// An expansion up to this size (1 MiB, what L2 holds) runs in one band: cutting it would recompute
/// the bands' overlapping rows and save no trip to memory.
const WHOLE_EXPANSION_FLOATS: usize = 256 * 1024;

/// Output columns per product call when an epilogue follows, so each block is still in L2 when the
/// epilogue runs over it.
const EPILOGUE_BLOCK_FLOATS: usize = 64 * 1024;

impl NativeModel {
    /// Lowers a decluttered, fully typed graph with one image input of concrete shape, in
    /// `precision` where the CPU runs it.
    pub fn lower(model: &TypedModel, gemm: Box<dyn GemmBackend>, precision: Precision) -> Result<NativeModel, Unsupported> {
        let packs = gemm.packs_constants() && packed::available();
        let mut lowering =
            Lowering { model, packs, values: Default::default(), buffers: Vec::new(), steps: Vec::new(), fused: Default::default() };
        let inputs = model.input_outlets().map_err(|e| e.to_string())?;
        if inputs.len() != 1 {
            return Err(format!("{} inputs (the executor takes one image input)", inputs.len()));
        }
        let order = model.eval_order().map_err(|e| e.to_string())?;
        for id in order {
            if !lowering.fused.contains(&id) {
                lowering.lower_node(model.node(id))?;
            }
        }
        let outputs = model
            .output_outlets()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|&outlet| lowering.value(outlet).map(|v| v.operand))
            .collect::<Result<Vec<_>, _>>()?;
        let input = lowering.value(inputs[0])?;
        let Operand::Buffer { id: input_logical, len: input_len } = input.operand else {
            return Err("the input is a constant".into());
        };
        let mut steps = fuse_expansions(lowering.steps, &outputs);
        interleave_expansions(&mut steps, &outputs);
        channels_last_activations(&mut steps, &outputs);
        if precision == Precision::Int8 && quantized::available() {
            quantize_products(&mut steps);
            quantize_depthwise_outputs(&mut steps, &outputs);
        }
        let scratch_len = steps.iter().map(Step::scratch_len).max().unwrap_or(0);
        let (steps, outputs, buffer_sizes, input_buffer) = allocate(steps, outputs, &lowering.buffers, input_logical);
        Ok(NativeModel {
            input_len,
            input_buffer,
            steps,
            outputs,
            buffer_sizes,
            scratch_len,
            gemm,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The GEMM backend's name, for logs.
    pub fn gemm_name(&self) -> &'static str {
        self.gemm.name()
    }

    /// Whether some of its products run in int8 ([`quantize_products`]), for logs.
    pub fn runs_int8(&self) -> bool {
        self.steps.iter().any(|step| match &step.kind {
            StepKind::Gemm { product: Product::Quantized { .. }, .. } => true,
            StepKind::ExpandDepthwise { expansion, .. } => expansion.quantized.is_some(),
            StepKind::Conv { weights: ConvWeights::Quantized(_), .. } => true,
            _ => false,
        })
    }

    /// Bytes of intermediate buffers one concurrent run holds.
    pub fn workspace_bytes(&self) -> usize {
        (self.buffer_sizes.iter().sum::<usize>() + self.scratch_len) * 4
    }

    /// The number of values output `index` holds.
    pub fn output_len(&self, index: usize) -> Option<usize> {
        self.outputs.get(index).map(operand_len)
    }

    /// Runs the model on the input `fill_input` writes (row-major, the input's shape, as f32, straight
    /// into the input buffer) and returns every output.
    pub fn run(&self, fill_input: impl FnOnce(&mut [f32])) -> Vec<Vec<f32>> {
        let mut workspace = self.workspaces.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_else(|| Workspace {
            buffers: self.buffer_sizes.iter().map(|&n| AlignedBuffer::zeroed(n)).collect(),
            scratch: AlignedBuffer::zeroed(self.scratch_len),
        });
        fill_input(&mut workspace.buffers[self.input_buffer][..self.input_len]);
        for step in &self.steps {
            let mut output = std::mem::take(&mut workspace.buffers[step.output]);
            step.run(&workspace.buffers, &mut output[..step.output_len], &mut workspace.scratch, self.gemm.as_ref());
            workspace.buffers[step.output] = output;
        }
        let results = self.outputs.iter().map(|o| o.slice(&workspace.buffers).to_vec()).collect();
        self.workspaces.lock().unwrap_or_else(|e| e.into_inner()).push(workspace);
        results
    }
}

impl Step {
    fn scratch_len(&self) -> usize {
        match &self.kind {
            StepKind::Conv { weights: ConvWeights::Direct(_), .. } => 0,
            StepKind::Conv { weights: ConvWeights::Quantized(constant), geometry: g, .. } => {
                let w = &g.window;
                let rows = w.out_height * w.out_width * g.in_channels * w.kernel_height * w.kernel_width;
                constant.scratch_floats() + (g.image_in_len + rows).div_ceil(4)
            }
            StepKind::Conv { geometry, .. } => {
                let w = &geometry.window;
                whole_lines(w.out_height * w.out_width * geometry.in_channels * w.kernel_height * w.kernel_width) + packed::PANEL_FLOATS
            }
            StepKind::Gemm { product: Product::Packed { .. }, .. } => packed::PANEL_FLOATS,
            StepKind::Gemm { product: Product::Quantized { constant, .. }, shape, .. } => constant.scratch_floats() + (shape.m * shape.k).div_ceil(4),
            StepKind::Depthwise { geometry, .. } if geometry.channels_first => {
                geometry.window.planar_scratch_len()
            }
            StepKind::ExpandDepthwise { expansion, geometry: g, band_rows, interleaved: true, .. } => {
                // Later bands are no taller than the first once padded.
                let padded = g.window.band(0..*band_rows).0.padded();
                let padded_len = if pads(&g.window) { padded.in_height * padded.in_width * g.in_channels } else { 0 };
                whole_lines(expanded_band_len(g, *band_rows)) + packed::PANEL_FLOATS + padded_len + expansion.quantized_scratch(g)
            }
            StepKind::ExpandDepthwise { geometry: g, band_rows, interleaved: false, .. } => {
                // Bands after the first may be as tall, but never need more phase-plane room.
                whole_lines(expanded_band_len(g, *band_rows)) + packed::PANEL_FLOATS + g.window.band(0..*band_rows).0.planar_scratch_len()
            }
            _ => 0,
        }
    }

    fn operands_mut(&mut self) -> Vec<&mut Operand> {
        match &mut self.kind {
            StepKind::Gemm { product: Product::Backend { a, b }, .. } | StepKind::Binary { a, b, .. } => vec![a, b],
            StepKind::Gemm { product: Product::Packed { activations, .. } | Product::Quantized { activations, .. }, .. } => vec![activations],
            StepKind::ExpandDepthwise { expansion, .. } => vec![&mut expansion.activations],
            StepKind::Conv { input, .. }
            | StepKind::Depthwise { input, .. }
            | StepKind::Sigmoid { input }
            | StepKind::Transpose { input, .. }
            | StepKind::ReduceSum { input, .. } => vec![input],
            StepKind::Concat { inputs, .. } => inputs.iter_mut().map(|(operand, _)| operand).collect(),
        }
    }

    fn run(&self, buffers: &[AlignedBuffer], output: &mut [f32], scratch: &mut [f32], gemm: &dyn GemmBackend) {
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
                        Product::Quantized { constant, activations, levels } => {
                            let (factors, rest) = scratch.split_at_mut(constant.scratch_floats());
                            let (bytes, levels) = match levels {
                                Some(levels) => (&quantized::bytes_of(activations.slice(buffers))[oa..], *levels),
                                None => {
                                    let bytes = quantized::as_bytes(rest);
                                    let levels = quantized::quantize(&activations.slice(buffers)[oa..][..s.m * s.k], bytes);
                                    (&*bytes, levels)
                                }
                            };
                            let epilogue = epilogue.map(|(e, _)| e);
                            quantized::gemm(s.m, constant, bytes, levels, &mut output[oc..], s.c_row, epilogue, factors);
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
                    kernels::conv_interleaved(&input[image * g.image_in_len..], g.in_channels, g.strides, weights, epilogue, out, &g.window);
                }
            }
            StepKind::Conv { input, weights: ConvWeights::Quantized(constant), images, geometry: g, epilogue } => {
                let input = input.slice(buffers);
                let w = &g.window;
                let (factors, rest) = scratch.split_at_mut(constant.scratch_floats());
                let (quantized_input, rows) = quantized::as_bytes(rest).split_at_mut(g.image_in_len);
                for image in 0..*images {
                    let levels = quantized::quantize(&input[image * g.image_in_len..][..g.image_in_len], quantized_input);
                    quantized::window_rows(quantized_input, g.in_channels, w, levels.zero as u8, rows);
                    let out = &mut output[image * g.image_out_len..(image + 1) * g.image_out_len];
                    quantized::gemm(w.out_height * w.out_width, constant, rows, levels, out, g.out_channels, Some(epilogue), factors);
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
                        ConvWeights::Direct(_) | ConvWeights::Quantized(_) => unreachable!("run above"),
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
            StepKind::Depthwise { input, weights, images, geometry: g, epilogue, quantized_output } => {
                let input = input.slice(buffers);
                for image in 0..*images {
                    let source = &input[image * g.image_in_len..(image + 1) * g.image_in_len];
                    let out = image * g.image_out_len..(image + 1) * g.image_out_len;
                    match (quantized_output, g.channels_first) {
                        (Some(levels), _) => {
                            let out = &mut quantized::as_bytes(output)[out];
                            kernels::depthwise_interleaved_quantized(source, weights, epilogue, *levels, out, &g.window, g.in_channels)
                        }
                        (None, true) => {
                            let plane = g.image_out_len / g.out_channels;
                            kernels::depthwise_planar(source, weights, epilogue, &mut output[out], plane, &g.window, scratch)
                        }
                        (None, false) => kernels::depthwise_interleaved(source, weights, epilogue, &mut output[out], &g.window, g.in_channels),
                    }
                }
            }
            StepKind::ExpandDepthwise { expansion: e, weights, geometry: g, epilogue, band_rows, interleaved, quantized_output } => {
                let w = &g.window;
                let (channels, out_plane) = (g.in_channels, w.out_height * w.out_width);
                // The int8 product's scratch at the end, the rest from the start.
                let quantized_len = e.quantized_scratch(g);
                let (scratch, quantized_scratch) = scratch.split_at_mut(scratch.len() - quantized_len);
                let (factors, quantized_bytes) = quantized_scratch.split_at_mut(e.quantized.as_ref().map_or(0, QuantizedConst::scratch_floats));
                let quantized_input = quantized::as_bytes(quantized_bytes);
                let (expanded, rest) = scratch.split_at_mut(whole_lines(expanded_band_len(g, *band_rows)));
                // The product's panel, then the phase planes or (interleaved) the padded band.
                let (panel, rest) = rest.split_at_mut(packed::PANEL_FLOATS);
                for image in 0..e.images {
                    let activations = &e.activations.slice(buffers)[image * e.image_stride..];
                    // Where the image's output starts, in values (or bytes, when it is quantised).
                    let image_out = image * g.image_out_len;
                    let levels = e.quantized.as_ref().map(|_| quantized::quantize(&activations[..w.in_height * w.in_width * e.k], quantized_input));
                    for start in (0..w.out_height).step_by(*band_rows) {
                        let (band, input_rows) = w.band(start..(start + band_rows).min(w.out_height));
                        let pixels = input_rows.len() * w.in_width;
                        let band_activations = &activations[input_rows.start * w.in_width * e.index_stride..];
                        if *interleaved {
                            if let (Some(constant), Some(levels)) = (&e.quantized, levels) {
                                let band_input = &quantized_input[input_rows.start * w.in_width * e.k..];
                                quantized::gemm(pixels, constant, band_input, levels, expanded, channels, e.epilogue.as_ref(), factors);
                            } else {
                                let expansion_epilogue = e.epilogue.as_ref().map(|epilogue| (epilogue, ChannelsAlong::Columns));
                                packed::gemm(pixels, e.k, channels, &e.constant, band_activations, e.k_stride, e.index_stride, expanded, channels, expansion_epilogue, panel);
                            }
                            let expanded = &expanded[..pixels * channels];
                            let (input, window) = if pads(w) {
                                let padded_window = band.padded();
                                let padded = &mut rest[..padded_window.in_height * padded_window.in_width * channels];
                                kernels::pad_interleaved(expanded, channels, &band, padded);
                                (&*padded, padded_window)
                            } else {
                                (expanded, band)
                            };
                            let first = image_out + start * w.out_width * channels;
                            match quantized_output {
                                Some(levels) => {
                                    let out = &mut quantized::as_bytes(output)[first..];
                                    kernels::depthwise_interleaved_quantized(input, weights, epilogue, *levels, out, &window, channels)
                                }
                                None => kernels::depthwise_interleaved(input, weights, epilogue, &mut output[first..], &window, channels),
                            }
                        } else {
                            let expansion_epilogue = e.epilogue.as_ref().map(|epilogue| (epilogue, ChannelsAlong::Rows));
                            packed::gemm(channels, e.k, pixels, &e.constant, band_activations, e.k_stride, e.index_stride, expanded, pixels, expansion_epilogue, panel);
                            let out = &mut output[image_out + start * w.out_width..];
                            kernels::depthwise_planar(&expanded[..channels * pixels], weights, epilogue, out, out_plane, &band, rest);
                        }
                    }
                }
            }
            StepKind::Binary { op, a, a_strides, b, b_strides, shape } => {
                kernels::binary(*op, a.slice(buffers), a_strides, b.slice(buffers), b_strides, output, shape)
            }
            StepKind::Sigmoid { input } => {
                output.copy_from_slice(input.slice(buffers));
                kernels::sigmoid(output);
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
fn gemm_with_epilogue(
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
        let a_ref = MatRef { ptr: a.as_ptr(), row_stride: s.a_row, col_stride: s.a_col };
        // SAFETY: `start` < n, so the offset stays inside B (the lowering checked B's extent).
        let b_ref = MatRef { ptr: unsafe { b.as_ptr().offset(start as isize * s.b_col) }, row_stride: s.b_row, col_stride: s.b_col };
        let c_mut = MatMut { ptr: c[start..].as_mut_ptr(), row_stride: s.c_row as isize, col_stride: 1 };
        // SAFETY: the lowering checked that every element these strides address lies inside the
        // operands (`check_extent`); C is this step's own buffer, distinct from A and B.
        unsafe { gemm.gemm(s.m, s.k, columns, a_ref, b_ref, c_mut) };
        if let Some((epilogue, along)) = epilogue {
            kernels::apply_epilogue(c, s.m, s.c_row, start..start + columns, epilogue, along);
        }
        start += columns;
    }
}

/// A graph value during lowering: what holds it and its shape.
#[derive(Debug, Clone)]
struct Value {
    operand: Operand,
    shape: Vec<usize>,
}

struct Lowering<'m> {
    model: &'m TypedModel,
    /// Whether products with constant weights use the packed AVX-512 product.
    packs: bool,
    values: HashMap<OutletId, Value>,
    /// Logical buffer sizes, one per value a step writes.
    buffers: Vec<usize>,
    steps: Vec<Step>,
    /// Nodes folded into an earlier step's epilogue.
    fused: std::collections::HashSet<usize>,
}

impl Lowering<'_> {
    fn value(&self, outlet: OutletId) -> Result<Value, Unsupported> {
        if let Some(value) = self.values.get(&outlet) {
            return Ok(value.clone());
        }
        let fact = self.model.outlet_fact(outlet).map_err(|e| e.to_string())?;
        let Some(konst) = &fact.konst else {
            return Err(format!("no value for {outlet:?}"));
        };
        let values = konst.cast_to::<f32>().map_err(|e| e.to_string())?;
        let values = values.try_as_plain_ram().and_then(|v| Ok(v.as_slice::<f32>()?.to_vec())).map_err(|e| e.to_string())?;
        Ok(Value { operand: Operand::Const(Arc::new(values)), shape: konst.shape().to_vec() })
    }

    fn constant(&self, outlet: OutletId) -> Option<Value> {
        self.model.outlet_fact(outlet).ok()?.konst.as_ref()?;
        self.value(outlet).ok()
    }

    fn shape(&self, outlet: OutletId) -> Result<Vec<usize>, Unsupported> {
        let fact = self.model.outlet_fact(outlet).map_err(|e| e.to_string())?;
        match fact.shape.as_concrete() {
            Some(shape) => Ok(shape.to_vec()),
            None => Err(format!("symbolic shape {:?}", fact.shape)),
        }
    }

    /// Adds a step writing a new buffer for `outlet`.
    fn emit(&mut self, outlet: OutletId, kind: StepKind) -> Result<(), Unsupported> {
        let shape = self.shape(outlet)?;
        let len = shape.iter().product();
        let id = self.buffers.len();
        self.buffers.push(len);
        self.steps.push(Step { kind, output: id, output_len: len });
        self.values.insert(outlet, Value { operand: Operand::Buffer { id, len }, shape });
        Ok(())
    }

    /// The same data under another shape (reshapes, added or removed unit axes).
    fn alias(&mut self, outlet: OutletId, source: Value) -> Result<(), Unsupported> {
        let shape = self.shape(outlet)?;
        self.values.insert(outlet, Value { operand: source.operand, shape });
        Ok(())
    }

    fn lower_node(&mut self, node: &TypedNode) -> Result<(), Unsupported> {
        let out = OutletId::new(node.id, 0);
        let unsupported = || format!("node {:?} ({}) is outside the native subset: {:?}", node.name, node.op.name(), node.op);
        let inputs: Vec<OutletId> = node.inputs.clone();
        if node.op_is::<TypedSource>() {
            let fact = self.model.outlet_fact(out).map_err(|e| e.to_string())?;
            if !matches!(fact.datum_type, DatumType::F32 | DatumType::U8) {
                return Err(format!("input of type {:?}", fact.datum_type));
            }
            let shape = self.shape(out)?;
            let len = shape.iter().product();
            let id = self.buffers.len();
            self.buffers.push(len);
            self.values.insert(out, Value { operand: Operand::Buffer { id, len }, shape });
            return Ok(());
        }
        if node.op_is::<Const>() {
            return Ok(()); // read through the consumer's input fact
        }
        if let Some(cast) = node.op_as::<Cast>() {
            // Every value is held as f32, and u8 values are exact in f32.
            let from = self.model.outlet_fact(inputs[0]).map_err(|e| e.to_string())?.datum_type;
            if cast.to == DatumType::F32 && matches!(from, DatumType::U8 | DatumType::F32) {
                let source = self.value(inputs[0])?;
                return self.alias(out, source);
            }
            return Err(unsupported());
        }
        if let Some(axis_op) = node.op_as::<AxisOp>() {
            let source = self.value(inputs[0])?;
            return match axis_op {
                AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..) => self.alias(out, source),
                AxisOp::Move(from, to) => {
                    let mut permutation: Vec<usize> = (0..source.shape.len()).collect();
                    let axis = permutation.remove(*from);
                    permutation.insert(*to, axis);
                    let in_strides = row_major_strides(&source.shape);
                    let strides = permutation.iter().map(|&p| in_strides[p]).collect();
                    let shape = self.shape(out)?;
                    self.emit(out, StepKind::Transpose { input: source.operand, strides, shape })
                }
            };
        }
        if let Some(binary) = node.op_as::<TypedBinOp>() {
            let op = match binary.0.name() {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                "Div" => BinaryOp::Div,
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                _ => return Err(unsupported()),
            };
            if binary.1.is_some() || self.model.outlet_fact(out).map_err(|e| e.to_string())?.datum_type != DatumType::F32 {
                return Err(unsupported());
            }
            let (a, b) = (self.value(inputs[0])?, self.value(inputs[1])?);
            let shape = self.shape(out)?;
            let a_strides = broadcast_strides(&a.shape, &shape).ok_or_else(unsupported)?;
            let b_strides = broadcast_strides(&b.shape, &shape).ok_or_else(unsupported)?;
            let (shape, mut strides) = coalesce(&shape, &[&a_strides, &b_strides, &row_major_strides(&shape)]);
            let (b_strides, a_strides) = (strides.swap_remove(1), strides.swap_remove(0));
            return self.emit(out, StepKind::Binary { op, a: a.operand, a_strides, b: b.operand, b_strides, shape });
        }
        if let Some(element_wise) = node.op_as::<ElementWiseOp>() {
            if element_wise.0.name() == "Sigmoid" && element_wise.1.is_none() {
                let input = self.value(inputs[0])?;
                return self.emit(out, StepKind::Sigmoid { input: input.operand });
            }
            return Err(unsupported());
        }
        if let Some(concat) = node.op_as::<TypedConcat>() {
            let shape = self.shape(out)?;
            let outer = shape[..concat.axis].iter().product();
            let inputs = inputs
                .iter()
                .map(|&i| self.value(i).map(|v| (v.operand, v.shape[concat.axis..].iter().product())))
                .collect::<Result<Vec<_>, _>>()?;
            return self.emit(out, StepKind::Concat { inputs, outer });
        }
        if let Some(reduce) = node.op_as::<Reduce>() {
            if !matches!(reduce.reducer, Reducer::Sum) || self.model.outlet_fact(out).map_err(|e| e.to_string())?.datum_type != DatumType::F32 {
                return Err(unsupported());
            }
            let input = self.value(inputs[0])?;
            let mut output_strides = row_major_strides(&self.shape(out)?);
            for &axis in &reduce.axes {
                output_strides[axis] = 0;
            }
            let (shape, mut strides) = coalesce(&input.shape, &[&row_major_strides(&input.shape), &output_strides]);
            let output_strides = strides.swap_remove(1);
            return self.emit(out, StepKind::ReduceSum { input: input.operand, shape, output_strides });
        }
        if let Some(einsum) = node.op_as::<EinSum>() {
            return self.lower_einsum(node, einsum).map_err(|why| format!("{}: {why}", unsupported()));
        }
        if let Some(conv) = node.op_as::<Conv>() {
            return self.lower_conv(node, conv).map_err(|why| format!("{}: {why}", unsupported()));
        }
        Err(unsupported())
    }

    /// Follows `outlet`'s single consumers while they are a per-channel constant add (along `channel_axis`
    /// of a tensor of `shape`) or a clamp by a scalar constant, folds them into `epilogue`, marks them
    /// fused and returns the last outlet folded.
    fn fuse_epilogue(&mut self, mut outlet: OutletId, shape: &[usize], channel_axis: usize, epilogue: &mut Epilogue) -> OutletId {
        let model = self.model;
        let outputs = model.output_outlets().map(|o| o.to_vec()).unwrap_or_default();
        let mut clamped = false;
        loop {
            let successors = model.outlet_successors(outlet);
            if successors.len() != 1 || outputs.contains(&outlet) {
                return outlet;
            }
            let next = model.node(successors[0].node);
            let Some(binary) = next.op_as::<TypedBinOp>() else { return outlet };
            let other = next.inputs[1 - successors[0].slot];
            let Some(constant) = self.constant(other) else { return outlet };
            let Operand::Const(values) = &constant.operand else { return outlet };
            if binary.1.is_some() || self.shape(OutletId::new(next.id, 0)).ok().as_deref() != Some(shape) {
                return outlet;
            }
            match binary.0.name() {
                "Add" if !clamped => {
                    let Some(strides) = broadcast_strides(&constant.shape, shape) else { return outlet };
                    let per_channel = strides.iter().enumerate().all(|(axis, &s)| s == 0 || axis == channel_axis);
                    if !per_channel {
                        return outlet;
                    }
                    for (c, bias) in epilogue.bias.iter_mut().enumerate() {
                        *bias += values[c * strides[channel_axis]];
                    }
                }
                "Max" if values.len() == 1 && epilogue.high == f32::INFINITY => {
                    epilogue.low = epilogue.low.max(values[0]);
                    clamped = true;
                }
                "Min" if values.len() == 1 && values[0] >= epilogue.low => {
                    epilogue.high = epilogue.high.min(values[0]);
                    clamped = true;
                }
                _ => return outlet,
            }
            self.fused.insert(next.id);
            outlet = OutletId::new(next.id, 0);
        }
    }

    fn lower_einsum(&mut self, node: &TypedNode, einsum: &EinSum) -> Result<(), Unsupported> {
        if einsum.q_params.is_some() || einsum.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
            return Err("quantised or not a product of two f32 tensors".into());
        }
        let (x, y) = (self.value(node.inputs[0])?, self.value(node.inputs[1])?);
        let out = OutletId::new(node.id, 0);
        let c_shape = self.shape(out)?;
        let strides = [row_major_strides(&x.shape), row_major_strides(&y.shape), row_major_strides(&c_shape)];
        let shapes = [&x.shape, &y.shape, &c_shape];
        // Every axis, with its extent and its stride in x, y and C (None where absent).
        let mut axes = Vec::new();
        for axis in einsum.axes.iter_all_axes() {
            let position = |slots: &TVec<TVec<usize>>, i: usize| -> Result<Option<usize>, Unsupported> {
                match slots.get(i).map(|p| p.len()).unwrap_or(0) {
                    0 => Ok(None),
                    1 => Ok(Some(slots[i][0])),
                    _ => Err(format!("axis {} repeats (a diagonal)", axis.repr)),
                }
            };
            let at = [position(&axis.inputs, 0)?, position(&axis.inputs, 1)?, position(&axis.outputs, 0)?];
            let extents: Vec<usize> = at.iter().zip(shapes).filter_map(|(p, s)| p.map(|p| s[p])).collect();
            if extents.windows(2).any(|pair| pair[0] != pair[1]) {
                return Err(format!("axis {} is broadcast ({extents:?})", axis.repr));
            }
            let extent = extents.first().copied().unwrap_or(1);
            if extent == 1 {
                continue; // unit axes change no offsets
            }
            let stride = |t: usize| at[t].map(|p| strides[t][p]);
            axes.push((at, extent, [stride(0), stride(1), stride(2)]));
        }
        let group = |x_in: bool, y_in: bool, c_in: bool| -> Vec<(usize, [usize; 3], Option<usize>)> {
            axes.iter()
                .filter(|(at, ..)| at[0].is_some() == x_in && at[1].is_some() == y_in && at[2].is_some() == c_in)
                .map(|(at, extent, s)| (*extent, [s[0].unwrap_or(0), s[1].unwrap_or(0), s[2].unwrap_or(0)], at[2]))
                .collect()
        };
        if axes.iter().any(|(at, ..)| at.iter().filter(|p| p.is_some()).count() == 1) {
            return Err("an axis summed within one operand".into());
        }
        let mut loops: Vec<Loop> = group(true, true, true).into_iter().map(|(extent, s, _)| Loop { extent, a: s[0], b: s[1], c: s[2] }).collect();
        // m: free axes of x, n: free axes of y (ordered as in C), k: contracted (ordered as in x).
        let by_c_position = |mut g: Vec<(usize, [usize; 3], Option<usize>)>, loops: &mut Vec<Loop>, tensors: [usize; 2]| {
            g.sort_by_key(|(_, _, c_at)| *c_at);
            let (extent, s, rest) = merge_suffix(&g, tensors);
            loops.extend(rest.into_iter().map(|(extent, s, _)| Loop { extent, a: s[0], b: s[1], c: s[2] }));
            (extent, s)
        };
        let (m, m_strides) = by_c_position(group(true, false, true), &mut loops, [0, 2]);
        let (n, n_strides) = by_c_position(group(false, true, true), &mut loops, [1, 2]);
        let mut k_axes = group(true, true, false);
        k_axes.sort_by_key(|(_, s, _)| std::cmp::Reverse(s[0]));
        let (k, k_strides, k_rest) = merge_suffix(&k_axes, [0, 1]);
        if !k_rest.is_empty() {
            return Err("contracted axes that do not merge into one".into());
        }
        if axes.iter().any(|(_, extent, _)| *extent == 0) {
            return Err("an empty axis".into());
        }
        // C = x[m, k] · y[k, n]; make C's column stride 1, transposing the problem if need be.
        let (c_row, c_col) = (m_strides[2], n_strides[2]);
        let (a, b, shape, channel_dim_is_row);
        if c_col == 1 || n == 1 {
            (a, b) = (x.operand, y.operand);
            shape = GemmShape { m, k, n, a_row: m_strides[0] as isize, a_col: k_strides[0] as isize, b_row: k_strides[1] as isize, b_col: n_strides[1] as isize, c_row };
            channel_dim_is_row = false;
        } else if c_row == 1 || m == 1 {
            (a, b) = (y.operand, x.operand);
            shape = GemmShape { m: n, k, n: m, a_row: n_strides[1] as isize, a_col: k_strides[1] as isize, b_row: k_strides[0] as isize, b_col: m_strides[0] as isize, c_row: c_col };
            channel_dim_is_row = true;
            for l in &mut loops {
                std::mem::swap(&mut l.a, &mut l.b);
            }
        } else {
            return Err("no unit stride in the output".into());
        }
        let shape = GemmShape { c_row: if shape.m == 1 { shape.n } else { shape.c_row }, ..shape };
        for (operand, extent) in [(&a, gemm_extent(shape.m, shape.k, shape.a_row, shape.a_col, &loops, |l| l.a)), (&b, gemm_extent(shape.k, shape.n, shape.b_row, shape.b_col, &loops, |l| l.b))] {
            if extent > operand_len(operand) {
                return Err("operand strides reach past its data".into());
            }
        }
        // A bias along the output axis that is the whole of y's free group (the output channels).
        let mut epilogue = None;
        let y_free: Vec<_> = axes.iter().filter(|(at, ..)| at[0].is_none() && at[1].is_some() && at[2].is_some()).collect();
        let channel_axis = match y_free.as_slice() {
            [(at, extent, _)] if *extent == n => at[2],
            _ => None,
        };
        let mut last = out;
        if let Some(channel_axis) = channel_axis {
            let mut e = Epilogue::new(n);
            last = self.fuse_epilogue(out, &c_shape, channel_axis, &mut e);
            if last != out {
                let along = if channel_dim_is_row { ChannelsAlong::Rows } else { ChannelsAlong::Columns };
                epilogue = Some((e, along));
            }
        }
        // Constant weights on either side go to the packed product (when this CPU runs it), with
        // activations that run along either of their axes with a unit stride.
        let unit_stride = |k_stride: isize, index_stride: isize| {
            (k_stride >= 0 && index_stride >= 0 && (index_stride == 1 || k_stride == 1)).then_some((k_stride as usize, index_stride as usize))
        };
        let product = match (&a, &b, unit_stride(shape.b_row, shape.b_col), unit_stride(shape.a_col, shape.a_row)) {
            (Operand::Const(w), Operand::Buffer { .. }, Some((k_stride, index_stride)), _) if self.packs && loops.iter().all(|l| l.a == 0) => {
                let constant = PackedConst::pack(ConstSide::Left, w, shape.a_row as usize, shape.a_col as usize, shape.m, shape.k, shape.n);
                Product::Packed { constant, activations: b, k_stride, index_stride }
            }
            (Operand::Buffer { .. }, Operand::Const(w), _, Some((k_stride, index_stride))) if self.packs && loops.iter().all(|l| l.b == 0) => {
                let constant = PackedConst::pack(ConstSide::Right, w, shape.b_row as usize, shape.b_col as usize, shape.m, shape.k, shape.n);
                Product::Packed { constant, activations: a, k_stride, index_stride }
            }
            _ => Product::Backend { a, b },
        };
        self.emit(last, StepKind::Gemm { product, shape, loops, epilogue })
    }

    fn lower_conv(&mut self, node: &TypedNode, conv: &Conv) -> Result<(), Unsupported> {
        let spec = &conv.pool_spec;
        if conv.q_params.is_some() || spec.kernel_shape.len() != 2 || !matches!(conv.kernel_fmt, KernelFormat::OIHW) {
            return Err("only float 2-D convolutions with OIHW kernels".into());
        }
        if spec.dilations.as_ref().is_some_and(|d| d.iter().any(|&d| d != 1)) {
            return Err("dilated".into());
        }
        let strides = spec.strides.clone().unwrap_or_else(|| tvec![1, 1]);
        if strides[0] != strides[1] {
            return Err("unequal strides".into());
        }
        let input = self.value(node.inputs[0])?;
        let kernel = self.constant(node.inputs[1]).ok_or("kernel is not a constant")?;
        let Operand::Const(kernel_values) = kernel.operand else { unreachable!("constant") };
        let out = OutletId::new(node.id, 0);
        let out_shape = self.shape(out)?;
        let (images, channels_first, spatial) = match spec.data_format {
            DataFormat::NCHW => (input.shape[0], true, 2),
            DataFormat::NHWC => (input.shape[0], false, 1),
            DataFormat::CHW => (1, true, 1),
            DataFormat::HWC => (1, false, 0),
        };
        let (in_height, in_width) = (input.shape[spatial], input.shape[spatial + 1]);
        let (out_height, out_width) = (out_shape[spatial], out_shape[spatial + 1]);
        let (in_channels, out_channels) = (spec.input_channels, spec.output_channels);
        let padding = match &spec.padding {
            PaddingSpec::Valid => (0, 0),
            PaddingSpec::Explicit(before, _) => (before[0], before[1]),
            _ => {
                let computed = spec.padding.compute(&[in_height, in_width], &spec.kernel_shape, &[1, 1], &strides);
                (computed[0].pad_before, computed[1].pad_before)
            }
        };
        if out_height * out_width == 0 || in_height * in_width == 0 || in_channels == 0 || out_channels == 0 {
            return Err("an empty input or output".into());
        }
        if spec.kernel_shape.iter().any(|&k| k > kernels::MAX_KERNEL_HEIGHT) {
            return Err(format!("kernel larger than {0}x{0}", kernels::MAX_KERNEL_HEIGHT));
        }
        let window = Window {
            in_height,
            in_width,
            out_height,
            out_width,
            kernel_height: spec.kernel_shape[0],
            kernel_width: spec.kernel_shape[1],
            stride: strides[0],
            pad_top: padding.0,
            pad_left: padding.1,
        };
        let image_strides = if channels_first {
            ImageStrides::planar(&window)
        } else {
            ImageStrides::channels_last(&window, in_channels)
        };
        let geometry = ConvGeometry {
            window,
            in_channels,
            out_channels,
            image_in_len: in_channels * in_height * in_width,
            image_out_len: out_channels * out_height * out_width,
            strides: image_strides,
            channels_first,
        };
        let mut epilogue = Epilogue::new(out_channels);
        if let Some(bias) = node.inputs.get(2) {
            let bias = self.constant(*bias).ok_or("bias is not a constant")?;
            let Operand::Const(values) = bias.operand else { unreachable!("constant") };
            match values.len() {
                1 => epilogue.bias.fill(values[0]),
                n if n == out_channels => epilogue.bias.copy_from_slice(&values),
                n => return Err(format!("bias of {n} values for {out_channels} channels")),
            }
        }
        let channel_axis = match spec.data_format {
            DataFormat::NCHW => 1,
            DataFormat::CHW => 0,
            DataFormat::NHWC => 3,
            DataFormat::HWC => 2,
        };
        let last = self.fuse_epilogue(out, &out_shape, channel_axis, &mut epilogue);
        let taps = window.kernel_height * window.kernel_width;
        let kind = if conv.group == 1 && kernel.shape == [out_channels, in_channels, window.kernel_height, window.kernel_width] {
            let field = in_channels * taps;
            let weights = match (self.packs, channels_first) {
                _ if !channels_first && kernels::conv_interleaved_takes(in_channels, out_channels) => {
                    ConvWeights::Direct(dense_tap_major(&kernel_values, in_channels, taps))
                }
                (false, _) => ConvWeights::Plain(kernel_values),
                (true, true) => ConvWeights::Packed(PackedConst::pack(ConstSide::Left, &kernel_values, field, 1, out_channels, field, 0)),
                (true, false) => ConvWeights::Packed(PackedConst::pack(ConstSide::Right, &kernel_values, 1, field, 0, field, out_channels)),
            };
            StepKind::Conv { input: input.operand, weights, images, geometry, epilogue }
        } else if conv.group == in_channels && in_channels == out_channels && kernel.shape == [out_channels, 1, window.kernel_height, window.kernel_width] {
            let weights = if channels_first { kernel_values.to_vec() } else { tap_major(&kernel_values, taps) };
            StepKind::Depthwise { input: input.operand, weights, images, geometry, epilogue, quantized_output: None }
        } else {
            return Err(format!("group {} of {in_channels} channels (only dense and depthwise)", conv.group));
        };
        if operand_len(match &kind {
            StepKind::Conv { input, .. } | StepKind::Depthwise { input, .. } => input,
            _ => unreachable!("a convolution"),
        }) < images * geometry.image_in_len
        {
            return Err("input smaller than its shape".into());
        }
        self.emit(last, kind)
    }
}

fn operand_len(operand: &Operand) -> usize {
    match operand {
        Operand::Buffer { len, .. } => *len,
        Operand::Const(values) => values.len(),
    }
}

/// One past the largest offset a product operand addresses over all loop iterations.
fn gemm_extent(rows: usize, cols: usize, row: isize, col: isize, loops: &[Loop], stride: impl Fn(&Loop) -> usize) -> usize {
    let last = (rows.saturating_sub(1)) as isize * row + (cols.saturating_sub(1)) as isize * col;
    last as usize + 1 + loops.iter().map(|l| (l.extent - 1) * stride(l)).sum::<usize>()
}

/// Merges the innermost axes of `group` (ordered outer to inner) that are laid out compactly and in the
/// same order in both `tensors`, into one dimension: (extent, strides, the outer axes left over).
#[allow(clippy::type_complexity)]
fn merge_suffix(
    group: &[(usize, [usize; 3], Option<usize>)],
    tensors: [usize; 2],
) -> (usize, [usize; 3], Vec<(usize, [usize; 3], Option<usize>)>) {
    let Some((&(mut extent, strides, _), outer)) = group.split_last() else {
        return (1, [0; 3], Vec::new());
    };
    let mut rest = outer.len();
    while rest > 0 {
        let (e, s, _) = group[rest - 1];
        if tensors.iter().all(|&t| s[t] == strides[t] * extent) {
            extent *= e;
            rest -= 1;
        } else {
            break;
        }
    }
    (extent, strides, group[..rest].to_vec())
}

/// Merges adjacent axes that every operand walks compactly in the same order (or not at all), and
/// drops unit axes, so element-wise loops run over long rows: a [1, 300, 300, 3] tensor minus a scalar
/// becomes one loop of 270,000.
fn coalesce(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut merged_shape: Vec<usize> = Vec::new();
    let mut merged: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for axis in (0..shape.len()).rev() {
        if shape[axis] == 1 {
            continue;
        }
        let joins = merged_shape.last().is_some_and(|&inner| {
            strides.iter().zip(&merged).all(|(s, m)| s[axis] == m.last().expect("same length") * inner)
        });
        if joins {
            *merged_shape.last_mut().expect("non-empty") *= shape[axis];
        } else {
            merged_shape.push(shape[axis]);
            for (m, s) in merged.iter_mut().zip(strides) {
                m.push(s[axis]);
            }
        }
    }
    merged_shape.reverse();
    merged.iter_mut().for_each(|m| m.reverse());
    (merged_shape, merged)
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// `shape`'s strides over `target` (right-aligned, NumPy rules), 0 along broadcast axes.
fn broadcast_strides(shape: &[usize], target: &[usize]) -> Option<Vec<usize>> {
    if shape.len() > target.len() {
        return None;
    }
    let own = row_major_strides(shape);
    let offset = target.len() - shape.len();
    (0..target.len())
        .map(|axis| {
            if axis < offset {
                return Some(0);
            }
            let (extent, stride) = (shape[axis - offset], own[axis - offset]);
            match extent {
                1 => Some(0),
                e if e == target[axis] => Some(stride),
                _ => None,
            }
        })
        .collect()
}

/// Whether an interleaved [`StepKind::ExpandDepthwise`] copies each band into a zero-padded one
/// before its depthwise convolution: where under three quarters of the map's pixels are interior
/// (14x14 and 7x7 maps with a 5x5 kernel, 10x10 ones with a 3x3), the copy costs less than computing
/// the border pixels one by one; on the larger maps it costs more (measured per layer).
fn pads(window: &Window) -> bool {
    window.interior_share() < 0.75
}

/// Values of the expanded channels of the tallest band of `band_rows` output rows: the input rows
/// its windows reach, for every channel.
fn expanded_band_len(geometry: &ConvGeometry, band_rows: usize) -> usize {
    let w = &geometry.window;
    geometry.in_channels * ((band_rows - 1) * w.stride + w.kernel_height) * w.in_width
}

/// Merges each packed 1x1 expansion (channels first, run image by image) with the depthwise
/// convolution that is the only reader of its output into one [`StepKind::ExpandDepthwise`].
fn fuse_expansions(mut steps: Vec<Step>, outputs: &[Operand]) -> Vec<Step> {
    let readers = readers(&mut steps, outputs);
    let mut fused: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        match fused.last() {
            Some(previous) if fusable(previous, &step, &readers) => {
                let expansion = fused.pop().expect("the step just looked at");
                fused.push(fuse_expansion(expansion, step));
            }
            _ => fused.push(step),
        }
    }
    fused
}

/// How many operands (of steps and the model's outputs) read each logical buffer.
fn readers(steps: &mut [Step], outputs: &[Operand]) -> HashMap<usize, usize> {
    let mut readers = HashMap::<usize, usize>::new();
    let reads = steps.iter_mut().flat_map(|step| step.operands_mut().into_iter().map(|o| o.clone())).chain(outputs.iter().cloned());
    for operand in reads {
        if let Operand::Buffer { id, .. } = operand {
            *readers.entry(id).or_default() += 1;
        }
    }
    readers
}

/// Turns each [`StepKind::ExpandDepthwise`] whose channels come in groups of 16 and whose output
/// only a packed product reads as its activations (the block's 1x1 projection) channels-last: the
/// expansion writes each pixel's channels together (its weights moved to the right of the
/// product), the depthwise vectorises across channels, and the projection reads the channels-last
/// pixels (transposed into its panels, or in place once [`channels_last_activations`] has moved its
/// weights to the right). Channels first, a 7x7 map's rows fill 7 of a vector's 16 lanes.
fn interleave_expansions(steps: &mut [Step], outputs: &[Operand]) {
    let readers = readers(steps, outputs);
    for i in 0..steps.len() {
        let (id, channels, pixels, images, image_len) = match &steps[i].kind {
            StepKind::ExpandDepthwise { geometry: g, interleaved: false, expansion, .. } if g.in_channels.is_multiple_of(kernels::LANES) => {
                (steps[i].output, g.in_channels, g.window.out_height * g.window.out_width, expansion.images, g.image_out_len)
            }
            _ => continue,
        };
        if readers.get(&id) != Some(&1) {
            continue;
        }
        let reads_it = |step: &mut Step| step.operands_mut().iter().any(|o| matches!(o, Operand::Buffer { id: read, .. } if *read == id));
        let Some(reader) = steps[i + 1..].iter_mut().find_map(|step| reads_it(step).then_some(step)) else {
            continue;
        };
        let StepKind::Gemm { product: Product::Packed { constant, k_stride, index_stride, .. }, shape, loops, .. } = &mut reader.kind else {
            continue;
        };
        let reads_each_image = image_loop(loops, shape.m * shape.n).is_some_and(|(n, stride)| n == images && (images == 1 || stride == image_len));
        if constant.side != ConstSide::Left || !reads_each_image || *index_stride != 1 || *k_stride != pixels || shape.k != channels || shape.n != pixels {
            continue;
        }
        (*k_stride, *index_stride) = (1, channels);
        let StepKind::ExpandDepthwise { expansion, weights, interleaved, geometry: g, .. } = &mut steps[i].kind else {
            unreachable!("matched above")
        };
        expansion.constant = expansion.constant.transposed();
        *weights = tap_major(weights, g.window.kernel_height * g.window.kernel_width);
        *interleaved = true;
    }
}

/// Keeps the tensors between MobileNet blocks channels-last where every reader can take them so:
/// the 1x1 products that write them put their weights on the right (vectors along the output
/// channels), and the products that read them (the next block's expansion, the SSD's box and class
/// heads, the next projection) broadcast each pixel's channels where they lie, with no panel packed.
/// Channels first, each projection had to transpose the channels-last depthwise output into its
/// panels, and each expansion copied its input into panels. A tensor stays channels first if any
/// reader needs it so (a model output, a planar depthwise convolution, a reshape); the embedder's
/// global pool sums each channel's pixels in either layout, so its last convolution writes
/// channels-last (and runs in int8 when asked). A dense convolution writes channels-last too: a stem
/// of a channels-first model then runs as a channels-last model's does, straight from its input
/// planes, and its block's depthwise vectorises across channels.
/// In a batch, a product channels-last on both sides runs once over all the images' pixels, where
/// channels first it ran image by image: short products over a 7x7 or 10x10 map fill its tiles.
fn channels_last_activations(steps: &mut [Step], outputs: &[Operand]) {
    let buffer_of = |operand: &Operand| match operand {
        Operand::Buffer { id, .. } => Some(*id),
        Operand::Const(_) => None,
    };
    // Steps whose output has their input's layout: an element-wise op of two same-shaped operands
    // (no broadcasting), and a depthwise convolution (the interleaved kernel when channels-last).
    let follows_layout = |kind: &StepKind| match kind {
        StepKind::Binary { a_strides, b_strides, shape, .. } => a_strides == b_strides && *a_strides == contiguous_strides(shape),
        StepKind::Depthwise { geometry, .. } => geometry.channels_first,
        _ => false,
    };
    // The candidates, each as the (channels, pixels, images) a reader must read it as: images follow
    // one another, each channels × pixels (a reshape aliases a buffer, so a reader may see the same
    // values as another shape, which then stays channels first).
    let mut candidates: HashMap<usize, Tensor> = HashMap::new();
    for step in steps.iter_mut() {
        let tensor = match &step.kind {
            StepKind::Gemm { product: Product::Packed { constant, .. }, loops, shape, .. }
                if constant.side == ConstSide::Left && shape.c_row == shape.n =>
            {
                image_loop(loops, shape.m * shape.n).map(|(images, _)| Tensor { channels: shape.m, pixels: shape.n, images })
            }
            StepKind::Depthwise { images, geometry: g, .. } | StepKind::Conv { weights: ConvWeights::Packed(_), images, geometry: g, .. }
                if g.channels_first =>
            {
                Some(Tensor { channels: g.out_channels, pixels: g.window.out_height * g.window.out_width, images: *images })
            }
            kind if follows_layout(kind) => {
                let inputs: Vec<Option<Tensor>> =
                    step.operands_mut().into_iter().map(|o| buffer_of(o).and_then(|id| candidates.get(&id).copied())).collect();
                inputs.first().copied().flatten().filter(|first| inputs.iter().all(|input| *input == Some(*first)))
            }
            _ => None,
        };
        if let Some(tensor) = tensor {
            candidates.insert(step.output, tensor);
        }
    }
    let mut channels_last: HashSet<usize> = candidates.keys().copied().collect();
    loop {
        let before = channels_last.len();
        for output in outputs.iter().filter_map(buffer_of) {
            channels_last.remove(&output);
        }
        for step in steps.iter_mut() {
            let output = step.output;
            // The tensor this step reads its input as, where it could read it channels-last.
            let reads_as = match &step.kind {
                StepKind::ExpandDepthwise { expansion: e, interleaved: true, geometry: g, .. } if e.index_stride == 1 => {
                    let pixels = g.window.in_height * g.window.in_width;
                    (e.k_stride == pixels && (e.images == 1 || e.image_stride == e.k * pixels))
                        .then_some(Tensor { channels: e.k, pixels, images: e.images })
                }
                // On the left, a product that stays channels-first transposes its activations
                // into its panels: a cost for it, but the chain of blocks before it stays
                // channels-last.
                StepKind::Gemm { product: Product::Packed { constant, k_stride, index_stride: 1, .. }, loops, shape, .. } => {
                    let pixels = if constant.side == ConstSide::Left { shape.n } else { shape.m };
                    let activations_stride = |l: &Loop| if constant.side == ConstSide::Left { l.b } else { l.a };
                    let images = match &loops[..] {
                        [] => Some(1),
                        [l] if activations_stride(l) == shape.k * pixels => Some(l.extent),
                        _ => None,
                    };
                    images.filter(|_| *k_stride == pixels).map(|images| Tensor { channels: shape.k, pixels, images })
                }
                StepKind::Depthwise { images, geometry: g, .. } if g.channels_first => {
                    Some(Tensor { channels: g.in_channels, pixels: g.window.in_height * g.window.in_width, images: *images })
                }
                // A dense convolution gathers its windows through the input's strides, either layout.
                StepKind::Conv { images, geometry: g, .. } if g.strides == ImageStrides::planar(&g.window) => {
                    Some(Tensor { channels: g.in_channels, pixels: g.window.in_height * g.window.in_width, images: *images })
                }
                StepKind::Binary { .. } if follows_layout(&step.kind) => candidates.get(&output).copied(),
                // A pool over each channel's pixels sums them where they lie.
                StepKind::ReduceSum { input, shape, output_strides } => match (&shape[..], &output_strides[..]) {
                    ([outer, pixels], [1, 0]) => buffer_of(input)
                        .and_then(|id| candidates.get(&id).copied())
                        .filter(|t| t.channels * t.images == *outer && t.pixels == *pixels),
                    _ => None,
                },
                _ => None,
            };
            let inputs: Vec<usize> = step.operands_mut().into_iter().filter_map(|o| buffer_of(o)).collect();
            let takes = |id: &usize| reads_as.is_some() && candidates.get(id) == reads_as.as_ref();
            if follows_layout(&step.kind) && !(channels_last.contains(&output) && inputs.iter().all(|id| channels_last.contains(id) && takes(id))) {
                // Output and every input, or none of them.
                channels_last.remove(&output);
                inputs.iter().for_each(|id| _ = channels_last.remove(id));
            } else {
                inputs.iter().filter(|id| !takes(id)).for_each(|id| _ = channels_last.remove(id));
            }
        }
        if channels_last.len() == before {
            break;
        }
    }
    for step in steps.iter_mut() {
        let writes_channels_last = channels_last.contains(&step.output);
        match &mut step.kind {
            StepKind::Gemm { product: Product::Packed { constant, activations, k_stride, index_stride }, shape, epilogue, loops } => {
                if buffer_of(activations).is_some_and(|id| channels_last.contains(&id)) {
                    (*k_stride, *index_stride) = (1, shape.k);
                }
                if writes_channels_last {
                    // C[channels, pixels] = W·X becomes C[pixels, channels] = Xᵀ·Wᵀ; the activations'
                    // strides name the same values on either side, and move to the left.
                    *constant = constant.transposed();
                    (shape.m, shape.n, shape.c_row) = (shape.n, shape.m, shape.m);
                    if let Some((_, along)) = epilogue {
                        *along = ChannelsAlong::Columns;
                    }
                    loops.iter_mut().for_each(|l| (l.a, l.b) = (l.b, l.a));
                    // Channels-last in and out, a batch's images are one matrix of all their pixels
                    // (each image's right after the last): one product, taller by the number of images.
                    if let [l] = &loops[..] {
                        if *k_stride == 1 && *index_stride == shape.k && l.a == shape.m * shape.k {
                            shape.m *= l.extent;
                            loops.clear();
                        }
                    }
                }
            }
            StepKind::ExpandDepthwise { expansion, .. } if buffer_of(&expansion.activations).is_some_and(|id| channels_last.contains(&id)) => {
                (expansion.k_stride, expansion.index_stride) = (1, expansion.k);
            }
            StepKind::ReduceSum { input, shape, output_strides } => {
                if let Some(tensor) = buffer_of(input).filter(|id| channels_last.contains(id)).map(|id| candidates[&id]) {
                    *shape = vec![tensor.images, tensor.pixels, tensor.channels];
                    *output_strides = vec![tensor.channels, 0, 1];
                }
            }
            StepKind::Depthwise { weights, geometry, .. } if writes_channels_last => {
                *weights = tap_major(weights, geometry.window.kernel_height * geometry.window.kernel_width);
                geometry.channels_first = false;
            }
            StepKind::Conv { input, weights, geometry: g, .. } => {
                if buffer_of(input).is_some_and(|id| channels_last.contains(&id)) {
                    g.strides = ImageStrides::channels_last(&g.window, g.in_channels);
                }
                if !writes_channels_last {
                    continue;
                }
                let ConvWeights::Packed(constant) = weights else { unreachable!("a candidate") };
                *weights = if kernels::conv_interleaved_takes(g.in_channels, g.out_channels) {
                    // A stem: straight from its input planes, as a channels-last one is.
                    let taps = g.window.kernel_height * g.window.kernel_width;
                    ConvWeights::Direct(dense_tap_major(&constant.lines(), g.in_channels, taps))
                } else {
                    // C[out channels, pixels] = W·columns becomes C[pixels, out channels] = columnsᵀ·Wᵀ.
                    ConvWeights::Packed(constant.transposed())
                };
                g.channels_first = false;
            }
            _ => {}
        }
    }
}

/// A tensor as [`channels_last_activations`] lays it out: `images` after one another, each
/// `channels` × `pixels`, channels first or (each pixel's channels together) channels-last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tensor {
    channels: usize,
    pixels: usize,
    images: usize,
}

/// The images a product repeated by `loops` runs over (one without loops), and the distance
/// between two images' activations, when it writes `image_output` values per image right after the
/// last and its weights (on the left) stay put: a product that runs image by image, as a fused or
/// channels-last step can.
fn image_loop(loops: &[Loop], image_output: usize) -> Option<(usize, usize)> {
    match loops {
        [] => Some((1, 0)),
        [l] if l.a == 0 && l.c == image_output => Some((l.extent, l.b)),
        _ => None,
    }
}

/// Runs in int8 ([`quantized`]) each packed product that reads channels-last activations with its
/// weights on the right (the 1x1 convolutions between channels-last tensors, and the expansions
/// fused with their depthwise convolution that read such a tensor), and the dense convolutions
/// channels-last in and out: the bulk of both models' multiply-adds. Products reading
/// channels-first activations, the stems and the depthwise convolutions stay f32 (the depthwise
/// ones may still store their output in u8: [`quantize_depthwise_outputs`]).
fn quantize_products(steps: &mut [Step]) {
    for step in steps.iter_mut() {
        if let StepKind::Conv { weights, geometry: g, .. } = &mut step.kind {
            let channels_last_in = g.strides == ImageStrides::channels_last(&g.window, g.in_channels);
            if let (ConvWeights::Packed(constant), false, true) = (&*weights, g.channels_first, channels_last_in) {
                // The packed columns are each output channel's weights, OIHW.
                let taps = g.window.kernel_height * g.window.kernel_width;
                if let Some(quantized) = QuantizedConst::for_windows(&constant.lines(), g.in_channels, taps) {
                    *weights = ConvWeights::Quantized(quantized);
                }
            }
            continue;
        }
        if let StepKind::ExpandDepthwise { expansion: e, interleaved: true, geometry: g, .. } = &mut step.kind {
            if e.k_stride == 1 && e.index_stride == e.k && (e.images == 1 || e.image_stride == e.k * g.window.in_height * g.window.in_width) {
                e.quantized = QuantizedConst::new(&e.constant.lines(), e.k, g.in_channels);
            }
            continue;
        }
        let StepKind::Gemm { product, shape, epilogue, .. } = &mut step.kind else { continue };
        let Product::Packed { constant, activations, k_stride: 1, index_stride } = product else { continue };
        let columns_epilogue = epilogue.as_ref().is_none_or(|(_, along)| *along == ChannelsAlong::Columns);
        if constant.side != ConstSide::Right || *index_stride != shape.k || !columns_epilogue {
            continue;
        }
        if let Some(quantized) = QuantizedConst::new(&constant.lines(), shape.k, shape.n) {
            *product = Product::Quantized { constant: quantized, activations: activations.clone(), levels: None };
        }
    }
}

/// Has each channels-last depthwise convolution whose output only an int8 product reads (a
/// MobileNet block's projection) write that output as u8, quantised with fixed levels over its
/// clamp's range (ReLU6: 0 to 6 in 255 steps, as TFLite's quantised MobileNets do), rather than
/// f32 that the product would read twice more (for its range, then to convert it). On 204 photos
/// this moved the int8 rows no further from f32's than per-tensor ranges did (tests/int8.rs).
fn quantize_depthwise_outputs(steps: &mut [Step], outputs: &[Operand]) {
    let readers = readers(steps, outputs);
    // The buffers int8 products read as their activations: which step reads each.
    let int8_readers: HashMap<usize, usize> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match &step.kind {
            StepKind::Gemm { product: Product::Quantized { activations: Operand::Buffer { id, .. }, .. }, .. } => Some((*id, i)),
            _ => None,
        })
        .collect();
    for i in 0..steps.len() {
        let output = steps[i].output;
        let Some(&reader) = int8_readers.get(&output).filter(|_| readers.get(&output) == Some(&1)) else { continue };
        let (g, epilogue, quantized_output) = match &mut steps[i].kind {
            StepKind::Depthwise { geometry: g, epilogue, quantized_output, .. } if !g.channels_first => (&*g, &*epilogue, quantized_output),
            StepKind::ExpandDepthwise { geometry: g, epilogue, quantized_output, interleaved: true, .. } => (&*g, &*epilogue, quantized_output),
            _ => continue,
        };
        // A finite clamp that holds 0 (ReLU6), which the levels then span.
        let (low, high) = (epilogue.low, epilogue.high);
        let clamps = low.is_finite() && high.is_finite() && low <= 0.0 && high > 0.0;
        if !(clamps && kernels::channels_quantize(g.in_channels)) {
            continue;
        }
        let levels = Levels::spanning(low, high);
        *quantized_output = Some(levels);
        if let StepKind::Gemm { product: Product::Quantized { levels: read_as, .. }, .. } = &mut steps[reader].kind {
            *read_as = Some(levels);
        }
    }
}

/// Dense convolution weights OIHW laid out [taps][I][O], as [`kernels::conv_interleaved`] reads
/// them.
fn dense_tap_major(weights: &[f32], in_channels: usize, taps: usize) -> Vec<f32> {
    let out_channels = weights.len() / (in_channels * taps);
    let mut laid_out = vec![0.0; weights.len()];
    for o in 0..out_channels {
        for i in 0..in_channels {
            for t in 0..taps {
                laid_out[(t * in_channels + i) * out_channels + o] = weights[(o * in_channels + i) * taps + t];
            }
        }
    }
    laid_out
}

/// Depthwise weights [C][taps] laid out [taps][C], as the interleaved kernel reads them.
fn tap_major(weights: &[f32], taps: usize) -> Vec<f32> {
    let channels = weights.len() / taps;
    let mut laid_out = vec![0.0; weights.len()];
    for (c, kernel) in weights.chunks_exact(taps).enumerate() {
        for (t, &value) in kernel.iter().enumerate() {
            laid_out[t * channels + c] = value;
        }
    }
    laid_out
}

/// Row-major strides of `shape`.
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut stride = 1;
    for (s, &extent) in strides.iter_mut().zip(shape).rev() {
        *s = stride;
        stride *= extent;
    }
    strides
}

/// Whether `expansion` is a packed 1x1 expansion, channels first, run image by image, whose output
/// only `depthwise` reads.
fn fusable(expansion: &Step, depthwise: &Step, readers: &HashMap<usize, usize>) -> bool {
    match (&expansion.kind, &depthwise.kind) {
        (
            StepKind::Gemm { product: Product::Packed { constant, index_stride: 1, .. }, shape, loops, epilogue },
            StepKind::Depthwise { input: Operand::Buffer { id, .. }, images, geometry: g, .. },
        ) => {
            *id == expansion.output
                && readers.get(id) == Some(&1)
                && constant.side == ConstSide::Left
                && image_loop(loops, g.image_in_len).is_some_and(|(n, _)| n == *images)
                && epilogue.as_ref().is_none_or(|(_, along)| *along == ChannelsAlong::Rows)
                && g.channels_first
                && shape.m == g.in_channels
                && shape.n == g.window.in_height * g.window.in_width
                && shape.c_row == shape.n
        }
        _ => false,
    }
}

/// The [`fusable`] pair as one step.
fn fuse_expansion(expansion: Step, depthwise: Step) -> Step {
    let (
        StepKind::Gemm { product: Product::Packed { constant, activations, k_stride, .. }, shape, epilogue: expansion_epilogue, loops },
        StepKind::Depthwise { weights, geometry, epilogue, images, .. },
    ) = (expansion.kind, depthwise.kind)
    else {
        unreachable!("a pair `fusable` accepted")
    };
    let w = &geometry.window;
    let band_rows = if shape.m * shape.n <= WHOLE_EXPANSION_FLOATS {
        w.out_height
    } else {
        // Bands of (nearly) equal height: a short last band would recompute its halo rows for little.
        let band_input_rows = (BAND_FLOATS / (shape.m * w.in_width)).max(w.kernel_height);
        let most_rows = (band_input_rows - w.kernel_height) / w.stride + 1;
        w.out_height.div_ceil(w.out_height.div_ceil(most_rows))
    };
    let (_, image_stride) = image_loop(&loops, geometry.image_in_len).expect("a pair `fusable` accepted");
    let expansion = Expansion {
        constant,
        activations,
        k_stride,
        index_stride: 1,
        k: shape.k,
        epilogue: expansion_epilogue.map(|(e, _)| e),
        images,
        image_stride,
        quantized: None,
    };
    Step {
        kind: StepKind::ExpandDepthwise { expansion, weights, geometry, epilogue, band_rows, interleaved: false, quantized_output: None },
        output: depthwise.output,
        output_len: depthwise.output_len,
    }
}

/// Assigns logical buffers to as few physical buffers as their lifetimes allow (greedy, best fit).
fn allocate(
    mut steps: Vec<Step>,
    mut outputs: Vec<Operand>,
    sizes: &[usize],
    input: usize,
) -> (Vec<Step>, Vec<Operand>, Vec<usize>, usize) {
    let logical_of = |o: &Operand| match o {
        Operand::Buffer { id, .. } => Some(*id),
        Operand::Const(_) => None,
    };
    // The last step reading each logical buffer; outputs live to the end.
    let mut last_use = vec![None; sizes.len()];
    for (i, step) in steps.iter_mut().enumerate() {
        for operand in step.operands_mut() {
            if let Some(id) = logical_of(operand) {
                last_use[id] = Some(i);
            }
        }
    }
    for output in &outputs {
        if let Some(id) = logical_of(output) {
            last_use[id] = Some(usize::MAX);
        }
    }
    let mut physical_sizes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut physical = vec![usize::MAX; sizes.len()];
    let take = |size: usize, physical_sizes: &mut Vec<usize>, free: &mut Vec<usize>| -> usize {
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, &p)| physical_sizes[p] >= size)
            .min_by_key(|(_, &p)| physical_sizes[p])
            .or_else(|| free.iter().enumerate().max_by_key(|(_, &p)| physical_sizes[p]))
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let p = free.swap_remove(i);
                physical_sizes[p] = physical_sizes[p].max(size);
                p
            }
            None => {
                physical_sizes.push(size);
                physical_sizes.len() - 1
            }
        }
    };
    physical[input] = take(sizes[input], &mut physical_sizes, &mut free);
    if last_use[input].is_none() {
        free.push(physical[input]);
    }
    for (i, step) in steps.iter_mut().enumerate() {
        physical[step.output] = take(sizes[step.output], &mut physical_sizes, &mut free);
        let mut released: Vec<usize> = step.operands_mut().into_iter().filter_map(|o| logical_of(o)).collect();
        released.push(step.output);
        released.sort_unstable();
        released.dedup();
        for id in released {
            if last_use[id].is_none_or(|last| last == i) {
                free.push(physical[id]);
            }
        }
    }
    let remap = |operand: &mut Operand| {
        if let Operand::Buffer { id, .. } = operand {
            *id = physical[*id];
        }
    };
    for step in &mut steps {
        step.operands_mut().into_iter().for_each(remap);
        step.output = physical[step.output];
    }
    outputs.iter_mut().for_each(remap);
    (steps, outputs, physical_sizes, physical[input])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::gemm::Portable;
    use tract_onnx::tract_core::ops::math;

    /// x (1×4) → x·Wᵀ + b → ReLU6 → `last`, built with tract's own API.
    fn model(last: Box<dyn TypedOp>) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4])).unwrap();
        let w = model.add_const("w", tensor2(&[[1f32, -2.0, 3.0, 0.5], [0.0, 1.0, -1.0, 2.0], [4.0, 4.0, 4.0, 4.0]])).unwrap();
        let y = model.wire_node("mm", EinSum::new("mk,nk->mn".parse().unwrap(), DatumType::F32), &[x, w]).unwrap();
        let b = model.add_const("b", tensor2(&[[0.5f32, -0.5, 1.0]])).unwrap();
        let y = model.wire_node("bias", math::add(), &[y[0], b]).unwrap();
        let zero = model.add_const("zero", tensor2(&[[0f32]])).unwrap();
        let y = model.wire_node("relu", math::max(), &[y[0], zero]).unwrap();
        let six = model.add_const("six", tensor2(&[[6f32]])).unwrap();
        let y = model.wire_node("relu6", math::min(), &[y[0], six]).unwrap();
        let y = model.wire_node("last", last, &y).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    #[test]
    fn lowers_a_product_with_its_epilogue_fused() {
        let native = NativeModel::lower(&model(Box::new(ElementWiseOp(Box::new(tract_onnx::tract_core::ops::nn::Sigmoid {}), None))), Box::new(Portable), Precision::F32).unwrap();
        // The product, one fused epilogue, then the sigmoid: two steps.
        assert_eq!(native.steps.len(), 2, "{:?}", native.steps);
        let out = native.run(|input| input.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]));
        let expected = [1.0f32 - 4.0 + 9.0 + 2.0 + 0.5, 0.0 + 2.0 - 3.0 + 8.0 - 0.5, 40.0 + 1.0];
        for (got, x) in out[0].iter().zip(expected) {
            let want = 1.0 / (1.0 + (-x.clamp(0.0, 6.0)).exp());
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn every_product_of_the_embedder_reads_and_writes_channels_last() {
        // int8 runs only the products that read and write channels-last (weights on the right); the
        // global pool once kept the last one channels first.
        let config = crate::Config::default();
        let embedder = &config.embedder;
        let typed = super::super::typed_model(&config.resolve(&embedder.model), &embedder.input, &[embedder.features_output.as_str()], 1).unwrap();
        let native = NativeModel::lower(&typed, Box::new(Portable), Precision::F32).unwrap();
        let products: Vec<bool> = native
            .steps
            .iter()
            .filter_map(|step| match &step.kind {
                StepKind::Gemm { product: Product::Packed { constant, .. }, .. } => Some(constant.side == ConstSide::Right),
                StepKind::ExpandDepthwise { interleaved, .. } => Some(*interleaved),
                _ => None,
            })
            .collect();
        if !super::super::packed::available() {
            // Without AVX-512 every product goes to the GEMM backend: nothing is packed, so nothing
            // here can be channels first.
            assert!(products.iter().all(|&channels_last| channels_last), "{products:?}");
            eprintln!("SKIPPED part: this CPU has no AVX-512, so the executor packs no products to check");
            return;
        }
        assert!(products.len() >= 30 && products.iter().all(|&channels_last| channels_last), "{products:?}");
    }

    #[test]
    fn in_int8_every_depthwise_hands_its_projection_bytes() {
        if !quantized::available() {
            eprintln!("skipped: int8 products need AVX-512 VNNI, which this CPU lacks");
            return;
        }
        let config = crate::Config::default();
        for (model, input, outputs) in [
            (&config.detector.model, &config.detector.input, vec![config.detector.boxes_output.as_str(), config.detector.scores_output.as_str()]),
            (&config.embedder.model, &config.embedder.input, vec![config.embedder.features_output.as_str()]),
        ] {
            let typed = super::super::typed_model(&config.resolve(model), input, &outputs, 1).unwrap();
            let native = NativeModel::lower(&typed, Box::new(Portable), Precision::Int8).unwrap();
            let (mut depthwise, mut writes_bytes, mut reads_bytes) = (0, 0, 0);
            for step in &native.steps {
                match &step.kind {
                    StepKind::Depthwise { quantized_output, .. } | StepKind::ExpandDepthwise { quantized_output, .. } => {
                        depthwise += 1;
                        writes_bytes += quantized_output.is_some() as usize;
                    }
                    StepKind::Gemm { product: Product::Quantized { levels: Some(_), .. }, .. } => reads_bytes += 1,
                    _ => {}
                }
            }
            // MobileNetV2's 17 blocks and EfficientNet-Lite0's 16, each with its depthwise and
            // projection (the SSD's extra layers' depthwise convolutions are dense here).
            assert!(depthwise >= 16 && writes_bytes == depthwise && reads_bytes == depthwise, "{}: {depthwise} depthwise, {writes_bytes} write u8, {reads_bytes} products read it", model.display());
        }
    }

    #[test]
    fn refuses_an_operator_outside_the_subset_and_names_it() {
        let why = NativeModel::lower(&model(Box::new(ElementWiseOp(Box::new(math::Exp {}), None))), Box::new(Portable), Precision::F32).unwrap_err();
        assert!(why.contains("\"last\"") && why.contains("Exp"), "{why}");
    }
}

//! The lowered program: the steps a model runs, the operands they read, and what each step's
//! buffers and scratch must hold. The lowering writes it, the passes rewrite it, the executor runs it.

use std::sync::Arc;

use super::super::buffer::{whole_lines, AlignedBuffer};
use super::super::kernels::{BinaryOp, ChannelsAlong, Epilogue, ImageStrides, OutputEncoding, Window};
use super::super::packed::{self, PackedConst};
use super::super::low_precision::LowPrecisionConst;

/// Why a graph cannot run natively (it then runs on tract).
pub type Unsupported = String;

/// A tensor a step reads: an intermediate buffer (by id, with its length) or a constant.
#[derive(Debug, Clone)]
pub(super) enum Operand {
    Buffer { id: usize, len: usize },
    Const(Arc<Vec<f32>>),
}

impl Operand {
    pub(super) fn slice<'a>(&'a self, buffers: &'a [AlignedBuffer]) -> &'a [f32] {
        match self {
            Operand::Buffer { id, len } => &buffers[*id][..*len],
            Operand::Const(values) => values,
        }
    }
}

#[derive(Debug)]
pub(super) struct Step {
    pub(super) kind: StepKind,
    pub(super) output: usize,
    pub(super) output_len: usize,
}

#[derive(Debug)]
pub(super) enum StepKind {
    /// C = A·B for every index of `loops`, then the epilogue.
    Gemm { product: Product, shape: GemmShape, loops: Vec<Loop>, epilogue: Option<(Epilogue, ChannelsAlong)> },
    /// A dense convolution: im2col per image, then one product with the kernel.
    Conv { input: Operand, weights: ConvWeights, images: usize, geometry: ConvGeometry, epilogue: Epilogue },
    /// `encoded_output`: see [`encode_depthwise_outputs`] (also for the next variant).
    Depthwise { input: Operand, weights: Vec<f32>, images: usize, geometry: ConvGeometry, epilogue: Epilogue, encoded_output: Option<OutputEncoding> },
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
        encoded_output: Option<OutputEncoding>,
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
pub(super) enum Product {
    Packed { constant: PackedConst, activations: Operand, k_stride: usize, index_stride: usize },
    /// C[pixels, channels] = X·W in int8 or bf16 (see [`reduce_products`]): X, channels-last, is
    /// encoded into the scratch first, or arrives encoded as `arrives` says (see
    /// [`encode_depthwise_outputs`]).
    LowPrecision { constant: LowPrecisionConst, activations: Operand, arrives: Option<OutputEncoding> },
    Backend { a: Operand, b: Operand },
}

/// The packed product C[m, pixels] = W[m, k]·X[k, pixels] (+ epilogue along C's rows) of an
/// [`StepKind::ExpandDepthwise`], or its transpose C[pixels, m] with W packed on the right when the
/// step is interleaved.
#[derive(Debug)]
pub(super) struct Expansion {
    pub(super) constant: PackedConst,
    pub(super) activations: Operand,
    pub(super) k_stride: usize,
    pub(super) index_stride: usize,
    pub(super) k: usize,
    pub(super) epilogue: Option<Epilogue>,
    /// Images in the batch, and the distance between two images' activations.
    pub(super) images: usize,
    pub(super) image_stride: usize,
    /// The weights in int8 or bf16 when the product runs so ([`reduce_products`]).
    pub(super) low_precision: Option<LowPrecisionConst>,
}

impl Expansion {
    /// Scratch floats the int8 or bf16 product needs: its factors and one image's encoded input.
    pub(super) fn low_precision_scratch(&self, geometry: &ConvGeometry) -> usize {
        let pixels = geometry.window.in_height * geometry.window.in_width;
        self.low_precision.as_ref().map_or(0, |c| c.factor_floats() + c.encoded_floats(pixels * self.k))
    }
}

/// A dense convolution's kernel as the product wants it.
#[derive(Debug)]
pub(super) enum ConvWeights {
    Packed(PackedConst),
    /// OIHW, i.e. row-major O×K.
    Plain(Arc<Vec<f32>>),
    /// Tap-major ([KH·KW][I][O]) for [`kernels::conv_interleaved`]: stems (RGB in, channels-last out).
    Direct(Vec<f32>),
    /// int8 or bf16, channels-last in and out ([`reduce_products`]): each output pixel's window
    /// gathered as one row of (tap, channel) encoded values, times the weights with their depth in
    /// that order.
    LowPrecision(LowPrecisionConst),
}

/// One matrix product's sizes and strides (C's column stride is always 1).
#[derive(Debug, Clone, Copy)]
pub(super) struct GemmShape {
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) a_row: isize,
    pub(super) a_col: isize,
    pub(super) b_row: isize,
    pub(super) b_col: isize,
    pub(super) c_row: usize,
}

/// An axis the product is repeated along, with its stride in A, B and C.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loop {
    pub(super) extent: usize,
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) c: usize,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct ConvGeometry {
    pub(super) window: Window,
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) image_in_len: usize,
    pub(super) image_out_len: usize,
    pub(super) strides: ImageStrides,
    pub(super) channels_first: bool,
}

impl Step {
    pub(super) fn scratch_len(&self) -> usize {
        match &self.kind {
            StepKind::Conv { weights: ConvWeights::Direct(_), .. } => 0,
            StepKind::Conv { weights: ConvWeights::LowPrecision(constant), geometry: g, .. } => {
                let w = &g.window;
                let rows = w.out_height * w.out_width * g.in_channels * w.kernel_height * w.kernel_width;
                constant.factor_floats() + constant.encoded_floats(g.image_in_len) + constant.encoded_floats(rows)
            }
            StepKind::Conv { geometry, .. } => {
                let w = &geometry.window;
                whole_lines(w.out_height * w.out_width * geometry.in_channels * w.kernel_height * w.kernel_width) + packed::PANEL_FLOATS
            }
            StepKind::Gemm { product: Product::Packed { .. }, .. } => packed::PANEL_FLOATS,
            StepKind::Gemm { product: Product::LowPrecision { constant, .. }, shape, .. } => constant.factor_floats() + constant.encoded_floats(shape.m * shape.k),
            StepKind::Depthwise { geometry, .. } if geometry.channels_first => {
                geometry.window.planar_scratch_len()
            }
            StepKind::ExpandDepthwise { expansion, geometry: g, band_rows, interleaved: true, .. } => {
                // Later bands are no taller than the first once padded.
                let padded = g.window.band(0..*band_rows).0.padded();
                let padded_len = if pads_each_band(&g.window) { padded.in_height * padded.in_width * g.in_channels } else { 0 };
                whole_lines(expanded_band_len(g, *band_rows)) + packed::PANEL_FLOATS + padded_len + expansion.low_precision_scratch(g)
            }
            StepKind::ExpandDepthwise { geometry: g, band_rows, interleaved: false, .. } => {
                // Bands after the first may be as tall, but never need more phase-plane room.
                whole_lines(expanded_band_len(g, *band_rows)) + packed::PANEL_FLOATS + g.window.band(0..*band_rows).0.planar_scratch_len()
            }
            _ => 0,
        }
    }

    pub(super) fn operands_mut(&mut self) -> Vec<&mut Operand> {
        match &mut self.kind {
            StepKind::Gemm { product: Product::Backend { a, b }, .. } | StepKind::Binary { a, b, .. } => vec![a, b],
            StepKind::Gemm { product: Product::Packed { activations, .. } | Product::LowPrecision { activations, .. }, .. } => vec![activations],
            StepKind::ExpandDepthwise { expansion, .. } => vec![&mut expansion.activations],
            StepKind::Conv { input, .. }
            | StepKind::Depthwise { input, .. }
            | StepKind::Sigmoid { input }
            | StepKind::Transpose { input, .. }
            | StepKind::ReduceSum { input, .. } => vec![input],
            StepKind::Concat { inputs, .. } => inputs.iter_mut().map(|(operand, _)| operand).collect(),
        }
    }
}

pub(super) fn operand_len(operand: &Operand) -> usize {
    match operand {
        Operand::Buffer { len, .. } => *len,
        Operand::Const(values) => values.len(),
    }
}

/// Whether an interleaved [`StepKind::ExpandDepthwise`] copies each band into a zero-padded one
/// before its depthwise convolution: where under three quarters of the map's pixels are interior
/// (14x14 and 7x7 maps with a 5x5 kernel, 10x10 ones with a 3x3), the copy costs less than computing
/// the border pixels one by one; on the larger maps it costs more (measured per layer).
pub(super) fn pads_each_band(window: &Window) -> bool {
    window.interior_share() < 0.75
}

/// Values of the expanded channels of the tallest band of `band_rows` output rows: the input rows
/// its windows reach, for every channel.
pub(super) fn expanded_band_len(geometry: &ConvGeometry, band_rows: usize) -> usize {
    let w = &geometry.window;
    geometry.in_channels * ((band_rows - 1) * w.stride + w.kernel_height) * w.in_width
}

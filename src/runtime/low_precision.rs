//! The products of the reduced precisions, int8 ([`quantized`](super::quantized)) or bf16
//! ([`bf16`](super::bf16)), behind one constant type and one set of calls, so that the executor runs
//! a lowered model's reduced products the same way whichever precision it was lowered for: encode
//! the activations into the scratch, gather a dense convolution's windows, multiply.

use super::bf16::{self, Bf16Const};
use super::buffer::{as_bytes, as_halves};
use super::kernels::{self, Epilogue, Window};
use super::quantized::{self, QuantizedConst};
use super::scale_zero_point::ScaleZeroPoint;

/// Weights in a reduced precision, packed for their product.
#[derive(Debug, Clone)]
pub enum LowPrecisionConst {
    Int8(QuantizedConst),
    Bf16(Bf16Const),
}

/// Which reduced precision a model's products run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowPrecision {
    Int8,
    Bf16,
}

impl LowPrecision {
    /// Whether this CPU runs the precision's products: int8 everywhere (VNNI where present, else a
    /// portable kernel with the same results), bf16 only with AVX-512 BF16.
    pub fn available(self) -> bool {
        match self {
            LowPrecision::Int8 => true,
            LowPrecision::Bf16 => bf16::available(),
        }
    }
}

/// Activations encoded for a product: u8 levels with their scale and zero point, or bf16 values.
#[derive(Debug, Clone, Copy)]
pub enum Encoded<'a> {
    Int8(&'a [u8], ScaleZeroPoint),
    Bf16(&'a [u16]),
}

impl<'a> Encoded<'a> {
    /// The encoded values from `offset` (in values) on.
    pub fn skip(self, offset: usize) -> Encoded<'a> {
        match self {
            Encoded::Int8(bytes, levels) => Encoded::Int8(&bytes[offset..], levels),
            Encoded::Bf16(halves) => Encoded::Bf16(&halves[offset..]),
        }
    }
}

impl LowPrecisionConst {
    /// W (k×n) given as its columns (column j at j·k) in `precision`; `None` where its product cannot
    /// take k (int8: a multiple of 4; bf16: even).
    pub fn new(precision: LowPrecision, columns: &[f32], k: usize, n: usize) -> Option<LowPrecisionConst> {
        match precision {
            LowPrecision::Int8 => QuantizedConst::new(columns, k, n).map(LowPrecisionConst::Int8),
            LowPrecision::Bf16 => Bf16Const::new(columns, k, n).map(LowPrecisionConst::Bf16),
        }
    }

    /// A dense convolution's kernel (OIHW) for rows gathered by [`LowPrecisionConst::window_rows`],
    /// whose depth runs tap by tap.
    pub fn for_windows(precision: LowPrecision, kernel: &[f32], channels: usize, taps: usize) -> Option<LowPrecisionConst> {
        let field = channels * taps;
        LowPrecisionConst::new(precision, &kernels::columns_for_windows(kernel, channels, taps), field, kernel.len() / field)
    }

    pub fn precision(&self) -> LowPrecision {
        match self {
            LowPrecisionConst::Int8(_) => LowPrecision::Int8,
            LowPrecisionConst::Bf16(_) => LowPrecision::Bf16,
        }
    }

    /// f32 scratch [`LowPrecisionConst::gemm`] needs for itself (int8's per-column factors).
    pub fn factor_floats(&self) -> usize {
        match self {
            LowPrecisionConst::Int8(constant) => constant.scratch_floats(),
            LowPrecisionConst::Bf16(_) => 0,
        }
    }

    /// f32 scratch that holds `values` encoded activations.
    pub fn encoded_floats(&self, values: usize) -> usize {
        match self {
            LowPrecisionConst::Int8(_) => values.div_ceil(4),
            LowPrecisionConst::Bf16(_) => values.div_ceil(2),
        }
    }

    /// Encodes `values` into `scratch` (at least [`LowPrecisionConst::encoded_floats`] long).
    pub fn encode<'s>(&self, values: &[f32], scratch: &'s mut [f32]) -> Encoded<'s> {
        match self {
            LowPrecisionConst::Int8(_) => {
                let bytes = &mut as_bytes(scratch)[..values.len()];
                let levels = quantized::quantize(values, bytes);
                Encoded::Int8(bytes, levels)
            }
            LowPrecisionConst::Bf16(_) => {
                let halves = &mut as_halves(scratch)[..values.len()];
                bf16::convert(values, halves);
                Encoded::Bf16(halves)
            }
        }
    }

    /// Gathers each output pixel's window of an encoded channels-last image into `scratch`, one row
    /// per pixel (see [`kernels::window_rows`]), padded with the encoded zero.
    pub fn window_rows<'s>(&self, image: Encoded, channels: usize, window: &Window, scratch: &'s mut [f32]) -> Encoded<'s> {
        let len = window.out_height * window.out_width * window.kernel_height * window.kernel_width * channels;
        match image {
            Encoded::Int8(image, levels) => {
                let rows = &mut as_bytes(scratch)[..len];
                kernels::window_rows(image, channels, window, levels.zero_point as u8, rows);
                Encoded::Int8(rows, levels)
            }
            Encoded::Bf16(image) => {
                let rows = &mut as_halves(scratch)[..len];
                kernels::window_rows(image, channels, window, 0, rows);
                Encoded::Bf16(rows)
            }
        }
    }

    /// C (m×n, row stride `c_row`) = A·W, then `epilogue` along C's columns; `factors` is scratch of
    /// [`LowPrecisionConst::factor_floats`].
    ///
    /// # Panics
    /// If A is encoded in the other precision, or a slice is too short for the sizes.
    pub fn gemm(&self, m: usize, a: Encoded, c: &mut [f32], c_row: usize, epilogue: Option<&Epilogue>, factors: &mut [f32]) {
        match (self, a) {
            (LowPrecisionConst::Int8(constant), Encoded::Int8(bytes, levels)) => {
                quantized::gemm(m, constant, bytes, levels, c, c_row, epilogue, factors)
            }
            (LowPrecisionConst::Bf16(constant), Encoded::Bf16(halves)) => bf16::gemm(m, constant, halves, c, c_row, epilogue),
            _ => panic!("activations encoded for another precision"),
        }
    }
}

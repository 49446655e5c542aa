//! What happens to a kernel's results on their way out: a per-channel bias and a clamp applied while
//! the block is still in cache, and the depthwise kernel's store as f32 or encoded (quantised u8, bf16).

use super::simd::{clamp, multiversion};
use crate::runtime::scale_zero_point::ScaleZeroPoint;

/// What follows a convolution or matrix product before its result is stored: a per-channel bias and a
/// clamp (ReLU6 is a clamp to [0, 6]). Applying it while the block is still in cache saves a pass over
/// memory per fused op.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    /// One value per output channel, or empty.
    pub bias: Vec<f32>,
    pub low: f32,
    pub high: f32,
}

impl Epilogue {
    pub fn new(channels: usize) -> Epilogue {
        Epilogue { bias: vec![0.0; channels], low: f32::NEG_INFINITY, high: f32::INFINITY }
    }
}

/// Which dimension of a row-major block the epilogue's channels run along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelsAlong {
    Rows,
    Columns,
}

multiversion! {
    /// Applies `epilogue` to columns `columns` of the `rows`-row block starting at `block[0]` with row
    /// stride `row_stride`; `channel_offset` is the block's first channel.
    pub fn apply_epilogue(
        block: &mut [f32], rows: usize, row_stride: usize, columns: std::ops::Range<usize>,
        epilogue: &Epilogue, along: ChannelsAlong,
    ) => apply_epilogue_body
}

#[inline(always)]
fn apply_epilogue_body(
    block: &mut [f32],
    rows: usize,
    row_stride: usize,
    columns: std::ops::Range<usize>,
    epilogue: &Epilogue,
    along: ChannelsAlong,
) {
    let (low, high) = (epilogue.low, epilogue.high);
    for row in 0..rows {
        let values = &mut block[row * row_stride + columns.start..row * row_stride + columns.end];
        match along {
            ChannelsAlong::Rows => {
                let bias = epilogue.bias[row];
                for v in values.iter_mut() {
                    *v = clamp(*v + bias, low, high);
                }
            }
            ChannelsAlong::Columns => {
                for (v, bias) in values.iter_mut().zip(&epilogue.bias[columns.clone()]) {
                    *v = clamp(*v + bias, low, high);
                }
            }
        }
    }
}

/// Where the interleaved depthwise kernel writes: f32 values, or those encoded for the int8 or bf16
/// product that reads them next (which then reads a quarter or half the bytes, and need not encode a
/// tensor it would first have to read whole).
pub enum DepthwiseOutput<'a> {
    Floats(&'a mut [f32]),
    Bytes(&'a mut [u8], ScaleZeroPoint),
    Halves(&'a mut [u16]),
}

/// How a depthwise convolution stores its output for the product that alone reads it: u8 with fixed
/// levels (int8), or bf16.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputEncoding {
    U8(ScaleZeroPoint),
    Bf16,
}

//! The native executor's kernels, one family per room: the shared vector plumbing ([`simd`]), what
//! follows a product or convolution ([`epilogue`]), convolution geometry ([`window`]), depthwise and
//! dense convolutions, element-wise operations, and the AVX-512 intrinsics kernels. This module only
//! gathers what the executor calls.

pub(crate) mod simd;
mod epilogue;
mod window;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod conv;
mod depthwise;
mod elementwise;
#[cfg(test)]
pub(crate) mod tests;

pub(crate) use simd::BaselineMultiplyAdd;
pub(crate) use conv::{columns_for_windows, conv_interleaved, conv_interleaved_takes, im2col, window_rows};
pub(crate) use depthwise::{depthwise_interleaved, depthwise_interleaved_encoded, depthwise_planar, encoded_depthwise_takes};
pub(crate) use elementwise::{binary, reduce_sum, sigmoid, strided_copy, u8_values, BinaryOp};
pub(crate) use epilogue::{apply_epilogue, ChannelsAlong, Epilogue, OutputEncoding};
pub(crate) use window::{pad_interleaved, ImageStrides, Window, LANES, MAX_KERNEL_HEIGHT};

//! imgfeat's own model executor and what it is built from: [`native`] lowers a tract graph into
//! steps over the [`kernels`], the matrix products ([`gemm`], [`packed`], and in reduced precision
//! [`low_precision`]: [`quantized`] and [`bf16`]) and cache-aligned buffers ([`buffer`]). Loading a model and feeding it images is [`crate::model`]'s job.

pub(crate) mod bf16;
pub(crate) mod buffer;
pub(crate) mod gemm;
pub(crate) mod kernels;
pub(crate) mod low_precision;
pub(crate) mod native;
pub(crate) mod packed;
pub(crate) mod quantized;
pub(crate) mod scale_zero_point;
mod tile_rows;

//! The matrix product behind every 1x1 convolution, im2col convolution and fully connected layer of
//! the native executor, behind one trait so the backend is a configuration choice made by measurement.
//! The portable backend (the packed AVX-512 product for constant weights, matrixmultiply for the rest)
//! is the default: on an AMD EPYC, where MKL takes its AVX2 path at half the speed, and on an Intel
//! Xeon too, where MKL's AVX-512 kernel is about as fast as the packed product on each shape but
//! whole models run ~1.4× slower through it (it cannot fuse the bias and activation or read
//! channels-last tensors in place). MKL stays an option (`cargo build --features mkl`,
//! `"engine": {"gemm": "mkl"}`).

use std::fmt::Debug;

/// A read-only matrix: element (i, j) lives at `ptr + i·row_stride + j·col_stride`. Only a backend
/// reads the pointer, inside [`GemmBackend::gemm`]'s contract.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatRef {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

/// A writable matrix, addressed as [`MatRef`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatMut {
    ptr: *mut f32,
    row_stride: isize,
    col_stride: isize,
}

impl MatRef {
    /// The matrix whose element (0, 0) is `values[0]`; its extent is [`GemmBackend::gemm`]'s
    /// contract, checked by the caller.
    pub(crate) fn new(values: &[f32], row_stride: isize, col_stride: isize) -> MatRef {
        MatRef { ptr: values.as_ptr(), row_stride, col_stride }
    }
}

impl MatMut {
    /// As [`MatRef::new`], writable.
    pub(crate) fn new(values: &mut [f32], row_stride: isize, col_stride: isize) -> MatMut {
        MatMut { ptr: values.as_mut_ptr(), row_stride, col_stride }
    }
}

/// C = A·B for an m×k A, a k×n B and an m×n C (C is overwritten).
pub(crate) trait GemmBackend: Send + Sync + Debug {
    fn name(&self) -> &'static str;

    /// Whether products with constant weights should use the executor's packed AVX-512 product
    /// (`runtime::packed`) rather than this backend, where the CPU has AVX-512. (An int8 program packs
    /// them whatever this says, on every CPU, so that its rows are the same bits everywhere.)
    fn packs_constants(&self) -> bool {
        false
    }

    /// # Safety
    /// Every element the strides address, for the given m, k, n, must be valid for reads (A, B) or
    /// writes (C), and C must not overlap A or B.
    unsafe fn gemm(&self, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: MatMut);
}

/// matrixmultiply: pure Rust, picks AVX-512, AVX2+FMA or SSE kernels at run time. The default.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Portable;

impl GemmBackend for Portable {
    fn name(&self) -> &'static str {
        if super::packed::available() {
            "portable (packed AVX-512 weights, matrixmultiply for the rest)"
        } else {
            "portable (matrixmultiply; an int8 program packs its f32 products on the portable tile)"
        }
    }

    fn packs_constants(&self) -> bool {
        true
    }

    /// # Safety
    /// [`GemmBackend::gemm`]'s contract.
    unsafe fn gemm(&self, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: MatMut) {
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            matrixmultiply::sgemm(
                m, k, n, 1.0, a.ptr, a.row_stride, a.col_stride, b.ptr, b.row_stride, b.col_stride, 0.0, c.ptr,
                c.row_stride, c.col_stride,
            )
        }
    }
}

/// Intel MKL, statically linked and sequential (each Spark task thread runs its own product).
#[cfg(feature = "mkl")]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Mkl;

#[cfg(feature = "mkl")]
mod mkl_ffi {
    use intel_mkl_src as _;

    pub const ROW_MAJOR: i32 = 101;
    pub const NO_TRANS: i32 = 111;
    pub const TRANS: i32 = 112;

    extern "C" {
        pub fn cblas_sgemm(
            layout: i32, trans_a: i32, trans_b: i32, m: i32, n: i32, k: i32, alpha: f32, a: *const f32, lda: i32,
            b: *const f32, ldb: i32, beta: f32, c: *mut f32, ldc: i32,
        );
    }
}

#[cfg(feature = "mkl")]
impl GemmBackend for Mkl {
    fn name(&self) -> &'static str {
        "mkl (static, sequential)"
    }

    /// # Safety
    /// [`GemmBackend::gemm`]'s contract.
    unsafe fn gemm(&self, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: MatMut) {
        use mkl_ffi::*;
        // CBLAS wants each matrix with one unit stride; the executor's operands always have one, but a
        // matrix of one row or column may report either, so fall back rather than assume.
        let layout_of = |rs: isize, cs: isize, rows: usize, cols: usize| -> Option<(i32, i32)> {
            if cs == 1 || cols == 1 {
                Some((NO_TRANS, rs.max(cols as isize) as i32))
            } else if rs == 1 || rows == 1 {
                Some((TRANS, cs.max(rows as isize) as i32))
            } else {
                None
            }
        };
        let c_row_major = c.col_stride == 1 || n == 1;
        let (Some((ta, lda)), Some((tb, ldb)), true) =
            (layout_of(a.row_stride, a.col_stride, m, k), layout_of(b.row_stride, b.col_stride, k, n), c_row_major)
        else {
            // SAFETY: forwarded from the caller's contract.
            return unsafe { Portable.gemm(m, k, n, a, b, c) };
        };
        let ldc = c.row_stride.max(n as isize) as i32;
        // SAFETY: forwarded from the caller's contract; the leading dimensions describe the same strides.
        unsafe { cblas_sgemm(ROW_MAJOR, ta, tb, m as i32, n as i32, k as i32, 1.0, a.ptr, lda, b.ptr, ldb, 0.0, c.ptr, ldc) }
    }
}

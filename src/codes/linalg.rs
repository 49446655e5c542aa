//! The dense linear algebra of `fit-codes`: a Gram matrix (the GEMM that dominates the fit), a symmetric
//! eigendecomposition for PCA and small SVDs for ITQ. Portable by default (nalgebra); with the cargo
//! feature `mkl`, Intel MKL's BLAS and LAPACK, statically linked and sequential so that a fit inside a
//! Spark task uses the one core it was given.

use nalgebra::DMatrix;

#[cfg(not(feature = "mkl"))]
mod backend {
    use nalgebra::DMatrix;

    pub const BACKEND: &str = "nalgebra";

    pub fn gram(a: &DMatrix<f64>) -> DMatrix<f64> {
        a.tr_mul(a)
    }

    pub fn matmul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
        a * b
    }

    pub fn symmetric_eigen(a: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
        let eigen = a.clone().symmetric_eigen();
        (eigen.eigenvalues.iter().copied().collect(), eigen.eigenvectors)
    }

    pub fn svd(a: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
        let svd = a.clone().svd(true, true);
        (svd.u.expect("U requested"), svd.v_t.expect("Vᵀ requested"))
    }
}

#[cfg(feature = "mkl")]
mod backend {
    use std::ffi::c_char;

    use nalgebra::DMatrix;

    // Link the static, sequential MKL that intel-mkl-src found.
    use intel_mkl_src as _;

    pub const BACKEND: &str = "mkl";

    const COL_MAJOR: i32 = 102;
    const NO_TRANS: i32 = 111;
    const TRANS: i32 = 112;

    extern "C" {
        fn cblas_dgemm(
            layout: i32, trans_a: i32, trans_b: i32, m: i32, n: i32, k: i32, alpha: f64, a: *const f64, lda: i32,
            b: *const f64, ldb: i32, beta: f64, c: *mut f64, ldc: i32,
        );
        fn LAPACKE_dsyevd(layout: i32, jobz: c_char, uplo: c_char, n: i32, a: *mut f64, lda: i32, w: *mut f64) -> i32;
        fn LAPACKE_dgesdd(
            layout: i32, jobz: c_char, m: i32, n: i32, a: *mut f64, lda: i32, s: *mut f64, u: *mut f64, ldu: i32,
            vt: *mut f64, ldvt: i32,
        ) -> i32;
    }

    /// C = op(A) · B for column-major matrices.
    fn gemm(a: &DMatrix<f64>, transpose_a: bool, b: &DMatrix<f64>) -> DMatrix<f64> {
        let (m, k) = if transpose_a { (a.ncols(), a.nrows()) } else { (a.nrows(), a.ncols()) };
        assert_eq!(k, b.nrows(), "inner dimensions differ");
        let n = b.ncols();
        let mut c = DMatrix::<f64>::zeros(m, n);
        // SAFETY: the pointers cover the column-major storage of matrices of exactly these dimensions.
        unsafe {
            cblas_dgemm(
                COL_MAJOR,
                if transpose_a { TRANS } else { NO_TRANS },
                NO_TRANS,
                m as i32,
                n as i32,
                k as i32,
                1.0,
                a.as_ptr(),
                a.nrows().max(1) as i32,
                b.as_ptr(),
                b.nrows().max(1) as i32,
                0.0,
                c.as_mut_ptr(),
                m.max(1) as i32,
            );
        }
        c
    }

    pub fn gram(a: &DMatrix<f64>) -> DMatrix<f64> {
        gemm(a, true, a)
    }

    pub fn matmul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
        gemm(a, false, b)
    }

    pub fn symmetric_eigen(a: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
        let n = a.nrows();
        let mut vectors = a.clone();
        let mut values = vec![0.0; n];
        // SAFETY: `vectors` is n × n column-major, `values` holds n entries.
        let info = unsafe {
            LAPACKE_dsyevd(COL_MAJOR, b'V' as c_char, b'U' as c_char, n as i32, vectors.as_mut_ptr(), n as i32, values.as_mut_ptr())
        };
        assert_eq!(info, 0, "LAPACKE_dsyevd failed with info {info}");
        (values, vectors)
    }

    pub fn svd(a: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
        let (m, n) = (a.nrows(), a.ncols());
        let k = m.min(n);
        let mut work = a.clone();
        let mut singular = vec![0.0; k];
        let mut u = DMatrix::<f64>::zeros(m, k);
        let mut v_t = DMatrix::<f64>::zeros(k, n);
        // SAFETY: thin SVD ('S'): U is m × k, Vᵀ is k × n, all column-major with the given leading dimensions.
        let info = unsafe {
            LAPACKE_dgesdd(
                COL_MAJOR,
                b'S' as c_char,
                m as i32,
                n as i32,
                work.as_mut_ptr(),
                m as i32,
                singular.as_mut_ptr(),
                u.as_mut_ptr(),
                m as i32,
                v_t.as_mut_ptr(),
                k as i32,
            )
        };
        assert_eq!(info, 0, "LAPACKE_dgesdd failed with info {info}");
        (u, v_t)
    }
}

pub use backend::BACKEND;

/// Aᵀ·A.
pub fn gram(a: &DMatrix<f64>) -> DMatrix<f64> {
    backend::gram(a)
}

/// A·B.
pub fn matmul(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    backend::matmul(a, b)
}

/// Eigenvalues (in no particular order) and the matching unit eigenvectors as columns.
pub fn symmetric_eigen(a: &DMatrix<f64>) -> (Vec<f64>, DMatrix<f64>) {
    backend::symmetric_eigen(a)
}

/// The thin SVD's U and Vᵀ, with singular values in matching order.
pub fn svd(a: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
    backend::svd(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize, m: usize) -> DMatrix<f64> {
        DMatrix::from_fn(n, m, |i, j| ((i * 7 + j * 13) % 11) as f64 - 5.0 + (i == j) as u8 as f64)
    }

    #[test]
    fn gram_and_matmul_agree_with_the_definition() {
        let a = sample(9, 5);
        let expected = a.transpose() * &a;
        assert!((gram(&a) - &expected).abs().max() < 1e-9);
        let b = sample(5, 3);
        assert!((matmul(&a, &b) - &a * &b).abs().max() < 1e-9);
    }

    #[test]
    fn eigen_reconstructs_the_matrix() {
        let a = gram(&sample(12, 6));
        let (values, vectors) = symmetric_eigen(&a);
        let rebuilt = &vectors * DMatrix::from_diagonal(&nalgebra::DVector::from_vec(values)) * vectors.transpose();
        assert!((rebuilt - a).abs().max() < 1e-8);
    }

    #[test]
    fn svd_factors_are_orthogonal() {
        let a = sample(6, 6);
        let (u, v_t) = svd(&a);
        let identity = DMatrix::<f64>::identity(6, 6);
        assert!((u.transpose() * &u - &identity).abs().max() < 1e-9);
        assert!((&v_t * v_t.transpose() - &identity).abs().max() < 1e-9);
        // Uᵀ A Vᵀᵀ is diagonal.
        let sigma = u.transpose() * &a * v_t.transpose();
        let off_diagonal = sigma.iter().enumerate().filter(|(i, _)| i % 7 != 0).map(|(_, v)| v.abs()).fold(0.0, f64::max);
        assert!(off_diagonal < 1e-9);
    }
}

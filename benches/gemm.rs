//! Single-thread SGEMM on the shapes our models' 1x1 convolutions have (M = output channels,
//! K = input channels, N = pixels), plus one square size for the peak: the numbers that pick the GEMM
//! backend of issue 4's own executor.
//!
//!     cargo bench --bench gemm                      # matrixmultiply (pure Rust, via ndarray) and
//!                                                   # the executor's packed product (AVX-512)
//!     PKG_CONFIG_PATH=/opt/mkl/lib/pkgconfig cargo bench --bench gemm --features mkl   # + MKL
//!
//! OpenBLAS is measured from Python (`benches/model_flops.py`). Reported as GFLOP/s (2·M·N·K / time).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use imgfeat::bench_internals::{self as packed, ConstSide, PackedConst};
use ndarray::Array2;

/// (M, K, N): SSD MobileNetV2 expansions and projections at 150², 75², 38², 19², EfficientNet-Lite0's
/// head at 7², and 1024³.
const SHAPES: [(usize, usize, usize); 7] = [
    (96, 16, 22_500),
    (144, 24, 5_625),
    (192, 32, 1_444),
    (576, 96, 361),
    (96, 576, 361),
    (1280, 320, 49),
    (1024, 1024, 1024),
];

#[cfg(feature = "mkl")]
mod mkl {
    // Link the static, sequential MKL.
    use intel_mkl_src as _;

    extern "C" {
        fn cblas_sgemm(
            layout: i32, trans_a: i32, trans_b: i32, m: i32, n: i32, k: i32, alpha: f32, a: *const f32, lda: i32,
            b: *const f32, ldb: i32, beta: f32, c: *mut f32, ldc: i32,
        );
    }

    /// Row-major C = A·B through MKL.
    pub fn sgemm(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
        // SAFETY: the slices hold m·k, k·n and m·n values, row-major.
        unsafe {
            cblas_sgemm(101, 111, 111, m as i32, n as i32, k as i32, 1.0, a.as_ptr(), k as i32, b.as_ptr(), n as i32, 0.0, c.as_mut_ptr(), n as i32)
        }
    }
}

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(10);
    for (m, k, n) in SHAPES {
        let a = Array2::<f32>::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1);
        let b = Array2::<f32>::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 * 0.1);
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let label = format!("{m}x{k}x{n}");
        group.bench_with_input(BenchmarkId::new("matrixmultiply", &label), &(), |bench, _| {
            bench.iter(|| black_box(&a).dot(black_box(&b)))
        });
        if packed::available() {
            // The native executor's product: A = constant weights packed at load, B read in place.
            let (a, b) = (a.as_standard_layout().to_owned(), b.as_standard_layout().to_owned());
            let weights = PackedConst::pack(ConstSide::Left, a.as_slice().unwrap(), k, 1, m, k, n);
            let (mut out, mut panel) = (vec![0f32; m * n], vec![0f32; packed::PANEL_FLOATS]);
            group.bench_with_input(BenchmarkId::new("packed", &label), &(), |bench, _| {
                bench.iter(|| packed::gemm(m, k, n, &weights, b.as_slice().unwrap(), n, 1, &mut out, n, None, &mut panel))
            });
        }
        #[cfg(feature = "mkl")]
        {
            let (a, b) = (a.as_standard_layout().to_owned(), b.as_standard_layout().to_owned());
            let (mut out, mut panel) = (vec![0f32; m * n], vec![0f32; packed::PANEL_FLOATS]);
            group.bench_with_input(BenchmarkId::new("mkl", &label), &(), |bench, _| {
                bench.iter(|| mkl::sgemm(a.as_slice().unwrap(), b.as_slice().unwrap(), &mut out, m, k, n))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gemm);
criterion_main!(benches);

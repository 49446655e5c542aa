//! bf16 matrix products for the 1x1 and dense convolutions that read and write channels-last
//! (`"engine": {"precision": "bf16"}`): weights rounded to bf16 once at load time, activations once
//! per product, multiplied with AVX-512 BF16, where one `vdpbf16ps` does 32 multiply-adds into 16
//! f32 sums: twice an f32 FMA's, with the sums kept in f32. bf16 keeps f32's exponent and 8 bits of
//! its mantissa, so unlike int8 nothing is calibrated or clipped: each input moves by at most half
//! a unit in its 8th bit (tests/precision.rs bounds the rows against f32's over real photos).

use super::kernels::Epilogue;

/// Rows (pixels) and columns (output channels) of the register tile: 14×2 accumulators, two weight
/// vectors and a broadcast fill 31 of the 32 vector registers, as in the f32 and int8 products.
const MR: usize = 14;
const NR: usize = 32;

/// A constant right operand W (k×n) rounded to bf16 and packed for [`gemm`]: panel p holds, for each
/// pair of k, its [`NR`] columns' two weights side by side (what `vdpbf16ps` multiplies with a
/// broadcast pair of activations).
#[derive(Debug, Clone)]
pub struct Bf16Const {
    k: usize,
    n: usize,
    panels: Vec<u16>,
}

/// Whether this CPU has the instructions [`gemm`] needs.
pub fn available() -> bool {
    crate::cpu::features().bf16_products
}

/// `value` rounded to the nearest bf16 (ties to even), as `vcvtneps2bf16` rounds; NaN stays NaN.
pub fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

impl Bf16Const {
    /// Rounds W given as its columns (column j at j·k); `None` unless k is even.
    pub fn new(columns: &[f32], k: usize, n: usize) -> Option<Bf16Const> {
        if !k.is_multiple_of(2) || columns.len() != k * n {
            return None;
        }
        let mut panels = vec![0u16; n.div_ceil(NR) * NR * k];
        for (j, column) in columns.chunks_exact(k).enumerate() {
            let (p, lane) = (j / NR, j % NR);
            for (kk, &w) in column.iter().enumerate() {
                panels[((p * (k / 2) + kk / 2) * NR + lane) * 2 + kk % 2] = to_bf16(w);
            }
        }
        Some(Bf16Const { k, n, panels })
    }
}

/// Rounds `values` to bf16 into `out`.
///
/// # Panics
/// If `out` is shorter than `values`.
pub fn convert(values: &[f32], out: &mut [u16]) {
    assert!(out.len() >= values.len(), "convert: output too short");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `available` checked AVX-512 BF16; the lengths are asserted.
        return unsafe { avx512::convert(values, out) };
    }
    for (o, &v) in out.iter_mut().zip(values) {
        *o = to_bf16(v);
    }
}

/// C (m×n, row stride `c_row`) = A·W, then `epilogue` along C's columns, with A m×k bf16 row-major.
///
/// # Panics
/// If a slice is too short for the sizes, or the CPU lacks [`available`]'s instructions.
pub fn gemm(m: usize, w: &Bf16Const, a: &[u16], c: &mut [f32], c_row: usize, epilogue: Option<&Epilogue>) {
    let (k, n) = (w.k, w.n);
    assert!(available(), "bf16 products need AVX-512 BF16");
    assert!(a.len() >= m * k && c_row >= n && (m == 0 || c.len() >= (m - 1) * c_row + n));
    assert!(epilogue.is_none_or(|e| e.bias.is_empty() || e.bias.len() >= n));
    // SAFETY: `available` checked the instructions; the sizes are asserted above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx512::gemm(m, w, a, c, c_row, epilogue)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Bf16Const, Epilogue, MR, NR};
    use crate::runtime::tile_rows::run_rows;

    /// # Safety
    /// AVX-512 F and BF16; `out` holds `values.len()` halves.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn convert(values: &[f32], out: &mut [u16]) {
        let chunks = values.chunks_exact(16);
        let tail = chunks.remainder();
        for (i, chunk) in chunks.enumerate() {
            // SAFETY: a chunk holds 16 values and `out` 16 halves from i·16 (the caller's contract);
            // a __m256bh is 32 bytes like a __m256i.
            unsafe {
                let halves: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(chunk.as_ptr())));
                _mm256_storeu_si256(out.as_mut_ptr().add(i * 16) as *mut __m256i, halves);
            }
        }
        let done = values.len() - tail.len();
        for (o, &v) in out[done..].iter_mut().zip(tail) {
            *o = super::to_bf16(v);
        }
    }

    /// # Safety
    /// AVX-512 F and BF16; the sizes [`super::gemm`] asserts.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn gemm(m: usize, w: &Bf16Const, a: &[u16], c: &mut [f32], c_row: usize, epilogue: Option<&Epilogue>) {
        let (low, high) = epilogue.map_or((f32::NEG_INFINITY, f32::INFINITY), |e| (e.low, e.high));
        let bias = epilogue.map_or(&[][..], |e| &e.bias[..]);
        for p in 0..w.n.div_ceil(NR) {
            let columns = (w.n - p * NR).min(NR);
            let masks = [columns.min(16), columns.saturating_sub(16)].map(|count| ((1u32 << count) - 1) as u16);
            let tile = Tile {
                k: w.k,
                panel: w.panels[p * NR * w.k..].as_ptr(),
                // The bias of the panel's columns (0 past n, and where there is none).
                bias: [0, 16].map(|h| {
                    let lanes: [f32; 16] = std::array::from_fn(|l| bias.get(p * NR + h + l).copied().filter(|_| h + l < columns).unwrap_or(0.0));
                    // SAFETY: `lanes` holds 16 values.
                    unsafe { _mm512_loadu_ps(lanes.as_ptr()) }
                }),
                masks,
                low: _mm512_set1_ps(low),
                high: _mm512_set1_ps(high),
            };
            let mut row = 0;
            while row < m {
                let rows = (m - row).min(MR);
                // SAFETY (each arm): rows `row..row + rows` of A and C exist (asserted by the caller).
                unsafe {
                    let (a, c) = (a.as_ptr().add(row * w.k), c.as_mut_ptr().add(row * c_row + p * NR));
                    run_rows!(rows, tile.run(a, c, c_row))
                }
                row += rows;
            }
        }
    }

    /// One panel of [`NR`] columns: its weights, bias, store masks and clamp.
    struct Tile {
        k: usize,
        panel: *const u16,
        bias: [__m512; 2],
        masks: [u16; 2],
        low: __m512,
        high: __m512,
    }

    impl Tile {
        /// C rows 0..R of this panel from A rows 0..R.
        ///
        /// # Safety
        /// AVX-512 F and BF16; A holds R rows of k halves, C R rows of the panel's columns, and the
        /// panel k/2 pairs of NR·2 halves.
        #[target_feature(enable = "avx512f,avx512bf16")]
        #[inline]
        unsafe fn run<const R: usize>(&self, a: *const u16, c: *mut f32, c_row: usize) {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for pair in 0..self.k / 2 {
                // SAFETY: the panel holds k/2 pairs of NR·2 halves; A's rows hold k halves. A
                // __m512i and a __m512bh are both 64 bytes of any bit pattern.
                unsafe {
                    let weights = self.panel.add(pair * NR * 2);
                    let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(weights as *const _));
                    let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(weights.add(32) as *const _));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let x: __m512bh = std::mem::transmute(_mm512_set1_epi32((a.add(i * self.k + pair * 2) as *const i32).read_unaligned()));
                        acc[0] = _mm512_dpbf16_ps(acc[0], x, w0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], x, w1);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                // A half with no columns (a panel of at most 16) is not addressed at all.
                for (h, &sums) in acc.iter().enumerate().filter(|&(h, _)| self.masks[h] != 0) {
                    let value = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(sums, self.bias[h]), self.low), self.high);
                    // SAFETY: the half has columns, and the mask keeps the store inside the panel's
                    // columns of row i.
                    unsafe { _mm512_mask_storeu_ps(c.add(i * c_row + h * 16), self.masks[h], value) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::tests::pseudo_random;
    use super::*;

    /// The f32 a bf16 stands for (exact).
    fn from_bf16(value: u16) -> f32 {
        f32::from_bits((value as u32) << 16)
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // The vector conversion agrees with the scalar one, tail included.
        let values: Vec<f32> = pseudo_random(37, 9).iter().map(|v| v * 1000.0).collect();
        let mut out = vec![0u16; values.len()];
        convert(&values, &mut out);
        assert_eq!(out, values.iter().map(|&v| to_bf16(v)).collect::<Vec<_>>());
    }

    #[test]
    fn bf16_products_equal_the_f32_products_of_the_rounded_values() {
        if !available() {
            eprintln!("skipped: bf16 products need AVX-512 BF16, which this CPU lacks");
            return;
        }
        for (m, k, n) in [(1, 2, 16), (13, 32, 24), (14, 64, 32), (31, 96, 40), (45, 144, 96)] {
            let a = pseudo_random(m * k, 1).iter().map(|v| v * 3.0 + 1.0).collect::<Vec<_>>();
            let columns = pseudo_random(k * n, 2);
            let w = Bf16Const::new(&columns, k, n).expect("k is even");
            let mut halves = vec![0u16; m * k];
            convert(&a, &mut halves);
            let mut epilogue = Epilogue::new(n);
            epilogue.bias = pseudo_random(n, 3);
            (epilogue.low, epilogue.high) = (-2.0, 6.0);
            let c_row = n + 3;
            let mut c = vec![f32::NAN; m * c_row];
            gemm(m, &w, &halves, &mut c, c_row, Some(&epilogue));
            for i in 0..m {
                for j in 0..n {
                    // The rounded values' products are exact in f32; only the sums' order and
                    // rounding differ from this f64 reference.
                    let rounded: f64 = (0..k).map(|kk| from_bf16(halves[i * k + kk]) as f64 * from_bf16(to_bf16(columns[j * k + kk])) as f64).sum();
                    let expected = (rounded as f32 + epilogue.bias[j]).clamp(-2.0, 6.0);
                    let got = c[i * c_row + j];
                    assert!((got - expected).abs() <= 1e-5 * (k as f32) * expected.abs().max(1.0), "{m}x{k}x{n} at ({i}, {j}): {got} vs {expected}");
                    // And near the f32 product: each input moved by ≤ 2⁻⁹ of itself.
                    let exact: f32 = (0..k).map(|kk| a[i * k + kk] * columns[j * k + kk]).sum::<f32>() + epilogue.bias[j];
                    assert!((got - exact.clamp(-2.0, 6.0)).abs() < 0.02 * (k as f32).sqrt(), "{m}x{k}x{n} at ({i}, {j}): {got} vs f32 {exact}");
                }
                assert!(c[i * c_row + n..(i + 1) * c_row].iter().all(|v| v.is_nan()), "stores stay inside the columns");
            }
        }
    }
}

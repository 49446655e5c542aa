//! int8 matrix products for the 1x1 and dense convolutions that read and write channels-last
//! (`"engine": {"precision": "int8"}`): weights quantised once per output channel (symmetric, s8),
//! activations once per product at run time (asymmetric u8 over the tensor's range; a depthwise
//! convolution's output arrives quantised over its ReLU6 range instead: `encode_depthwise_outputs`
//! in native/passes/low_precision.rs), multiplied with AVX-512 VNNI, where one `vpdpbusd` does 64 u8×s8 multiply-adds into 16 i32 sums: four times an f32
//! FMA's. Without AVX-512 VNNI an AVX-VNNI, AVX2 or portable kernel computes the same integer sums and dequantises them with
//! the same fused multiply-add, as does `quantize`'s portable twin: int8 rows are the same bits on
//! every CPU (tests/int8_identity.rs). On the Zen 5 we build on the same 14×32 register tile runs ~1,000 G int8 operations a second
//! against ~265 GFLOP/s in f32. The results differ from f32 by the rounding of the activations to 256
//! levels (tests/precision.rs bounds it over real photos, rows against f32's).

use super::kernels::simd::{clamp, multiversion};
use super::kernels::Epilogue;
use super::scale_zero_point::ScaleZeroPoint;

/// Rows (pixels) and columns (output channels) of the register tile.
const MR: usize = 14;
const NR: usize = 32;

/// A constant right operand W (k×n) quantised per column and packed for [`gemm`]: panel p holds, for
/// each group of four k, its [`NR`] columns' four weights side by side (what `vpdpbusd` multiplies
/// with four u8 activations).
#[derive(Debug, Clone)]
pub struct QuantizedConst {
    k: usize,
    n: usize,
    panels: Vec<i8>,
    /// Per column: the weights' scale, and the sum of its quantised weights (for the activations'
    /// zero point).
    scales: Vec<f32>,
    sums: Vec<i32>,
}

/// Whether this CPU runs the AVX-512 VNNI kernels (else AVX-VNNI, AVX2 or portable ones, with the
/// same results).
fn avx512_vnni() -> bool {
    crate::cpu::features().int8_products
}

impl QuantizedConst {
    /// Quantises W given as its columns (column j at j·k); `None` unless k is a positive multiple of 4.
    pub fn new(columns: &[f32], k: usize, n: usize) -> Option<QuantizedConst> {
        if k == 0 || !k.is_multiple_of(4) || columns.len() != k * n {
            return None;
        }
        let panels_count = n.div_ceil(NR);
        let mut panels = vec![0i8; panels_count * NR * k];
        let (mut scales, mut sums) = (vec![0.0; panels_count * NR], vec![0; panels_count * NR]);
        for (j, column) in columns.chunks_exact(k).enumerate() {
            let largest = column.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if largest > 0.0 { largest / 127.0 } else { 1.0 };
            scales[j] = scale;
            let (p, lane) = (j / NR, j % NR);
            for (kk, w) in column.iter().enumerate() {
                let q = (w / scale).round().clamp(-127.0, 127.0) as i8;
                sums[j] += q as i32;
                panels[((p * (k / 4) + kk / 4) * NR + lane) * 4 + kk % 4] = q;
            }
        }
        Some(QuantizedConst { k, n, panels, scales, sums })
    }

    /// f32 scratch values [`gemm`] needs: the per-column factors.
    pub fn scratch_floats(&self) -> usize {
        2 * self.scales.len()
    }
}

/// Quantises `values` to u8 over their range (widened to include 0, so zero is exact).
///
/// # Panics
/// If `out` is shorter than `values`.
pub fn quantize(values: &[f32], out: &mut [u8]) -> ScaleZeroPoint {
    assert!(out.len() >= values.len(), "quantize: output too short");
    #[cfg(target_arch = "x86_64")]
    if avx512_vnni() {
        // SAFETY: `avx512_vnni` means AVX-512 F and BW (and VNNI); the lengths are asserted.
        return unsafe { avx512::quantize(values, out) };
    }
    let mut levels = ScaleZeroPoint { scale: 1.0, zero_point: 0 };
    quantize_portable(values, out, &mut levels);
    levels
}

multiversion! {
    /// The portable [`quantize`]: the same range (from 0), levels and fused, ties-to-even rounding
    /// (the baseline variant's fused by libm's `fmaf`: int8 programs want the bits, not the speed).
    fn quantize_portable(values: &[f32], out: &mut [u8], levels: &mut ScaleZeroPoint) => quantize_body
}

#[inline(always)]
fn quantize_body(values: &[f32], out: &mut [u8], levels: &mut ScaleZeroPoint) {
    let (min, max) = values.iter().fold((0f32, 0f32), |(min, max), &v| (min.min(v), max.max(v)));
    *levels = ScaleZeroPoint::spanning(min, max);
    let (inverse, zero) = (1.0 / levels.scale, levels.zero_point as f32);
    for (o, &v) in out.iter_mut().zip(values) {
        *o = v.mul_add(inverse, zero).round_ties_even().clamp(0.0, 255.0) as u8;
    }
}

/// C (m×n, row stride `c_row`) = dequantised(A·W), then `epilogue` along C's columns. A is m×k u8,
/// row-major, quantised with `levels`; `factors` is scratch of [`QuantizedConst::scratch_floats`].
///
/// # Panics
/// If a slice is too short for the sizes.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    w: &QuantizedConst,
    a: &[u8],
    levels: ScaleZeroPoint,
    c: &mut [f32],
    c_row: usize,
    epilogue: Option<&Epilogue>,
    factors: &mut [f32],
) {
    let (k, n) = (w.k, w.n);
    assert!(a.len() >= m * k && c_row >= n && (m == 0 || c.len() >= (m - 1) * c_row + n) && factors.len() >= w.scratch_floats());
    // Per column: C = acc·scale_a·scale_w + (bias - zero·Σw·scale_a·scale_w).
    let (multipliers, offsets) = factors[..w.scratch_floats()].split_at_mut(w.scales.len());
    for j in 0..w.scales.len() {
        multipliers[j] = levels.scale * w.scales[j];
        let bias = epilogue.and_then(|e| e.bias.get(j)).copied().unwrap_or(0.0);
        offsets[j] = bias - (levels.zero_point * w.sums[j]) as f32 * multipliers[j];
    }
    let (low, high) = epilogue.map_or((f32::NEG_INFINITY, f32::INFINITY), |e| (e.low, e.high));
    #[cfg(target_arch = "x86_64")]
    if avx512_vnni() {
        // SAFETY: `avx512_vnni` checked the instructions; the sizes are asserted above.
        return unsafe { avx512::gemm(m, w, a, c, c_row, multipliers, offsets, low, high) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::features().avx_vnni_products {
        // SAFETY: `avx_vnni_products` means AVX2, FMA and AVX-VNNI; the sizes are asserted above.
        return unsafe { avx_vnni::gemm(m, w, a, c, c_row, multipliers, offsets, low, high) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::isa() >= crate::cpu::Isa::Avx2Fma {
        // SAFETY: `Isa::Avx2Fma` or wider means AVX2 and FMA; the sizes are asserted above.
        return unsafe { avx2::gemm(m, w, a, c, c_row, multipliers, offsets, low, high) };
    }
    gemm_portable(m, w, a, c, c_row, multipliers, offsets, low, high)
}

/// The portable [`gemm`] (the x86-64 baseline): each column's exact i32 sum (wrapping, as
/// `vpdpbusd`'s: integer sums are the same in any order), dequantised by one fused multiply-add and
/// clamped, as the VNNI tile does.
#[allow(clippy::too_many_arguments)]
fn gemm_portable(m: usize, w: &QuantizedConst, a: &[u8], c: &mut [f32], c_row: usize, multipliers: &[f32], offsets: &[f32], low: f32, high: f32) {
    let k = w.k;
    for p in 0..w.n.div_ceil(NR) {
        let columns = (w.n - p * NR).min(NR);
        let panel = &w.panels[p * NR * k..][..NR * k];
        for i in 0..m {
            let mut sums = [0i32; NR];
            for (group, x) in a[i * k..][..k].chunks_exact(4).enumerate() {
                let weights: &[i8; NR * 4] = panel[group * NR * 4..][..NR * 4].try_into().expect("NR·4 weights");
                for (sum, w) in sums.iter_mut().zip(weights.chunks_exact(4)) {
                    let dot = (0..4).map(|q| x[q] as i32 * w[q] as i32).sum::<i32>();
                    *sum = sum.wrapping_add(dot);
                }
            }
            dequantise(&sums, &mut c[i * c_row + p * NR..][..columns], &multipliers[p * NR..], &offsets[p * NR..], low, high);
        }
    }
}

/// One row of a tile's columns from their exact sums, as every int8 kernel stores them:
/// sum·multiplier + offset by one fused multiply-add (what the VNNI tile's `vfmadd` computes), then
/// clamped.
#[inline(always)]
fn dequantise(sums: &[i32], out: &mut [f32], multipliers: &[f32], offsets: &[f32], low: f32, high: f32) {
    for (((o, &sum), &multiplier), &offset) in out.iter_mut().zip(sums).zip(multipliers).zip(offsets) {
        *o = clamp((sum as f32).mul_add(multiplier, offset), low, high);
    }
}

/// Up to one panel's columns for the 256-bit int8 kernels ([`avx_vnni`], [`avx2`]): where their weights
/// start in the panel's groups of four k, and their factors.
#[cfg(target_arch = "x86_64")]
struct NarrowTile<'a> {
    k: usize,
    weights: &'a [i8],
    columns: usize,
    multipliers: &'a [f32],
    offsets: &'a [f32],
    low: f32,
    high: f32,
}

/// Rows of A per 256-bit tile: 3 rows × 4 vectors of sums, the group's 4 weight vectors and a
/// broadcast fill the 16 registers.
#[cfg(target_arch = "x86_64")]
const NARROW_ROWS: usize = 3;

/// A 256-bit kernel's tile of `R` rows, for `R` = 1..=[`NARROW_ROWS`].
#[cfg(target_arch = "x86_64")]
type NarrowRun = unsafe fn(&NarrowTile, &[u8], &mut [f32], usize);

/// Runs `tile` down every row of A (m rows of k bytes) in tiles of up to [`NARROW_ROWS`] rows: the
/// tile of r rows is `runs[r - 1]`. C's rows lie `c_row` apart from `c`, the tile's first column.
///
/// # Safety
/// The CPU has the instructions `runs` are compiled for.
#[cfg(target_arch = "x86_64")]
unsafe fn sweep_rows(m: usize, tile: &NarrowTile, a: &[u8], c: &mut [f32], c_row: usize, runs: [NarrowRun; NARROW_ROWS]) {
    let mut row = 0;
    while row < m {
        let rows = (m - row).min(NARROW_ROWS);
        // SAFETY: the caller's contract; each run bounds-checks its slices.
        unsafe { runs[rows - 1](tile, &a[row * tile.k..], &mut c[row * c_row..], c_row) };
        row += rows;
    }
}

/// The int8 product with AVX-VNNI, for CPUs without AVX-512 (Intel Alder Lake and later, AMD Zen 5):
/// `vpdpbusd` on 256-bit vectors, 32 u8×s8 multiply-adds into 8 i32 sums, reading the VNNI tile's
/// panels at half its width.
#[cfg(target_arch = "x86_64")]
mod avx_vnni {
    use std::arch::x86_64::*;

    use super::{dequantise, sweep_rows, NarrowTile, QuantizedConst, NR};

    /// # Safety
    /// AVX2, FMA and AVX-VNNI; the sizes [`super::gemm`] asserts.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub unsafe fn gemm(m: usize, w: &QuantizedConst, a: &[u8], c: &mut [f32], c_row: usize, multipliers: &[f32], offsets: &[f32], low: f32, high: f32) {
        for p in 0..w.n.div_ceil(NR) {
            let tile = NarrowTile {
                k: w.k,
                weights: &w.panels[p * NR * w.k..][..NR * w.k],
                columns: (w.n - p * NR).min(NR),
                multipliers: &multipliers[p * NR..],
                offsets: &offsets[p * NR..],
                low,
                high,
            };
            // SAFETY: AVX2, FMA and AVX-VNNI (this function's contract).
            unsafe { sweep_rows(m, &tile, a, &mut c[p * NR..], c_row, [run::<1>, run::<2>, run::<3>]) };
        }
    }

    /// C rows 0..R of the tile's panel from A rows 0..R.
    ///
    /// # Safety
    /// AVX2, FMA and AVX-VNNI.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn run<const R: usize>(tile: &NarrowTile, a: &[u8], c: &mut [f32], c_row: usize) {
        let k = tile.k;
        let mut sums = [[_mm256_setzero_si256(); 4]; R];
        for group in 0..k / 4 {
            let weights = &tile.weights[group * NR * 4..][..NR * 4];
            // SAFETY: each load reads 32 of the group's 128 bytes: columns 8v..8v + 8, four k each.
            let weights: [__m256i; 4] = std::array::from_fn(|v| unsafe { _mm256_loadu_si256(weights.as_ptr().add(32 * v) as *const __m256i) });
            for (r, sums) in sums.iter_mut().enumerate() {
                let x: [u8; 4] = a[r * k + group * 4..][..4].try_into().expect("4 bytes");
                let x = _mm256_set1_epi32(i32::from_ne_bytes(x));
                for (sum, weights) in sums.iter_mut().zip(weights) {
                    *sum = _mm256_dpbusd_avx_epi32(*sum, x, weights);
                }
            }
        }
        for (r, sums) in sums.iter().enumerate() {
            let mut totals = [0i32; NR];
            for (v, sum) in sums.iter().enumerate() {
                // SAFETY: `totals` holds 8 values from 8v.
                unsafe { _mm256_storeu_si256(totals.as_mut_ptr().add(8 * v) as *mut __m256i, *sum) };
            }
            dequantise(&totals, &mut c[r * c_row..][..tile.columns], tile.multipliers, tile.offsets, tile.low, tile.high);
        }
    }
}

/// The int8 product on AVX2: u8 activations and s8 weights widened to i16 and multiplied in pairs
/// by `vpmaddwd` into i32 (exact: AVX2's `vpmaddubsw` would saturate pairs at i16), each column's
/// two partial sums added once at the end; tiles of 16 columns (a panel's first or second half).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{dequantise, sweep_rows, NarrowTile, QuantizedConst, NR};

    /// Columns of a tile.
    const COLUMNS: usize = 16;

    /// # Safety
    /// AVX2 and FMA; the sizes [`super::gemm`] asserts.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm(m: usize, w: &QuantizedConst, a: &[u8], c: &mut [f32], c_row: usize, multipliers: &[f32], offsets: &[f32], low: f32, high: f32) {
        for first in (0..w.n).step_by(COLUMNS) {
            let (p, half) = (first / NR, (first % NR) / COLUMNS);
            let tile = NarrowTile {
                k: w.k,
                // Panel p's groups of four k hold NR columns' four weights; this tile's 16 columns are
                // the group's first or second 64 bytes.
                weights: &w.panels[p * NR * w.k + half * COLUMNS * 4..],
                columns: (w.n - first).min(COLUMNS),
                multipliers: &multipliers[first..],
                offsets: &offsets[first..],
                low,
                high,
            };
            // SAFETY: AVX2 and FMA (this function's contract).
            unsafe { sweep_rows(m, &tile, a, &mut c[first..], c_row, [run::<1>, run::<2>, run::<3>]) };
        }
    }

    /// C rows 0..R of the tile's columns from A rows 0..R.
    ///
    /// # Safety
    /// AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize>(tile: &NarrowTile, a: &[u8], c: &mut [f32], c_row: usize) {
        let k = tile.k;
        let mut sums = [[_mm256_setzero_si256(); 4]; R];
        for group in 0..k / 4 {
            let weights = &tile.weights[group * NR * 4..][..COLUMNS * 4];
            // SAFETY: each load reads 16 of the group's 64 bytes.
            let widened: [__m256i; 4] =
                std::array::from_fn(|v| _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(weights.as_ptr().add(16 * v) as *const __m128i) }));
            for (r, sums) in sums.iter_mut().enumerate() {
                let x: [u8; 4] = a[r * k + group * 4..][..4].try_into().expect("4 bytes");
                let x = _mm256_cvtepu8_epi16(_mm_set1_epi32(i32::from_ne_bytes(x)));
                for (sum, weights) in sums.iter_mut().zip(widened) {
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(x, weights));
                }
            }
        }
        for (r, sums) in sums.iter().enumerate() {
            // Column j's two partial sums at 2j and 2j + 1.
            let mut partial = [0i32; 2 * COLUMNS];
            for (v, sum) in sums.iter().enumerate() {
                // SAFETY: `partial` holds 8 values from 8v.
                unsafe { _mm256_storeu_si256(partial.as_mut_ptr().add(8 * v) as *mut __m256i, *sum) };
            }
            let sums: [i32; COLUMNS] = std::array::from_fn(|j| partial[2 * j].wrapping_add(partial[2 * j + 1]));
            dequantise(&sums, &mut c[r * c_row..][..tile.columns], tile.multipliers, tile.offsets, tile.low, tile.high);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{ScaleZeroPoint, QuantizedConst, MR, NR};
    use crate::runtime::tile_rows::run_rows;

    /// # Safety
    /// AVX-512 F and BW; `out` holds `values.len()` bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn quantize(values: &[f32], out: &mut [u8]) -> ScaleZeroPoint {
        let chunks = values.chunks_exact(16);
        let tail = chunks.remainder();
        let (mut low, mut high) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for chunk in chunks.clone() {
            // SAFETY: a chunk holds 16 values.
            let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            (low, high) = (_mm512_min_ps(low, v), _mm512_max_ps(high, v));
        }
        let (mut min, mut max) = (_mm512_reduce_min_ps(low), _mm512_reduce_max_ps(high));
        for &v in tail {
            (min, max) = (min.min(v), max.max(v));
        }
        let ScaleZeroPoint { scale, zero_point: zero } = ScaleZeroPoint::spanning(min, max);
        let (inverse, zero_f) = (_mm512_set1_ps(1.0 / scale), _mm512_set1_ps(zero as f32));
        for (i, chunk) in chunks.enumerate() {
            // SAFETY: a chunk holds 16 values and `out` 16 bytes from i·16 (the caller's contract).
            unsafe {
                let q = _mm512_cvtps_epi32(_mm512_fmadd_ps(_mm512_loadu_ps(chunk.as_ptr()), inverse, zero_f));
                let bytes = _mm512_cvtusepi32_epi8(_mm512_max_epi32(q, _mm512_setzero_si512()));
                _mm_storeu_si128(out.as_mut_ptr().add(i * 16) as *mut __m128i, bytes);
            }
        }
        let done = values.len() - tail.len();
        // The tail as the vectors round: v·(1/scale) + zero fused, ties to even.
        for (o, &v) in out[done..].iter_mut().zip(tail) {
            *o = v.mul_add(1.0 / scale, zero as f32).round_ties_even().clamp(0.0, 255.0) as u8;
        }
        ScaleZeroPoint { scale, zero_point: zero }
    }

    /// # Safety
    /// AVX-512 F, BW and VNNI; the sizes [`super::gemm`] asserts.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn gemm(
        m: usize,
        w: &QuantizedConst,
        a: &[u8],
        c: &mut [f32],
        c_row: usize,
        multipliers: &[f32],
        offsets: &[f32],
        low: f32,
        high: f32,
    ) {
        let (low, high) = (_mm512_set1_ps(low), _mm512_set1_ps(high));
        for p in 0..w.n.div_ceil(NR) {
            let columns = (w.n - p * NR).min(NR);
            // SAFETY (the two loads): `multipliers` and `offsets` hold a value for every column of
            // every panel (⌈n/NR⌉·NR), so both 16-value loads of panel p lie inside them.
            let tile = Tile {
                k: w.k,
                panel: w.panels[p * NR * w.k..].as_ptr(),
                multipliers: [0, 16].map(|h| unsafe { _mm512_loadu_ps(multipliers.as_ptr().add(p * NR + h)) }),
                offsets: [0, 16].map(|h| unsafe { _mm512_loadu_ps(offsets.as_ptr().add(p * NR + h)) }),
                masks: [columns.min(16), columns.saturating_sub(16)].map(|count| ((1u32 << count) - 1) as u16),
                low,
                high,
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

    /// One panel of [`NR`] columns: its weights, per-column factors and store masks.
    struct Tile {
        k: usize,
        panel: *const i8,
        multipliers: [__m512; 2],
        offsets: [__m512; 2],
        masks: [u16; 2],
        low: __m512,
        high: __m512,
    }

    impl Tile {
        /// C rows 0..R of this panel from A rows 0..R.
        ///
        /// # Safety
        /// AVX-512 F, BW and VNNI; A holds R rows of k bytes, C R rows of the panel's columns.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        #[inline]
        unsafe fn run<const R: usize>(&self, a: *const u8, c: *mut f32, c_row: usize) {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            for group in 0..self.k / 4 {
                // SAFETY: the panel holds k/4 groups of NR·4 bytes; A's rows hold k bytes.
                unsafe {
                    let weights = self.panel.add(group * NR * 4);
                    let w0 = _mm512_loadu_si512(weights as *const _);
                    let w1 = _mm512_loadu_si512(weights.add(64) as *const _);
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_epi32((a.add(i * self.k + group * 4) as *const i32).read_unaligned());
                        acc[0] = _mm512_dpbusd_epi32(acc[0], x, w0);
                        acc[1] = _mm512_dpbusd_epi32(acc[1], x, w1);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                // A half with no columns (a panel of at most 16) is not addressed at all.
                for (h, &sums) in acc.iter().enumerate().filter(|&(h, _)| self.masks[h] != 0) {
                    let value = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), self.multipliers[h], self.offsets[h]);
                    let value = _mm512_min_ps(_mm512_max_ps(value, self.low), self.high);
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
    use super::super::kernels::tests::{dense_reference, pseudo_random, test_window};
    use super::*;

    #[test]
    fn int8_products_equal_the_exact_product_of_the_quantised_values() {
        // Row counts through every tile height and past one tile; column counts with partial panels.
        for (m, k, n) in [(1, 4, 16), (13, 32, 24), (14, 64, 32), (31, 96, 40), (45, 144, 96)] {
            let a = pseudo_random(m * k, 1).iter().map(|v| v * 3.0 + 1.0).collect::<Vec<_>>();
            let columns = pseudo_random(k * n, 2);
            let w = QuantizedConst::new(&columns, k, n).expect("k is a multiple of 4");
            let mut q = vec![0u8; m * k];
            let levels = quantize(&a, &mut q);
            let mut epilogue = Epilogue::new(n);
            epilogue.bias = pseudo_random(n, 3);
            (epilogue.low, epilogue.high) = (-2.0, 6.0);
            let c_row = n + 3;
            let mut c = vec![f32::NAN; m * c_row];
            let mut factors = vec![0.0; w.scratch_floats()];
            gemm(m, &w, &q, levels, &mut c, c_row, Some(&epilogue), &mut factors);
            for i in 0..m {
                for j in 0..n {
                    // The same product in exact integers, dequantised once.
                    let scale_w = w.scales[j];
                    let mut sum = 0i64;
                    for kk in 0..k {
                        let qw = (columns[j * k + kk] / scale_w).round().clamp(-127.0, 127.0) as i64;
                        sum += (q[i * k + kk] as i64 - levels.zero_point as i64) * qw;
                    }
                    let expected = (sum as f32 * levels.scale * scale_w + epilogue.bias[j]).clamp(-2.0, 6.0);
                    let got = c[i * c_row + j];
                    assert!((got - expected).abs() <= 1e-4 * expected.abs().max(1.0), "{m}x{k}x{n} at ({i}, {j}): {got} vs {expected}");
                    // And the quantised product is near the f32 one.
                    let exact: f32 = (0..k).map(|kk| a[i * k + kk] * columns[j * k + kk]).sum::<f32>() + epilogue.bias[j];
                    assert!((got - exact.clamp(-2.0, 6.0)).abs() < 0.05 * (k as f32).sqrt(), "{m}x{k}x{n} at ({i}, {j}): {got} vs f32 {exact}");
                }
                assert!(c[i * c_row + n..(i + 1) * c_row].iter().all(|v| v.is_nan()), "stores stay inside the columns");
            }
        }
    }

    #[test]
    fn every_int8_kernel_this_cpu_runs_gives_the_portable_kernels_bits() {
        for (m, k, n) in [(1, 4, 16), (5, 32, 17), (14, 64, 32), (31, 96, 40), (45, 1152, 96)] {
            let a: Vec<u8> = (0..m * k).map(|i| (i * 97 % 256) as u8).collect();
            let w = QuantizedConst::new(&pseudo_random(k * n, 11), k, n).unwrap();
            let panels = n.div_ceil(NR) * NR;
            let multipliers: Vec<f32> = pseudo_random(panels, 12).iter().map(|v| v.abs() * 1e-3).collect();
            let offsets = pseudo_random(panels, 13);
            let run = |kernel: &dyn Fn(&mut [f32])| {
                let mut c = vec![f32::NAN; m * n];
                kernel(&mut c);
                c.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
            };
            let portable = run(&|c| gemm_portable(m, &w, &a, c, n, &multipliers, &offsets, -3.0, 6.0));
            assert!(portable.iter().all(|&bits| !f32::from_bits(bits).is_nan()), "every value written");
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: AVX2 and FMA detected just above; the sizes fit (m rows of k, n columns).
                    let avx2 = run(&|c| unsafe { avx2::gemm(m, &w, &a, c, n, &multipliers, &offsets, -3.0, 6.0) });
                    assert_eq!(avx2, portable, "AVX2 {m}x{k}x{n}");
                }
                if crate::cpu::features().avx_vnni_products {
                    // SAFETY: `avx_vnni_products` means AVX2, FMA and AVX-VNNI; the sizes fit.
                    let avx_vnni = run(&|c| unsafe { avx_vnni::gemm(m, &w, &a, c, n, &multipliers, &offsets, -3.0, 6.0) });
                    assert_eq!(avx_vnni, portable, "AVX-VNNI {m}x{k}x{n}");
                } else {
                    eprintln!("SKIPPED part: this CPU has no AVX-VNNI kernel to compare");
                }
                if avx512_vnni() {
                    // SAFETY: `avx512_vnni` checked the instructions; the sizes fit.
                    let vnni = run(&|c| unsafe { avx512::gemm(m, &w, &a, c, n, &multipliers, &offsets, -3.0, 6.0) });
                    assert_eq!(vnni, portable, "VNNI {m}x{k}x{n}");
                } else {
                    eprintln!("SKIPPED part: this CPU has no AVX-512 VNNI kernel to compare");
                }
            }
        }
    }

    #[test]
    fn an_int8_convolution_over_gathered_windows_is_near_the_f32_one() {
        let (channels, out_channels) = (8, 24);
        for (kernel, stride, pad, size) in [(3, 2, 1, 5), (3, 1, 1, 4), (3, 2, 0, 7)] {
            let w = test_window(kernel, stride, pad, size, size + 1);
            let taps = kernel * kernel;
            let image = pseudo_random(w.in_height * w.in_width * channels, 7); // HWC
            let weights = pseudo_random(out_channels * channels * taps, 8); // OIHW
            let field = channels * taps;
            let columns = super::super::kernels::columns_for_windows(&weights, channels, taps);
            let constant = QuantizedConst::new(&columns, field, out_channels).unwrap();
            let mut quantized = vec![0u8; image.len()];
            let levels = quantize(&image, &mut quantized);
            let pixels = w.out_height * w.out_width;
            let mut rows = vec![0u8; pixels * taps * channels];
            super::super::kernels::window_rows(&quantized, channels, &w, levels.zero_point as u8, &mut rows);
            let mut out = vec![0.0; pixels * out_channels];
            let mut factors = vec![0.0; constant.scratch_floats()];
            gemm(pixels, &constant, &rows, levels, &mut out, out_channels, None, &mut factors);
            // Within 2 % of the output's range: rounding the inputs to 256 levels and the weights to
            // 255 moves each sum by a few levels' worth (the kernel in the wrong order, by ~100 %).
            let expected = dense_reference(&image, channels, &weights, out_channels, &w);
            let range = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (j, (got, expected)) in out.iter().zip(&expected).enumerate() {
                assert!((got - expected).abs() < 0.02 * range, "{kernel}x{kernel}/{stride} pad {pad} at {j}: {got} vs {expected}");
            }
        }
    }

    #[test]
    fn quantized_activations_round_trip_within_a_level() {
        // The scalar tail rounds as the vectors do: the same values give the same levels in both
        // (ties included: 16 values, then the first 15 again past the last whole vector).
        let body: Vec<f32> = (0..16).map(|i| i as f32 * 0.5 - 2.0).collect();
        let values: Vec<f32> = body.iter().chain(&body[..15]).copied().collect();
        let mut q = vec![0u8; values.len()];
        quantize(&values, &mut q);
        assert_eq!(q[16..], q[..15]);
        for values in [pseudo_random(37, 4), pseudo_random(100, 5).iter().map(|v| v.abs() * 6.0).collect(), vec![0.0; 20]] {
            let mut q = vec![0u8; values.len()];
            let levels = quantize(&values, &mut q);
            for (v, &q) in values.iter().zip(&q) {
                let back = (q as i32 - levels.zero_point) as f32 * levels.scale;
                // Half a level for the value's rounding, up to half for the zero point's.
                assert!((back - v).abs() <= levels.scale * 1.0 + 1e-6, "{v} came back as {back} ({levels:?})");
            }
        }
    }
}

//! A matrix product specialised for convolution layers on AVX-512: one operand is a constant weight
//! matrix, packed once at load time into the panels the register tile reads, and the other is the
//! activation tensor, read where it lies (its rows are already contiguous along the tile's vector
//! axis). A general GEMM packs both operands on every call; on our models' 1x1 convolutions that
//! packing cost as much as the arithmetic. The bias+clamp epilogue is applied to the tile while it is
//! still in registers.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::kernels::{ChannelsAlong, Epilogue};

/// Rows of C per register tile (broadcast from A).
pub const MR: usize = 12;
/// Columns of C per register tile (two AVX-512 vectors, loaded from B).
pub const NR: usize = 32;

/// Which operand the packed constant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstSide {
    /// C = W·X: W (m×k) is packed in panels of [`MR`] rows, X (k×n) is read with unit column stride.
    Left,
    /// C = X·W: W (k×n) is packed in panels of [`NR`] columns, X (m×k) is read with unit row stride.
    Right,
}

/// A constant operand in panel order: panel p holds, for each k, its [`MR`] (left) or [`NR`] (right)
/// values, zero past the matrix's edge.
#[derive(Debug, Clone)]
pub struct PackedConst {
    pub side: ConstSide,
    panels: Vec<f32>,
}

impl PackedConst {
    /// Packs `values` (element (i, j) at i·row_stride + j·col_stride) as the `side` operand of a
    /// product with `m`, `k`, `n`.
    pub fn pack(side: ConstSide, values: &[f32], row_stride: usize, col_stride: usize, m: usize, k: usize, n: usize) -> PackedConst {
        let (outer, width) = match side {
            ConstSide::Left => (m, MR),
            ConstSide::Right => (n, NR),
        };
        let panels_count = outer.div_ceil(width);
        let mut panels = vec![0.0; panels_count * width * k];
        for p in 0..panels_count {
            for kk in 0..k {
                for lane in 0..width {
                    let i = p * width + lane;
                    if i >= outer {
                        continue;
                    }
                    let value = match side {
                        ConstSide::Left => values[i * row_stride + kk * col_stride],
                        ConstSide::Right => values[kk * row_stride + i * col_stride],
                    };
                    panels[(p * k + kk) * width + lane] = value;
                }
            }
        }
        PackedConst { side, panels }
    }
}

/// Whether this CPU runs the packed product (else the executor uses its GEMM backend).
pub fn available() -> bool {
    super::kernels::isa() == super::kernels::Isa::Avx512
}

/// Rows of A per cache block, so a block of packed A stays in L2 across the columns of B.
fn rows_per_block(k: usize) -> usize {
    ((128 * 1024 / k.max(1)) / MR).max(1) * MR
}

/// C (m×n, row stride `c_row`, unit column stride) = A·B then the epilogue, where the constant side is
/// `packed` and the other operand is `activations`, whose vector axis has unit stride and whose k axis
/// has stride `activations_k_stride`. `scratch` holds at least `k·MR` values.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    packed: &PackedConst,
    activations: &[f32],
    activations_k_stride: usize,
    c: &mut [f32],
    c_row: usize,
    epilogue: Option<(&Epilogue, ChannelsAlong)>,
    scratch: &mut [f32],
) {
    assert!(available(), "the packed product needs AVX-512");
    let last = |rows: usize, cols: usize, row: usize| (rows - 1) * row + cols;
    // The bounds every tile stays within (tiles past an edge read only what the masks allow).
    match packed.side {
        ConstSide::Left => assert!(activations.len() >= last(k, n, activations_k_stride)),
        ConstSide::Right => assert!(activations.len() >= last(k, m, activations_k_stride)),
    }
    assert!(c.len() >= last(m, n, c_row) && scratch.len() >= k * MR);
    let block = rows_per_block(k);
    for block_start in (0..m).step_by(block) {
        let block_end = (block_start + block).min(m);
        for n0 in (0..n).step_by(NR) {
            let cols = NR.min(n - n0);
            for m0 in (block_start..block_end).step_by(MR) {
                let rows = MR.min(m - m0);
                let (a, a_stride, b, b_stride, b_masked) = match packed.side {
                    ConstSide::Left => (
                        packed.panels[(m0 / MR) * MR * k..].as_ptr(),
                        MR,
                        activations[n0..].as_ptr(),
                        activations_k_stride,
                        true,
                    ),
                    ConstSide::Right => {
                        let b = packed.panels[(n0 / NR) * NR * k..].as_ptr();
                        if rows == MR {
                            (activations[m0..].as_ptr(), activations_k_stride, b, NR, false)
                        } else {
                            // The last rows: copy them into a zero-padded panel so the tile's
                            // broadcasts stay inside memory we own.
                            for kk in 0..k {
                                let source = &activations[kk * activations_k_stride + m0..][..rows];
                                let panel = &mut scratch[kk * MR..(kk + 1) * MR];
                                panel[..rows].copy_from_slice(source);
                                panel[rows..].fill(0.0);
                            }
                            (scratch.as_ptr(), MR, b, NR, false)
                        }
                    }
                };
                let tile = Tile { k, a, a_stride, b, b_stride, b_masked, rows, cols, row0: m0, col0: n0 };
                // SAFETY: `available()` checked AVX-512; the asserts above bound every address the
                // tile reads (activation loads past the edge are masked) and writes.
                unsafe { tile.run(c[m0 * c_row + n0..].as_mut_ptr(), c_row, epilogue) };
            }
        }
    }
}

/// One MR×NR block of C: which panels it reads and how much of it is inside the matrix.
struct Tile {
    k: usize,
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    b_stride: usize,
    /// Whether B is the activation tensor (loads past `cols` must be masked).
    b_masked: bool,
    rows: usize,
    cols: usize,
    row0: usize,
    col0: usize,
}

impl Tile {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, c: *mut f32, c_row: usize, epilogue: Option<(&Epilogue, ChannelsAlong)>) {
        let mask_of = |count: usize| -> __mmask16 { if count >= 16 { 0xffff } else { ((1u32 << count) - 1) as __mmask16 } };
        let (mask0, mask1) = (mask_of(self.cols), mask_of(self.cols.saturating_sub(16)));
        let (load0, load1) = if self.b_masked { (mask0, mask1) } else { (0xffff, 0xffff) };
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (self.a, self.b);
        for _ in 0..self.k {
            // SAFETY (whole block): the caller bounds a and b for k steps; masked lanes are not read.
            unsafe {
                let b0 = _mm512_maskz_loadu_ps(load0, b);
                let b1 = _mm512_maskz_loadu_ps(load1, b.add(16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
                a = a.add(self.a_stride);
                b = b.add(self.b_stride);
            }
        }
        if let Some((epilogue, along)) = epilogue {
            let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
            let bias = epilogue.bias.as_ptr();
            let column_bias = match along {
                // SAFETY: the bias holds n values; lanes past `cols` are masked.
                ChannelsAlong::Columns => unsafe {
                    [_mm512_maskz_loadu_ps(mask0, bias.add(self.col0)), _mm512_maskz_loadu_ps(mask1, bias.add(self.col0 + 16))]
                },
                ChannelsAlong::Rows => [_mm512_setzero_ps(); 2],
            };
            for (r, row) in acc.iter_mut().enumerate().take(self.rows) {
                let bias = match along {
                    // SAFETY: the bias holds m values and r < rows.
                    ChannelsAlong::Rows => unsafe { [_mm512_set1_ps(*bias.add(self.row0 + r)); 2] },
                    ChannelsAlong::Columns => column_bias,
                };
                for h in 0..2 {
                    row[h] = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(row[h], bias[h]), low), high);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(self.rows) {
            // SAFETY: row r < rows of this tile lies inside C; lanes past `cols` are masked.
            unsafe {
                let out = c.add(r * c_row);
                _mm512_mask_storeu_ps(out, mask0, row[0]);
                _mm512_mask_storeu_ps(out.add(16), mask1, row[1]);
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _c: *mut f32, _c_row: usize, _epilogue: Option<(&Epilogue, ChannelsAlong)>) {
        unreachable!("available() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn packed_products_match_the_definition() {
        if !available() {
            eprintln!("SKIPPED: this CPU has no AVX-512; the executor uses its GEMM backend instead");
            return;
        }
        for (m, k, n) in [(1, 1, 1), (12, 16, 32), (13, 7, 33), (25, 40, 70), (96, 16, 100), (7, 300, 5)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let expected = reference(&a, &b, m, k, n);
            let mut epilogue = Epilogue::new(m);
            (epilogue.low, epilogue.high) = (-1.0, 1.0);
            let mut scratch = vec![0.0; k * MR];

            // W on the left (rows are channels), bias per row.
            let left = PackedConst::pack(ConstSide::Left, &a, k, 1, m, k, n);
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, &left, &b, n, &mut c, n, Some((&epilogue, ChannelsAlong::Rows)), &mut scratch);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y.clamp(-1.0, 1.0)).abs() < 1e-4, "left {m}x{k}x{n}: {x} vs {y}");
            }

            // W on the right: C = Xᵀ-stored activations · W, no epilogue. The activations are stored
            // k-major (element (i, kk) at kk·m + i), as im2col and CHW tensors are.
            let a_k_major: Vec<f32> = (0..k * m).map(|idx| a[(idx % m) * k + idx / m]).collect();
            let right = PackedConst::pack(ConstSide::Right, &b, n, 1, m, k, n);
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, &right, &a_k_major, m, &mut c, n, None, &mut scratch);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-4, "right {m}x{k}x{n}: {x} vs {y}");
            }
        }
    }
}

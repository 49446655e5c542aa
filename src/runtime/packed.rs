//! A matrix product specialised for convolution layers, on AVX-512 (with a portable tile that adds
//! the same products in the same order elsewhere, for programs that must give the same bits on
//! every CPU: int8's): one operand is a constant weight
//! matrix, packed once at load time into the panels the register tile reads, and the other is the
//! activation tensor, read where it lies (its rows are already contiguous along the tile's vector
//! axis). A general GEMM packs both operands on every call; on our models' 1x1 convolutions that
//! packing cost as much as the arithmetic. The bias+clamp epilogue is applied to the tile while it is
//! still in registers.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::buffer::AlignedBuffer;
use super::kernels::simd::{clamp, multiversion};
use super::kernels::{ChannelsAlong, Epilogue};

/// Rows of C per register tile (broadcast from A): 14×2 accumulators, two B vectors and a broadcast
/// fill 31 of the 32 vector registers (14 rows ran both models 1.5–2.5 % faster than 12).
pub const MR: usize = 14;
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
    /// Rows (left) or columns (right) of the matrix, and its depth: what `gemm` checks its sizes by.
    outer: usize,
    k: usize,
    panels: AlignedBuffer,
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
        let mut panels = AlignedBuffer::zeroed(panels_count * width * k);
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
        PackedConst { side, outer, k, panels }
    }

    /// The transpose of this matrix, packed as the other operand: the product C = W·X becomes
    /// Cᵀ = Xᵀ·Wᵀ, the same numbers with C laid out the other way round (the executor moves an
    /// expansion to channels-last output after its weights were packed).
    pub fn transposed(&self) -> PackedConst {
        let lines = self.lines();
        match self.side {
            // Wᵀ (k×m) on the right: element (kk, i) at i·k + kk.
            ConstSide::Left => PackedConst::pack(ConstSide::Right, &lines, 1, self.k, 0, self.k, self.outer),
            // Wᵀ (n×k) on the left: element (i, kk) at i·k + kk.
            ConstSide::Right => PackedConst::pack(ConstSide::Left, &lines, self.k, 1, self.outer, self.k, 0),
        }
    }

    /// The matrix unpacked: row i of a left W (m×k), or column i of a right one (k×n), at i·k (for
    /// a left W, the row-major matrix it was packed from).
    pub fn lines(&self) -> Vec<f32> {
        let width = match self.side {
            ConstSide::Left => MR,
            ConstSide::Right => NR,
        };
        let mut lines = vec![0.0; self.outer * self.k];
        for (i, line) in lines.chunks_exact_mut(self.k).enumerate() {
            for (kk, value) in line.iter_mut().enumerate() {
                *value = self.panels[((i / width) * self.k + kk) * width + i % width];
            }
        }
        lines
    }
}

/// Whether this CPU runs the packed product's AVX-512 tile. Elsewhere [`gemm`] runs a portable tile
/// with the same sums: an int8 program packs its f32 products on every CPU, so that its rows are the
/// same bits everywhere; an f32 program there leaves them to the GEMM backend (matrixmultiply's
/// kernels for that CPU), as it did before the portable tile existed.
pub fn available() -> bool {
    crate::cpu::isa() == crate::cpu::Isa::Avx512
}

/// How many steps of k ahead each tile asks for its panels to be fetched into L1. The weights of the
/// deep layers stream from memory once per image (a 3x3 convolution of 256 → 512 channels holds
/// 4.7 MB for 25 output pixels); without the hint those layers waited on memory for half their time.
const PREFETCH_STEPS: usize = 128;

/// Values of the packed activation block: half of a 1 MiB L2, the other half for the weights
/// streaming past it.
pub const PANEL_FLOATS: usize = 128 * 1024;

/// Depth of one pass over k. A whole k (up to this) keeps each tile's sums in registers from start to
/// end, and makes consecutive tiles read one weight panel after the other, a single stream.
const KC: usize = 4096;

/// C (m×n, row stride `c_row`, unit column stride) = A·B then the epilogue, where the constant side is
/// `packed` and the other operand is `activations`: step kk of the contraction, index j along the other
/// axis at kk·`k_stride` + j·`index_stride` (an `index_stride` other than 1 is for activations stored
/// the other way round, with `k_stride` 1: channels-last pixels; on the right the tiles read them in
/// place, on the left they are transposed into the panel). `panel` (at least [`PANEL_FLOATS`]
/// values) receives blocks of the activations, copied contiguous and zero-padded so that every tile
/// streams them from cache.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    packed: &PackedConst,
    activations: &[f32],
    k_stride: usize,
    index_stride: usize,
    c: &mut [f32],
    c_row: usize,
    epilogue: Option<(&Epilogue, ChannelsAlong)>,
    panel: &mut [f32],
) {
    let outer = if packed.side == ConstSide::Left { m } else { n };
    assert!(packed.k == k && packed.outer == outer, "weights packed for another product");
    assert!(k > 0, "an empty contraction");
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, row: usize| (rows.max(1) - 1) * row + cols;
    assert!(c.len() >= last(m, n, c_row) && panel.len() >= PANEL_FLOATS);
    if let Some((epilogue, along)) = epilogue {
        assert!(epilogue.bias.len() >= if along == ChannelsAlong::Rows { m } else { n });
    }
    let (reach_k, reach_index) = if packed.side == ConstSide::Left { (k, n) } else { (k, m) };
    assert!((reach_k - 1) * k_stride + (reach_index - 1) * index_stride < activations.len(), "activations too short");
    if !available() {
        return gemm_portable(m, k, n, packed, activations, k_stride, index_stride, c, c_row, epilogue);
    }
    let k_steps = k.max(1).div_ceil(KC);
    for k_step in 0..k_steps {
        let k0 = k_step * KC;
        let depth = KC.min(k - k0.min(k)).max(1);
        let epilogue = if k_step + 1 == k_steps { epilogue } else { None };
        let accumulate = k_step > 0;
        let slice = Slice { activations, k_stride, index_stride, k0, depth, k };
        match packed.side {
            ConstSide::Left => {
                // Blocks of B's columns fill the panel; each packed weight tile then sweeps the block.
                let block = ((PANEL_FLOATS / depth) / NR).max(1) * NR;
                for block_start in (0..n).step_by(block) {
                    let block_cols = block.min(n - block_start);
                    slice.pack::<NR>(block_start, block_cols, panel);
                    for m0 in (0..m).step_by(MR) {
                        let a = packed.panels[((m0 / MR) * k + k0) * MR..].as_ptr();
                        for (j, n0) in (block_start..block_start + block_cols).step_by(NR).enumerate() {
                            let b = panel[j * depth * NR..].as_ptr();
                            let tile = Tile { depth, a, a_stride: MR, a_row: 1, b, b_stride: NR, cols: NR.min(n - n0), row0: m0, col0: n0, accumulate };
                            // SAFETY: `available()` checked AVX-512; A's panel holds MR·k values (k ≥ k0 +
                            // depth when k > 0), the B slot NR·depth, and the assert above bounds C.
                            unsafe { tile.run(MR.min(m - m0), c[m0 * c_row + n0..].as_mut_ptr(), c_row, epilogue) };
                        }
                    }
                }
            }
            ConstSide::Right if k_stride == 1 && index_stride != 1 => {
                // Channels-last activations: each row of A is one pixel's k contiguous values, which
                // the tile broadcasts where they lie, as a packed panel would hold them in order.
                assert!(last(m, k, index_stride) <= activations.len(), "activations too short");
                for n0 in (0..n).step_by(NR) {
                    let b = packed.panels[((n0 / NR) * k + k0) * NR..].as_ptr();
                    for m0 in (0..m).step_by(MR) {
                        let a = activations[m0 * index_stride + k0..].as_ptr();
                        let tile = Tile { depth, a, a_stride: 1, a_row: index_stride, b, b_stride: NR, cols: NR.min(n - n0), row0: m0, col0: n0, accumulate };
                        // SAFETY: as above; A's rows m0.. hold k ≥ k0 + depth values each (asserted).
                        unsafe { tile.run(MR.min(m - m0), c[m0 * c_row + n0..].as_mut_ptr(), c_row, epilogue) };
                    }
                }
            }
            ConstSide::Right => {
                // Blocks of A's rows fill the panel; each packed weight panel then sweeps the block.
                let block = ((PANEL_FLOATS / depth) / MR).max(1) * MR;
                for block_start in (0..m).step_by(block) {
                    let block_rows = block.min(m - block_start);
                    slice.pack::<MR>(block_start, block_rows, panel);
                    for n0 in (0..n).step_by(NR) {
                        let b = packed.panels[((n0 / NR) * k + k0) * NR..].as_ptr();
                        for (j, m0) in (block_start..block_start + block_rows).step_by(MR).enumerate() {
                            let a = panel[j * depth * MR..].as_ptr();
                            let tile = Tile { depth, a, a_stride: MR, a_row: 1, b, b_stride: NR, cols: NR.min(n - n0), row0: m0, col0: n0, accumulate };
                            // SAFETY: as above, with the roles of the panels swapped.
                            unsafe { tile.run(MR.min(m - m0), c[m0 * c_row + n0..].as_mut_ptr(), c_row, epilogue) };
                        }
                    }
                }
            }
        }
    }
}

/// Columns of C per step of the portable tile: two AVX2 vectors.
const PORTABLE_COLUMNS: usize = 16;

multiversion! {
    /// [`gemm`] on a CPU without AVX-512: each value of C is one chain of fused multiply-adds over k
    /// in order from zero, then the bias is added and the result clamped, as the AVX-512 tile
    /// computes it (its passes over k store and reload the running sums exactly), so both give the
    /// same bits. Only int8 programs pack off AVX-512, so the baseline variant always fuses (libm's
    /// `fmaf`).
    #[allow(clippy::too_many_arguments)]
    fn gemm_portable(
        m: usize, k: usize, n: usize, packed: &PackedConst, activations: &[f32], k_stride: usize, index_stride: usize,
        c: &mut [f32], c_row: usize, epilogue: Option<(&Epilogue, ChannelsAlong)>,
    ) => gemm_portable_body
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm_portable_body(
    m: usize,
    k: usize,
    n: usize,
    packed: &PackedConst,
    activations: &[f32],
    k_stride: usize,
    index_stride: usize,
    c: &mut [f32],
    c_row: usize,
    epilogue: Option<(&Epilogue, ChannelsAlong)>,
) {
    const COLUMNS: usize = PORTABLE_COLUMNS;
    let panels: &[f32] = &packed.panels;
    for i in 0..m {
        for j0 in (0..n).step_by(COLUMNS) {
            let columns = COLUMNS.min(n - j0);
            let mut sums = [0f32; COLUMNS];
            match packed.side {
                ConstSide::Right => {
                    // W(kk, j) at ((j / NR)·k + kk)·NR + j % NR; j0 is a multiple of 16, so its
                    // columns lie in one panel (zero past n).
                    let first = (j0 / NR) * k * NR + j0 % NR;
                    for kk in 0..k {
                        let a = activations[kk * k_stride + i * index_stride];
                        let w: &[f32; COLUMNS] = panels[first + kk * NR..][..COLUMNS].try_into().expect("16");
                        for (sum, &w) in sums.iter_mut().zip(w) {
                            *sum = a.mul_add(w, *sum);
                        }
                    }
                }
                ConstSide::Left => {
                    // W(i, kk) at ((i / MR)·k + kk)·MR + i % MR.
                    let first = (i / MR) * k * MR + i % MR;
                    for kk in 0..k {
                        let w = panels[first + kk * MR];
                        let x = &activations[kk * k_stride..];
                        if index_stride == 1 && columns == COLUMNS {
                            let x: &[f32; COLUMNS] = x[j0..j0 + COLUMNS].try_into().expect("16");
                            for (sum, &x) in sums.iter_mut().zip(x) {
                                *sum = w.mul_add(x, *sum);
                            }
                        } else {
                            for (l, sum) in sums[..columns].iter_mut().enumerate() {
                                *sum = w.mul_add(x[(j0 + l) * index_stride], *sum);
                            }
                        }
                    }
                }
            }
            let out = &mut c[i * c_row + j0..][..columns];
            match epilogue {
                Some((epilogue, ChannelsAlong::Rows)) => {
                    for (o, &sum) in out.iter_mut().zip(&sums) {
                        *o = clamp(sum + epilogue.bias[i], epilogue.low, epilogue.high);
                    }
                }
                Some((epilogue, ChannelsAlong::Columns)) => {
                    for ((o, &sum), &bias) in out.iter_mut().zip(&sums).zip(&epilogue.bias[j0..]) {
                        *o = clamp(sum + bias, epilogue.low, epilogue.high);
                    }
                }
                None => out.copy_from_slice(&sums[..columns]),
            }
        }
    }
}

/// Steps `k0..k0 + depth` of the activations.
struct Slice<'a> {
    activations: &'a [f32],
    k_stride: usize,
    index_stride: usize,
    k0: usize,
    depth: usize,
    k: usize,
}

impl Slice<'_> {
    /// Copies `count` values from `start` of each step into `panel` slots of `W` values (zero-padded):
    /// slot j, step kk at (j·depth + kk)·W. Whole slots copy as fixed-size arrays, which compile to
    /// a few vector moves rather than a call to memcpy per step.
    fn pack<const W: usize>(&self, start: usize, count: usize, panel: &mut [f32]) {
        if self.index_stride != 1 {
            return self.pack_transposed::<W>(start, count, panel);
        }
        for j in 0..count.div_ceil(W) {
            let used = W.min(count - j * W);
            for kk in 0..self.depth {
                let row: &mut [f32; W] = (&mut panel[(j * self.depth + kk) * W..][..W]).try_into().expect("W values");
                let step = self.k0 + kk;
                if step >= self.k {
                    row.fill(0.0);
                    continue;
                }
                let source = &self.activations[step * self.k_stride + start + j * W..];
                if used == W {
                    let source: &[f32; W] = source[..W].try_into().expect("W values");
                    *row = *source;
                } else {
                    row[..used].copy_from_slice(&source[..used]);
                    row[used..].fill(0.0);
                }
            }
        }
    }

    /// [`Slice::pack`] for activations whose indices lie `index_stride` apart and whose steps of k
    /// are contiguous (channels-last pixels feeding a channels-first product): blocks of 16 indices
    /// by 16 steps are transposed in registers. (Gathering each step's values, 16 cache lines per
    /// instruction, cost the SSD's projections half again their arithmetic.)
    fn pack_transposed<const W: usize>(&self, start: usize, count: usize, panel: &mut [f32]) {
        assert_eq!(self.k_stride, 1, "transposed activations with their steps of k contiguous");
        let steps = self.depth.min(self.k - self.k0.min(self.k));
        if count == 0 {
            return;
        }
        // Every value read lies inside the activations (checked once here, not per row).
        let furthest = (start + count - 1) * self.index_stride + self.k0 + steps.max(1) - 1;
        assert!(steps == 0 || furthest < self.activations.len(), "activations too short");
        assert!(panel.len() >= count.div_ceil(W) * self.depth * W);
        for j in 0..count.div_ceil(W) {
            let used = W.min(count - j * W);
            let slot = &mut panel[j * self.depth * W..(j + 1) * self.depth * W];
            if steps < self.depth {
                slot[steps * W..].fill(0.0);
            }
            let first = (start + j * W) * self.index_stride + self.k0;
            // SAFETY: `available()` (checked by `gemm` before any tile runs) means AVX-512; the reads stay within
            // `furthest` and the writes within the slot.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                transpose_steps::<W>(&self.activations[first..], self.index_stride, used, steps, slot)
            };
        }
    }
}

/// `slot[kk·W + lane]` = `source[lane·index_stride + kk]` for lanes < `used` (0 beyond) and steps
/// kk < `steps`.
///
/// # Safety
/// AVX-512; every such source index lies inside `source`, and `slot` holds `steps`·W values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_steps<const W: usize>(source: &[f32], index_stride: usize, used: usize, steps: usize, slot: &mut [f32]) {
    let mask_of = |count: usize| if count >= 16 { 0xffff } else { ((1u32 << count) - 1) as __mmask16 };
    // W is NR (a left product's columns; the right side reads such activations in place): two
    // blocks of 16 lanes, or one (partial) for any W up to 16.
    for half in 0..W.div_ceil(16) {
        let (lanes, write) = (used.saturating_sub(16 * half).min(16), mask_of(W - 16 * half));
        for k0 in (0..steps).step_by(16) {
            let read = mask_of(steps - k0);
            let rows: [__m512; 16] = std::array::from_fn(|r| {
                if r < lanes {
                    // SAFETY: the caller's contract: steps < `steps` of lanes < used lie inside
                    // `source` (masked beyond).
                    unsafe { _mm512_maskz_loadu_ps(read, source.as_ptr().wrapping_add((16 * half + r) * index_stride + k0)) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let columns = transpose16(rows);
            for (q, column) in columns.iter().enumerate().take((steps - k0).min(16)) {
                // SAFETY: step k0 + q < steps; the write stays inside its W values.
                unsafe { _mm512_mask_storeu_ps(slot.as_mut_ptr().add((k0 + q) * W + 16 * half), write, *column) };
            }
        }
    }
}

/// The 16×16 transpose of `rows`: lane r of result c is lane c of row r.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved, then pairs of pairs, then 128-bit blocks twice over.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[(i / 2) * 2], r[(i / 2) * 2 + 1]);
        if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
    });
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let group = (i / 4) * 4;
        let (a, b) = (t[group + (i % 4) / 2], t[group + (i % 4) / 2 + 2]);
        if i % 2 == 0 { _mm512_shuffle_ps::<0x44>(a, b) } else { _mm512_shuffle_ps::<0xEE>(a, b) }
    });
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let group = (i / 8) * 8;
        let (a, b) = (u[group + i % 4], u[group + i % 4 + 4]);
        if (i % 8) < 4 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xDD>(a, b) }
    });
    std::array::from_fn(|i| {
        let (a, b) = (v[i % 8], v[i % 8 + 8]);
        if i < 8 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xDD>(a, b) }
    })
}

/// One block of at most MR×NR values of C over one k-slice: where its panels start and how much of it
/// is inside the matrix.
struct Tile {
    depth: usize,
    a: *const f32,
    a_stride: usize,
    /// A's rows lie `a_row` apart: 1 in a packed panel, a pixel's channels apart read in place.
    a_row: usize,
    b: *const f32,
    b_stride: usize,
    cols: usize,
    row0: usize,
    col0: usize,
    /// Whether to add to C (k-slices after the first) rather than overwrite it.
    accumulate: bool,
}

impl Tile {
    /// Runs the tile with exactly `rows` rows of A, so a thin matrix (an SSD head at 1×1 or 3×3)
    /// wastes no multiply-adds and reads no rows past its end, and with one vector of columns when
    /// at most 16 are left (the last tile of a 10×10 or 14×14 feature map).
    ///
    /// # Safety
    /// The caller (`gemm`, which derives every field from slices it has bounds-checked) guarantees:
    /// - the CPU has AVX-512 F;
    /// - `1 ≤ rows ≤ MR` and `1 ≤ cols ≤ NR`;
    /// - for each step `s < depth`, `a + s·a_stride + r·a_row` is readable for every `r < rows`, and
    ///   `b + s·b_stride` is readable for 16·⌈cols/16⌉ values (packed panels are padded to whole
    ///   vectors, so lanes past `cols` read padding, never past the allocation);
    /// - `c + r·c_row` is writable (and readable, when `accumulate`) for `cols` values, every `r < rows`,
    ///   and C overlaps neither A nor B;
    /// - an epilogue's bias holds a value for every row `row0 + r` (`ChannelsAlong::Rows`) or column
    ///   `col0 + j` (`ChannelsAlong::Columns`) the tile covers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, rows: usize, c: *mut f32, c_row: usize, epilogue: Option<(&Epilogue, ChannelsAlong)>) {
        if self.cols <= 16 {
            // SAFETY: the caller's contract, forwarded.
            unsafe { self.run_halves::<1>(rows, c, c_row, epilogue) }
        } else {
            // SAFETY: as above.
            unsafe { self.run_halves::<2>(rows, c, c_row, epilogue) }
        }
    }

    /// # Safety
    /// [`Tile::run`]'s contract, with `H` = 1 only where `cols` ≤ 16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_halves<const H: usize>(&self, rows: usize, c: *mut f32, c_row: usize, epilogue: Option<(&Epilogue, ChannelsAlong)>) {
        // SAFETY: the caller's contract, forwarded.
        unsafe {
            match rows {
                14 => self.rows::<14, H>(c, c_row, epilogue),
                13 => self.rows::<13, H>(c, c_row, epilogue),
                12 => self.rows::<12, H>(c, c_row, epilogue),
                11 => self.rows::<11, H>(c, c_row, epilogue),
                10 => self.rows::<10, H>(c, c_row, epilogue),
                9 => self.rows::<9, H>(c, c_row, epilogue),
                8 => self.rows::<8, H>(c, c_row, epilogue),
                7 => self.rows::<7, H>(c, c_row, epilogue),
                6 => self.rows::<6, H>(c, c_row, epilogue),
                5 => self.rows::<5, H>(c, c_row, epilogue),
                4 => self.rows::<4, H>(c, c_row, epilogue),
                3 => self.rows::<3, H>(c, c_row, epilogue),
                2 => self.rows::<2, H>(c, c_row, epilogue),
                1 => self.rows::<1, H>(c, c_row, epilogue),
                _ => unreachable!("1..=MR rows"),
            }
        }
    }

    /// `R` rows by `H` vectors of 16 columns (lanes past `cols` masked).
    ///
    /// # Safety
    /// [`Tile::run`]'s contract with `rows` = `R`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize, const H: usize>(&self, c: *mut f32, c_row: usize, epilogue: Option<(&Epilogue, ChannelsAlong)>) {
        let mask_of = |count: usize| -> __mmask16 { if count >= 16 { 0xffff } else { ((1u32 << count) - 1) as __mmask16 } };
        let masks: [__mmask16; H] = std::array::from_fn(|h| mask_of(self.cols.saturating_sub(16 * h)));
        let mut acc = [[_mm512_setzero_ps(); H]; R];
        if self.accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (h, value) in row.iter_mut().enumerate() {
                    // SAFETY: rows < R of this tile lie inside C; lanes past `cols` are masked.
                    *value = unsafe { _mm512_maskz_loadu_ps(masks[h], c.add(r * c_row).wrapping_add(16 * h)) };
                }
            }
        }
        let (mut a, mut b) = (self.a, self.b);
        for _ in 0..self.depth {
            // SAFETY (whole block): the caller bounds a and b for `depth` steps (panels are padded);
            // the prefetches may point past them, which is harmless (a hint, no access).
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(PREFETCH_STEPS * self.a_stride) as *const i8);
                let b_ahead = b.wrapping_add(PREFETCH_STEPS * self.b_stride);
                _mm_prefetch::<_MM_HINT_T0>(b_ahead as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(b_ahead.wrapping_add(16) as *const i8);
                let bs: [__m512; H] = std::array::from_fn(|h| _mm512_loadu_ps(b.add(16 * h)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * self.a_row));
                    for (value, b) in row.iter_mut().zip(bs) {
                        *value = _mm512_fmadd_ps(av, b, *value);
                    }
                }
                a = a.add(self.a_stride);
                b = b.add(self.b_stride);
            }
        }
        if let Some((epilogue, along)) = epilogue {
            let (low, high) = (_mm512_set1_ps(epilogue.low), _mm512_set1_ps(epilogue.high));
            let bias = epilogue.bias.as_ptr();
            let column_bias: [__m512; H] = match along {
                // SAFETY: the bias holds n values; lanes past `cols` are masked.
                ChannelsAlong::Columns => std::array::from_fn(|h| unsafe { _mm512_maskz_loadu_ps(masks[h], bias.wrapping_add(self.col0 + 16 * h)) }),
                ChannelsAlong::Rows => [_mm512_setzero_ps(); H],
            };
            for (r, row) in acc.iter_mut().enumerate() {
                let bias = match along {
                    // SAFETY: the bias holds m values and row0 + r < m.
                    ChannelsAlong::Rows => unsafe { [_mm512_set1_ps(*bias.add(self.row0 + r)); H] },
                    ChannelsAlong::Columns => column_bias,
                };
                for (value, bias) in row.iter_mut().zip(bias) {
                    *value = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(*value, bias), low), high);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (h, value) in row.iter().enumerate() {
                // SAFETY: row r < R of this tile lies inside C; lanes past `cols` are masked, and a
                // fully masked half may lie past the end of C: wrapping_add, no access.
                unsafe { _mm512_mask_storeu_ps(c.add(r * c_row).wrapping_add(16 * h), masks[h], *value) };
            }
        }
    }

    /// # Safety
    /// Never callable: `available()` is false off x86-64, and `gemm` checks it first.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _rows: usize, _c: *mut f32, _c_row: usize, _epilogue: Option<(&Epilogue, ChannelsAlong)>) {
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
    #[allow(clippy::type_complexity)]
    fn the_portable_tile_gives_the_avx512_tiles_bits() {
        if !available() {
            eprintln!("SKIPPED: this CPU has no AVX-512 tile to compare the portable one with");
            return;
        }
        // k past KC: the AVX-512 tile's second pass reloads its sums, the portable one never stops.
        for (m, k, n) in [(1, 1, 1), (13, 7, 33), (25, 40, 70), (30, 600, 40), (13, 4100, 20)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 9.0).collect();
            let mut panel = vec![0.0; PANEL_FLOATS];
            let mut epilogue = Epilogue::new(m.max(n));
            epilogue.bias = (0..m.max(n)).map(|i| i as f32 * 0.37 - 3.0).collect();
            (epilogue.low, epilogue.high) = (-40.0, 40.0);
            let left = PackedConst::pack(ConstSide::Left, &a, k, 1, m, k, n);
            let right = PackedConst::pack(ConstSide::Right, &b, n, 1, m, k, n);
            let a_k_major: Vec<f32> = (0..k * m).map(|idx| a[(idx % m) * k + idx / m]).collect();
            let b_n_major: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
            let cases: [(&PackedConst, &[f32], usize, usize, Option<ChannelsAlong>); 4] = [
                (&left, &b, n, 1, Some(ChannelsAlong::Rows)),
                (&left, &b_n_major, 1, k, None),
                (&right, &a_k_major, m, 1, Some(ChannelsAlong::Columns)),
                (&right, &a, 1, k, Some(ChannelsAlong::Columns)),
            ];
            for (case, (packed, activations, k_stride, index_stride, along)) in cases.into_iter().enumerate() {
                let epilogue = along.map(|along| (&epilogue, along));
                let mut tile = vec![0.0; m * n];
                gemm(m, k, n, packed, activations, k_stride, index_stride, &mut tile, n, epilogue, &mut panel);
                let mut portable = vec![0.0; m * n];
                gemm_portable(m, k, n, packed, activations, k_stride, index_stride, &mut portable, n, epilogue);
                let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&tile), bits(&portable), "case {case}, {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn packed_products_match_the_definition() {
        // The AVX-512 tile where the CPU has it, else the portable one.
        // Tiles of one and two vectors of columns; k past KC (two passes, the second accumulating).
        for (m, k, n) in [(1, 1, 1), (12, 16, 32), (13, 7, 33), (25, 40, 70), (96, 16, 100), (7, 300, 5), (30, 600, 40), (13, 4100, 20)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let expected = reference(&a, &b, m, k, n);
            let mut panel = vec![0.0; PANEL_FLOATS];
            let mut epilogue = Epilogue::new(m);
            (epilogue.low, epilogue.high) = (-1.0, 1.0);

            // W on the left (rows are channels), bias per row.
            let left = PackedConst::pack(ConstSide::Left, &a, k, 1, m, k, n);
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, &left, &b, n, 1, &mut c, n, Some((&epilogue, ChannelsAlong::Rows)), &mut panel);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y.clamp(-1.0, 1.0)).abs() < 1e-4, "left {m}x{k}x{n}: {x} vs {y}");
            }

            // W on the right: C = Xᵀ-stored activations · W, no epilogue. The activations are stored
            // k-major (element (i, kk) at kk·m + i), as im2col and CHW tensors are.
            let a_k_major: Vec<f32> = (0..k * m).map(|idx| a[(idx % m) * k + idx / m]).collect();
            let right = PackedConst::pack(ConstSide::Right, &b, n, 1, m, k, n);
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, &right, &a_k_major, m, 1, &mut c, n, None, &mut panel);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-4, "right {m}x{k}x{n}: {x} vs {y}");
            }

            // Activations stored the other way round (index-major, k contiguous), on either side.
            let b_n_major: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, &left, &b_n_major, 1, k, &mut c, n, None, &mut panel);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-4, "left, transposed activations, {m}x{k}x{n}: {x} vs {y}");
            }
            let mut c = vec![0.0; m * n];
            gemm(m, k, n, &right, &a, 1, k, &mut c, n, None, &mut panel);
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - y).abs() < 1e-4, "right, transposed activations, {m}x{k}x{n}: {x} vs {y}");
            }

            // Each constant transposed onto the other side: Cᵀ = Bᵀ·Aᵀ, with the bias now along
            // Cᵀ's columns; transposed twice, the original product again.
            let mut c_t = vec![0.0; n * m];
            gemm(n, k, m, &left.transposed(), &b, n, 1, &mut c_t, m, Some((&epilogue, ChannelsAlong::Columns)), &mut panel);
            let mut right_t = vec![0.0; n * m];
            gemm(n, k, m, &right.transposed(), &a_k_major, m, 1, &mut right_t, m, None, &mut panel);
            let mut twice = vec![0.0; m * n];
            gemm(m, k, n, &left.transposed().transposed(), &b, n, 1, &mut twice, n, None, &mut panel);
            for i in 0..m {
                for j in 0..n {
                    let y = expected[i * n + j];
                    assert!((c_t[j * m + i] - y.clamp(-1.0, 1.0)).abs() < 1e-4, "left transposed {m}x{k}x{n}: {} vs {y}", c_t[j * m + i]);
                    assert!((right_t[j * m + i] - y).abs() < 1e-4, "right transposed {m}x{k}x{n}: {} vs {y}", right_t[j * m + i]);
                    assert!((twice[i * n + j] - y).abs() < 1e-4, "left transposed twice {m}x{k}x{n}");
                }
            }
        }
    }
}

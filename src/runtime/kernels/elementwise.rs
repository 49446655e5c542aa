//! Element-wise and shape operations: NumPy-broadcast binary ops, the logistic function, the u8 cast
//! of a model's input, strided copies (transposes) and sums over axes.

use super::simd::{multiversion, MulAdd};

multiversion! {
    /// `out[i]` = what a cast of `values[i]` to u8 holds, as f32 (clamped to 0..=255, truncated):
    /// the input of a model that takes u8 pixels. Compiled for AVX2 the truncation is one
    /// instruction; on the x86-64 baseline it is a libm call per value (0.26 ms for a 300x300 image).
    pub fn u8_values(values: &[f32], out: &mut [f32]) => u8_values_body
}

#[inline(always)]
fn u8_values_body(values: &[f32], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(values) {
        *o = v.clamp(0.0, 255.0).trunc();
    }
}

multiversion! {
    /// The logistic function, in place, with a vectorisable `exp` (Cephes' polynomial, ~1 ulp).
    pub fn sigmoid(multiply_add, values: &mut [f32]) => sigmoid_body
}

#[inline(always)]
fn sigmoid_body<M: MulAdd>(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = 1.0 / (1.0 + exp::<M>(-*v));
    }
}

/// e^x without branches, so loops over it vectorise: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
/// polynomial for e^r, and 2^n built in the exponent bits.
#[inline(always)]
fn exp<M: MulAdd>(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let shifted = M::mul_add(x, std::f32::consts::LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = M::mul_add(n, -0.693_359_4, x);
    let r = M::mul_add(n, 2.121_944_4e-4, r);
    let mut p: f32 = 1.987_569_1e-4;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 0.5);
    let e_r = M::mul_add(p, r * r, r) + 1.0;
    // n in integer form, read from the bits of `shifted` (ROUND's bits plus n): `n as i32` would
    // be a saturating conversion, which kept the loop from vectorising (3 cycles a value).
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e_r * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// An element-wise operation of two operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinaryOp {
    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
        }
    }
}

/// `output = a op b` with NumPy broadcasting: `a_strides` and `b_strides` are the operands' strides
/// over the output's shape, 0 along broadcast axes.
pub fn binary(op: BinaryOp, a: &[f32], a_strides: &[usize], b: &[f32], b_strides: &[usize], output: &mut [f32], shape: &[usize]) {
    let inner = *shape.last().unwrap_or(&1);
    let (a_inner, b_inner) = (*a_strides.last().unwrap_or(&0), *b_strides.last().unwrap_or(&0));
    let outer_shape = &shape[..shape.len().saturating_sub(1)];
    for_each_index(outer_shape, |index, row| {
        let offset = |strides: &[usize]| index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
        let (a_base, b_base) = (offset(a_strides), offset(b_strides));
        let out = &mut output[row * inner..(row + 1) * inner];
        macro_rules! run {
            ($f:expr) => {
                match (a_inner, b_inner) {
                    (1, 1) => {
                        for ((o, x), y) in out.iter_mut().zip(&a[a_base..a_base + inner]).zip(&b[b_base..b_base + inner]) {
                            *o = $f(*x, *y);
                        }
                    }
                    (1, 0) => {
                        let y = b[b_base];
                        for (o, x) in out.iter_mut().zip(&a[a_base..a_base + inner]) {
                            *o = $f(*x, y);
                        }
                    }
                    (0, 1) => {
                        let x = a[a_base];
                        for (o, y) in out.iter_mut().zip(&b[b_base..b_base + inner]) {
                            *o = $f(x, *y);
                        }
                    }
                    _ => {
                        for (i, o) in out.iter_mut().enumerate() {
                            *o = $f(a[a_base + i * a_inner], b[b_base + i * b_inner]);
                        }
                    }
                }
            };
        }
        match op {
            BinaryOp::Add => run!(|x: f32, y: f32| x + y),
            BinaryOp::Sub => run!(|x: f32, y: f32| x - y),
            BinaryOp::Mul => run!(|x: f32, y: f32| x * y),
            _ => run!(|x: f32, y: f32| op.apply(x, y)),
        }
    });
}

/// Calls `visit(index, linear)` for every multi-index of `shape` in row-major order.
pub fn for_each_index(shape: &[usize], mut visit: impl FnMut(&[usize], usize)) {
    let count: usize = shape.iter().product();
    let mut index = vec![0usize; shape.len()];
    for linear in 0..count {
        visit(&index, linear);
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// Copies `input`, read through `strides` (one per axis of `shape`), into `output` in row-major order:
/// transposes and broadcasts.
pub fn strided_copy(input: &[f32], strides: &[usize], output: &mut [f32], shape: &[usize]) {
    for_each_index(shape, |index, linear| {
        output[linear] = input[index.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>()];
    });
}

/// Sums `input` (row-major `shape`) into `output`, whose strides over `shape` are 0 along the reduced
/// axes.
pub fn reduce_sum(input: &[f32], shape: &[usize], output: &mut [f32], output_strides: &[usize]) {
    if let ([outer, inner], [1, 0]) = (shape, output_strides) {
        // The common case, a pool over the innermost axes: one contiguous sum per output.
        for (o, row) in output.iter_mut().zip(input.chunks_exact(*inner)).take(*outer) {
            *o = row.iter().sum();
        }
        return;
    }
    if let ([outer, pixels, channels], [row, 0, 1]) = (shape, output_strides) {
        if row == channels {
            // A pool over the pixels of a channels-last tensor: each pixel's channels added to the
            // sums in one pass, pixel after pixel (the order the channels-first case adds them in).
            for (sums, image) in output.chunks_exact_mut(*channels).zip(input.chunks_exact(pixels * channels)).take(*outer) {
                sums.fill(0.0);
                for pixel in image.chunks_exact(*channels) {
                    sums.iter_mut().zip(pixel).for_each(|(sum, value)| *sum += value);
                }
            }
            return;
        }
    }
    output.fill(0.0);
    for_each_index(shape, |index, linear| {
        output[index.iter().zip(output_strides).map(|(i, s)| i * s).sum::<usize>()] += input[linear];
    });
}

/// `out[i] = source[i·step]`. A stride of 2 goes by pairs, which the compiler turns into shuffles
/// rather than a gather.
#[inline(always)]
pub(super) fn copy_every(source: &[f32], step: usize, out: &mut [f32]) {
    match step {
        1 => out.copy_from_slice(&source[..out.len()]),
        2 => {
            let pairs = source.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            let copied = out.iter_mut().zip(pairs).map(|(o, pair)| *o = pair[0]).count();
            if let (Some(o), Some(v)) = (out.get_mut(copied), last) {
                *o = v;
            }
        }
        _ => out.iter_mut().zip(source.iter().step_by(step)).for_each(|(o, &v)| *o = v),
    }
}

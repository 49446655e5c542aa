//! Stride and weight-layout arithmetic the lowering shares: row-major and broadcast strides, merged
//! loops, and convolution weights laid out tap-major for the channels-last kernels.

/// Merges adjacent axes that every operand walks compactly in the same order (or not at all), and
/// drops unit axes, so element-wise loops run over long rows: a [1, 300, 300, 3] tensor minus a scalar
/// becomes one loop of 270,000.
pub(super) fn coalesce(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut merged_shape: Vec<usize> = Vec::new();
    let mut merged: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for axis in (0..shape.len()).rev() {
        if shape[axis] == 1 {
            continue;
        }
        let joins = merged_shape.last().is_some_and(|&inner| {
            strides.iter().zip(&merged).all(|(s, m)| s[axis] == m.last().expect("same length") * inner)
        });
        if joins {
            *merged_shape.last_mut().expect("non-empty") *= shape[axis];
        } else {
            merged_shape.push(shape[axis]);
            for (m, s) in merged.iter_mut().zip(strides) {
                m.push(s[axis]);
            }
        }
    }
    merged_shape.reverse();
    merged.iter_mut().for_each(|m| m.reverse());
    (merged_shape, merged)
}

pub(super) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// `shape`'s strides over `target` (right-aligned, NumPy rules), 0 along broadcast axes.
pub(super) fn broadcast_strides(shape: &[usize], target: &[usize]) -> Option<Vec<usize>> {
    if shape.len() > target.len() {
        return None;
    }
    let own = row_major_strides(shape);
    let offset = target.len() - shape.len();
    (0..target.len())
        .map(|axis| {
            if axis < offset {
                return Some(0);
            }
            let (extent, stride) = (shape[axis - offset], own[axis - offset]);
            match extent {
                1 => Some(0),
                e if e == target[axis] => Some(stride),
                _ => None,
            }
        })
        .collect()
}

/// Dense convolution weights OIHW laid out [taps][I][O], as [`kernels::conv_interleaved`] reads
/// them.
pub(super) fn dense_tap_major(weights: &[f32], in_channels: usize, taps: usize) -> Vec<f32> {
    let out_channels = weights.len() / (in_channels * taps);
    let mut laid_out = vec![0.0; weights.len()];
    for o in 0..out_channels {
        for i in 0..in_channels {
            for t in 0..taps {
                laid_out[(t * in_channels + i) * out_channels + o] = weights[(o * in_channels + i) * taps + t];
            }
        }
    }
    laid_out
}

/// Depthwise weights [C][taps] laid out [taps][C], as the interleaved kernel reads them.
pub(super) fn tap_major(weights: &[f32], taps: usize) -> Vec<f32> {
    let channels = weights.len() / taps;
    let mut laid_out = vec![0.0; weights.len()];
    for (c, kernel) in weights.chunks_exact(taps).enumerate() {
        for (t, &value) in kernel.iter().enumerate() {
            laid_out[t * channels + c] = value;
        }
    }
    laid_out
}

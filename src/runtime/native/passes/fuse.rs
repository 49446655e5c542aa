//! The fusion pass: a packed 1x1 expansion and the depthwise convolution that alone reads it become
//! one step, run band by band so that the expanded channels stay in L2.

use std::collections::HashMap;

use super::super::super::kernels::ChannelsAlong;
use super::super::super::packed::ConstSide;
use super::super::ir::*;
use super::{image_loop, readers};

/// Expanded values per band of an [`StepKind::ExpandDepthwise`]: most of a 1 MiB L2, beside the
/// depthwise kernel's phase planes and the product's activation panel.
const BAND_FLOATS: usize = 160 * 1024;

/// An expansion up to this size (1 MiB, what L2 holds) runs in one band: cutting it would recompute
/// the bands' overlapping rows and save no trip to memory.
const WHOLE_EXPANSION_FLOATS: usize = 256 * 1024;

/// Merges each packed 1x1 expansion (channels first, run image by image) with the depthwise
/// convolution that is the only reader of its output into one [`StepKind::ExpandDepthwise`].
pub(in crate::runtime::native) fn fuse_expansions(mut steps: Vec<Step>, outputs: &[Operand]) -> Vec<Step> {
    let readers = readers(&mut steps, outputs);
    let mut fused: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        match fused.last() {
            Some(previous) if fusable(previous, &step, &readers) => {
                let expansion = fused.pop().expect("the step just looked at");
                fused.push(fuse_expansion(expansion, step));
            }
            _ => fused.push(step),
        }
    }
    fused
}

/// Whether `expansion` is a packed 1x1 expansion, channels first, run image by image, whose output
/// only `depthwise` reads.
fn fusable(expansion: &Step, depthwise: &Step, readers: &HashMap<usize, usize>) -> bool {
    match (&expansion.kind, &depthwise.kind) {
        (
            StepKind::Gemm { product: Product::Packed { constant, index_stride: 1, .. }, shape, loops, epilogue },
            StepKind::Depthwise { input: Operand::Buffer { id, .. }, images, geometry, .. },
        ) => {
            *id == expansion.output
                && readers.get(id) == Some(&1)
                && constant.side == ConstSide::Left
                && image_loop(loops, geometry.image_in_len).is_some_and(|(n, _)| n == *images)
                && epilogue.as_ref().is_none_or(|(_, along)| *along == ChannelsAlong::Rows)
                && geometry.channels_first
                && shape.m == geometry.in_channels
                && shape.n == geometry.window.in_height * geometry.window.in_width
                && shape.c_row == shape.n
        }
        _ => false,
    }
}

/// The [`fusable`] pair as one step.
fn fuse_expansion(expansion: Step, depthwise: Step) -> Step {
    let (
        StepKind::Gemm { product: Product::Packed { constant, activations, k_stride, .. }, shape, epilogue: expansion_epilogue, loops },
        StepKind::Depthwise { weights, geometry, epilogue, images, .. },
    ) = (expansion.kind, depthwise.kind)
    else {
        unreachable!("a pair `fusable` accepted")
    };
    let window = &geometry.window;
    let band_rows = if shape.m * shape.n <= WHOLE_EXPANSION_FLOATS {
        window.out_height
    } else {
        // Bands of (nearly) equal height: a short last band would recompute its halo rows for little.
        let band_input_rows = (BAND_FLOATS / (shape.m * window.in_width)).max(window.kernel_height);
        let most_rows = (band_input_rows - window.kernel_height) / window.stride + 1;
        window.out_height.div_ceil(window.out_height.div_ceil(most_rows))
    };
    let (_, image_stride) = image_loop(&loops, geometry.image_in_len).expect("a pair `fusable` accepted");
    let expansion = Expansion {
        constant,
        activations,
        k_stride,
        index_stride: 1,
        k: shape.k,
        epilogue: expansion_epilogue.map(|(e, _)| e),
        images,
        image_stride,
        low_precision: None,
    };
    Step {
        kind: StepKind::ExpandDepthwise { expansion, weights, geometry, epilogue, band_rows, interleaved: false, encoded_output: None },
        output: depthwise.output,
        output_len: depthwise.output_len,
    }
}

//! Rewrites of the lowered program, run in order after the lowering: [`fuse`] (a 1x1 expansion with
//! the depthwise convolution it feeds), [`layout`] (channels-last tensors between blocks) and
//! [`low_precision`] (products in int8 or bf16 where asked), with what they share.

use std::collections::HashMap;

use super::ir::{Loop, Operand, Step};

pub(super) mod fuse;
pub(super) mod layout;
pub(super) mod low_precision;

/// How many operands (of steps and the model's outputs) read each logical buffer.
pub(super) fn readers(steps: &mut [Step], outputs: &[Operand]) -> HashMap<usize, usize> {
    let mut readers = HashMap::<usize, usize>::new();
    let reads = steps.iter_mut().flat_map(|step| step.operands_mut().into_iter().map(|o| o.clone())).chain(outputs.iter().cloned());
    for operand in reads {
        if let Operand::Buffer { id, .. } = operand {
            *readers.entry(id).or_default() += 1;
        }
    }
    readers
}

/// The images a product repeated by `loops` runs over (one without loops), and the distance
/// between two images' activations, when it writes `image_output` values per image right after the
/// last and its weights (on the left) stay put: a product that runs image by image, as a fused or
/// channels-last step can.
pub(super) fn image_loop(loops: &[Loop], image_output: usize) -> Option<(usize, usize)> {
    match loops {
        [] => Some((1, 0)),
        [l] if l.a == 0 && l.c == image_output => Some((l.extent, l.b)),
        _ => None,
    }
}

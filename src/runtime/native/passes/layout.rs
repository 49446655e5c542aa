//! The layout passes: interleaved (channels-last) expansions, and channels-last tensors between
//! MobileNet blocks wherever every reader takes them so.

use std::collections::{HashMap, HashSet};

use super::super::super::kernels::{self, ChannelsAlong, ImageStrides};
use super::super::super::packed::ConstSide;
use super::super::ir::*;
use super::super::shapes::{row_major_strides, tap_major, dense_tap_major};
use super::{image_loop, readers};

/// Turns each [`StepKind::ExpandDepthwise`] whose channels come in groups of 16 and whose output
/// only a packed product reads as its activations (the block's 1x1 projection) channels-last: the
/// expansion writes each pixel's channels together (its weights moved to the right of the
/// product), the depthwise vectorises across channels, and the projection reads the channels-last
/// pixels (transposed into its panels, or in place once [`channels_last_activations`] has moved its
/// weights to the right). Channels first, a 7x7 map's rows fill 7 of a vector's 16 lanes.
pub(in crate::runtime::native) fn interleave_expansions(steps: &mut [Step], outputs: &[Operand]) {
    let readers = readers(steps, outputs);
    for i in 0..steps.len() {
        let (id, channels, pixels, images, image_len) = match &steps[i].kind {
            StepKind::ExpandDepthwise { geometry, interleaved: false, expansion, .. } if geometry.in_channels.is_multiple_of(kernels::LANES) => {
                (steps[i].output, geometry.in_channels, geometry.window.out_height * geometry.window.out_width, expansion.images, geometry.image_out_len)
            }
            _ => continue,
        };
        if readers.get(&id) != Some(&1) {
            continue;
        }
        let reads_it = |step: &mut Step| step.operands_mut().iter().any(|o| matches!(o, Operand::Buffer { id: read, .. } if *read == id));
        let Some(reader) = steps[i + 1..].iter_mut().find_map(|step| reads_it(step).then_some(step)) else {
            continue;
        };
        let StepKind::Gemm { product: Product::Packed { constant, k_stride, index_stride, .. }, shape, loops, .. } = &mut reader.kind else {
            continue;
        };
        let reads_each_image = image_loop(loops, shape.m * shape.n).is_some_and(|(n, stride)| n == images && (images == 1 || stride == image_len));
        if constant.side != ConstSide::Left || !reads_each_image || *index_stride != 1 || *k_stride != pixels || shape.k != channels || shape.n != pixels {
            continue;
        }
        (*k_stride, *index_stride) = (1, channels);
        let StepKind::ExpandDepthwise { expansion, weights, interleaved, geometry, .. } = &mut steps[i].kind else {
            unreachable!("matched above")
        };
        expansion.constant = expansion.constant.transposed();
        *weights = tap_major(weights, geometry.window.kernel_height * geometry.window.kernel_width);
        *interleaved = true;
    }
}

/// Keeps the tensors between MobileNet blocks channels-last where every reader can take them so:
/// the 1x1 products that write them put their weights on the right (vectors along the output
/// channels), and the products that read them (the next block's expansion, the SSD's box and class
/// heads, the next projection) broadcast each pixel's channels where they lie, with no panel packed.
/// Channels first, each projection had to transpose the channels-last depthwise output into its
/// panels, and each expansion copied its input into panels. A tensor stays channels first if any
/// reader needs it so (a model output, a planar depthwise convolution, a reshape); the embedder's
/// global pool sums each channel's pixels in either layout, so its last convolution writes
/// channels-last (and runs in int8 when asked). A dense convolution writes channels-last too: a stem
/// of a channels-first model then runs as a channels-last model's does, straight from its input
/// planes, and its block's depthwise vectorises across channels.
/// In a batch, a product channels-last on both sides runs once over all the images' pixels, where
/// channels first it ran image by image: short products over a 7x7 or 10x10 map fill its tiles.
pub(in crate::runtime::native) fn channels_last_activations(steps: &mut [Step], outputs: &[Operand]) {
    let buffer_of = |operand: &Operand| match operand {
        Operand::Buffer { id, .. } => Some(*id),
        Operand::Const(_) => None,
    };
    // Steps whose output has their input's layout: an element-wise op of two same-shaped operands
    // (no broadcasting), and a depthwise convolution (the interleaved kernel when channels-last).
    let follows_layout = |kind: &StepKind| match kind {
        StepKind::Binary { a_strides, b_strides, shape, .. } => a_strides == b_strides && *a_strides == row_major_strides(shape),
        StepKind::Depthwise { geometry, .. } => geometry.channels_first,
        _ => false,
    };
    // The candidates, each as the (channels, pixels, images) a reader must read it as: images follow
    // one another, each channels × pixels (a reshape aliases a buffer, so a reader may see the same
    // values as another shape, which then stays channels first).
    let mut candidates: HashMap<usize, ActivationShape> = HashMap::new();
    for step in steps.iter_mut() {
        let tensor = match &step.kind {
            StepKind::Gemm { product: Product::Packed { constant, .. }, loops, shape, .. }
                if constant.side == ConstSide::Left && shape.c_row == shape.n =>
            {
                image_loop(loops, shape.m * shape.n).map(|(images, _)| ActivationShape { channels: shape.m, pixels: shape.n, images })
            }
            StepKind::Depthwise { images, geometry, .. } | StepKind::Conv { weights: ConvWeights::Packed(_), images, geometry, .. }
                if geometry.channels_first =>
            {
                Some(ActivationShape { channels: geometry.out_channels, pixels: geometry.window.out_height * geometry.window.out_width, images: *images })
            }
            kind if follows_layout(kind) => {
                let inputs: Vec<Option<ActivationShape>> =
                    step.operands_mut().into_iter().map(|o| buffer_of(o).and_then(|id| candidates.get(&id).copied())).collect();
                inputs.first().copied().flatten().filter(|first| inputs.iter().all(|input| *input == Some(*first)))
            }
            _ => None,
        };
        if let Some(tensor) = tensor {
            candidates.insert(step.output, tensor);
        }
    }
    let mut channels_last: HashSet<usize> = candidates.keys().copied().collect();
    loop {
        let before = channels_last.len();
        for output in outputs.iter().filter_map(buffer_of) {
            channels_last.remove(&output);
        }
        for step in steps.iter_mut() {
            let output = step.output;
            // The tensor this step reads its input as, where it could read it channels-last.
            let reads_as = match &step.kind {
                StepKind::ExpandDepthwise { expansion, interleaved: true, geometry, .. } if expansion.index_stride == 1 => {
                    let pixels = geometry.window.in_height * geometry.window.in_width;
                    (expansion.k_stride == pixels && (expansion.images == 1 || expansion.image_stride == expansion.k * pixels))
                        .then_some(ActivationShape { channels: expansion.k, pixels, images: expansion.images })
                }
                // On the left, a product that stays channels-first transposes its activations
                // into its panels: a cost for it, but the chain of blocks before it stays
                // channels-last.
                StepKind::Gemm { product: Product::Packed { constant, k_stride, index_stride: 1, .. }, loops, shape, .. } => {
                    let pixels = if constant.side == ConstSide::Left { shape.n } else { shape.m };
                    let activations_stride = |l: &Loop| if constant.side == ConstSide::Left { l.b } else { l.a };
                    let images = match &loops[..] {
                        [] => Some(1),
                        [l] if activations_stride(l) == shape.k * pixels => Some(l.extent),
                        _ => None,
                    };
                    images.filter(|_| *k_stride == pixels).map(|images| ActivationShape { channels: shape.k, pixels, images })
                }
                StepKind::Depthwise { images, geometry, .. } if geometry.channels_first => {
                    Some(ActivationShape { channels: geometry.in_channels, pixels: geometry.window.in_height * geometry.window.in_width, images: *images })
                }
                // A dense convolution gathers its windows through the input's strides, either layout.
                StepKind::Conv { images, geometry, .. } if geometry.strides == ImageStrides::planar(&geometry.window) => {
                    Some(ActivationShape { channels: geometry.in_channels, pixels: geometry.window.in_height * geometry.window.in_width, images: *images })
                }
                StepKind::Binary { .. } if follows_layout(&step.kind) => candidates.get(&output).copied(),
                // A pool over each channel's pixels sums them where they lie.
                StepKind::ReduceSum { input, shape, output_strides } => match (&shape[..], &output_strides[..]) {
                    ([outer, pixels], [1, 0]) => buffer_of(input)
                        .and_then(|id| candidates.get(&id).copied())
                        .filter(|t| t.channels * t.images == *outer && t.pixels == *pixels),
                    _ => None,
                },
                _ => None,
            };
            let inputs: Vec<usize> = step.operands_mut().into_iter().filter_map(|o| buffer_of(o)).collect();
            let takes = |id: &usize| reads_as.is_some() && candidates.get(id) == reads_as.as_ref();
            if follows_layout(&step.kind) && !(channels_last.contains(&output) && inputs.iter().all(|id| channels_last.contains(id) && takes(id))) {
                // Output and every input, or none of them.
                channels_last.remove(&output);
                inputs.iter().for_each(|id| _ = channels_last.remove(id));
            } else {
                inputs.iter().filter(|id| !takes(id)).for_each(|id| _ = channels_last.remove(id));
            }
        }
        if channels_last.len() == before {
            break;
        }
    }
    for step in steps.iter_mut() {
        let writes_channels_last = channels_last.contains(&step.output);
        match &mut step.kind {
            StepKind::Gemm { product: Product::Packed { constant, activations, k_stride, index_stride }, shape, epilogue, loops } => {
                if buffer_of(activations).is_some_and(|id| channels_last.contains(&id)) {
                    (*k_stride, *index_stride) = (1, shape.k);
                }
                if writes_channels_last {
                    // C[channels, pixels] = W·X becomes C[pixels, channels] = Xᵀ·Wᵀ; the activations'
                    // strides name the same values on either side, and move to the left.
                    *constant = constant.transposed();
                    (shape.m, shape.n, shape.c_row) = (shape.n, shape.m, shape.m);
                    if let Some((_, along)) = epilogue {
                        *along = ChannelsAlong::Columns;
                    }
                    loops.iter_mut().for_each(|l| (l.a, l.b) = (l.b, l.a));
                    // Channels-last in and out, a batch's images are one matrix of all their pixels
                    // (each image's right after the last): one product, taller by the number of images.
                    if let [l] = &loops[..] {
                        if *k_stride == 1 && *index_stride == shape.k && l.a == shape.m * shape.k {
                            shape.m *= l.extent;
                            loops.clear();
                        }
                    }
                }
            }
            StepKind::ExpandDepthwise { expansion, .. } if buffer_of(&expansion.activations).is_some_and(|id| channels_last.contains(&id)) => {
                (expansion.k_stride, expansion.index_stride) = (1, expansion.k);
            }
            StepKind::ReduceSum { input, shape, output_strides } => {
                if let Some(tensor) = buffer_of(input).filter(|id| channels_last.contains(id)).map(|id| candidates[&id]) {
                    *shape = vec![tensor.images, tensor.pixels, tensor.channels];
                    *output_strides = vec![tensor.channels, 0, 1];
                }
            }
            StepKind::Depthwise { weights, geometry, .. } if writes_channels_last => {
                *weights = tap_major(weights, geometry.window.kernel_height * geometry.window.kernel_width);
                geometry.channels_first = false;
            }
            StepKind::Conv { input, weights, geometry, .. } => {
                if buffer_of(input).is_some_and(|id| channels_last.contains(&id)) {
                    geometry.strides = ImageStrides::channels_last(&geometry.window, geometry.in_channels);
                }
                if !writes_channels_last {
                    continue;
                }
                let ConvWeights::Packed(constant) = weights else { unreachable!("a candidate") };
                *weights = if kernels::conv_interleaved_takes(geometry.in_channels, geometry.out_channels) {
                    // A stem: straight from its input planes, as a channels-last one is.
                    let taps = geometry.window.kernel_height * geometry.window.kernel_width;
                    ConvWeights::Direct(dense_tap_major(&constant.lines(), geometry.in_channels, taps))
                } else {
                    // C[out channels, pixels] = W·columns becomes C[pixels, out channels] = columnsᵀ·Wᵀ.
                    ConvWeights::Packed(constant.transposed())
                };
                geometry.channels_first = false;
            }
            _ => {}
        }
    }
}

/// A tensor as [`channels_last_activations`] lays it out: `images` after one another, each
/// `channels` × `pixels`, channels first or (each pixel's channels together) channels-last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ActivationShape {
    channels: usize,
    pixels: usize,
    images: usize,
}

//! The reduced-precision pass (`"precision": "int8"` or `"bf16"`): the products between
//! channels-last tensors and the dense convolutions run on
//! [`low_precision`](super::super::super::low_precision), and the depthwise outputs only they read are
//! stored encoded for them.

use std::collections::HashMap;

use super::super::super::kernels::{self, ChannelsAlong, ImageStrides, OutputEncoding};
use super::super::super::packed::ConstSide;
use super::super::super::low_precision::{LowPrecision, LowPrecisionConst};
use super::super::super::scale_zero_point::ScaleZeroPoint;
use super::super::ir::*;
use super::readers;

/// Runs in `precision` each packed product that reads channels-last activations with its
/// weights on the right (the 1x1 convolutions between channels-last tensors, and the expansions
/// fused with their depthwise convolution that read such a tensor), and the dense convolutions
/// channels-last in and out: the bulk of both models' multiply-adds. Products reading
/// channels-first activations, the stems and the depthwise convolutions stay f32 (the depthwise
/// ones may still store their output encoded: [`encode_depthwise_outputs`]).
pub(in crate::runtime::native) fn reduce_products(steps: &mut [Step], precision: LowPrecision) {
    for step in steps.iter_mut() {
        if let StepKind::Conv { weights, geometry, .. } = &mut step.kind {
            let channels_last_in = geometry.strides == ImageStrides::channels_last(&geometry.window, geometry.in_channels);
            if let (ConvWeights::Packed(constant), false, true) = (&*weights, geometry.channels_first, channels_last_in) {
                // The packed columns are each output channel's weights, OIHW.
                let taps = geometry.window.kernel_height * geometry.window.kernel_width;
                if let Some(reduced) = LowPrecisionConst::for_windows(precision, &constant.lines(), geometry.in_channels, taps) {
                    *weights = ConvWeights::LowPrecision(reduced);
                }
            }
            continue;
        }
        if let StepKind::ExpandDepthwise { expansion, interleaved: true, geometry, .. } = &mut step.kind {
            if expansion.k_stride == 1 && expansion.index_stride == expansion.k && (expansion.images == 1 || expansion.image_stride == expansion.k * geometry.window.in_height * geometry.window.in_width) {
                expansion.low_precision = LowPrecisionConst::new(precision, &expansion.constant.lines(), expansion.k, geometry.in_channels);
            }
            continue;
        }
        let StepKind::Gemm { product, shape, epilogue, .. } = &mut step.kind else { continue };
        let Product::Packed { constant, activations, k_stride: 1, index_stride } = product else { continue };
        let columns_epilogue = epilogue.as_ref().is_none_or(|(_, along)| *along == ChannelsAlong::Columns);
        if constant.side != ConstSide::Right || *index_stride != shape.k || !columns_epilogue {
            continue;
        }
        if let Some(reduced) = LowPrecisionConst::new(precision, &constant.lines(), shape.k, shape.n) {
            *product = Product::LowPrecision { constant: reduced, activations: activations.clone(), arrives: None };
        }
    }
}

/// Has each channels-last depthwise convolution whose output only a reduced-precision product reads
/// (a MobileNet block's projection) write that output encoded for it, rather than f32 that the
/// product would read again to encode it (in int8, twice: for its range, then to convert it). In
/// int8 the values are quantised with fixed levels over the clamp's range (ReLU6: 0 to 6 in 255
/// steps, as TFLite's quantised MobileNets do; on 204 photos this moved the int8 rows no further from
/// f32's than per-tensor ranges did, tests/precision.rs); in bf16 they are rounded as the product
/// would round them, so the rows are the same either way.
pub(in crate::runtime::native) fn encode_depthwise_outputs(steps: &mut [Step], outputs: &[Operand]) {
    let readers = readers(steps, outputs);
    // The buffers reduced-precision products read as their activations: which step reads each, in
    // which precision.
    let reduced_readers: HashMap<usize, (usize, LowPrecision)> = steps
        .iter()
        .enumerate()
        .filter_map(|(i, step)| match &step.kind {
            StepKind::Gemm { product: Product::LowPrecision { constant, activations: Operand::Buffer { id, .. }, .. }, .. } => Some((*id, (i, constant.precision()))),
            _ => None,
        })
        .collect();
    for i in 0..steps.len() {
        let output = steps[i].output;
        let Some(&(reader, precision)) = reduced_readers.get(&output).filter(|_| readers.get(&output) == Some(&1)) else { continue };
        let (geometry, epilogue, encoded_output) = match &mut steps[i].kind {
            StepKind::Depthwise { geometry, epilogue, encoded_output, .. } if !geometry.channels_first => (&*geometry, &*epilogue, encoded_output),
            StepKind::ExpandDepthwise { geometry, epilogue, encoded_output, interleaved: true, .. } => (&*geometry, &*epilogue, encoded_output),
            _ => continue,
        };
        if !kernels::encoded_depthwise_takes(geometry.in_channels) {
            continue;
        }
        let encoding = match precision {
            LowPrecision::Bf16 => OutputEncoding::Bf16,
            LowPrecision::Int8 => {
                // A finite clamp that holds 0 (ReLU6), which the levels then span.
                let (low, high) = (epilogue.low, epilogue.high);
                if !(low.is_finite() && high.is_finite() && low <= 0.0 && high > 0.0) {
                    continue;
                }
                OutputEncoding::U8(ScaleZeroPoint::spanning(low, high))
            }
        };
        *encoded_output = Some(encoding);
        if let StepKind::Gemm { product: Product::LowPrecision { arrives, .. }, .. } = &mut steps[reader].kind {
            *arrives = Some(encoding);
        }
    }
}

//! Lowers tract's typed, decluttered graph into the steps of [`super::ir`], node by node: matrix
//! products with their bias and clamp folded in, convolutions, depthwise convolutions, element-wise
//! ops, reshapes as aliases. A node outside that subset is refused with the reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::TypedConcat;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, Reducer};
use tract_onnx::tract_core::ops::source::TypedSource;

use super::super::kernels::{self, BinaryOp, ChannelsAlong, Epilogue, ImageStrides, Window};
use super::super::packed::{ConstSide, PackedConst};
use super::ir::*;
use super::shapes::{broadcast_strides, coalesce, dense_tap_major, row_major_strides, tap_major};

/// The lowered graph, before the passes.
pub(super) struct Lowered {
    pub(super) steps: Vec<Step>,
    pub(super) outputs: Vec<Operand>,
    /// Logical buffer sizes, one per value a step writes.
    pub(super) buffer_sizes: Vec<usize>,
    /// The input's logical buffer and length.
    pub(super) input: usize,
    pub(super) input_len: usize,
}

/// Lowers `model` (one image input, concrete shapes); `packs`: products with constant weights use the
/// packed AVX-512 product.
pub(super) fn lower(model: &TypedModel, packs: bool) -> Result<Lowered, Unsupported> {
    let mut lowering = Lowering { model, packs, values: Default::default(), buffers: Vec::new(), steps: Vec::new(), fused: Default::default() };
    let inputs = model.input_outlets().map_err(|e| e.to_string())?;
    if inputs.len() != 1 {
        return Err(format!("{} inputs (the executor takes one image input)", inputs.len()));
    }
    let order = model.eval_order().map_err(|e| e.to_string())?;
    for id in order {
        if !lowering.fused.contains(&id) {
            lowering.lower_node(model.node(id))?;
        }
    }
    let outputs = model
        .output_outlets()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|&outlet| lowering.value(outlet).map(|v| v.operand))
        .collect::<Result<Vec<_>, _>>()?;
    let input = lowering.value(inputs[0])?;
    let Operand::Buffer { id: input, len: input_len } = input.operand else {
        return Err("the input is a constant".into());
    };
    Ok(Lowered { steps: lowering.steps, outputs, buffer_sizes: lowering.buffers, input, input_len })
}

/// A graph value during lowering: what holds it and its shape.
#[derive(Debug, Clone)]
struct Value {
    operand: Operand,
    shape: Vec<usize>,
}

struct Lowering<'m> {
    model: &'m TypedModel,
    /// Whether products with constant weights use the packed AVX-512 product.
    packs: bool,
    values: HashMap<OutletId, Value>,
    /// Logical buffer sizes, one per value a step writes.
    buffers: Vec<usize>,
    steps: Vec<Step>,
    /// Nodes folded into an earlier step's epilogue.
    fused: HashSet<usize>,
}

impl Lowering<'_> {
    fn value(&self, outlet: OutletId) -> Result<Value, Unsupported> {
        if let Some(value) = self.values.get(&outlet) {
            return Ok(value.clone());
        }
        let fact = self.model.outlet_fact(outlet).map_err(|e| e.to_string())?;
        let Some(konst) = &fact.konst else {
            return Err(format!("no value for {outlet:?}"));
        };
        let values = konst.cast_to::<f32>().map_err(|e| e.to_string())?;
        let values = values.try_as_plain_ram().and_then(|v| Ok(v.as_slice::<f32>()?.to_vec())).map_err(|e| e.to_string())?;
        Ok(Value { operand: Operand::Const(Arc::new(values)), shape: konst.shape().to_vec() })
    }

    fn constant(&self, outlet: OutletId) -> Option<Value> {
        self.model.outlet_fact(outlet).ok()?.konst.as_ref()?;
        self.value(outlet).ok()
    }

    fn shape(&self, outlet: OutletId) -> Result<Vec<usize>, Unsupported> {
        let fact = self.model.outlet_fact(outlet).map_err(|e| e.to_string())?;
        match fact.shape.as_concrete() {
            Some(shape) => Ok(shape.to_vec()),
            None => Err(format!("symbolic shape {:?}", fact.shape)),
        }
    }

    /// Adds a step writing a new buffer for `outlet`.
    fn emit(&mut self, outlet: OutletId, kind: StepKind) -> Result<(), Unsupported> {
        let shape = self.shape(outlet)?;
        let len = shape.iter().product();
        let id = self.buffers.len();
        self.buffers.push(len);
        self.steps.push(Step { kind, output: id, output_len: len });
        self.values.insert(outlet, Value { operand: Operand::Buffer { id, len }, shape });
        Ok(())
    }

    /// The same data under another shape (reshapes, added or removed unit axes).
    fn alias(&mut self, outlet: OutletId, source: Value) -> Result<(), Unsupported> {
        let shape = self.shape(outlet)?;
        self.values.insert(outlet, Value { operand: source.operand, shape });
        Ok(())
    }

    fn lower_node(&mut self, node: &TypedNode) -> Result<(), Unsupported> {
        let out = OutletId::new(node.id, 0);
        let unsupported = || format!("node {:?} ({}) is outside the native subset: {:?}", node.name, node.op.name(), node.op);
        let inputs: Vec<OutletId> = node.inputs.clone();
        if node.op_is::<TypedSource>() {
            let fact = self.model.outlet_fact(out).map_err(|e| e.to_string())?;
            if !matches!(fact.datum_type, DatumType::F32 | DatumType::U8) {
                return Err(format!("input of type {:?}", fact.datum_type));
            }
            let shape = self.shape(out)?;
            let len = shape.iter().product();
            let id = self.buffers.len();
            self.buffers.push(len);
            self.values.insert(out, Value { operand: Operand::Buffer { id, len }, shape });
            return Ok(());
        }
        if node.op_is::<Const>() {
            return Ok(()); // read through the consumer's input fact
        }
        if let Some(cast) = node.op_as::<Cast>() {
            // Every value is held as f32, and u8 values are exact in f32.
            let from = self.model.outlet_fact(inputs[0]).map_err(|e| e.to_string())?.datum_type;
            if cast.to == DatumType::F32 && matches!(from, DatumType::U8 | DatumType::F32) {
                let source = self.value(inputs[0])?;
                return self.alias(out, source);
            }
            return Err(unsupported());
        }
        if let Some(axis_op) = node.op_as::<AxisOp>() {
            let source = self.value(inputs[0])?;
            return match axis_op {
                AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..) => self.alias(out, source),
                AxisOp::Move(from, to) => {
                    let mut permutation: Vec<usize> = (0..source.shape.len()).collect();
                    let axis = permutation.remove(*from);
                    permutation.insert(*to, axis);
                    let in_strides = row_major_strides(&source.shape);
                    let strides = permutation.iter().map(|&p| in_strides[p]).collect();
                    let shape = self.shape(out)?;
                    self.emit(out, StepKind::Transpose { input: source.operand, strides, shape })
                }
            };
        }
        if let Some(binary) = node.op_as::<TypedBinOp>() {
            let op = match binary.0.name() {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                "Div" => BinaryOp::Div,
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                _ => return Err(unsupported()),
            };
            if binary.1.is_some() || self.model.outlet_fact(out).map_err(|e| e.to_string())?.datum_type != DatumType::F32 {
                return Err(unsupported());
            }
            let (a, b) = (self.value(inputs[0])?, self.value(inputs[1])?);
            let shape = self.shape(out)?;
            let a_strides = broadcast_strides(&a.shape, &shape).ok_or_else(unsupported)?;
            let b_strides = broadcast_strides(&b.shape, &shape).ok_or_else(unsupported)?;
            let (shape, mut strides) = coalesce(&shape, &[&a_strides, &b_strides, &row_major_strides(&shape)]);
            let (b_strides, a_strides) = (strides.swap_remove(1), strides.swap_remove(0));
            return self.emit(out, StepKind::Binary { op, a: a.operand, a_strides, b: b.operand, b_strides, shape });
        }
        if let Some(element_wise) = node.op_as::<ElementWiseOp>() {
            if element_wise.0.name() == "Sigmoid" && element_wise.1.is_none() {
                let input = self.value(inputs[0])?;
                return self.emit(out, StepKind::Sigmoid { input: input.operand });
            }
            return Err(unsupported());
        }
        if let Some(concat) = node.op_as::<TypedConcat>() {
            let shape = self.shape(out)?;
            let outer = shape[..concat.axis].iter().product();
            let inputs = inputs
                .iter()
                .map(|&i| self.value(i).map(|v| (v.operand, v.shape[concat.axis..].iter().product())))
                .collect::<Result<Vec<_>, _>>()?;
            return self.emit(out, StepKind::Concat { inputs, outer });
        }
        if let Some(reduce) = node.op_as::<Reduce>() {
            if !matches!(reduce.reducer, Reducer::Sum) || self.model.outlet_fact(out).map_err(|e| e.to_string())?.datum_type != DatumType::F32 {
                return Err(unsupported());
            }
            let input = self.value(inputs[0])?;
            let mut output_strides = row_major_strides(&self.shape(out)?);
            for &axis in &reduce.axes {
                output_strides[axis] = 0;
            }
            let (shape, mut strides) = coalesce(&input.shape, &[&row_major_strides(&input.shape), &output_strides]);
            let output_strides = strides.swap_remove(1);
            return self.emit(out, StepKind::ReduceSum { input: input.operand, shape, output_strides });
        }
        if let Some(einsum) = node.op_as::<EinSum>() {
            return self.lower_einsum(node, einsum).map_err(|why| format!("{}: {why}", unsupported()));
        }
        if let Some(conv) = node.op_as::<Conv>() {
            return self.lower_conv(node, conv).map_err(|why| format!("{}: {why}", unsupported()));
        }
        Err(unsupported())
    }

    /// Follows `outlet`'s single consumers while they are a per-channel constant add (along `channel_axis`
    /// of a tensor of `shape`) or a clamp by a scalar constant, folds them into `epilogue`, marks them
    /// fused and returns the last outlet folded.
    fn fuse_epilogue(&mut self, mut outlet: OutletId, shape: &[usize], channel_axis: usize, epilogue: &mut Epilogue) -> OutletId {
        let model = self.model;
        let outputs = model.output_outlets().map(|o| o.to_vec()).unwrap_or_default();
        let mut clamped = false;
        loop {
            let successors = model.outlet_successors(outlet);
            if successors.len() != 1 || outputs.contains(&outlet) {
                return outlet;
            }
            let next = model.node(successors[0].node);
            let Some(binary) = next.op_as::<TypedBinOp>() else { return outlet };
            let other = next.inputs[1 - successors[0].slot];
            let Some(constant) = self.constant(other) else { return outlet };
            let Operand::Const(values) = &constant.operand else { return outlet };
            if binary.1.is_some() || self.shape(OutletId::new(next.id, 0)).ok().as_deref() != Some(shape) {
                return outlet;
            }
            match binary.0.name() {
                "Add" if !clamped => {
                    let Some(strides) = broadcast_strides(&constant.shape, shape) else { return outlet };
                    let per_channel = strides.iter().enumerate().all(|(axis, &s)| s == 0 || axis == channel_axis);
                    if !per_channel {
                        return outlet;
                    }
                    for (c, bias) in epilogue.bias.iter_mut().enumerate() {
                        *bias += values[c * strides[channel_axis]];
                    }
                }
                "Max" if values.len() == 1 && epilogue.high == f32::INFINITY => {
                    epilogue.low = epilogue.low.max(values[0]);
                    clamped = true;
                }
                "Min" if values.len() == 1 && values[0] >= epilogue.low => {
                    epilogue.high = epilogue.high.min(values[0]);
                    clamped = true;
                }
                _ => return outlet,
            }
            self.fused.insert(next.id);
            outlet = OutletId::new(next.id, 0);
        }
    }

    fn lower_einsum(&mut self, node: &TypedNode, einsum: &EinSum) -> Result<(), Unsupported> {
        if einsum.q_params.is_some() || einsum.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
            return Err("quantised or not a product of two f32 tensors".into());
        }
        let (x, y) = (self.value(node.inputs[0])?, self.value(node.inputs[1])?);
        let out = OutletId::new(node.id, 0);
        let c_shape = self.shape(out)?;
        let strides = [row_major_strides(&x.shape), row_major_strides(&y.shape), row_major_strides(&c_shape)];
        let shapes = [&x.shape, &y.shape, &c_shape];
        // Every axis, with its extent and its stride in x, y and C (None where absent).
        let mut axes = Vec::new();
        for axis in einsum.axes.iter_all_axes() {
            let position = |slots: &TVec<TVec<usize>>, i: usize| -> Result<Option<usize>, Unsupported> {
                match slots.get(i).map(|p| p.len()).unwrap_or(0) {
                    0 => Ok(None),
                    1 => Ok(Some(slots[i][0])),
                    _ => Err(format!("axis {} repeats (a diagonal)", axis.repr)),
                }
            };
            let at = [position(&axis.inputs, 0)?, position(&axis.inputs, 1)?, position(&axis.outputs, 0)?];
            let extents: Vec<usize> = at.iter().zip(shapes).filter_map(|(p, s)| p.map(|p| s[p])).collect();
            if extents.windows(2).any(|pair| pair[0] != pair[1]) {
                return Err(format!("axis {} is broadcast ({extents:?})", axis.repr));
            }
            let extent = extents.first().copied().unwrap_or(1);
            if extent == 1 {
                continue; // unit axes change no offsets
            }
            let stride = |t: usize| at[t].map(|p| strides[t][p]);
            axes.push((at, extent, [stride(0), stride(1), stride(2)]));
        }
        let group = |x_in: bool, y_in: bool, c_in: bool| -> Vec<(usize, [usize; 3], Option<usize>)> {
            axes.iter()
                .filter(|(at, ..)| at[0].is_some() == x_in && at[1].is_some() == y_in && at[2].is_some() == c_in)
                .map(|(at, extent, s)| (*extent, [s[0].unwrap_or(0), s[1].unwrap_or(0), s[2].unwrap_or(0)], at[2]))
                .collect()
        };
        if axes.iter().any(|(at, ..)| at.iter().filter(|p| p.is_some()).count() == 1) {
            return Err("an axis summed within one operand".into());
        }
        let mut loops: Vec<Loop> = group(true, true, true).into_iter().map(|(extent, s, _)| Loop { extent, a: s[0], b: s[1], c: s[2] }).collect();
        // m: free axes of x, n: free axes of y (ordered as in C), k: contracted (ordered as in x).
        let by_c_position = |mut g: Vec<(usize, [usize; 3], Option<usize>)>, loops: &mut Vec<Loop>, tensors: [usize; 2]| {
            g.sort_by_key(|(_, _, c_at)| *c_at);
            let (extent, s, rest) = merge_suffix(&g, tensors);
            loops.extend(rest.into_iter().map(|(extent, s, _)| Loop { extent, a: s[0], b: s[1], c: s[2] }));
            (extent, s)
        };
        let (m, m_strides) = by_c_position(group(true, false, true), &mut loops, [0, 2]);
        let (n, n_strides) = by_c_position(group(false, true, true), &mut loops, [1, 2]);
        let mut k_axes = group(true, true, false);
        k_axes.sort_by_key(|(_, s, _)| std::cmp::Reverse(s[0]));
        let (k, k_strides, k_rest) = merge_suffix(&k_axes, [0, 1]);
        if !k_rest.is_empty() {
            return Err("contracted axes that do not merge into one".into());
        }
        if axes.iter().any(|(_, extent, _)| *extent == 0) {
            return Err("an empty axis".into());
        }
        // C = x[m, k] · y[k, n]; make C's column stride 1, transposing the problem if need be.
        let (c_row, c_col) = (m_strides[2], n_strides[2]);
        let (a, b, shape, channel_dim_is_row);
        if c_col == 1 || n == 1 {
            (a, b) = (x.operand, y.operand);
            shape = GemmShape { m, k, n, a_row: m_strides[0] as isize, a_col: k_strides[0] as isize, b_row: k_strides[1] as isize, b_col: n_strides[1] as isize, c_row };
            channel_dim_is_row = false;
        } else if c_row == 1 || m == 1 {
            (a, b) = (y.operand, x.operand);
            shape = GemmShape { m: n, k, n: m, a_row: n_strides[1] as isize, a_col: k_strides[1] as isize, b_row: k_strides[0] as isize, b_col: m_strides[0] as isize, c_row: c_col };
            channel_dim_is_row = true;
            for l in &mut loops {
                std::mem::swap(&mut l.a, &mut l.b);
            }
        } else {
            return Err("no unit stride in the output".into());
        }
        let shape = GemmShape { c_row: if shape.m == 1 { shape.n } else { shape.c_row }, ..shape };
        for (operand, extent) in [(&a, gemm_extent(shape.m, shape.k, shape.a_row, shape.a_col, &loops, |l| l.a)), (&b, gemm_extent(shape.k, shape.n, shape.b_row, shape.b_col, &loops, |l| l.b))] {
            if extent > operand_len(operand) {
                return Err("operand strides reach past its data".into());
            }
        }
        // A bias along the output axis that is the whole of y's free group (the output channels).
        let mut epilogue = None;
        let y_free: Vec<_> = axes.iter().filter(|(at, ..)| at[0].is_none() && at[1].is_some() && at[2].is_some()).collect();
        let channel_axis = match y_free.as_slice() {
            [(at, extent, _)] if *extent == n => at[2],
            _ => None,
        };
        let mut last = out;
        if let Some(channel_axis) = channel_axis {
            let mut e = Epilogue::new(n);
            last = self.fuse_epilogue(out, &c_shape, channel_axis, &mut e);
            if last != out {
                let along = if channel_dim_is_row { ChannelsAlong::Rows } else { ChannelsAlong::Columns };
                epilogue = Some((e, along));
            }
        }
        // Constant weights on either side go to the packed product (when this CPU runs it), with
        // activations that run along either of their axes with a unit stride.
        let unit_stride = |k_stride: isize, index_stride: isize| {
            (k_stride >= 0 && index_stride >= 0 && (index_stride == 1 || k_stride == 1)).then_some((k_stride as usize, index_stride as usize))
        };
        let product = match (&a, &b, unit_stride(shape.b_row, shape.b_col), unit_stride(shape.a_col, shape.a_row)) {
            (Operand::Const(w), Operand::Buffer { .. }, Some((k_stride, index_stride)), _) if self.packs && loops.iter().all(|l| l.a == 0) => {
                let constant = PackedConst::pack(ConstSide::Left, w, shape.a_row as usize, shape.a_col as usize, shape.m, shape.k, shape.n);
                Product::Packed { constant, activations: b, k_stride, index_stride }
            }
            (Operand::Buffer { .. }, Operand::Const(w), _, Some((k_stride, index_stride))) if self.packs && loops.iter().all(|l| l.b == 0) => {
                let constant = PackedConst::pack(ConstSide::Right, w, shape.b_row as usize, shape.b_col as usize, shape.m, shape.k, shape.n);
                Product::Packed { constant, activations: a, k_stride, index_stride }
            }
            _ => Product::Backend { a, b },
        };
        self.emit(last, StepKind::Gemm { product, shape, loops, epilogue })
    }

    fn lower_conv(&mut self, node: &TypedNode, conv: &Conv) -> Result<(), Unsupported> {
        let spec = &conv.pool_spec;
        if conv.q_params.is_some() || spec.kernel_shape.len() != 2 || !matches!(conv.kernel_fmt, KernelFormat::OIHW) {
            return Err("only float 2-D convolutions with OIHW kernels".into());
        }
        if spec.dilations.as_ref().is_some_and(|d| d.iter().any(|&d| d != 1)) {
            return Err("dilated".into());
        }
        let strides = spec.strides.clone().unwrap_or_else(|| tvec![1, 1]);
        if strides[0] != strides[1] {
            return Err("unequal strides".into());
        }
        let input = self.value(node.inputs[0])?;
        let kernel = self.constant(node.inputs[1]).ok_or("kernel is not a constant")?;
        let Operand::Const(kernel_values) = kernel.operand else { unreachable!("constant") };
        let out = OutletId::new(node.id, 0);
        let out_shape = self.shape(out)?;
        let (images, channels_first, spatial) = match spec.data_format {
            DataFormat::NCHW => (input.shape[0], true, 2),
            DataFormat::NHWC => (input.shape[0], false, 1),
            DataFormat::CHW => (1, true, 1),
            DataFormat::HWC => (1, false, 0),
        };
        let (in_height, in_width) = (input.shape[spatial], input.shape[spatial + 1]);
        let (out_height, out_width) = (out_shape[spatial], out_shape[spatial + 1]);
        let (in_channels, out_channels) = (spec.input_channels, spec.output_channels);
        let padding = match &spec.padding {
            PaddingSpec::Valid => (0, 0),
            PaddingSpec::Explicit(before, _) => (before[0], before[1]),
            _ => {
                let computed = spec.padding.compute(&[in_height, in_width], &spec.kernel_shape, &[1, 1], &strides);
                (computed[0].pad_before, computed[1].pad_before)
            }
        };
        if out_height * out_width == 0 || in_height * in_width == 0 || in_channels == 0 || out_channels == 0 {
            return Err("an empty input or output".into());
        }
        if spec.kernel_shape.iter().any(|&k| k > kernels::MAX_KERNEL_HEIGHT) {
            return Err(format!("kernel larger than {0}x{0}", kernels::MAX_KERNEL_HEIGHT));
        }
        let window = Window {
            in_height,
            in_width,
            out_height,
            out_width,
            kernel_height: spec.kernel_shape[0],
            kernel_width: spec.kernel_shape[1],
            stride: strides[0],
            pad_top: padding.0,
            pad_left: padding.1,
        };
        let image_strides = if channels_first {
            ImageStrides::planar(&window)
        } else {
            ImageStrides::channels_last(&window, in_channels)
        };
        let geometry = ConvGeometry {
            window,
            in_channels,
            out_channels,
            image_in_len: in_channels * in_height * in_width,
            image_out_len: out_channels * out_height * out_width,
            strides: image_strides,
            channels_first,
        };
        let mut epilogue = Epilogue::new(out_channels);
        if let Some(bias) = node.inputs.get(2) {
            let bias = self.constant(*bias).ok_or("bias is not a constant")?;
            let Operand::Const(values) = bias.operand else { unreachable!("constant") };
            match values.len() {
                1 => epilogue.bias.fill(values[0]),
                n if n == out_channels => epilogue.bias.copy_from_slice(&values),
                n => return Err(format!("bias of {n} values for {out_channels} channels")),
            }
        }
        let channel_axis = match spec.data_format {
            DataFormat::NCHW => 1,
            DataFormat::CHW => 0,
            DataFormat::NHWC => 3,
            DataFormat::HWC => 2,
        };
        let last = self.fuse_epilogue(out, &out_shape, channel_axis, &mut epilogue);
        let taps = window.kernel_height * window.kernel_width;
        let kind = if conv.group == 1 && kernel.shape == [out_channels, in_channels, window.kernel_height, window.kernel_width] {
            let field = in_channels * taps;
            let weights = match (self.packs, channels_first) {
                _ if !channels_first && kernels::conv_interleaved_takes(in_channels, out_channels) => {
                    ConvWeights::Direct(dense_tap_major(&kernel_values, in_channels, taps))
                }
                (false, _) => ConvWeights::Plain(kernel_values),
                (true, true) => ConvWeights::Packed(PackedConst::pack(ConstSide::Left, &kernel_values, field, 1, out_channels, field, 0)),
                (true, false) => ConvWeights::Packed(PackedConst::pack(ConstSide::Right, &kernel_values, 1, field, 0, field, out_channels)),
            };
            StepKind::Conv { input: input.operand, weights, images, geometry, epilogue }
        } else if conv.group == in_channels && in_channels == out_channels && kernel.shape == [out_channels, 1, window.kernel_height, window.kernel_width] {
            let weights = if channels_first { kernel_values.to_vec() } else { tap_major(&kernel_values, taps) };
            StepKind::Depthwise { input: input.operand, weights, images, geometry, epilogue, encoded_output: None }
        } else {
            return Err(format!("group {} of {in_channels} channels (only dense and depthwise)", conv.group));
        };
        if operand_len(match &kind {
            StepKind::Conv { input, .. } | StepKind::Depthwise { input, .. } => input,
            _ => unreachable!("a convolution"),
        }) < images * geometry.image_in_len
        {
            return Err("input smaller than its shape".into());
        }
        self.emit(last, kind)
    }
}

/// One past the largest offset a product operand addresses over all loop iterations.
fn gemm_extent(rows: usize, cols: usize, row: isize, col: isize, loops: &[Loop], stride: impl Fn(&Loop) -> usize) -> usize {
    let last = (rows.saturating_sub(1)) as isize * row + (cols.saturating_sub(1)) as isize * col;
    last as usize + 1 + loops.iter().map(|l| (l.extent - 1) * stride(l)).sum::<usize>()
}

/// Merges the innermost axes of `group` (ordered outer to inner) that are laid out compactly and in the
/// same order in both `tensors`, into one dimension: (extent, strides, the outer axes left over).
#[allow(clippy::type_complexity)]
fn merge_suffix(
    group: &[(usize, [usize; 3], Option<usize>)],
    tensors: [usize; 2],
) -> (usize, [usize; 3], Vec<(usize, [usize; 3], Option<usize>)>) {
    let Some((&(mut extent, strides, _), outer)) = group.split_last() else {
        return (1, [0; 3], Vec::new());
    };
    let mut rest = outer.len();
    while rest > 0 {
        let (e, s, _) = group[rest - 1];
        if tensors.iter().all(|&t| s[t] == strides[t] * extent) {
            extent *= e;
            rest -= 1;
        } else {
            break;
        }
    }
    (extent, strides, group[..rest].to_vec())
}

//! The native executor: tract loads, types and declutters an ONNX graph (folding batch norms and
//! constants, turning 1x1 convolutions into matrix products), and this executor lowers the result into
//! a flat list of steps over our own kernels — GEMM with fused bias+clamp epilogues, depthwise,
//! direct and im2col convolutions, element-wise ops — with every intermediate tensor assigned ahead
//! of time to a reusable buffer. A 1x1 expansion and the depthwise convolution it alone feeds become
//! one step, run band by band so the expanded channels stay in cache, channels-last where the
//! channels come in groups of 16; the tensors between blocks are channels-last wherever every
//! reader takes them so. A graph with anything outside that subset is refused with the reason, and
//! the caller runs it on tract instead.
//!
//! Its rooms: [`ir`] (the steps), [`lower`] (graph → steps), [`passes`] (fusion, layout, int8),
//! [`alloc`] (buffers), [`exec`] (one step's run); this file holds the model and its run loop.

mod alloc;
mod exec;
mod ir;
mod lower;
mod passes;
mod shapes;

use std::sync::Mutex;

use tract_onnx::prelude::*;

use super::buffer::AlignedBuffer;
use super::gemm::GemmBackend;
use super::kernels::BaselineMultiplyAdd;
use super::low_precision::LowPrecision;
use super::packed;
use alloc::allocate;
use ir::{operand_len, Operand, Step, StepKind, Product, ConvWeights};
pub(crate) use ir::Unsupported;
use lower::Lowered;
use passes::{fuse, layout, low_precision};

/// A lowered model, ready to run from any number of threads at once.
#[derive(Debug)]
pub struct NativeModel {
    input_len: usize,
    input_buffer: usize,
    steps: Vec<Step>,
    outputs: Vec<Operand>,
    buffer_sizes: Vec<usize>,
    scratch_len: usize,
    gemm: Box<dyn GemmBackend>,
    /// How the kernels' baseline variants multiply and add: fused in an int8 program.
    multiply_add: BaselineMultiplyAdd,
    /// Buffers of finished runs, kept for the next: a run allocates nothing once warm.
    workspaces: Mutex<Vec<Workspace>>,
}

#[derive(Debug)]
struct Workspace {
    buffers: Vec<AlignedBuffer>,
    /// im2col columns and depthwise phase planes.
    scratch: AlignedBuffer,
}

impl NativeModel {
    /// Lowers a decluttered, fully typed graph with one image input of concrete shape, its products
    /// in `low_precision` where asked and the CPU runs it (else f32).
    pub fn lower(model: &TypedModel, gemm: Box<dyn GemmBackend>, low_precision: Option<LowPrecision>) -> Result<NativeModel, Unsupported> {
        // An int8 program is lowered the same way on every CPU (packed products, the direct stem,
        // encoded depthwise outputs) and each kernel computes the same bits on each (the baseline's
        // multiply-adds fused too), so its rows are identical whichever CPU made them; an f32 program
        // packs only where the AVX-512 tile runs.
        let int8 = low_precision == Some(LowPrecision::Int8);
        let packs = int8 || (gemm.packs_constants() && packed::available());
        let Lowered { steps, outputs, buffer_sizes, input, input_len } = lower::lower(model, packs)?;
        let mut steps = fuse::fuse_expansions(steps, &outputs);
        layout::interleave_expansions(&mut steps, &outputs);
        layout::channels_last_activations(&mut steps, &outputs);
        if let Some(reduced) = low_precision.filter(|reduced| reduced.available()) {
            low_precision::reduce_products(&mut steps, reduced);
            low_precision::encode_depthwise_outputs(&mut steps, &outputs);
        }
        let scratch_len = steps.iter().map(Step::scratch_len).max().unwrap_or(0);
        let (steps, outputs, buffer_sizes, input_buffer) = allocate(steps, outputs, &buffer_sizes, input);
        Ok(NativeModel {
            input_len,
            input_buffer,
            steps,
            outputs,
            buffer_sizes,
            scratch_len,
            gemm,
            multiply_add: if int8 { BaselineMultiplyAdd::Fused } else { BaselineMultiplyAdd::Separate },
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// The GEMM backend's name, for logs.
    pub fn gemm_name(&self) -> &'static str {
        self.gemm.name()
    }

    /// The reduced precision some of its products run in ([`reduce_products`]), if any.
    pub fn low_precision(&self) -> Option<LowPrecision> {
        self.steps.iter().find_map(|step| match &step.kind {
            StepKind::Gemm { product: Product::LowPrecision { constant, .. }, .. } => Some(constant.precision()),
            StepKind::ExpandDepthwise { expansion, .. } => expansion.low_precision.as_ref().map(|c| c.precision()),
            StepKind::Conv { weights: ConvWeights::LowPrecision(constant), .. } => Some(constant.precision()),
            _ => None,
        })
    }

    /// Bytes of intermediate buffers one concurrent run holds.
    pub fn workspace_bytes(&self) -> usize {
        (self.buffer_sizes.iter().sum::<usize>() + self.scratch_len) * 4
    }

    /// The number of values output `index` holds.
    pub fn output_len(&self, index: usize) -> Option<usize> {
        self.outputs.get(index).map(operand_len)
    }

    /// Runs the model on the input `fill_input` writes (row-major, the input's shape, as f32, straight
    /// into the input buffer) and returns every output.
    pub fn run(&self, fill_input: impl FnOnce(&mut [f32])) -> Vec<Vec<f32>> {
        let mut workspace = self.workspaces.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_else(|| Workspace {
            buffers: self.buffer_sizes.iter().map(|&n| AlignedBuffer::zeroed(n)).collect(),
            scratch: AlignedBuffer::zeroed(self.scratch_len),
        });
        fill_input(&mut workspace.buffers[self.input_buffer][..self.input_len]);
        for step in &self.steps {
            let mut output = std::mem::take(&mut workspace.buffers[step.output]);
            step.run(&workspace.buffers, &mut output[..step.output_len], &mut workspace.scratch, self.gemm.as_ref(), self.multiply_add);
            workspace.buffers[step.output] = output;
        }
        let results = self.outputs.iter().map(|o| o.slice(&workspace.buffers).to_vec()).collect();
        self.workspaces.lock().unwrap_or_else(|e| e.into_inner()).push(workspace);
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::packed::ConstSide;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use crate::runtime::gemm::Portable;
    use tract_onnx::tract_core::ops::math;

    /// x (1×4) → x·Wᵀ + b → ReLU6 → `last`, built with tract's own API.
    fn model(last: Box<dyn TypedOp>) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4])).unwrap();
        let w = model.add_const("w", tensor2(&[[1f32, -2.0, 3.0, 0.5], [0.0, 1.0, -1.0, 2.0], [4.0, 4.0, 4.0, 4.0]])).unwrap();
        let y = model.wire_node("mm", EinSum::new("mk,nk->mn".parse().unwrap(), DatumType::F32), &[x, w]).unwrap();
        let b = model.add_const("b", tensor2(&[[0.5f32, -0.5, 1.0]])).unwrap();
        let y = model.wire_node("bias", math::add(), &[y[0], b]).unwrap();
        let zero = model.add_const("zero", tensor2(&[[0f32]])).unwrap();
        let y = model.wire_node("relu", math::max(), &[y[0], zero]).unwrap();
        let six = model.add_const("six", tensor2(&[[6f32]])).unwrap();
        let y = model.wire_node("relu6", math::min(), &[y[0], six]).unwrap();
        let y = model.wire_node("last", last, &y).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    #[test]
    fn lowers_a_product_with_its_epilogue_fused() {
        let native = NativeModel::lower(&model(Box::new(ElementWiseOp(Box::new(tract_onnx::tract_core::ops::nn::Sigmoid {}), None))), Box::new(Portable), None).unwrap();
        // The product, one fused epilogue, then the sigmoid: two steps.
        assert_eq!(native.steps.len(), 2, "{:?}", native.steps);
        let out = native.run(|input| input.copy_from_slice(&[1.0, 2.0, 3.0, 4.0]));
        let expected = [1.0f32 - 4.0 + 9.0 + 2.0 + 0.5, 0.0 + 2.0 - 3.0 + 8.0 - 0.5, 40.0 + 1.0];
        for (got, x) in out[0].iter().zip(expected) {
            let want = 1.0 / (1.0 + (-x.clamp(0.0, 6.0)).exp());
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn every_product_of_the_embedder_reads_and_writes_channels_last() {
        // int8 runs only the products that read and write channels-last (weights on the right); the
        // global pool once kept the last one channels first.
        let config = crate::Config::default();
        let embedder = &config.embedder;
        let typed = crate::model::typed_model(&config.resolve(&embedder.model), &embedder.input, &[embedder.features_output.as_str()], 1).unwrap();
        let native = NativeModel::lower(&typed, Box::new(Portable), None).unwrap();
        let products: Vec<bool> = native
            .steps
            .iter()
            .filter_map(|step| match &step.kind {
                StepKind::Gemm { product: Product::Packed { constant, .. }, .. } => Some(constant.side == ConstSide::Right),
                StepKind::ExpandDepthwise { interleaved, .. } => Some(*interleaved),
                _ => None,
            })
            .collect();
        if !super::super::packed::available() {
            // Without AVX-512 every product goes to the GEMM backend: nothing is packed, so nothing
            // here can be channels first.
            assert!(products.iter().all(|&channels_last| channels_last), "{products:?}");
            eprintln!("SKIPPED part: this CPU has no AVX-512, so the executor packs no products to check");
            return;
        }
        assert!(products.len() >= 30 && products.iter().all(|&channels_last| channels_last), "{products:?}");
    }

    #[test]
    fn in_int8_and_bf16_every_depthwise_hands_its_projection_encoded_values() {
        for precision in [LowPrecision::Int8, LowPrecision::Bf16] {
            if precision.available() {
                every_depthwise_hands_its_projection_encoded_values(precision);
            } else {
                eprintln!("skipped: this CPU lacks the instructions of {precision:?} products");
            }
        }
    }

    fn every_depthwise_hands_its_projection_encoded_values(precision: LowPrecision) {
        let config = crate::Config::default();
        for (model, input, outputs) in [
            (&config.detector.model, &config.detector.input, vec![config.detector.boxes_output.as_str(), config.detector.scores_output.as_str()]),
            (&config.embedder.model, &config.embedder.input, vec![config.embedder.features_output.as_str()]),
        ] {
            let typed = crate::model::typed_model(&config.resolve(model), input, &outputs, 1).unwrap();
            let native = NativeModel::lower(&typed, Box::new(Portable), Some(precision)).unwrap();
            let (mut depthwise, mut writes_encoded, mut reads_encoded) = (0, 0, 0);
            for step in &native.steps {
                // int8 rows are the same bits on every CPU: no product of an int8 program is left to
                // the GEMM backend, whose kernels differ from CPU to CPU.
                let backend = matches!(&step.kind, StepKind::Gemm { product: Product::Backend { .. }, .. } | StepKind::Conv { weights: ConvWeights::Plain(_), .. });
                assert!(!(precision == LowPrecision::Int8 && backend), "{}: an int8 program's product on the GEMM backend: {step:?}", model.display());
                match &step.kind {
                    StepKind::Depthwise { encoded_output, .. } | StepKind::ExpandDepthwise { encoded_output, .. } => {
                        depthwise += 1;
                        writes_encoded += encoded_output.is_some() as usize;
                    }
                    StepKind::Gemm { product: Product::LowPrecision { arrives: Some(_), constant, .. }, .. } => {
                        assert_eq!(constant.precision(), precision);
                        reads_encoded += 1
                    }
                    _ => {}
                }
            }
            // MobileNetV2's 17 blocks and EfficientNet-Lite0's 16, each with its depthwise and
            // projection (the SSD's extra layers' depthwise convolutions are dense here).
            assert!(
                depthwise >= 16 && writes_encoded == depthwise && reads_encoded == depthwise,
                "{} in {precision:?}: {depthwise} depthwise, {writes_encoded} write encoded values, {reads_encoded} products read them",
                model.display()
            );
        }
    }

    #[test]
    fn refuses_an_operator_outside_the_subset_and_names_it() {
        let why = NativeModel::lower(&model(Box::new(ElementWiseOp(Box::new(math::Exp {}), None))), Box::new(Portable), None).unwrap_err();
        assert!(why.contains("\"last\"") && why.contains("Exp"), "{why}");
    }
}

//! One ONNX model, loaded once, typed with a concrete batch-of-one input shape and optimised into a
//! tract plan. Concrete shapes matter: with a symbolic batch axis tract ran 7× slower, and batches
//! larger than one were slower than as many single runs, so parallelism comes from running one image
//! per thread instead.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::config::{InputDtype, InputSpec, Layout};
use crate::error::{Error, ImageError};
use crate::preprocess::to_input_tensor;

/// A runnable model with its input contract.
#[derive(Debug)]
pub struct OnnxModel {
    name: String,
    input: InputSpec,
    plan: Arc<TypedRunnableModel>,
}

impl OnnxModel {
    /// Loads `path`, fixes its image input to `input`'s shape and keeps only `outputs`, in that order.
    pub fn load(path: &Path, input: &InputSpec, outputs: &[&str]) -> Result<OnnxModel, Error> {
        let model_error = |message: String| Error::Model { path: path.to_path_buf(), message };
        if !path.is_file() {
            return Err(model_error("file not found (set model_dir or IMGFEAT_MODEL_DIR)".into()));
        }
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(|e| model_error(format!("{e:#}")))?;
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(|e| model_error(e.to_string()))?
            .iter()
            .map(|outlet| model.node(outlet.node).name.clone())
            .collect();
        let Some(input_index) = input_names.iter().position(|name| *name == input.name) else {
            return Err(model_error(format!("no input named {:?}; the model's inputs: {input_names:?}", input.name)));
        };
        let (h, w) = (input.height as usize, input.width as usize);
        let shape: [usize; 4] = match input.layout {
            Layout::Nhwc => [1, h, w, 3],
            Layout::Nchw => [1, 3, h, w],
        };
        let dtype = match input.dtype {
            InputDtype::U8 => DatumType::U8,
            InputDtype::F32 => DatumType::F32,
        };
        model
            .set_input_fact(input_index, InferenceFact::dt_shape(dtype, shape))
            .map_err(|e| model_error(format!("{e:#}")))?;
        model.select_outputs_by_name(outputs).map_err(|e| model_error(format!("{e:#}")))?;
        let plan = model
            .into_optimized()
            .and_then(|typed| typed.into_runnable())
            .map_err(|e| model_error(format!("{e:#}")))?;
        Ok(OnnxModel { name: path.file_name().unwrap_or_default().to_string_lossy().into_owned(), input: input.clone(), plan })
    }

    /// The number of values output `index` holds for one image, when the model's shapes are concrete.
    pub fn output_len(&self, index: usize) -> Option<usize> {
        let fact = self.plan.model().output_fact(index).ok()?;
        fact.shape.as_concrete().map(|shape| shape.iter().product())
    }

    /// Resizes and lays out `image` as the model wants it, runs the model and returns its outputs as f32
    /// arrays, in the order given to [`OnnxModel::load`].
    pub fn run(&self, image: &RgbImage) -> Result<Vec<Vec<f32>>, ImageError> {
        let tensor = to_input_tensor(image, &self.input);
        let failed = |e: TractError| ImageError::Inference { model: self.name.clone(), message: format!("{e:#}") };
        let outputs = self.plan.run(tvec![tensor.into()]).map_err(failed)?;
        let to_floats = |t: &TValue| -> TractResult<Vec<f32>> {
            Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        outputs.iter().map(to_floats).collect::<TractResult<Vec<_>>>().map_err(failed)
    }
}

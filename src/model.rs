//! One ONNX model, loaded once with a concrete input shape, run on imgfeat's own executor
//! ([`crate::runtime::native`]) or, for a graph outside its subset or when configured, on tract's
//! optimised plan; the images go in through [`crate::preprocess`]. Concrete shapes matter to both:
//! tract ran 7× slower with a symbolic batch axis, and the own executor plans its buffers from the
//! shapes.

use std::path::Path;

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::config::{EngineConfig, Executor, GemmChoice, InputDtype, InputSpec, Layout, Precision};
use crate::error::{Error, ImageError};
use crate::preprocess::write_input;
use crate::runtime::native::NativeModel;
use crate::cpu::{self, Isa};
use crate::runtime::low_precision::LowPrecision;
use crate::runtime::{gemm, kernels};

/// A runnable model with its input contract.
#[derive(Debug)]
pub struct OnnxModel {
    name: String,
    input: InputSpec,
    batch: usize,
    engine: Engine,
    arithmetic: Arithmetic,
}

#[derive(Debug)]
enum Engine {
    Native(NativeModel),
    Tract(std::sync::Arc<TypedRunnableModel>),
}

impl OnnxModel {
    /// Loads `path`, fixes its image input to `batch` images of `input`'s shape, keeps only `outputs`
    /// (in that order) and prepares the executor `engine` asks for.
    pub fn load(path: &Path, input: &InputSpec, outputs: &[&str], engine: &EngineConfig, batch: usize) -> Result<OnnxModel, Error> {
        let model_error = |message: String| Error::Model { path: path.to_path_buf(), message };
        let typed = typed_model(path, input, outputs, batch)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        // `auto`: bf16 where the CPU runs it (the lowering keeps f32 where it does not).
        let asked = match engine.precision {
            Precision::F32 => None,
            Precision::Int8 => Some(LowPrecision::Int8),
            Precision::Bf16 | Precision::Auto => Some(LowPrecision::Bf16),
        };
        let config = engine;
        let engine = match engine.executor {
            Executor::Native => match NativeModel::lower(&typed, gemm_backend(engine.gemm), asked) {
                Ok(native) => Engine::Native(native),
                Err(why) => {
                    log::warn!("{name} runs on tract, not the native executor: {why}");
                    Engine::Tract(tract_plan(typed).map_err(|e| model_error(format!("{e:#}")))?)
                }
            },
            Executor::Tract => Engine::Tract(tract_plan(typed).map_err(|e| model_error(format!("{e:#}")))?),
        };
        let arithmetic = Arithmetic::of(&engine);
        let named = config.precision != Precision::Auto && config.precision != Precision::F32;
        if named && arithmetic.precision != config.precision {
            let why = match (&engine, asked) {
                (Engine::Tract(_), _) => "tract runs it in f32".to_string(),
                (_, Some(reduced)) if !reduced.available() => {
                    format!("{} products need AVX-512 BF16, which this CPU lacks", config.precision.name())
                }
                _ => format!("none of its products can run in {} with the {} GEMM", config.precision.name(), format!("{:?}", config.gemm).to_lowercase()),
            };
            log::warn!("{name} runs in {}: {why}", arithmetic.precision.name());
        }
        if arithmetic.precision == Precision::Int8 && cpu::isa() == Isa::Baseline {
            log::warn!(
                "{name} runs int8 on the x86-64 baseline (no AVX2): its rows are the bits every other CPU makes, but about 15× slower than f32 here (libm's fmaf for each fused multiply-add)"
            );
        }
        let model = OnnxModel { name, input: input.clone(), batch, engine, arithmetic };
        log::info!("{} (batch {batch}) runs on the {}", model.name, model.executor_description());
        Ok(model)
    }

    /// The arithmetic this model runs in, as loaded.
    pub fn arithmetic(&self) -> &Arithmetic {
        &self.arithmetic
    }

    /// Which executor runs this model, for the log.
    fn executor_description(&self) -> String {
        match &self.engine {
            Engine::Native(native) => format!(
                "native executor ({} GEMM{}, {} KiB of buffers per concurrent run)",
                native.gemm_name(),
                match native.low_precision() {
                    Some(LowPrecision::Int8) => ", int8 convolutions",
                    Some(LowPrecision::Bf16) => ", bf16 convolutions",
                    None => "",
                },
                native.workspace_bytes() / 1024
            ),
            Engine::Tract(_) => "tract".into(),
        }
    }

    /// Whether the native executor runs this model (rather than tract).
    pub fn is_native(&self) -> bool {
        matches!(self.engine, Engine::Native(_))
    }

    /// The number of values output `index` holds for one batch.
    pub fn output_len(&self, index: usize) -> Option<usize> {
        match &self.engine {
            Engine::Native(native) => native.output_len(index),
            Engine::Tract(plan) => {
                let fact = plan.model().output_fact(index).ok()?;
                fact.shape.as_concrete().map(|shape| shape.iter().product())
            }
        }
    }

    /// Resizes and lays out `images` (as many as the batch the model was loaded with) as the model
    /// wants them, runs the model and returns its outputs as f32 arrays, in the order given to
    /// [`OnnxModel::load`], each holding the whole batch.
    pub fn run(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ImageError> {
        assert_eq!(images.len(), self.batch, "a batch of the size the model was loaded with");
        match &self.engine {
            Engine::Native(native) => Ok(native.run(|input| {
                let per_image = input.len() / self.batch;
                for (image, out) in images.iter().zip(input.chunks_exact_mut(per_image)) {
                    write_input(image, &self.input, out);
                }
            })),
            Engine::Tract(_) => {
                let per_image = self.input.width as usize * self.input.height as usize * 3;
                let mut input = vec![0f32; per_image * self.batch];
                for (image, out) in images.iter().zip(input.chunks_exact_mut(per_image)) {
                    write_input(image, &self.input, out);
                }
                self.run_input(&input)
            }
        }
    }
}

impl OnnxModel {
    /// Runs the model on an input already resized, scaled and laid out (`batch` images as f32, the
    /// input's layout; u8 models take the raw levels): for callers with their own preprocessing, and
    /// for timing the model alone.
    pub fn run_input(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, ImageError> {
        let (h, w) = (self.input.height as usize, self.input.width as usize);
        assert_eq!(input.len(), self.batch * h * w * 3, "input length");
        match &self.engine {
            Engine::Native(native) => Ok(native.run(|buffer| match self.input.dtype {
                InputDtype::F32 => buffer.copy_from_slice(input),
                // What tract's cast to u8 would make of the values.
                InputDtype::U8 => kernels::u8_values(input, buffer),
            })),
            Engine::Tract(plan) => {
                let failed = |e: TractError| ImageError::Inference { model: self.name.clone(), message: format!("{e:#}") };
                let shape = match self.input.layout {
                    Layout::Nhwc => [self.batch, h, w, 3],
                    Layout::Nchw => [self.batch, 3, h, w],
                };
                let tensor = Tensor::from_shape(&shape, input).map_err(failed)?;
                let tensor = match self.input.dtype {
                    InputDtype::F32 => tensor,
                    InputDtype::U8 => tensor.cast_to::<u8>().map_err(failed)?.into_owned(),
                };
                let outputs = plan.run(tvec![tensor.into()]).map_err(failed)?;
                outputs.iter().map(|t| Ok(t.cast_to::<f32>()?.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())).collect::<TractResult<Vec<_>>>().map_err(failed)
            }
        }
    }
}

/// The arithmetic models run in, as they were loaded on this CPU: what a table records of how its rows
/// were made (rows of another precision differ from its rows by more than rounding).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Arithmetic {
    /// The precision the 1x1 and dense convolutions ran in: the one configured (`auto`: bf16 where
    /// the CPU has its instructions), or f32 where the CPU, the GEMM or the executor cannot run it.
    /// Never `auto`.
    pub precision: Precision,
    /// Which kernels ran: the instruction set (`avx512`, `avx2`, `baseline`) and the product's
    /// extension (`avx512-vnni` for int8 on AVX-512 VNNI, `avx2-avx-vnni` on AVX-VNNI, `avx2-int8` and
    /// the like on its other kernels, whose rows are the same bits; `avx512-bf16` for bf16), or `tract`;
    /// for two models that
    /// differ, both, each with its role.
    pub kernels: String,
}

/// As a row records it: the precision, then the kernels in brackets (`bf16 (avx512-bf16)`).
impl std::fmt::Display for Arithmetic {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} ({})", self.precision.name(), self.kernels)
    }
}

impl Arithmetic {
    /// What a loaded model runs in.
    fn of(engine: &Engine) -> Arithmetic {
        let isa = match cpu::isa() {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2",
            Isa::Baseline => "baseline",
        };
        match engine {
            Engine::Tract(_) => Arithmetic { precision: Precision::F32, kernels: "tract".into() },
            Engine::Native(native) => match native.low_precision() {
                Some(LowPrecision::Int8) => {
                    let features = cpu::features();
                    let products = if features.int8_products {
                        "vnni"
                    } else if features.avx_vnni_products {
                        "avx-vnni"
                    } else {
                        "int8"
                    };
                    Arithmetic { precision: Precision::Int8, kernels: format!("{isa}-{products}") }
                }
                Some(LowPrecision::Bf16) => Arithmetic { precision: Precision::Bf16, kernels: format!("{isa}-bf16") },
                None => Arithmetic { precision: Precision::F32, kernels: isa.into() },
            },
        }
    }

    /// The detector's and the embedder's together: one where they agree; where they do not (a
    /// custom model on tract beside one on the native executor), the reduced precision of either,
    /// both kernels named.
    pub fn together(detector: &Arithmetic, embedder: &Arithmetic) -> Arithmetic {
        if detector == embedder {
            return detector.clone();
        }
        let precision = if detector.precision == Precision::F32 { embedder.precision } else { detector.precision };
        Arithmetic { precision, kernels: format!("{} (detector), {} (embedder)", detector.kernels, embedder.kernels) }
    }
}

/// `path` as tract's typed, decluttered graph: its image input fixed to `batch` images of `input`'s
/// shape, only `outputs` kept (in that order).
pub(crate) fn typed_model(path: &Path, input: &InputSpec, outputs: &[&str], batch: usize) -> Result<TypedModel, Error> {
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
        Layout::Nhwc => [batch, h, w, 3],
        Layout::Nchw => [batch, 3, h, w],
    };
    let dtype = match input.dtype {
        InputDtype::U8 => DatumType::U8,
        InputDtype::F32 => DatumType::F32,
    };
    model
        .set_input_fact(input_index, InferenceFact::dt_shape(dtype, shape))
        .map_err(|e| model_error(format!("{e:#}")))?;
    model.select_outputs_by_name(outputs).map_err(|e| model_error(format!("{e:#}")))?;
    model
        .into_typed()
        .and_then(|typed| typed.into_decluttered())
        .map_err(|e| model_error(format!("{e:#}")))
}

fn tract_plan(typed: TypedModel) -> TractResult<std::sync::Arc<TypedRunnableModel>> {
    typed.into_optimized()?.into_runnable()
}

fn gemm_backend(choice: GemmChoice) -> Box<dyn gemm::GemmBackend> {
    match choice {
        GemmChoice::Portable => Box::new(gemm::Portable),
        #[cfg(feature = "mkl")]
        GemmChoice::Mkl => Box::new(gemm::Mkl),
        // Config::validate refuses "mkl" in a build without the feature.
        #[cfg(not(feature = "mkl"))]
        GemmChoice::Mkl => Box::new(gemm::Portable),
    }
}

//! The one configuration type. Every knob of the pipeline lives here so that the CLI, the JNI edge and
//! the tests describe a run the same way (as JSON), and so that models are chosen by configuration
//! rather than by code.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

/// A whole pipeline run: which models, how to pick the object, how to embed and encode it, and the
/// resource limits that protect a long job from one hostile file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Folder that relative model, label and projection paths are resolved against. The default is
    /// the `models/` folder of the source tree the binary was built from; Spark jobs set it to a path
    /// present on every node (or to where the jar's models were extracted).
    pub model_dir: PathBuf,
    /// The SSD detector: a preset name (`"coco"`, `"oidv4"`) or a full [`DetectorSpec`].
    #[serde(deserialize_with = "detector_from_name_or_spec")]
    pub detector: DetectorSpec,
    /// The CNN embedder: a preset name (`"efficientnet_lite0"`) or a full [`EmbedderSpec`].
    #[serde(deserialize_with = "embedder_from_name_or_spec")]
    pub embedder: EmbedderSpec,
    /// Minimum class score for a detection to count.
    pub score_threshold: f32,
    /// Per-class NMS: a box overlapping a better one of the same class by more than this IoU is dropped.
    pub nms_iou_threshold: f32,
    /// How many detections survive NMS (the main object is the best of them).
    pub max_detections: usize,
    /// Class names or numeric ids the main object may have; empty means any class. Lets a catalogue of
    /// shoes ignore the person wearing them.
    pub class_allow_list: Vec<String>,
    /// Fraction of the box's width (height) added on the left and right (top and bottom) before
    /// cropping, so the embedder sees the object's outline and a little context.
    pub crop_margin: f32,
    /// Which embeddings each row carries.
    pub embed: EmbedMode,
    /// Photos found pasted into the image (the tiles of a collage, a product shot placed small on
    /// another photo or a banner, a padded copy: every side a seam, see [`crate::crop::InsetSearch::Row`])
    /// that the row carries embedded on their own, at most this many (0: none; 16 at most). A copy
    /// pasted into another photo matches its original only through these: `dedup` groups it by them.
    /// Ordinary photos rarely have one, but the seam search runs on every photo: extraction runs at
    /// about 0.94× the speed of `insets: 0` on one thread (BENCHMARKS.md).
    pub insets: usize,
    /// Binary-code length and projection file.
    pub codes: CodesConfig,
    /// Compute threads for one pipeline; 0 means every core of the host (right for the CLI, wrong for a
    /// Spark task, which passes `spark.task.cpus`).
    pub threads: usize,
    /// Limits checked before any pixel buffer is allocated.
    pub limits: Limits,
    /// JPEGs whose shorter side is at least twice this are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
    /// DCT scaling) while the shorter side stays ≥ this; 0 always decodes in full. The default, 672,
    /// is three times the embedder's 224: an object covering a third of the photo still gets a crop
    /// as large as the embedder's input.
    pub jpeg_scale_min_side: u32,
    /// What runs the models.
    pub engine: EngineConfig,
}

/// Insets a row may carry at most: each is an embedding and a feature in the row.
pub const MAX_INSETS: usize = 16;

impl Default for Config {
    fn default() -> Self {
        Config {
            model_dir: default_model_dir(),
            detector: DetectorSpec::preset("coco").expect("built-in preset"),
            embedder: EmbedderSpec::preset("efficientnet_lite0").expect("built-in preset"),
            score_threshold: 0.3,
            nms_iou_threshold: 0.6,
            max_detections: 20,
            class_allow_list: Vec::new(),
            crop_margin: 0.10,
            embed: EmbedMode::Both,
            insets: 4,
            codes: CodesConfig::default(),
            threads: 0,
            limits: Limits::default(),
            jpeg_scale_min_side: 672,
            engine: EngineConfig::default(),
        }
    }
}

impl Config {
    /// Parses a JSON configuration; fields left out keep their defaults.
    pub fn from_json(json: &str) -> Result<Config, Error> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("invalid configuration JSON: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as JSON, every field spelled out (what `imgfeat config` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("Config serialises")
    }

    /// Rejects values that would make every image fail later with a less helpful message.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return bad(format!("score_threshold must be within [0, 1], got {}", self.score_threshold));
        }
        if !(0.0..=1.0).contains(&self.nms_iou_threshold) {
            return bad(format!("nms_iou_threshold must be within [0, 1], got {}", self.nms_iou_threshold));
        }
        if self.max_detections == 0 {
            return bad("max_detections must be at least 1".into());
        }
        if !(0.0..=10.0).contains(&self.crop_margin) {
            return bad(format!("crop_margin must be within [0, 10], got {}", self.crop_margin));
        }
        if self.insets > MAX_INSETS {
            return bad(format!("insets must be at most {MAX_INSETS}, got {}", self.insets));
        }
        if !matches!(self.codes.bits, 64 | 128 | 256) {
            return bad(format!("codes.bits must be 64, 128 or 256, got {}", self.codes.bits));
        }
        if self.engine.gemm == GemmChoice::Mkl && !cfg!(feature = "mkl") {
            return bad("engine.gemm \"mkl\" needs a build with `--features mkl`".into());
        }
        if self.limits.max_pixels == 0 || self.limits.max_encoded_bytes == 0 {
            return bad("limits.max_pixels and limits.max_encoded_bytes must be positive".into());
        }
        if self.limits.max_inflight_pixels < self.limits.max_pixels {
            return bad(format!(
                "limits.max_inflight_pixels ({}) must be at least limits.max_pixels ({}), or the largest allowed image could never start",
                self.limits.max_inflight_pixels, self.limits.max_pixels
            ));
        }
        Ok(())
    }

    /// A path from the configuration, resolved against `model_dir` when relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.model_dir.join(path)
        }
    }

    /// The projection file the binary codes use.
    pub fn projection_path(&self) -> PathBuf {
        match &self.codes.projection {
            Some(path) => self.resolve(path),
            None => self.model_dir.join(format!("codes_itq_{}.safetensors", self.codes.bits)),
        }
    }

    /// The number of compute threads this configuration asks for, with 0 resolved to the host's cores.
    pub fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// `IMGFEAT_MODEL_DIR` when set, else the `models/` folder of the source tree this was built from.
fn default_model_dir() -> PathBuf {
    match std::env::var_os("IMGFEAT_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
    }
}

/// Which embeddings a row carries. Whole-image embeddings survive crops, flips and rescales; object
/// embeddings survive a new background. Near-duplicate search needs both, hence the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedMode {
    Object,
    Whole,
    Both,
}

impl EmbedMode {
    pub fn object(self) -> bool {
        matches!(self, EmbedMode::Object | EmbedMode::Both)
    }
    pub fn whole(self) -> bool {
        matches!(self, EmbedMode::Whole | EmbedMode::Both)
    }
}

/// What runs the models: our own executor (the default; a model using an operator outside its subset
/// runs on tract instead, with a log line saying which) or tract for everything, and which matrix
/// product the own executor uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub executor: Executor,
    pub gemm: GemmChoice,
    pub precision: Precision,
}

/// The own executor's arithmetic for the 1x1 and dense convolutions between channels-last tensors
/// (the bulk of both models' multiply-adds; the rest stays f32). bf16 runs them on AVX-512 BF16 (AMD
/// Zen 4 and later, Intel Cooper Lake and Sapphire Rapids and later): twice an f32 FMA's multiply-adds
/// per instruction, inputs rounded to bf16, sums kept in f32; its rows stay within the bound a default
/// must keep (whole-image feature cosine to f32's median 0.9999, min 0.9996 on 204 photos, the same
/// main object on all: tests/precision.rs), so `auto`, the default, picks it where the CPU runs it
/// natively and f32 elsewhere. int8 runs them as u8×s8 products, on AVX-512 VNNI four times the
/// multiply-adds per instruction, at the cost of rounding their inputs to 256 levels (cosine ≥ 0.994);
/// on every CPU, with the same rows (tests/int8_identity.rs). bf16 asked for by name on a CPU without
/// its instructions runs in f32, with a warning; the table records the precision its rows were made
/// in ([`crate::model::Arithmetic`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the CPU has AVX-512 BF16, else f32.
    #[default]
    Auto,
    F32,
    Int8,
    Bf16,
}

impl Precision {
    /// The name the configuration and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// imgfeat's own kernels (`runtime::native`), falling back to tract per model.
    #[default]
    Native,
    /// tract's optimised plan.
    Tract,
}

/// The own executor's matrix product. Portable is the default because whole models ran fastest on it
/// on both an AMD EPYC and an Intel Xeon (BENCHMARKS.md); MKL needs `--features mkl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmChoice {
    #[default]
    Portable,
    Mkl,
}

/// Binary codes: `bits` long, from a projection file fitted by `imgfeat fit-codes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodesConfig {
    /// 64, 128 or 256.
    pub bits: usize,
    /// Projection file; by default `codes_itq_<bits>.safetensors` in `model_dir`.
    pub projection: Option<PathBuf>,
}

impl Default for CodesConfig {
    fn default() -> Self {
        CodesConfig { bits: 256, projection: None }
    }
}

/// Bounds on one input, so a decompression bomb is an error row rather than a dead executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest width × height accepted, checked from the header before decoding.
    pub max_pixels: u64,
    /// Largest number of decoded pixels one pipeline holds at once, across all its threads and all the
    /// Spark tasks sharing it: an image waits for room before it is decoded, so a burst of large
    /// photos slows down instead of exhausting the executor's memory (3 bytes a pixel, plus the
    /// resize's copies). At least `max_pixels`.
    pub max_inflight_pixels: u64,
    /// Largest encoded input accepted, in bytes.
    pub max_encoded_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: 64_000_000, max_encoded_bytes: 64 << 20, max_inflight_pixels: 128_000_000 }
    }
}

/// Element type a model's input tensor expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputDtype {
    U8,
    F32,
}

/// Memory layout of a model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Layout {
    Nhwc,
    Nchw,
}

/// How an RGB image becomes a model's input tensor: the image is stretched to `width`×`height` and each
/// channel value x (0..=255) becomes `x * scale + offset` (ignored for `u8`, which passes x unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub dtype: InputDtype,
    pub layout: Layout,
    pub width: u32,
    pub height: u32,
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default)]
    pub offset: f32,
}

fn one() -> f32 {
    1.0
}

/// How the label file numbers its classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelFormat {
    /// One name per line; line i names score column i (line 0 is the background).
    Rows,
    /// Lines `"<n>  <name>"` naming score column n + 1 (TF Object Detection API's COCO files).
    NumberedFromZero,
}

/// The SSD anchor grid, as TensorFlow's `ssd_anchor_generator` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnchorSpec {
    pub feature_map_sizes: Vec<usize>,
    pub min_scale: f32,
    pub max_scale: f32,
    pub aspect_ratios: Vec<f32>,
    /// The first layer keeps only 3 anchors: (0.1, AR 1), (s0, AR 2), (s0, AR 0.5).
    pub reduce_boxes_in_lowest_layer: bool,
    /// Aspect ratio of the extra anchor with scale sqrt(s_i * s_{i+1}); 0 disables it.
    pub interpolated_scale_aspect_ratio: f32,
}

impl Default for AnchorSpec {
    fn default() -> Self {
        AnchorSpec {
            feature_map_sizes: vec![19, 10, 5, 3, 2, 1],
            min_scale: 0.2,
            max_scale: 0.95,
            // 0.3333, not 1/3: the value in TensorFlow's training config, which the trained box
            // encodings assume (exact 1/3 moves anchors by 4e-5).
            aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 0.3333],
            reduce_boxes_in_lowest_layer: true,
            interpolated_scale_aspect_ratio: 1.0,
        }
    }
}

/// An SSD detector: model file, input, outputs, labels, anchors and box coder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub name: String,
    pub model: PathBuf,
    pub labels: PathBuf,
    pub label_format: LabelFormat,
    pub input: InputSpec,
    /// Output with box encodings `[N, anchors, 4]` as (ty, tx, th, tw).
    pub boxes_output: String,
    /// Output with class scores `[N, anchors, classes]`, column 0 the background.
    pub scores_output: String,
    /// Whether the scores are logits that still need a sigmoid.
    pub scores_are_logits: bool,
    #[serde(default)]
    pub anchors: AnchorSpec,
    /// Box coder scales (y, x, h, w).
    #[serde(default = "default_box_coder_scales")]
    pub box_coder_scales: [f32; 4],
}

fn default_box_coder_scales() -> [f32; 4] {
    [10.0, 10.0, 5.0, 5.0]
}

impl DetectorSpec {
    pub const PRESETS: [&'static str; 2] = ["coco", "oidv4"];

    /// The detectors shipped in `models/`.
    pub fn preset(name: &str) -> Result<DetectorSpec, Error> {
        let input = |dtype, scale, offset| InputSpec {
            name: "normalized_input_image_tensor".into(),
            dtype,
            layout: Layout::Nhwc,
            width: 300,
            height: 300,
            scale,
            offset,
        };
        match name {
            "coco" => Ok(DetectorSpec {
                name: "ssd_mobilenetv2_coco".into(),
                model: "ssd_mobilenetv2_coco_float.onnx".into(),
                labels: "ssd_mobilenetv2_coco_labels.txt".into(),
                label_format: LabelFormat::NumberedFromZero,
                input: input(InputDtype::U8, 1.0, 0.0),
                boxes_output: "box_encodings".into(),
                scores_output: "class_scores".into(),
                scores_are_logits: false,
                anchors: AnchorSpec::default(),
                box_coder_scales: default_box_coder_scales(),
            }),
            "oidv4" => Ok(DetectorSpec {
                name: "ssd_mobilenetv2_oidv4".into(),
                model: "ssd_mobilenetv2_oidv4_float.onnx".into(),
                labels: "ssd_mobilenetv2_oidv4_labels.txt".into(),
                label_format: LabelFormat::Rows,
                input: input(InputDtype::F32, 2.0 / 255.0, -1.0),
                boxes_output: "raw_outputs/box_encodings".into(),
                scores_output: "raw_outputs/class_predictions".into(),
                scores_are_logits: true,
                anchors: AnchorSpec::default(),
                box_coder_scales: default_box_coder_scales(),
            }),
            other => Err(Error::Config(format!(
                "unknown detector preset {other:?}; presets: {}, or give a full detector object",
                Self::PRESETS.join(", ")
            ))),
        }
    }
}

/// A CNN embedder: model file, input and the output holding the feature vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderSpec {
    pub name: String,
    pub model: PathBuf,
    pub input: InputSpec,
    pub features_output: String,
}

impl EmbedderSpec {
    pub const PRESETS: [&'static str; 1] = ["efficientnet_lite0"];

    /// The embedders shipped in `models/`.
    pub fn preset(name: &str) -> Result<EmbedderSpec, Error> {
        match name {
            "efficientnet_lite0" => Ok(EmbedderSpec {
                name: "efficientnet_lite0".into(),
                model: "efficientnet_lite0_embed.onnx".into(),
                input: InputSpec {
                    name: "input".into(),
                    dtype: InputDtype::F32,
                    layout: Layout::Nchw,
                    width: 224,
                    height: 224,
                    scale: 1.0 / 128.0,
                    offset: -127.0 / 128.0,
                },
                features_output: "features".into(),
            }),
            other => Err(Error::Config(format!(
                "unknown embedder preset {other:?}; presets: {}, or give a full embedder object",
                Self::PRESETS.join(", ")
            ))),
        }
    }
}

/// A preset name (a JSON string) or a full spec (an object), parsed so that a mistake inside the
/// object is reported with its field rather than as "matched no variant".
fn name_or_spec<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
    preset: fn(&str) -> Result<T, Error>,
) -> Result<T, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(name) => preset(&name).map_err(serde::de::Error::custom),
        spec => serde_json::from_value(spec).map_err(serde::de::Error::custom),
    }
}

fn detector_from_name_or_spec<'de, D: Deserializer<'de>>(d: D) -> Result<DetectorSpec, D::Error> {
    name_or_spec(d, DetectorSpec::preset)
}

fn embedder_from_name_or_spec<'de, D: Deserializer<'de>>(d: D) -> Result<EmbedderSpec, D::Error> {
    name_or_spec(d, EmbedderSpec::preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_json() {
        let config = Config::default();
        assert_eq!(Config::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn presets_are_selected_by_name() {
        let config = Config::from_json(r#"{"detector": "oidv4", "threads": 1}"#).unwrap();
        assert_eq!(config.detector, DetectorSpec::preset("oidv4").unwrap());
        assert!(config.detector.scores_are_logits);
        assert_eq!(config.threads, 1);
        assert_eq!(config.score_threshold, 0.3);
    }

    #[test]
    fn unknown_fields_and_presets_are_clear_errors() {
        let err = Config::from_json(r#"{"treads": 2}"#).unwrap_err().to_string();
        assert!(err.contains("treads"), "{err}");
        let err = Config::from_json(r#"{"detector": "yolo"}"#).unwrap_err().to_string();
        assert!(err.contains("yolo") && err.contains("coco"), "{err}");
        let mut spec = serde_json::to_value(DetectorSpec::preset("coco").unwrap()).unwrap();
        spec["input"]["dtype"] = "f16".into();
        let err = Config::from_json(&serde_json::json!({ "detector": spec }).to_string()).unwrap_err().to_string();
        assert!(err.contains("f16"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for json in [
            r#"{"score_threshold": 1.5}"#,
            r#"{"codes": {"bits": 100}}"#,
            r#"{"max_detections": 0}"#,
            r#"{"limits": {"max_pixels": 0}}"#,
        ] {
            assert!(Config::from_json(json).is_err(), "{json} accepted");
        }
    }

    #[test]
    fn projection_path_follows_bits_and_model_dir() {
        let config = Config::from_json(r#"{"model_dir": "/m", "codes": {"bits": 64}}"#).unwrap();
        assert_eq!(config.projection_path(), PathBuf::from("/m/codes_itq_64.safetensors"));
    }
}

//! The native executor against tract on the shipped models and real photos, for a batch of one and a
//! batch of eight: every output value within 1e-4, absolute for values within ±1 and relative beyond
//! (the oidv4 detector's raw logits reach ±10, where both executors' f32 sums differ in the 5th digit).

mod common;

use std::path::{Path, PathBuf};

use image::RgbImage;
use imgfeat::config::{DetectorSpec, EmbedderSpec, EngineConfig, Executor, InputDtype, InputSpec, Layout, Precision};
use imgfeat::decode::decode;
use imgfeat::model::OnnxModel;
use imgfeat::Config;

const TOLERANCE: f32 = 1e-4;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The committed fixtures, plus the first shared photos when `../shared/data` is present.
fn photos(count: usize) -> Vec<RgbImage> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&fixtures).unwrap().map(|e| e.unwrap().path()).collect();
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/imagenet-sample");
    match std::fs::read_dir(&shared) {
        Ok(entries) => {
            let mut more: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
            more.sort();
            paths.extend(more);
        }
        Err(_) => common::skipped(format_args!("SKIPPED part: {} is absent; comparing on the fixtures only", shared.display())),
    }
    paths.sort_by_key(|p| !p.starts_with(&fixtures));
    let limits = Config::default().limits;
    let mut images: Vec<RgbImage> = paths.iter().take(count).map(|p| decode(&std::fs::read(p).unwrap(), &limits).unwrap()).collect();
    // Without the shared photos, mirrored and rotated fixtures fill the batches.
    let originals = images.clone();
    for transform in [image::imageops::flip_horizontal, image::imageops::rotate90, image::imageops::flip_vertical] {
        images.extend(originals.iter().map(transform));
    }
    images.truncate(count);
    images
}

fn load(path: &Path, input: &InputSpec, outputs: &[&str], engine: EngineConfig, batch: usize) -> OnnxModel {
    OnnxModel::load(path, input, outputs, &engine, batch).unwrap()
}

/// The native executor in f32, what tract computes (the default precision, `auto`, may be bf16).
fn native_f32() -> EngineConfig {
    EngineConfig { executor: Executor::Native, precision: Precision::F32, ..EngineConfig::default() }
}

/// Runs `images` in batches of `batch` on both executors and compares every output value.
fn compare(model: &str, input: &InputSpec, outputs: &[&str], batch: usize, images: &[RgbImage]) {
    compare_with(native_f32(), model, input, outputs, batch, images)
}

fn compare_with(engine: EngineConfig, model: &str, input: &InputSpec, outputs: &[&str], batch: usize, images: &[RgbImage]) {
    let path = models().join(model);
    let native = load(&path, input, outputs, engine, batch);
    assert!(native.is_native(), "{model} fell back to tract");
    let tract = load(&path, input, outputs, EngineConfig { executor: Executor::Tract, ..EngineConfig::default() }, batch);
    let (mut worst, mut worst_relative) = (0f32, 0f32);
    for chunk in images.chunks_exact(batch) {
        let refs: Vec<&RgbImage> = chunk.iter().collect();
        let (ours, theirs) = (native.run(&refs).unwrap(), tract.run(&refs).unwrap());
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.len(), b.len(), "{model}: output lengths");
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x - y).abs());
                worst_relative = worst_relative.max((x - y).abs() / y.abs().max(1.0));
            }
        }
    }
    eprintln!("{model}, batch {batch}: max abs difference {worst:e}, relative to max(1, |tract|) {worst_relative:e}, over {} images", images.len());
    assert!(worst_relative <= TOLERANCE, "{model}, batch {batch}: native and tract differ by {worst} ({worst_relative} relative)");
}

#[test]
fn detectors_match_tract() {
    let images = photos(16);
    for preset in DetectorSpec::PRESETS {
        let spec = DetectorSpec::preset(preset).unwrap();
        let outputs = [spec.boxes_output.as_str(), spec.scores_output.as_str()];
        compare(spec.model.to_str().unwrap(), &spec.input, &outputs, 1, &images[..4]);
        compare(spec.model.to_str().unwrap(), &spec.input, &outputs, 8, &images);
    }
}

#[test]
fn embedder_matches_tract() {
    let images = photos(16);
    let spec = EmbedderSpec::preset("efficientnet_lite0").unwrap();
    compare(spec.model.to_str().unwrap(), &spec.input, &[spec.features_output.as_str()], 1, &images[..4]);
    compare(spec.model.to_str().unwrap(), &spec.input, &[spec.features_output.as_str()], 8, &images);
}

/// The MKL backend (a `--features mkl` build) through the same parity checks.
#[cfg(feature = "mkl")]
#[test]
fn mkl_backend_matches_tract() {
    use imgfeat::config::GemmChoice;
    let images = photos(8);
    let engine = EngineConfig { gemm: GemmChoice::Mkl, ..native_f32() };
    let detector = DetectorSpec::preset("coco").unwrap();
    let outputs = [detector.boxes_output.as_str(), detector.scores_output.as_str()];
    compare_with(engine.clone(), detector.model.to_str().unwrap(), &detector.input, &outputs, 8, &images);
    let embedder = EmbedderSpec::preset("efficientnet_lite0").unwrap();
    compare_with(engine, embedder.model.to_str().unwrap(), &embedder.input, &[embedder.features_output.as_str()], 1, &images[..2]);
}

/// The executor keeps tensors between 1x1 convolutions channels-last where every reader takes them
/// so; a reshape hands the same buffer to a reader that sees another shape. In
/// `tests/fixtures/reshape_after_conv.onnx` (`make_layout_model.py`) the sum of two 1x1
/// convolutions (16 channels × 64 pixels) feeds a third one and, reshaped to 32×32, a matrix
/// product: both outputs must match tract's, which they would not if the sum were stored
/// channels-last.
#[test]
fn a_reshaped_reader_keeps_its_input_channels_first() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reshape_after_conv.onnx");
    let input = InputSpec { name: "input".into(), dtype: InputDtype::F32, layout: Layout::Nchw, width: 8, height: 8, scale: 1.0, offset: 0.0 };
    let outputs = ["pixels", "mixed"];
    let native = load(&path, &input, &outputs, native_f32(), 1);
    assert!(native.is_native(), "the fixture fell back to tract");
    let tract = load(&path, &input, &outputs, EngineConfig { executor: Executor::Tract, ..EngineConfig::default() }, 1);
    let values: Vec<f32> = (0..3 * 8 * 8).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let (ours, theirs) = (native.run_input(&values).unwrap(), tract.run_input(&values).unwrap());
    for ((name, ours), theirs) in outputs.iter().zip(&ours).zip(&theirs) {
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (a, b) in ours.iter().zip(theirs) {
            assert!((a - b).abs() <= TOLERANCE * b.abs().max(1.0), "{name}: {a} vs tract's {b}");
        }
    }
}

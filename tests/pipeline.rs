//! The pipeline on real photos: the committed fixtures (always) and `../shared/data` (when present).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use imgfeat::detect::BoundingBox;
use imgfeat::{Config, ImageError, Pipeline, Record};
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn photo(name: &str) -> Vec<u8> {
    fixture(&format!("photos/{name}"))
}

fn config(json: &str) -> Config {
    Config::from_json(json).unwrap()
}

/// Pipelines are expensive to build; tests share one per detector. f32, which the onnxruntime
/// reference computes (the default precision, `auto`, may be bf16: tests/precision.rs bounds it).
fn pipeline(detector: &str) -> &'static Pipeline {
    static COCO: OnceLock<Pipeline> = OnceLock::new();
    static OIDV4: OnceLock<Pipeline> = OnceLock::new();
    let cell = if detector == "coco" { &COCO } else { &OIDV4 };
    cell.get_or_init(|| Pipeline::new(config(&format!(r#"{{"detector": "{detector}", "threads": 2, "engine": {{"precision": "f32"}}}}"#))).unwrap())
}

fn run(detector: &str, name: &str) -> Record {
    pipeline(detector).process_one(&photo(name)).unwrap()
}

fn iou(a: &BoundingBox, b: [f32; 4]) -> f32 {
    a.iou(&BoundingBox { xmin: b[0], ymin: b[1], xmax: b[2], ymax: b[3] })
}

#[test]
fn finds_the_main_object_of_each_fixture() {
    // Regions drawn by hand on the photos (xmin, ymin, xmax, ymax).
    for (name, class, region) in [
        ("astronaut.jpg", "person", [0.03, 0.02, 0.72, 1.0]),
        ("chelsea.jpg", "cat", [0.0, 0.0, 0.9, 1.0]),
        ("coffee.jpg", "cup", [0.28, 0.04, 0.68, 0.78]),
    ] {
        let record = run("coco", name);
        let object = record.main_object.as_ref().unwrap_or_else(|| panic!("{name}: nothing detected"));
        assert_eq!(object.class_name, class, "{name}");
        let overlap = iou(&object.bbox, region);
        assert!(overlap > 0.6, "{name}: box {:?} overlaps the expected region by IoU {overlap}", object.bbox);
        assert_eq!(record.code.as_ref().unwrap().len(), 32);
        assert_eq!(record.whole_code.as_ref().unwrap().len(), 32);
    }
}

#[test]
fn no_object_means_the_whole_image_is_embedded() {
    let record = run("coco", "rocket.jpg");
    assert!(record.main_object.is_none());
    assert_eq!((record.crop.right, record.crop.bottom), (record.width, record.height));
    assert_eq!(record.feature, record.whole_feature);
    assert_eq!(record.code, record.whole_code);
}

/// The independent reference (`tests/reference/reference.py`: onnxruntime + Pillow + NumPy).
fn reference() -> &'static Value {
    static REFERENCE: OnceLock<Value> = OnceLock::new();
    REFERENCE.get_or_init(|| serde_json::from_slice(&fixture("reference_outputs.json")).unwrap())
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn matches_the_onnxruntime_reference_for_both_detectors() {
    for detector in ["coco", "oidv4"] {
        for name in ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"] {
            let expected = &reference()[name][detector];
            let record = run(detector, name);
            let context = format!("{name} / {detector}");
            assert_eq!(record.main_object.is_some(), expected["detected"].as_bool().unwrap(), "{context}");
            assert_eq!(record.width as u64, expected["width"].as_u64().unwrap(), "{context}");
            assert_eq!(record.detections.len(), expected["detections"].as_array().unwrap().len(), "{context}");
            for (ours, theirs) in record.detections.iter().zip(expected["detections"].as_array().unwrap()) {
                assert_eq!(ours.class_id as u64, theirs["class_id"].as_u64().unwrap(), "{context}");
                let score_diff = (ours.score - theirs["score"].as_f64().unwrap() as f32).abs();
                // The issue asks for 1e-3; we decode and resize exactly as Pillow does, and measure ~1e-6.
                assert!(score_diff < 1e-4, "{context}: score {} vs {}", ours.score, theirs["score"]);
                let b = floats(&theirs["box"]);
                let coords = [ours.bbox.xmin, ours.bbox.ymin, ours.bbox.xmax, ours.bbox.ymax];
                for (x, y) in coords.iter().zip(&b) {
                    assert!((x - y).abs() < 1e-4, "{context}: box {coords:?} vs {b:?}");
                }
            }
            if let Some(object) = &record.main_object {
                assert_eq!(Some(object.class_name.as_str()), expected["class_name"].as_str(), "{context}");
            }
            let crop = &expected["crop_pixels"];
            let theirs: Vec<u32> = crop.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let ours = [record.crop.left, record.crop.top, record.crop.right, record.crop.bottom];
            assert_eq!(ours.to_vec(), theirs, "{context}: crop");
            for (field, ours) in [("feature", &record.feature), ("whole_feature", &record.whole_feature)] {
                let similarity = cosine(ours.as_ref().unwrap(), &floats(&expected[field]));
                assert!(similarity >= 0.9999, "{context}: {field} cosine {similarity} (the issue asks for 0.999)");
            }
        }
    }
}

#[test]
fn a_detector_runs_from_a_full_configuration_object() {
    // The OIDv4 detector described field by field (no preset): proof that nothing is hard-wired to COCO.
    let json = r#"{
        "threads": 1,
        "detector": {
            "name": "custom-oidv4",
            "model": "ssd_mobilenetv2_oidv4_float.onnx",
            "labels": "ssd_mobilenetv2_oidv4_labels.txt",
            "label_format": "rows",
            "input": {"name": "normalized_input_image_tensor", "dtype": "f32", "layout": "NHWC",
                      "width": 300, "height": 300, "scale": 0.00784313725490196, "offset": -1.0},
            "boxes_output": "raw_outputs/box_encodings",
            "scores_output": "raw_outputs/class_predictions",
            "scores_are_logits": true
        },
        "class_allow_list": ["Coffee cup", "Mug"]
    }"#;
    let pipeline = Pipeline::new(config(json)).unwrap();
    let record = pipeline.process_one(&photo("coffee.jpg")).unwrap();
    assert_eq!(record.main_object.map(|o| o.class_name).as_deref(), Some("Coffee cup"));
    // The allow-list leaves the person out: nothing in the astronaut photo qualifies.
    let astronaut = pipeline.process_one(&photo("astronaut.jpg")).unwrap();
    assert!(!astronaut.detections.is_empty() && astronaut.main_object.is_none(), "{:?}", astronaut.detections);
}

#[test]
fn a_batch_keeps_order_and_isolates_bad_images() {
    let images = [photo("chelsea.jpg"), b"not an image".to_vec(), Vec::new(), photo("coffee.jpg")];
    let slices: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let results = pipeline("coco").process(&slices);
    assert_eq!(results.len(), 4);
    let class = |i: usize| results[i].as_ref().unwrap().main_object.as_ref().map(|o| o.class_name.clone());
    assert_eq!(class(0).as_deref(), Some("cat"));
    assert!(matches!(results[1], Err(ImageError::UnknownFormat { .. })));
    assert_eq!(results[2], Err(ImageError::Empty));
    assert_eq!(class(3).as_deref(), Some("cup"));
    // The same image gives the same row whatever batch it is in.
    assert_eq!(results[0].as_ref().unwrap(), &run("coco", "chelsea.jpg"));
}

#[test]
fn threads_are_exactly_what_the_configuration_says() {
    let one = Pipeline::new(config(r#"{"threads": 1}"#)).unwrap();
    assert_eq!(one.threads(), 1);
    assert_eq!(pipeline("coco").threads(), 2);
}

#[test]
fn missing_models_and_projections_are_clear_errors() {
    let err = Pipeline::new(config(r#"{"model_dir": "/nonexistent"}"#)).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/codes_itq_256.safetensors") && err.contains("fit-codes"), "{err}");
    let err = Pipeline::without_codes(config(r#"{"model_dir": "/nonexistent"}"#)).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/ssd_mobilenetv2_coco_float.onnx"), "{err}");
}

/// `../shared/data`, or `None` with a message saying the test is skipped.
fn shared_data(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(sub);
    if dir.is_dir() {
        Some(dir)
    } else {
        common::skipped(format_args!("SKIPPED: {} is absent (shared test photos are not part of the repository)", dir.display()));
        None
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn every_odd_format_gives_a_row_or_a_clear_error() {
    let Some(dir) = shared_data("formats") else { return };
    let files = files_under(&dir);
    let contents: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let slices: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    let results = pipeline("coco").process(&slices);
    assert_eq!(results.len(), files.len());
    for (file, result) in files.iter().zip(&results) {
        let name = file.file_name().unwrap().to_string_lossy();
        match result {
            Ok(record) => assert!(record.width > 0 && record.feature.as_ref().unwrap().len() == 1280, "{name}"),
            Err(e) => {
                // The shared README calls it a truncated copy, but its first bytes are gone too.
                assert!(name.contains("corrupt"), "{name} failed: {e}");
                assert!(matches!(e, ImageError::UnknownFormat { .. }), "{name}: {e}");
            }
        }
    }
    // The JPEGs named .png/.bmp/.svg decode as JPEG: same pixels, same features as the real .jpeg.
    let index = |suffix: &str| files.iter().position(|f| f.ends_with(format!("ukbench09380.{suffix}"))).unwrap();
    let jpeg = results[index("jpeg")].as_ref().unwrap();
    for suffix in ["png", "bmp", "svg"] {
        assert_eq!(results[index(suffix)].as_ref().unwrap(), jpeg, "ukbench09380.{suffix}");
    }
    assert!(results.iter().filter(|r| r.is_err()).count() == 1, "exactly the corrupt JPEG fails");
}

#[test]
fn large_jpegs_decoded_at_reduced_scale_give_the_same_answer() {
    // coffee.jpg blown up to 2400x1600: decoded at 1/2 (1200x800, shorter side ≥ 672) by default.
    let photo = image::load_from_memory(&photo("coffee.jpg")).unwrap().to_rgb8();
    let large = image::imageops::resize(&photo, 2400, 1600, image::imageops::FilterType::Triangle);
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&large).unwrap();
    let jpeg = jpeg.into_inner();

    let scaled = pipeline("coco").process_one(&jpeg).unwrap();
    let full = Pipeline::new(config(r#"{"jpeg_scale_min_side": 0, "threads": 1, "engine": {"precision": "f32"}}"#)).unwrap().process_one(&jpeg).unwrap();
    assert_eq!((scaled.width, scaled.height), (2400, 1600), "rows report the photo's own size");
    let (scaled_object, full_object) = (scaled.main_object.as_ref().unwrap(), full.main_object.as_ref().unwrap());
    assert_eq!(scaled_object.class_name, "cup");
    assert_eq!(scaled_object.class_name, full_object.class_name);
    assert!(scaled_object.bbox.iou(&full_object.bbox) > 0.95, "{:?} vs {:?}", scaled_object.bbox, full_object.bbox);
    assert!((scaled.crop.right as i64 - full.crop.right as i64).abs() <= 2, "crop in full-size pixels");
    let similarity = cosine(scaled.feature.as_ref().unwrap(), full.feature.as_ref().unwrap());
    assert!(similarity > 0.98, "object features of the two decodes: cosine {similarity}");
    let similarity = cosine(scaled.whole_feature.as_ref().unwrap(), full.whole_feature.as_ref().unwrap());
    assert!(similarity > 0.98, "whole-image features of the two decodes: cosine {similarity}");
}

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[test]
fn a_photo_pasted_onto_another_is_found_as_an_inset_that_matches_its_original() {
    let decode = |bytes: &[u8]| image::load_from_memory(bytes).unwrap().to_rgb8();
    let (coffee, mut rocket) = (decode(&photo("coffee.jpg")), decode(&photo("rocket.jpg")));
    // Coffee (600x400) at 45 % onto rocket (640x427), as the evaluation's "new background" edit.
    let small = image::imageops::resize(&coffee, 270, 180, image::imageops::FilterType::Triangle);
    image::imageops::replace(&mut rocket, &small, 300, 150);
    let mut pasted = Vec::new();
    rocket.write_to(&mut std::io::Cursor::new(&mut pasted), image::ImageFormat::Png).unwrap();

    let pipeline = pipeline("coco");
    let original = run("coco", "coffee.jpg");
    let original_code = original.whole_code.as_ref().unwrap();
    let query = pipeline.query(&pasted, 3).unwrap();
    let row = pipeline.process_one(&pasted).unwrap();
    assert_eq!(query.record, Record { insets: Vec::new(), ..row.clone() }, "the query's row is the image's row, less the row's insets");
    let inset = query.insets.first().expect("the pasted photo is found");
    // Four seams: the row carries it too (found on a copy at most 512 pixels wide, so within a pixel
    // or two of the query's), its code near the query's inset's.
    assert_eq!(row.insets.len(), 1, "{:?}", row.insets.iter().map(|i| i.rect).collect::<Vec<_>>());
    let (found, truth) = (row.insets[0].rect, [300u32, 150, 570, 330]);
    assert!([found.left, found.top, found.right, found.bottom].iter().zip(truth).all(|(f, t)| f.abs_diff(t) <= 3), "{found:?}");
    assert!(hamming(row.insets[0].code.as_ref().unwrap(), inset.code.as_ref().unwrap()) <= 24);
    let (r, truth) = (inset.rect, [300u32, 150, 570, 330]);
    assert!(r.left.abs_diff(truth[0]) <= 2 && r.top.abs_diff(truth[1]) <= 2 && r.right.abs_diff(truth[2]) <= 2 && r.bottom.abs_diff(truth[3]) <= 2, "{r:?}");
    let inset_distance = hamming(inset.code.as_ref().unwrap(), original_code);
    let row_distance = [&query.record.code, &query.record.whole_code].iter().map(|c| hamming(c.as_ref().unwrap(), original_code)).min().unwrap();
    assert!(inset_distance <= 24 && inset_distance < row_distance, "inset {inset_distance} bits from the original, the row's codes {row_distance}");

    // A photo with nothing pasted into it has no inset to search (nor an error).
    assert!(pipeline.query(&photo("chelsea.jpg"), 3).unwrap().insets.is_empty());
    assert_eq!(pipeline.query(b"not an image", 3).unwrap_err(), pipeline.process_one(b"not an image").unwrap_err());
}

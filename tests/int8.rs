//! `"engine": {"precision": "int8"}` against the f32 pipeline on real photos: what a user gives up
//! for the int8 products' speed, bounded. The committed fixtures always; with `../shared/data`, the
//! first 200 ImageNet samples too.

mod common;

use std::path::{Path, PathBuf};

use imgfeat::{Config, Pipeline, Record};

fn photos() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures/photos")).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    match std::fs::read_dir(root.join("../shared/data/imagenet-sample")) {
        Ok(entries) => {
            let mut more: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
            more.sort();
            paths.extend(more.into_iter().take(200));
        }
        Err(_) => common::skipped(format_args!("SKIPPED part: ../shared/data/imagenet-sample is absent; comparing on the fixtures only")),
    }
    paths
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (a.iter().map(|x| x * x).sum::<f32>() * b.iter().map(|x| x * x).sum::<f32>()).sqrt()
}

fn hamming(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[test]
fn int8_rows_stay_close_to_f32_rows() {
    if !imgfeat::cpu::features().int8_products {
        common::skipped(format_args!("SKIPPED: int8 products need AVX-512 VNNI, which this CPU lacks (the pipeline runs f32 there)"));
        return;
    }
    let f32_pipeline = Pipeline::new(Config::from_json(r#"{"threads": 1}"#).unwrap()).unwrap();
    let int8_pipeline = Pipeline::new(Config::from_json(r#"{"threads": 1, "engine": {"precision": "int8"}}"#).unwrap()).unwrap();
    let (mut cosines, mut distances, mut same_detection, mut ious) = (Vec::new(), Vec::new(), 0, Vec::new());
    let paths = photos();
    for path in &paths {
        let bytes = std::fs::read(path).unwrap();
        let (a, b): (Record, Record) = match (f32_pipeline.process_one(&bytes), int8_pipeline.process_one(&bytes)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "{}: the same error", path.display());
                continue;
            }
            (a, b) => panic!("{}: f32 gave {:?}, int8 {:?}", path.display(), a.err(), b.err()),
        };
        cosines.push(cosine(a.whole_feature.as_ref().unwrap(), b.whole_feature.as_ref().unwrap()));
        distances.push(hamming(a.whole_code.as_ref().unwrap(), b.whole_code.as_ref().unwrap()));
        let (x, y) = (&a.main_object, &b.main_object);
        if x.as_ref().map(|o| o.class_id) == y.as_ref().map(|o| o.class_id) {
            same_detection += 1;
            if let (Some(x), Some(y)) = (x, y) {
                ious.push(x.bbox.iou(&y.bbox));
            }
        }
    }
    let n = cosines.len();
    cosines.sort_by(f32::total_cmp);
    distances.sort();
    ious.sort_by(f32::total_cmp);
    eprintln!(
        "{n} photos: whole-image feature cosine min {:.4} median {:.4}; code Hamming distance median {} max {} of 256; same detection {same_detection}/{n}; box IoU min {:.3} median {:.3}",
        cosines[0], cosines[n / 2], distances[n / 2], distances[n - 1], ious.first().unwrap_or(&1.0), ious.get(ious.len() / 2).unwrap_or(&1.0)
    );
    // Measured on the 204 photos: cosine min 0.994, median 0.998; Hamming median 0, max 7; 199 of
    // 204 with the same detection, box IoU median 0.991 (a close second object can win either way).
    // On the 4 fixtures alone: cosine min 0.996, Hamming 7 on most of them (codes of unrelated photos
    // differ by ~128 bits).
    assert!(n >= 4, "every fixture gives a row");
    assert!(cosines[0] >= 0.985 && cosines[n / 2] >= 0.995, "int8 features drift from f32's");
    assert!(distances[n - 1] <= 16, "int8 codes drift from f32's: {} bits of 256", distances[n - 1]);
    assert!(same_detection as f32 >= 0.9 * n as f32, "int8 changes the main object of {} of {n} photos", n - same_detection);
    assert!(ious.is_empty() || ious[ious.len() / 2] >= 0.95, "int8 moves the boxes");
}

//! Cost of each stage for one photo, on one thread: where the time of `extract` goes.
//!
//!     cargo bench --bench stages
//!
//! The photo is `tests/fixtures/photos/coffee.jpg` (600x400, a cup: the detector finds it, so the crop
//! path runs). Models come from `models/`.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use imgfeat::codes::Projection;
use imgfeat::crop::{crop, crop_rect, inset_rects, InsetSearch};
use imgfeat::decode::{decode, decode_scaled};
use imgfeat::detect::Detector;
use imgfeat::embed::Embedder;
use imgfeat::output::pack_rows;
use imgfeat::preprocess::resize;
use imgfeat::{Config, Pipeline};

fn stages(c: &mut Criterion) {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/coffee.jpg")).unwrap();
    let config = Config::from_json(r#"{"threads": 1}"#).unwrap();
    let image = decode(&bytes, &config.limits).unwrap();
    let detector = Detector::load(&config).unwrap();
    let embedder = Embedder::load(&config).unwrap();
    let projection = Projection::load(&config.projection_path()).unwrap();
    let detections = detector.detect(&image).unwrap();
    let object = detector.main_object(&detections).expect("the cup is detected").clone();
    let rect = crop_rect(&object.bbox, image.width(), image.height(), config.crop_margin);
    let feature = embedder.embed(&image).unwrap();
    let pipeline = Pipeline::new(config.clone()).unwrap();

    let mut group = c.benchmark_group("stage");
    group.sample_size(20);
    group.bench_function("decode (JPEG 600x400)", |b| b.iter(|| decode(black_box(&bytes), &config.limits).unwrap()));
    // A 2400x1600 photo (coffee.jpg enlarged): decoded in full, or at 1/2 scale as the pipeline does.
    let large = image::imageops::resize(&image, 2400, 1600, image::imageops::FilterType::Triangle);
    let mut large_jpeg = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut large_jpeg, 90).encode_image(&large).unwrap();
    let large_jpeg = large_jpeg.into_inner();
    group.bench_function("decode (JPEG 2400x1600, full size)", |b| b.iter(|| decode(black_box(&large_jpeg), &config.limits).unwrap()));
    group.bench_function("decode (JPEG 2400x1600, DCT-scaled to 1200x800)", |b| {
        b.iter(|| decode_scaled(black_box(&large_jpeg), &config.limits, config.jpeg_scale_min_side).unwrap())
    });
    group.bench_function("resize to 300x300", |b| b.iter(|| resize(black_box(&image), 300, 300)));
    group.bench_function("detector (SSD MobileNetV2, incl. resize)", |b| b.iter(|| detector.detect(black_box(&image)).unwrap()));
    group.bench_function("crop", |b| b.iter(|| crop(black_box(&image), rect)));
    group.bench_function("embedder (EfficientNet-Lite0, incl. resize)", |b| b.iter(|| embedder.embed(black_box(&image)).unwrap()));
    group.bench_function("binary code (256 bits)", |b| b.iter(|| projection.encode(black_box(&feature))));
    let row = [pipeline.process_one(&bytes)];
    group.bench_function("pack one row for JNI", |b| b.iter(|| pack_rows(black_box(&row))));
    group.bench_function("whole pipeline, one image", |b| b.iter(|| pipeline.process_one(black_box(&bytes)).unwrap()));
    group.bench_function("inset seams (photos pasted into the query)", |b| b.iter(|| inset_rects(black_box(&image), 3, InsetSearch::Query)));
    group.bench_function("inset seams (photos pasted into a row)", |b| b.iter(|| inset_rects(black_box(&image), 4, InsetSearch::Row)));
    group.bench_function("search query, one image (row + insets)", |b| b.iter(|| pipeline.query(black_box(&bytes), 3).unwrap()));
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);

//! Model compute per image on one thread: the native executor against tract, for both shipped model
//! kinds, at batch 1 and batch 8 (time per batch / 8). onnxruntime's figures for the same models come
//! from `benches/model_flops.py`; scripts/bench.sh puts them side by side in BENCHMARKS.md.
//!
//!     cargo bench --bench executor
//!     PKG_CONFIG_PATH=/opt/mkl/lib/pkgconfig cargo bench --bench executor --features mkl   # + MKL GEMM
//!
//! Each measurement includes the model's resize and input layout (as in the pipeline).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use image::RgbImage;
use imgfeat::config::{EngineConfig, Executor, GemmChoice, InputSpec};
use imgfeat::decode::decode;
use imgfeat::runtime::OnnxModel;
use imgfeat::Config;

fn engines() -> Vec<(&'static str, EngineConfig)> {
    let mut engines = vec![
        ("tract", EngineConfig { executor: Executor::Tract, gemm: GemmChoice::Portable }),
        ("native-portable", EngineConfig { executor: Executor::Native, gemm: GemmChoice::Portable }),
    ];
    if cfg!(feature = "mkl") {
        engines.push(("native-mkl", EngineConfig { executor: Executor::Native, gemm: GemmChoice::Mkl }));
    }
    engines
}

fn executor(c: &mut Criterion) {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/coffee.jpg")).unwrap();
    let config = Config::default();
    let image = decode(&bytes, &config.limits).unwrap();
    let models: [(&str, &Path, &InputSpec, Vec<&str>); 2] = [
        (
            "detector",
            config.detector.model.as_path(),
            &config.detector.input,
            vec![config.detector.boxes_output.as_str(), config.detector.scores_output.as_str()],
        ),
        ("embedder", config.embedder.model.as_path(), &config.embedder.input, vec![config.embedder.features_output.as_str()]),
    ];
    let mut group = c.benchmark_group("model");
    group.sample_size(20);
    for (kind, file, input, outputs) in &models {
        for batch in [1usize, 8] {
            group.throughput(Throughput::Elements(batch as u64));
            for (name, engine) in engines() {
                let model = OnnxModel::load(&config.resolve(file), input, outputs, &engine, batch).unwrap();
                let images: Vec<&RgbImage> = vec![&image; batch];
                group.bench_with_input(BenchmarkId::new(format!("{kind}/{name}"), format!("batch{batch}")), &(), |b, _| {
                    b.iter(|| model.run(black_box(&images)).unwrap())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, executor);
criterion_main!(benches);

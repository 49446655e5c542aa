//! Model compute on one thread: the native executor (f32 and int8) against tract, for both shipped model kinds, at
//! batch 1 and batch 8, on an input already resized and laid out (the model alone, as onnxruntime is
//! timed by `benches/model_flops.py`; `scripts/bench-models.sh` runs both and writes BENCHMARKS.md).
//!
//!     cargo bench --bench executor
//!     PKG_CONFIG_PATH=/opt/mkl/lib/pkgconfig cargo bench --bench executor --features mkl   # + MKL GEMM

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use imgfeat::config::{EngineConfig, Executor, GemmChoice, InputSpec, Precision};
use imgfeat::decode::decode;
use imgfeat::preprocess::write_input;
use imgfeat::model::OnnxModel;
use imgfeat::Config;

fn engines() -> Vec<(&'static str, EngineConfig)> {
    let native = EngineConfig { executor: Executor::Native, precision: Precision::F32, ..EngineConfig::default() };
    let mut engines = vec![
        ("tract", EngineConfig { executor: Executor::Tract, ..EngineConfig::default() }),
        ("native-portable", native.clone()),
        ("native-bf16", EngineConfig { precision: Precision::Bf16, ..native.clone() }),
        ("native-int8", EngineConfig { precision: Precision::Int8, ..native.clone() }),
    ];
    if cfg!(feature = "mkl") {
        engines.push(("native-mkl", EngineConfig { gemm: GemmChoice::Mkl, ..native }));
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
                let per_image = input.width as usize * input.height as usize * 3;
                let mut prepared = vec![0f32; per_image * batch];
                prepared.chunks_exact_mut(per_image).for_each(|out| write_input(&image, input, out));
                group.bench_with_input(BenchmarkId::new(format!("{kind}/{name}"), format!("batch{batch}")), &(), |b, _| {
                    b.iter(|| model.run_input(black_box(&prepared)).unwrap())
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, executor);
criterion_main!(benches);

use imgfeat::config::{EngineConfig, Executor};
use imgfeat::runtime::OnnxModel;
use imgfeat::Config;
fn main() {
    let which = std::env::args().nth(1).unwrap_or("detector".into());
    let config = Config::default();
    let bytes = std::fs::read("tests/fixtures/photos/coffee.jpg").unwrap();
    let image = imgfeat::decode::decode(&bytes, &config.limits).unwrap();
    let engine = EngineConfig { executor: Executor::Native, ..Default::default() };
    let model = if which == "detector" {
        OnnxModel::load(&config.resolve(&config.detector.model), &config.detector.input, &[&config.detector.boxes_output, &config.detector.scores_output], &engine, 1).unwrap()
    } else {
        OnnxModel::load(&config.resolve(&config.embedder.model), &config.embedder.input, &[&config.embedder.features_output], &engine, 1).unwrap()
    };
    let t = std::time::Instant::now();
    for _ in 0..100 { model.run(&[&image]).unwrap(); }
    eprintln!("{:?} per run", t.elapsed() / 100);
}

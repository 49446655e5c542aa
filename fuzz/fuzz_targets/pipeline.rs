//! Any bytes → the whole pipeline (decode, detect, crop, embed, code). Slower per input than `decode`
//! (two models), so it runs fewer inputs; it covers the crop and embedding paths on whatever decodes.
//!
//!     cargo +nightly fuzz run pipeline -- -max_total_time=600 -rss_limit_mb=2048
#![no_main]

use std::sync::OnceLock;

use imgfeat::{Config, Pipeline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    let pipeline = PIPELINE.get_or_init(|| {
        let mut config = Config::from_json(r#"{"threads": 1}"#).unwrap();
        config.model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models").into();
        Pipeline::new(config).unwrap()
    });
    // A row or a per-image error; process_one itself turns panics into errors, so check for them.
    if let Err(imgfeat::ImageError::Internal(message)) = pipeline.process_one(bytes) {
        panic!("internal error (a caught panic): {message}");
    }
});

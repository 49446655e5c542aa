//! Any bytes → decode (content-sniffed, limits from the header) → both models' input tensors.
//! Every input must give an image or an error; a panic, abort, hang or sanitizer report is a finding.
//!
//!     cargo +nightly fuzz run decode -- -max_total_time=600 -rss_limit_mb=2048
#![no_main]

use imgfeat::config::{DetectorSpec, EmbedderSpec};
use imgfeat::decode::decode_scaled;
use imgfeat::preprocess::write_input;
use imgfeat::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let config = Config::default();
    if let Ok(decoded) = decode_scaled(bytes, &config.limits, config.jpeg_scale_min_side) {
        for input in [DetectorSpec::preset("coco").unwrap().input, EmbedderSpec::preset("efficientnet_lite0").unwrap().input] {
            let mut out = vec![0f32; input.width as usize * input.height as usize * 3];
            write_input(&decoded.image, &input, &mut out);
        }
    }
});

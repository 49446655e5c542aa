//! imgfeat turns product photos into compact features for similarity search and de-duplication:
//! decode → SSD detection → crop of the main object → CNN embedding → binary code, one row per image.
//!
//! The data path reads top to bottom, one module per stage; [`Pipeline`] strings them together and is
//! the one entry point that the CLI, the JNI edge and the tests share.
//!
//! ```no_run
//! let pipeline = imgfeat::Pipeline::new(imgfeat::Config::default())?;
//! let photo = std::fs::read("photo.jpg").unwrap();
//! for row in pipeline.process(&[&photo]) {
//!     match row {
//!         Ok(record) => println!("{:?} {:?}", record.main_object.map(|o| o.class_name), record.code),
//!         Err(error) => eprintln!("{error}"),
//!     }
//! }
//! # Ok::<(), imgfeat::Error>(())
//! ```

pub mod config;
pub mod error;
pub mod cpu;

pub mod inputs;
pub mod decode;
pub mod preprocess;
mod runtime;
pub mod model;
pub mod detect;
pub mod crop;
pub mod embed;
pub mod codes;
pub mod search;
pub mod report;
pub mod pipeline;
pub mod features;
pub mod output;
pub mod jni;

/// What `benches/gemm.rs` times beneath the pipeline (the packed product alone), for the benchmarks
/// only (`--features bench-internals`): not part of the API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::runtime::packed::{available, gemm, ConstSide, PackedConst, PANEL_FLOATS};
}

pub use config::Config;
pub use error::{Error, ImageError};
pub use pipeline::{Pipeline, Record};

//! The features table: one row per input image, its columns and types, and the one writer
//! ([`write`]) and reader ([`read`]) every part of imgfeat goes through — the CLI, the JNI edge (whose
//! packed rows decode to these columns in `PackedRows.scala`), the Spark jobs' output and the tests.
//! Failed images are rows too, with `error` set and the other columns null, so a table always has one
//! row per input.

pub mod read;
mod schema;
pub mod write;

pub use read::FeaturesReader;
pub use schema::{PROVENANCE_KEY, Provenance, Row, local_path, record_batch, schema};
pub use write::{ExtractOutput, FeaturesWriter};

#[cfg(test)]
pub(crate) use schema::tests;

//! Two kinds of failure, kept apart on purpose: an [`ImageError`] belongs to one input and becomes that
//! row's `error` column while the batch goes on; an [`Error`] means the pipeline itself cannot run
//! (bad configuration, missing model) and stops the job with a message naming the cause.

use std::path::PathBuf;

/// Why one image produced no features. The message is what a user reads in the `error` column, so it
/// says what was wrong with the input and which limit or format was involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read the input: {0}")]
    Unreadable(String),
    #[error("empty input: 0 bytes")]
    Empty,
    #[error("encoded image is {bytes} bytes, over the limit of {limit} bytes (limits.max_encoded_bytes)")]
    TooManyBytes { bytes: u64, limit: u64 },
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit} (limits.max_pixels)", pixels = *width as u64 * *height as u64)]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("image has no pixels: {width}x{height}")]
    ZeroSized { width: u32, height: u32 },
    #[error("unrecognised image format (content starts with {magic}); supported: JPEG, PNG, GIF, WebP, TIFF, BMP, PNM")]
    UnknownFormat { magic: String },
    #[error("cannot decode {format} image: {message}")]
    Decode { format: String, message: String },
    #[error("model {model} failed on this image: {message}")]
    Inference { model: String, message: String },
    #[error("internal error (a bug in imgfeat; please report it with the image): {0}")]
    Internal(String),
}

/// Why a pipeline could not be built or a job could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("cannot load model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("binary-code projection {path}: {message}")]
    Projection { path: PathBuf, message: String },
    #[error("cannot fit binary codes: {0}")]
    Fit(String),
    #[error("writing output: {0}")]
    Output(String),
    /// A features table that cannot be read: missing, damaged, or not one.
    #[error("cannot read features table {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Image { path: PathBuf, source: ImageError },
}

/// The text of a panic payload (`String` or `&str`), for the error that reports it.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}

// Arrow and Parquet errors outside reading (which names its file, `Error::Read`) come from writing.
impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Error {
        Error::Output(e.to_string())
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Error {
        Error::Output(e.to_string())
    }
}

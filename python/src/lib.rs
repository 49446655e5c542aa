//! `imgfeat._native`: the Rust side of the Python package. A thin edge over the crate: the one
//! [`imgfeat::Pipeline`], the one features schema (rows go to pyarrow through Arrow's C data
//! interface, no copy), the one search index and de-duplication. The GIL is released while native code
//! runs, so other Python threads go on. `python/imgfeat/_local.py` builds the public API on it.

use std::path::PathBuf;

use arrow::array::{Float32Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_pyarrow::{PyArrowType, Table};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use imgfeat::features::Provenance;
use imgfeat::search::{DuplicateRule, Query};
use imgfeat::{Config, Error, ImageError};

create_exception!(imgfeat, ImgfeatError, PyException, "An error of imgfeat's that is neither a bad argument nor a file that cannot be read: a model that does not load, a table that is not a features table.");

/// imgfeat's errors as the exceptions a Python user expects: a bad setting is a `ValueError`, a file
/// that cannot be read an `OSError`, the rest an `ImgfeatError`.
fn to_python(error: Error) -> PyErr {
    match error {
        Error::Config(_) => PyValueError::new_err(error.to_string()),
        Error::Io { .. } => PyOSError::new_err(error.to_string()),
        _ => ImgfeatError::new_err(error.to_string()),
    }
}

/// Loaded models; `process` and `process_files` make rows of the features schema, with how they were
/// made (the provenance the CLI's tables record) in the batch's schema metadata.
#[pyclass(frozen, module = "imgfeat._native")]
struct Pipeline {
    inner: imgfeat::Pipeline,
    provenance: Provenance,
}

#[pymethods]
impl Pipeline {
    /// Loads the models of a configuration given as JSON (any field of `imgfeat config`'s output).
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Pipeline> {
        let config = Config::from_json(config_json).map_err(to_python)?;
        let inner = py.detach(|| imgfeat::Pipeline::new(config)).map_err(to_python)?;
        let provenance = Provenance::of(inner.config(), inner.arithmetic()).map_err(to_python)?;
        Ok(Pipeline { inner, provenance })
    }

    /// Compute threads per call.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// The configuration in force, as JSON.
    #[getter]
    fn config_json(&self) -> String {
        self.inner.config().to_json()
    }

    /// Rows for encoded images (`None` items become error rows), named by `paths`.
    fn process(&self, py: Python<'_>, images: Vec<Option<PyBackedBytes>>, paths: Vec<String>) -> PyResult<PyArrowType<RecordBatch>> {
        if images.len() != paths.len() {
            return Err(PyValueError::new_err(format!("{} images but {} paths", images.len(), paths.len())));
        }
        let inputs: Vec<Result<&[u8], ImageError>> = images
            .iter()
            .map(|image| image.as_deref().ok_or_else(|| ImageError::Unreadable("the item is None, not bytes".into())))
            .collect();
        let results = py.detach(|| self.inner.process_inputs(inputs));
        self.rows(&paths, &results)
    }

    /// Rows for image files, read here (a file that cannot be read is an error row).
    fn process_files(&self, py: Python<'_>, paths: Vec<PathBuf>) -> PyResult<PyArrowType<RecordBatch>> {
        let results = py.detach(|| self.inner.process_files(&paths));
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        self.rows(&names, &results)
    }
}

impl Pipeline {
    fn rows(&self, paths: &[String], results: &[Result<imgfeat::Record, ImageError>]) -> PyResult<PyArrowType<RecordBatch>> {
        let rows: Vec<imgfeat::features::Row> = paths.iter().map(String::as_str).zip(results).collect();
        let code_bytes = self.inner.config().codes.bits / 8;
        let batch = imgfeat::features::record_batch(&rows, code_bytes).map_err(to_python)?;
        Ok(PyArrowType(self.provenance.attach(batch)))
    }
}

/// A features table held for search and de-duplication, its rows in path order.
#[pyclass(frozen, module = "imgfeat._native")]
struct Index {
    inner: imgfeat::search::Index,
}

#[pymethods]
impl Index {
    /// Indexes a table in any shape imgfeat writes (the CLI's, a Spark job's with its struct column);
    /// rows without codes (errors) are left out.
    #[new]
    fn new(py: Python<'_>, table: PyArrowType<Table>) -> PyResult<Index> {
        let (batches, _) = table.0.into_inner();
        let index = py.detach(|| imgfeat::search::Index::from_batches(batches));
        Ok(Index { inner: index.map_err(to_python)? })
    }

    fn __len__(&self) -> usize {
        self.inner.rows.len()
    }

    /// The `k` rows nearest to an encoded image, as `imgfeat search` finds them: (path, distance,
    /// cosine), nearest first.
    fn search(
        &self,
        py: Python<'_>,
        pipeline: &Pipeline,
        image: PyBackedBytes,
        k: usize,
        rerank: usize,
        insets: usize,
    ) -> PyResult<PyArrowType<RecordBatch>> {
        let found = py.detach(|| pipeline.inner.query(&image, insets)).map_err(|e| ImgfeatError::new_err(e.to_string()))?;
        let query = Query::from(found);
        let bits = query.codes.first().map_or(self.inner.code_bits(), |code| code.len() * 8);
        self.inner.check_comparable(bits, pipeline.inner.projection_fingerprint()).map_err(to_python)?;
        let hits = py.detach(|| self.inner.search(&query, k, rerank));
        let schema = Schema::new(vec![
            Field::new("path", DataType::Utf8, false),
            Field::new("distance", DataType::UInt32, false),
            Field::new("cosine", DataType::Float32, true),
        ]);
        let columns: Vec<arrow::array::ArrayRef> = vec![
            std::sync::Arc::new(hits.iter().map(|h| Some(self.inner.rows[h.row].path.as_str())).collect::<StringArray>()),
            std::sync::Arc::new(hits.iter().map(|h| h.distance).collect::<UInt32Array>()),
            std::sync::Arc::new(hits.iter().map(|h| h.cosine).collect::<Float32Array>()),
        ];
        RecordBatch::try_new(std::sync::Arc::new(schema), columns).map(PyArrowType).map_err(|e| ImgfeatError::new_err(e.to_string()))
    }

    /// Near-duplicate groups, as `imgfeat dedup [--max-distance N] [--no-verify]` makes them: (group,
    /// path, representative); `max_distance` None is the rule's default. `threads` None searches the
    /// candidates on every core; a number confines the call to a pool of that many threads (a Python
    /// worker of a Spark job uses the cores its task was given, not the host's).
    #[pyo3(signature = (max_distance, verify, threads))]
    fn duplicate_groups(
        &self,
        py: Python<'_>,
        max_distance: Option<u32>,
        verify: bool,
        threads: Option<usize>,
    ) -> PyResult<PyArrowType<RecordBatch>> {
        let rule = DuplicateRule::new(max_distance, verify);
        let groups = py
            .detach(|| match threads {
                None => self.inner.duplicate_groups(&rule),
                Some(threads) => rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| imgfeat::Error::Config(format!("cannot start {threads} threads: {e}")))?
                    .install(|| self.inner.duplicate_groups(&rule)),
            })
            .map_err(to_python)?;
        imgfeat::output::groups_batch(&groups, &self.inner.rows).map(PyArrowType).map_err(to_python)
    }
}

/// The image files `inputs` name (folders walked), in path order, as `imgfeat extract` lists them.
#[pyfunction]
fn image_files(py: Python<'_>, inputs: Vec<PathBuf>) -> PyResult<Vec<String>> {
    let files = py.detach(|| imgfeat::inputs::image_files(&inputs)).map_err(to_python)?;
    Ok(files.iter().map(|f| f.display().to_string()).collect())
}

/// A configuration as the native parser reads it (every field spelled out), or a `ValueError` naming
/// the bad field; nothing is loaded.
#[pyfunction]
fn validate_config(config_json: &str) -> PyResult<String> {
    Config::from_json(config_json).map(|config| config.to_json()).map_err(to_python)
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    // Fails only where a logger is already installed (the module initialised twice in one process).
    let _ = pyo3_log::try_init();
    module.add_class::<Pipeline>()?;
    module.add_class::<Index>()?;
    module.add_function(wrap_pyfunction!(image_files, module)?)?;
    module.add_function(wrap_pyfunction!(validate_config, module)?)?;
    module.add("ImgfeatError", module.py().get_type::<ImgfeatError>())?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
